"""Where the training code meets upstream, in one place: every name `trainers/` imports from inside transformers, TRL,
accelerate or lm-eval (rather than from their top-level namespace) comes through here, with what we rely on, and
the differences between the transformers / TRL releases this package supports (the range pyproject.toml declares);
the rest of the training code follows the newest conventions.

The private methods and attributes of the upstream trainers that our trainers override or read (`_save_checkpoint`,
`_prepare_dataset`, `_generate_single_turn`, `_metrics`, ...) are inventoried with these imports in
tests/test_upstream_internals.py, which checks each against the installed releases.
"""

from dataclasses import fields

# accelerate.utils.is_peft_model(model): True for a PEFT-wrapped model (VRPO and diffu-GRPO then use the adapter-free
# base as the reference instead of a frozen copy).
from accelerate.utils import is_peft_model
from transformers import TrainingArguments

# transformers.trainer_utils.PREFIX_CHECKPOINT_DIR: "checkpoint", the prefix of the Trainer's `checkpoint-N` folders;
# rotate_checkpoints(output_dir=, save_total_limit=, best_model_checkpoint=, use_mtime=): the Trainer's rotation,
# which our atomic checkpoints run after the rename (trainers/checkpoints.py).
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

# transformers.utils.logging.get_logger: loggers that follow transformers' verbosity settings.
from transformers.utils import logging

# trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=, max_length=, truncation_mode=, pad_to_multiple_of=):
# TRL's preference collator; its `torch_call` gives rows [chosen..., rejected...] with `input_ids`, `attention_mask`
# and `completion_mask`, which VRPO's collator extends.
from trl.trainer.dpo_trainer import DataCollatorForPreference

# trl.trainer.utils.use_adapter(model, adapter_name=): a context that runs a PeftModel with the named adapter (None:
# adapters off), VRPO's reference under LoRA.
from trl.trainer.utils import use_adapter

# The FutureWarnings upstream code raises about its own deprecated calls (PEFT wrapping a model, TRL's rollouts),
# silenced while our trainers wrap the model or generate: one filter, kept with the publishing code below us, which
# needs it while it merges adapters.
from hub_cards.compat import quiet_upstream_deprecations

__all__ = [
    "HAS_ACTIVATION_CHECKPOINTING",
    "PREFIX_CHECKPOINT_DIR",
    "DataCollatorForPreference",
    "checkpointing_settings",
    "is_peft_model",
    "lm_eval_model_api",
    "logging",
    "quiet_upstream_deprecations",
    "rotate_checkpoints",
    "sync_checkpointing_names",
    "use_adapter",
]


def lm_eval_model_api():
    """lm-eval's model base class and registry decorator, `(LM, register_model)`: `lm_eval.api.model.LM` (its
    `__init__` sets `_device`, read by its `device` property, and `cache_hook`; subclasses implement `loglikelihood`,
    `loglikelihood_rolling` and `generate_until`) and `lm_eval.api.registry.register_model(*names)`. Imported when
    called: lm-eval is the optional `eval` extra, which the rest of the training code does not need."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    return LM, register_model


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

