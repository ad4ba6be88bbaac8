"""Flag conventions of every `llada-hf` command (argparse only: importing this costs nothing).

- Every flag takes both spellings, `--max_new_tokens` and `--max-new-tokens`, as TRL's parser does; help lists the
  underscore spelling first (the one the README and TRL's docs use).
- Every option's help says its default or that it is required: the formatters append `(default: X)` (on/off for a
  switch) or `(required)`; a flag whose default is None says in words what happens without it ("default: the
  checkpoint's generation_config"), and `add_flag` refuses one that does not.
- Abbreviations are off: `--steps` never silently means `--steps_per_block`.
- A usage error (a bad choice or type, a missing required option, an unknown flag) is one line on stderr,
  `llada-hf <command>: <message>`, with exit status 2, like the commands' other errors (`OneLineErrors`).
"""

import argparse
import os
import re
from pathlib import Path


def _marked(action: argparse.Action, text: str) -> str | None:
    """`text` with "(required)" added for a required option; None when the default is what is left to show."""
    if action.required:
        return text if "required" in text.lower() else f"{text} (required)"
    return None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; appends `(default: X)` to a flag's help when X is not None, and
    `(required)` to a required flag's."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return text
        marked = _marked(action, text)
        if marked is not None:
            return marked
        default = action.default
        if default is None or default is argparse.SUPPRESS or "default" in text.lower():
            return text
        if isinstance(action, (argparse.BooleanOptionalAction, BooleanFlag)) or isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = str(default).replace("%", "%%")  # argparse expands %-placeholders in help
        return f"{text} (default: {shown})"


class TrainingHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """TRL's help format for the training commands (every flag shows its default), keeping the line breaks of the
    description and examples; a None default is not shown when the help already says what happens by default, and a
    required flag says so."""

    def _get_help_string(self, action):
        marked = _marked(action, action.help or "") if action.option_strings else None
        if marked is not None:
            return marked
        if action.default is None and "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


class OneLineErrors:
    """Mixed into a parser class: argparse's usage errors (a bad choice or type, a missing required option, an unknown
    flag) print one line, `<prog>: <message>`, instead of the usage and `<prog>: error: <message>`, and exit with
    status 2. The message names the flag once (argparse lists every spelling) and ends with the valid choices or a
    pointer to `<prog> --help`."""

    def error(self, message: str):
        message = " ".join(message.split())
        message = re.sub(r"(-{1,2}[\w-]+)(?:/-{1,2}[\w-]+)+", r"\1", message).removeprefix("argument ")
        if "choose from" not in message:
            message += f"; see {self.prog} --help"
        self.exit(2, f"{self.prog}: {message}\n")


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of the commands that are not TRL-backed."""


class BooleanFlag(argparse.Action):
    """An on/off flag in both spellings: `--early_exit` / `--early-exit` turn it on, `--no_early_exit` /
    `--no-early-exit` off (argparse's BooleanOptionalAction makes only `--no-early_exit`). `add_flag` uses it for
    `action=argparse.BooleanOptionalAction`; the default may be None (unset: whoever reads it decides)."""

    def __init__(self, option_strings, dest, default=None, required=False, help=None, **kwargs):
        base = option_strings[0].lstrip("-").replace("-", "_")
        self.negatives = [f"--no_{base}", f"--no-{base.replace('_', '-')}"]
        super().__init__([*option_strings, *self.negatives], dest, nargs=0, default=default, required=required,
                         help=help, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.negatives)

    def format_usage(self) -> str:
        return f"{self.option_strings[0]} | {self.negatives[0]}"


def new_parser(prog: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def add_flag(parser, name: str, **kwargs) -> argparse.Action:
    """Add `--name` (underscore spelling) and its dash spelling as one option. `help` is required, and says what
    happens by default when the default is None (the formatter shows any other default)."""
    if not kwargs.get("help"):
        raise ValueError(f"--{name} needs help text")
    name = name.replace("-", "_")
    if kwargs.get("action") is argparse.BooleanOptionalAction:
        kwargs["action"] = BooleanFlag
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    action = parser.add_argument(*spellings, dest=name, **kwargs)
    if not action.required and action.default is None and "default" not in action.help.lower():
        raise ValueError(f"--{name} has no default: its help must say what happens without it ('default: ...')")
    return action


def check_output_dir(output_dir: str | None, flag: str = "--output_dir") -> None:
    """An output folder (`flag`) must be a folder or a path where one can be made: neither it nor a folder above it may
    be an existing file, and the nearest existing folder must be writable (checked before anything is loaded or
    trained, instead of an `[Errno 17] File exists` or a permission error at the first save)."""
    if not output_dir:
        return
    path = Path(output_dir).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                kind = "a file" if part.is_file() else "not a folder"
                where = f"is {kind}" if part == path else f"is inside {str(part)!r}, which is {kind}"
                raise ValueError(f"{flag} {output_dir!r} {where}; pass a folder (it is created if missing).")
            if not os.access(part, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {output_dir!r} cannot be written: no write permission on {str(part)!r}; "
                                 "pass a folder you can write to.")
            return
