"""`llada-hf <command> [options]`: the command table, `--help`, `--version` and the one-line error handling.

Each command lives in a module of its own (`train`: pretrain, sft, dpo; `grpo`; `generate`: generate, chat;
`evaluate`; `publish`; `quickstart`; `serve`), which the table below names as `module:function` for the function
that runs it and for the one that builds its parser.

This module is light on purpose: `llada-hf --help`, `--version` and every `<command> --help` answer without importing
torch, transformers or TRL. A command's own module is imported only to run it or build its parser (cheap: every
command module imports its heavy dependencies inside its functions); the help of the commands whose parser is
expensive to build (the training commands list transformers' TrainingArguments) comes from `help_cache`.

Errors. `main` prints a mistake in what was passed (`ValueError`, `OSError`) as one line on stderr,
`llada-hf <command>: <message>`, and exits with status 2; argparse's usage errors (a bad choice or type, a missing
required option, an unknown flag) are one line of that form too, status 2 (`_args.OneLineErrors`). Any other
exception is a bug: one line too, `llada-hf <command>: internal error: <type>: <message>`, status 1. With the
environment variable LLADA_HF_DEBUG=1 every error propagates with its full traceback.
"""

import importlib
import os
import sys
from typing import NamedTuple

DEBUG_ENV = "LLADA_HF_DEBUG"


class Command(NamedTuple):
    summary: str  # one line for `llada-hf --help`
    runner: str  # `module:function` that runs it with the command-line words after its name
    parser: str  # `module:function` that builds its parser (no arguments)
    cached_help: bool  # building the parser is expensive: its help text is cached on disk (the runner warms it)
    extra: str | None = None  # the pip extra it needs


COMMANDS = {
    "quickstart": Command("LLaDA end to end on a CPU in minutes, nothing downloaded: train, fine-tune, publish",
                          "llada_cli.quickstart:main", "llada_cli.quickstart:build_parser", False),
    "pretrain": Command("masked-diffusion pre-training of a fresh or pre-trained LLaDA model",
                        "llada_cli.train:pretrain", "llada_cli.train:build_pretrain_parser", True),
    "sft": Command("response-only masked-diffusion fine-tuning (SFT), full or LoRA",
                   "llada_cli.train:sft", "llada_cli.train:build_sft_parser", True),
    "dpo": Command("preference optimisation with VRPO (LLaDA 1.5's DPO on ELBOs), full or LoRA",
                   "llada_cli.train:dpo", "llada_cli.train:build_dpo_parser", True),
    "grpo": Command("reinforcement learning with diffu-GRPO (d1), full or LoRA",
                    "llada_cli.grpo:grpo", "llada_cli.grpo:build_parser", True),
    "generate": Command("generate from a prompt, showing the denoising live",
                        "llada_cli.generate:generate", "llada_cli.generate:build_generate_parser", False),
    "chat": Command("chat with a LLaDA model in the terminal",
                    "llada_cli.generate:chat", "llada_cli.generate:build_chat_parser", False),
    "eval": Command("evaluate a model or adapter with lm-evaluation-harness",
                    "llada_cli.evaluate:main", "llada_cli.evaluate:build_parser", True, extra="eval"),
    "publish": Command("publish a model or adapter folder to the Hub with a generated card",
                       "llada_cli.publish:main", "llada_cli.publish:build_parser", True),
    "serve": Command("serve a model with an OpenAI-compatible API (chat, completions, streaming)",
                     "llada_cli.serve:run", "llada_cli.serve:build_parser", False, extra="serve"),
}


def usage() -> str:
    """The text of `llada-hf --help`."""
    width = max(len(name) for name in COMMANDS) + 2
    lines = [
        "usage: llada-hf <command> [options]",
        "",
        "LLaDA, the large language diffusion model, in the Hugging Face ecosystem.",
        "",
        "commands:",
        *(f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help     show this help message and exit",
        "  -V, --version  show the version of llada-hf and of the libraries it runs on, then exit",
        "",
        "`llada-hf <command> --help` lists a command's options. Training commands also read them from",
        f"`--config file.yaml`. {DEBUG_ENV}=1 shows the full traceback of an error.",
    ]
    return "\n".join(lines)


def version_text() -> str:
    """`llada-hf <version>`, then the versions of Python and the main libraries (read from their metadata: nothing is
    imported)."""
    import platform
    from importlib import metadata

    from . import version
    from .help_cache import LIBRARIES

    rows = [("python", platform.python_version())]
    for name in LIBRARIES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join([f"llada-hf {version()}", *(f"  {name:<{width}}{value}" for name, value in rows)])


def _write(text: str) -> None:
    """Print to stdout; a reader that has gone (`llada-hf pretrain --help | head`) is no error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        try:  # what is still buffered must not fail again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _unknown(word: str) -> str:
    import difflib

    kind = "option" if word.startswith("-") else "command"
    close = difflib.get_close_matches(word.lstrip("-"), list(COMMANDS), n=1)
    hint = f"did you mean {close[0]!r}? " if close and kind == "command" else ""
    return f"llada-hf: unknown {kind} {word!r}; {hint}commands: {', '.join(COMMANDS)} (llada-hf --help describes them)"


def asks_for_help(args: list[str]) -> bool:
    """Whether argparse would print the help for these arguments: `-h` or `--help` anywhere before `--`."""
    for arg in args:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def _function(name: str, target: str):
    """The function `module:function` of command `name`'s table entry (its module imported)."""
    module, _, function = target.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except ImportError as error:
        extra = COMMANDS[name].extra
        if extra is None:
            raise
        raise SystemExit(f"llada-hf {name} needs the {extra!r} extra: pip install 'llada-hf[{extra}]' "
                         f"({error}).") from None


def build_parser(name: str):
    """The argparse parser of command `name`."""
    return _function(name, COMMANDS[name].parser)()


def help_text(name: str) -> str:
    """The text of `llada-hf <name> --help` (from the cache for the expensive commands)."""
    if not COMMANDS[name].cached_help:
        return build_parser(name).format_help()
    from . import help_cache

    return help_cache.help_text(name, lambda: build_parser(name))


def main(argv: list[str] | None = None) -> int:
    """`llada-hf <command> ...`: the command's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _write(usage() + "\n")
        return 0
    if argv[0] in ("-V", "--version"):
        _write(version_text() + "\n")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(_unknown(name), file=sys.stderr)
        return 2
    try:
        if asks_for_help(rest):
            _write(help_text(name))
            return 0
        result = _function(name, COMMANDS[name].runner)(rest)
    except (ValueError, OSError) as error:  # a mistake in what was passed: the message says what to change
        if _debug():
            raise
        print(f"llada-hf {name}: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _debug():
            raise
        print(f"llada-hf {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line still; the traceback on request
        if _debug():
            raise
        print(f"llada-hf {name}: internal error: {type(error).__name__}: {_one_line(error)} (run again with "
              f"{DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
