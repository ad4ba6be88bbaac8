"""The differences between the transformers / TRL releases this package supports (5.20 up to the newest 5.x), in one
place; the rest of the training code follows the newest conventions."""

import warnings
from contextlib import contextmanager
from dataclasses import fields

from transformers import TrainingArguments

# transformers 5.23 renamed gradient checkpointing to activation checkpointing (`activation_checkpointing`,
# `activation_checkpointing_kwargs`; the old names became deprecated aliases). Older releases know only the old names.
HAS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}


def checkpointing_settings(enabled: bool) -> dict:
    """The TrainingArguments / SFTConfig keyword that turns activation checkpointing on or off, under the name the
    installed transformers reads."""
    return {"activation_checkpointing" if HAS_ACTIVATION_CHECKPOINTING else "gradient_checkpointing": enabled}


def sync_checkpointing_names(args) -> None:
    """Before `TrainingArguments.__post_init__`: on releases without `activation_checkpointing`, carry the value of our
    `activation_checkpointing` field over to the `gradient_checkpointing` one the Trainer reads there."""
    if not HAS_ACTIVATION_CHECKPOINTING:
        args.activation_checkpointing = args.gradient_checkpointing = bool(
            args.activation_checkpointing or args.gradient_checkpointing
        )


@contextmanager
def quiet_upstream_deprecations():
    """Upstream code calls names transformers >= 5.23 deprecates, with a FutureWarning about code the user cannot
    change: PEFT (<= 0.21) reads `model.is_gradient_checkpointing` when it wraps a model (every LoRA run), and TRL's
    `unwrap_model_for_generation` turns `gradient_checkpointing_disable` / `_enable` around every GRPO rollout when
    activation checkpointing is on. Silence exactly those while our trainers wrap the model or generate."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*`gradient_checkpointing_(enable|disable)` is deprecated",
                                category=FutureWarning)
        yield
