"""The `llada-hf` command-line application: quickstart, pretrain, sft, dpo, grpo, generate, chat, eval, publish, serve.

The four layers of llada-hf, each importing only the ones before it:
`modeling_llada` (the model) -> `hub_cards` (cards and publishing) -> `trainers` (training, which writes cards, and
the lm-eval model) -> `llada_cli` (this package: a module per command family, the live view, local data, loading
helpers).

Importing this package is cheap (no torch): `llada-hf --help` and `--version` answer at once.
"""


def version() -> str:
    """The installed llada-hf version."""
    from importlib import metadata

    try:
        return metadata.version("llada-hf")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
