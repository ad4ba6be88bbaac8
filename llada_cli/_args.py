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
        if isinstance(action, argparse.BooleanOptionalAction) or isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = default
        return f"{text} (default: {shown})"


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                   allow_abbrev=False)


def add_flag(parser, name: str, **kwargs) -> argparse.Action:
    """Add `--name` (underscore spelling) and its dash spelling as one option; `help` is required."""
    if not kwargs.get("help"):
        raise ValueError(f"--{name} needs help text")
    name = name.replace("-", "_")
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return parser.add_argument(*spellings, dest=name, **kwargs)
