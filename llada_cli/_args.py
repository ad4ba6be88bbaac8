"""Flag conventions of every `llada-hf` command (argparse only: importing this costs nothing).

- Every flag takes both spellings, `--max_new_tokens` and `--max-new-tokens`, as TRL's parser does; help lists the
  underscore spelling first (the one the README and TRL's docs use).
- Every flag has help text; the help shows its default (when it has one) and its choices.
- Abbreviations are off: `--steps` never silently means `--steps_per_block`.
"""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends `(default: X)` to a flag's help when X is not None."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or "default" in text or not action.option_strings
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if isinstance(action, (argparse.BooleanOptionalAction, BooleanFlag)) or isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = default
        return f"{text} (default: {shown})"


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


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                   allow_abbrev=False)


def add_flag(parser, name: str, **kwargs) -> argparse.Action:
    """Add `--name` (underscore spelling) and its dash spelling as one option; `help` is required."""
    if not kwargs.get("help"):
        raise ValueError(f"--{name} needs help text")
    name = name.replace("-", "_")
    if kwargs.get("action") is argparse.BooleanOptionalAction:
        kwargs["action"] = BooleanFlag
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return parser.add_argument(*spellings, dest=name, **kwargs)
