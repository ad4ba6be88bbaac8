"""`llada-hf` flags: every one has help text, shows its default and choices, and takes both spellings
(`--max_new_tokens` / `--max-new-tokens`); `--version`; the top-level help; `--help` never imports torch (the
expensive training parsers' help comes from a cache on disk, checked here against the freshly built text). How fast
the help answers is measured by benchmarks/bench_cli.py, not here."""

import argparse
import functools
import json
import subprocess
import sys
from importlib import metadata

import pytest

from llada_cli import help_cache
from llada_cli.main import COMMANDS, build_parser, help_text, main

HEAVY_MODULES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate")


@pytest.fixture(autouse=True)
def private_help_cache(tmp_path, monkeypatch):
    """Every test (and the processes it starts) caches help in its own folder, rendered 100 columns wide. In this
    process the digest of the sources is computed once per test: a source file saved meanwhile (an editor, a checkout)
    would otherwise turn a hit into a miss halfway through a test."""
    monkeypatch.setenv(help_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(help_cache, "sources_digest", functools.cache(help_cache.sources_digest))
    return tmp_path / "cache"


_parsers = {}


def parser_of(command: str) -> argparse.ArgumentParser:
    """The command's parser, built once per session (the training commands' take seconds)."""
    if command not in _parsers:
        _parsers[command] = build_parser(command)
    return _parsers[command]


def options(parser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m llada_cli *args` (or `python -c code *args`) in a fresh process."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "llada_cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


# -- help text, defaults, choices ------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_has_help_and_shows_its_default_and_choices(command):
    parser = parser_of(command)
    formatter = parser._get_formatter()
    text = parser.format_help()
    for action in options(parser):
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help is not argparse.SUPPRESS and action.help.strip(), f"{command} {name}"
        shown = formatter._get_help_string(action)
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and not action.required:
            assert "default" in shown.lower(), f"{command} {name}: its default {action.default!r} is not shown"
        for choice in action.choices or ():
            assert str(choice) in text, f"{command} {name}: choice {choice!r} missing from the help"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_says_its_default_or_that_it_is_required(command):
    """Every option of every command, TrainingArguments' and TRL's included: its help shows the default, says in
    words what happens without it, or says it is required."""
    parser = parser_of(command)
    formatter = parser._get_formatter()
    silent = [action.option_strings[0] for action in options(parser) if action.option_strings
              and not any(word in formatter._get_help_string(action).lower() for word in ("default", "required"))]
    assert not silent, f"{command}: {silent} say neither their default nor that they are required"
    required = [action for action in options(parser) if action.option_strings and action.required]
    assert all("(required)" in formatter._get_help_string(action) for action in required)


def test_a_flag_without_a_default_must_say_what_happens_without_it():
    from llada_cli._args import add_flag, new_parser

    parser = new_parser("demo", "")
    with pytest.raises(ValueError, match="--limit has no default"):
        add_flag(parser, "limit", type=int, help="examples per task")
    add_flag(parser, "count", type=int, help="how many; default: all of them")
    add_flag(parser, "name", required=True, help="a name")
    text = parser.format_help()
    assert "how many; default: all of them" in text and "a name (required)" in text


@pytest.mark.parametrize("command", ["pretrain", "sft"])
def test_the_training_help_lists_config_first_and_keeps_our_defaults(command):
    text = parser_of(command).format_help()
    options_part = text[text.index("\noptions:"):]
    assert options_part.index("--config FILE.yaml") < options_part.index("--dataset_name")
    assert "(default: llada-tiny)" in text and "llada-small" in text and "(default: 200)" in text  # --max_steps
    assert "examples:" in text and f"llada-hf {command} --config" in text


def test_the_cli_s_sampler_settings_are_what_the_generation_config_classes_say():
    """llada_cli/sampler_settings.py is a torch-free copy (for --help) of the generation config classes: the same
    choices, field names and defaults."""
    import torch

    from llada_cli import sampler_settings as cli
    from modeling_llada.generation_llada import (
        DEFAULT_MAX_NEW_TOKENS,
        KV_CACHE_MODES,
        REMASKING_STRATEGIES,
        LLaDAGenerationConfig,
    )
    from modeling_llada.generation_llada2 import LLaDA2GenerationConfig

    assert cli.REMASKING_STRATEGIES == REMASKING_STRATEGIES
    assert cli.KV_CACHE_MODES == KV_CACHE_MODES == LLaDAGenerationConfig._kv_cache_modes
    assert cli.LLADA2_KV_CACHE_MODES == LLaDA2GenerationConfig._kv_cache_modes
    assert cli.DEFAULT_MAX_NEW_TOKENS == DEFAULT_MAX_NEW_TOKENS
    llada, llada2 = LLaDAGenerationConfig(), LLaDA2GenerationConfig()
    fields, fields2 = LLaDAGenerationConfig._diffusion_fields, LLaDA2GenerationConfig._diffusion_fields
    assert set(cli.DEFAULTS) <= set(fields)
    assert cli.DEFAULTS == {name: getattr(llada, name) for name in cli.DEFAULTS}
    # LLaDA 2: exactly the fields of the flags whose default differs from LLaDA's, or that only LLaDA 2 has
    flags = set(cli.DEFAULTS) | {action.dest for action in options(parser_of("generate"))}
    assert cli.LLADA2_DEFAULTS == {name: getattr(llada2, name) for name in fields2 if name in flags and (
        name not in fields or getattr(llada2, name) != getattr(llada, name))}
    assert all(isinstance(getattr(torch, name), torch.dtype) for name in cli.DTYPES)


@pytest.mark.parametrize("command", ["generate", "chat", "eval", "serve"])
def test_the_sampler_flags_are_the_generation_config_s_fields_and_choices(command):
    from llada_cli import sampler_settings as cli
    from modeling_llada.generation_llada import LLaDAGenerationConfig
    from modeling_llada.generation_llada2 import LLaDA2GenerationConfig

    fields = {*LLaDAGenerationConfig._diffusion_fields, *LLaDA2GenerationConfig._diffusion_fields}
    flags = {action.dest: action for action in options(parser_of(command))}
    assert {name for name in flags if name in fields} <= set(cli.FIELDS)
    assert set(flags["remasking"].choices) == set(cli.REMASKING_STRATEGIES)
    if "kv_cache" in flags:
        assert set(flags["kv_cache"].choices) == set(cli.KV_CACHE_MODES)
    assert {choice for choice in flags["dtype"].choices if choice != "auto"} == set(cli.DTYPES)


# -- both spellings -------------------------------------------------------------------------------------------------

def other_spelling(option: str) -> str | None:
    body = option[2:]
    if not option.startswith("--") or ("_" not in body and "-" not in body):
        return None
    return "--" + (body.replace("_", "-") if "_" in body else body.replace("-", "_"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_multi_word_flag_takes_both_spellings(command):
    registered = parser_of(command)._option_string_actions
    for option, action in registered.items():
        other = other_spelling(option)
        if other is not None:
            assert registered.get(other) is action, f"{command}: {option} has no {other}"


def _value(action) -> list[str] | None:
    """Command-line words giving `action` a value: nothing for a switch, the first choice, or "1"; None when "1" is
    not a value of its type."""
    if action.nargs == 0:
        return []
    value = str(next(iter(action.choices))) if action.choices else "1"
    if action.type is not None and not action.choices:
        try:
            action.type(value)
        except Exception:  # noqa: BLE001 (a dict-valued flag and the like: left to the registration check)
            return None
    return [value]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_dash_spelling_parses_to_the_same_values(command):
    """Every multi-word flag at once, underscore spelling against dash spelling (plus whatever is required)."""
    parser = parser_of(command)
    underscore, dash = [], []
    for action in options(parser):
        if not action.option_strings:
            underscore.append("x")
            dash.append("x")
            continue
        values = _value(action)
        spellings = [option for option in action.option_strings if "_" in option[2:]]
        for option in spellings if values is not None else []:
            underscore += [option, *values]
            dash += [other_spelling(option), *values]
        if action.required and not spellings:
            underscore += [action.option_strings[0], *(values or ["1"])]
            dash += [action.option_strings[0], *(values or ["1"])]
    assert len(underscore) > 2
    assert vars(parser.parse_args(underscore)) == vars(parser.parse_args(dash))


def test_generate_flags_in_either_spelling():
    parser = parser_of("generate")
    for words in (
        ["m", "--prompt", "hi", "--max_new_tokens", "8", "--block_length", "4", "--kv_cache", "dual", "--no_live",
         "--early_exit", "--no_logits_eos_inf", "--seed", "3", "--trust_remote_code"],
        ["m", "--prompt", "hi", "--max-new-tokens", "8", "--block-length", "4", "--kv-cache", "dual", "--no-live",
         "--early-exit", "--no-logits-eos-inf", "--seed", "3", "--trust-remote-code"],
    ):
        args = parser.parse_args(words)
        assert (args.max_new_tokens, args.block_length, args.kv_cache, args.seed) == (8, 4, "dual", 3)
        assert args.live is False and args.early_exit is True and args.logits_eos_inf is False
        assert args.confidence_eos_eot_inf is None and args.trust_remote_code is True and args.device == "auto"
    args = parser_of("chat").parse_args(["m", "--system-prompt", "be brief", "--top-p", "0.9", "--remasking", "margin"])
    assert (args.system_prompt, args.top_p, args.remasking) == ("be brief", 0.9, "margin")


def test_the_flags_become_generate_kwargs():
    from llada_cli.generate import generation_kwargs

    def kwargs(*words):
        return generation_kwargs(parser_of("generate").parse_args(["m", "--prompt", "hi", *words]))

    assert kwargs() == {}  # everything left to the checkpoint's generation_config
    assert kwargs("--no-early-exit", "--kv-cache", "prefix", "--steps", "4") == dict(
        early_exit=False, kv_cache="prefix", steps=4)
    # a temperature given here samples, even where the generation_config says do_sample: false
    assert kwargs("--temperature", "0.5", "--seed", "3") == dict(temperature=0.5, seed=3, do_sample=True)
    assert kwargs("--temperature", "0.5", "--no_do_sample") == dict(temperature=0.5, do_sample=False)
    assert kwargs("--temperature", "0") == dict(temperature=0.0)


def test_the_device_is_resolved_when_loading_not_when_parsing():
    import torch

    from llada_cli.loading import check_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert check_device("auto").type == expected


@pytest.mark.parametrize("command, words, expected", [
    ("pretrain", ["--per-device-train-batch-size", "4", "--mask-eps", "0.01", "--block-size", "64",
                  "--low-discrepancy-sampling", "--no-remove-unused-columns", "--model-name-or-path", "llada-small"],
     dict(per_device_train_batch_size=4, mask_eps=0.01, block_size=64, low_discrepancy_sampling=True,
          remove_unused_columns=False, model_name_or_path="llada-small")),
    ("sft", ["--max-length", "64", "--train-on-padding", "--dataset-text-field", "txt", "--use-peft", "--lora-r", "4"],
     dict(max_length=64, train_on_padding=True, dataset_text_field="txt", use_peft=True, lora_r=4)),
])
def test_training_flags_in_dash_spelling_reach_the_dataclasses(command, words, expected, tmp_path):
    parser = parser_of(command)
    parsed = parser.parse_args_and_config(args=[*words, "--output_dir", str(tmp_path / "out")])
    assert len(parsed) == 3  # script, training and model arguments: --config never leaves a namespace behind
    values = {name: value for part in parsed for name, value in vars(part).items()}
    assert {name: values[name] for name in expected} == expected


@pytest.mark.parametrize("command", ["pretrain", "sft", "dpo", "grpo"])
def test_the_script_arguments_pickle(command, tmp_path):
    """The script-argument dataclasses live at the top of their module, where pickle (multiprocessing, a Trainer's
    saved state) finds them."""
    import pickle

    script_args = parser_of(command).parse_args_and_config(args=["--output_dir", str(tmp_path)])[0]
    again = pickle.loads(pickle.dumps(script_args))
    assert again == script_args and type(again) is type(script_args)
    assert type(again).__module__ == "llada_cli.training_arguments"


@pytest.mark.parametrize("form", ["--config", "--config="])
def test_config_files_still_set_the_flags(form, tmp_path):
    from llada_cli.train import check_config_file

    parser = build_parser("sft")  # a fresh one: a config file changes the parser's defaults
    config = tmp_path / "run.yaml"
    config.write_text("max_steps: 3\nlearning_rate: 0.02\nlora_r: 2\n")
    words = [f"--config={config}"] if form.endswith("=") else ["--config", str(config)]
    argv = check_config_file(parser, [*words, "--output_dir", str(tmp_path / "out"), "--lora-r", "5"])
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    assert (training_args.max_steps, training_args.learning_rate, model_args.lora_r) == (3, 0.02, 5)
    config.write_text("max_steps: 3\nconfig: other.yaml\n")  # --config is listed in the help, yet is no setting
    with pytest.raises(ValueError, match=r"unknown settings \['config'\]"):
        check_config_file(parser, ["--config", str(config)])


# -- --version, the top-level help, unknown commands ------------------------------------------------------------------

def test_version_prints_the_installed_version(capsys):
    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"llada-hf {metadata.version('llada-hf')}"
    assert any(line.split() == ["torch", metadata.version("torch")] for line in lines[1:])
    assert any(line.split() == ["transformers", metadata.version("transformers")] for line in lines[1:])
    result = run_cli("-V")
    assert result.returncode == 0 and result.stdout.splitlines()[0] == lines[0]


def test_the_top_level_help_lists_every_command_in_a_fresh_process():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for name, command in COMMANDS.items():
        assert f"  {name}" in result.stdout and command.summary in result.stdout
    assert "--version" in result.stdout


def test_an_unknown_command_is_one_line_and_status_2():
    result = run_cli("genrate", "--prompt", "hi")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown command 'genrate'" in result.stderr and "did you mean 'generate'?" in result.stderr
    result = run_cli("--verbose")
    assert result.returncode == 2 and "unknown option '--verbose'" in result.stderr


# -- nothing heavy is imported to answer --help ----------------------------------------------------------------------

IMPORTED = "import sys; print(sorted(name for name in {heavy!r} if name in sys.modules))".format(heavy=HEAVY_MODULES)


LIGHT_MODULES = ("main", "help_cache", "_args", "sampler_settings", "train", "grpo", "generate", "evaluate", "publish",
                 "quickstart", "serve", "live_view")


def test_importing_the_cli_imports_no_torch():
    modules = ", ".join(f"llada_cli.{name}" for name in LIGHT_MODULES)
    result = run_cli(code=f"import {modules}; {IMPORTED}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["generate", "--help"], ["chat", "-h"],
                                  ["generate", "--prompt", "hi", "--help"], ["quickstart", "--help"],
                                  ["eval", "--help"], ["publish", "--help"], ["serve", "--help"]])
def test_light_commands_answer_without_importing_torch(argv):
    code = (f"import io, contextlib; from llada_cli.main import main\nwith contextlib.redirect_stdout(io.StringIO()) "
            f"as out: assert main({argv!r}) == 0\nassert 'usage' in out.getvalue() or 'llada-hf' in out.getvalue()\n"
            f"{IMPORTED}")
    result = run_cli(code=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [name for name, command in COMMANDS.items() if command.cached_help
                                     and name != "sft"])  # sft: the same path as pretrain, in-process below
def test_cached_help_comes_without_torch(command, private_help_cache):
    if command != "pretrain":
        parser_of(command)  # skips a command that builds no parser yet
    code = (f"import io, contextlib; from llada_cli.main import main\nwith contextlib.redirect_stdout(io.StringIO()) "
            f"as out: assert main([{command!r}, '--help']) == 0\nprint(out.getvalue(), end='')\n{IMPORTED}")
    for _ in range(3):  # again only when a source file changed meanwhile (the digest differs): a legitimate miss
        sources = help_cache.sources_digest.__wrapped__()
        first = run_cli(command, "--help")  # a miss: builds the parser (pretrain imports transformers), stores it
        assert first.returncode == 0, first.stderr
        assert list(private_help_cache.glob(f"help/{command}-*.json"))
        second = run_cli(code=code)
        assert second.returncode == 0, second.stderr
        if help_cache.sources_digest.__wrapped__() == sources:
            break
    assert second.stdout == first.stdout + "[]\n"


# -- the help cache ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["pretrain", "sft"])
def test_the_cached_help_equals_the_freshly_built_help(command, monkeypatch, capsys):
    fresh = parser_of(command).format_help()
    assert help_cache.load(command) is None
    assert help_text(command) == fresh  # a miss: built and stored
    assert help_cache.load(command) == fresh
    import importlib

    def not_again():
        raise AssertionError("the parser was built although the cache holds its help")

    module, _, builder = COMMANDS[command].parser.partition(":")
    monkeypatch.setattr(importlib.import_module(module), builder, not_again)
    assert main([command, "--output_dir", "x", "--help"]) == 0
    assert capsys.readouterr().out == fresh


def test_a_training_run_warms_the_cache(capsys, tmp_path):
    assert help_cache.load("sft") is None
    assert main(["sft", "--config", str(tmp_path / "missing.yaml")]) == 2  # fails after building its parser
    assert "no such file" in capsys.readouterr().err
    assert help_cache.load("sft") == parser_of("sft").format_help()


class CountingBuilder:
    def __init__(self, text: str = "usage: demo\n"):
        self.text, self.calls = text, 0

    def __call__(self):
        self.calls += 1
        parser = argparse.ArgumentParser(prog="demo", usage=self.text.removeprefix("usage: ").strip())
        return parser


def test_the_cache_is_a_miss_when_anything_in_its_key_changes(private_help_cache, monkeypatch):
    import llada_cli

    build = CountingBuilder()
    text = help_cache.help_text("demo", build)
    assert help_cache.help_text("demo", build) == text and build.calls == 1
    [path] = (private_help_cache / "help").glob("demo-*.json")

    path.write_text("{not json")  # corrupt: rebuilt and rewritten
    assert help_cache.help_text("demo", build) == text and build.calls == 2
    assert json.loads(path.read_text())["text"] == text

    entry = json.loads(path.read_text())
    entry["key"]["libraries"]["transformers"] = "0.0.1"  # rendered under another transformers
    path.write_text(json.dumps(entry))
    assert help_cache.load("demo") is None
    assert help_cache.help_text("demo", build) == text and build.calls == 3

    for change in ("an edited source file", "a new llada-hf release", "another terminal width"):
        with monkeypatch.context() as patch:
            if change == "an edited source file":
                patch.setattr(help_cache, "sources_digest", lambda: "0" * 64)
            elif change == "a new llada-hf release":
                patch.setattr(llada_cli, "version", lambda: "9.9.9")
            else:
                patch.setenv("COLUMNS", "61")  # argparse wraps to the terminal width
            calls = build.calls
            assert help_cache.load("demo") is None, change
            assert help_cache.help_text("demo", build) == text and build.calls == calls + 1, change
            assert help_cache.help_text("demo", build) == text and build.calls == calls + 1, change  # now cached
        help_cache.help_text("demo", build)  # under the real key again
    assert help_cache.load("demo") == text


def test_the_sources_digest_changes_with_any_source_file(tmp_path, monkeypatch):
    package = tmp_path / "demo_package"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "flags.py").write_text("HELP = 'one'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(help_cache, "SOURCE_PACKAGES", ("demo_package",))
    digest = help_cache.sources_digest.__wrapped__
    before = digest()
    assert digest() == before
    (package / "sub" / "flags.py").write_text("HELP = 'two'\n")
    edited = digest()
    assert edited != before
    (package / "sub" / "more.py").write_text("")
    assert digest() not in (before, edited)


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(help_cache.CACHE_ENV, str(blocker))  # its help/ folder cannot be created
    build = CountingBuilder()
    assert help_cache.help_text("demo", build) == build().format_help()
    assert not help_cache.store("demo", "text")
    assert list(tmp_path.iterdir()) == [blocker]  # no temporary file left behind


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(help_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert help_cache.cache_dir() == tmp_path / "mine" / "help"
    monkeypatch.delenv(help_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert help_cache.cache_dir() == tmp_path / "xdg" / "llada-hf" / "help"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert help_cache.cache_dir() == tmp_path / "home" / ".cache" / "llada-hf" / "help"
