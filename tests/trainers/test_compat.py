"""The training settings mean the same on every transformers release we support (the range pyproject.toml declares)."""

import pytest

from tests.trainers.test_pretraining import config, repetitive_corpus
from tests.utils import tiny_model
from trainers import MaskedDiffusionTrainer


@pytest.mark.parametrize("enabled", [False, True])
def test_activation_checkpointing_reaches_the_model_on_every_release(tmp_path, enabled):
    """transformers 5.23 renamed gradient checkpointing to activation checkpointing; before it, the Trainer read
    only `gradient_checkpointing` and our `activation_checkpointing=True` was silently ignored."""
    model = tiny_model().train()
    trainer = MaskedDiffusionTrainer(model, config(tmp_path, max_steps=1, activation_checkpointing=enabled),
                                     train_dataset=repetitive_corpus(16))
    trainer.train()
    checkpointed = [block.gradient_checkpointing for block in model.model.transformer.blocks]
    assert checkpointed == [enabled] * len(checkpointed)


@pytest.mark.parametrize("config_class", ["MaskedDiffusionSFTConfig", "VRPOConfig", "DiffuGRPOConfig"])
def test_the_trl_configs_choose_bf16_and_pinned_memory_by_where_training_runs(config_class, monkeypatch):
    """One rule for every TRL-based config: bf16 and pinned memory only when training runs on a CUDA GPU, so
    `use_cpu=True` on a GPU machine trains in fp32 (bf16 on a CPU is ~25x slower); explicit values are kept.
    (Training on the mocked GPU itself cannot be built here: TrainingArguments then sets the CUDA device.)"""
    import torch

    import trainers

    config = getattr(trainers, config_class)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, training told to use the CPU
    args = config(output_dir="unused", use_cpu=True)
    assert (args.bf16, args.dataloader_pin_memory, args.activation_checkpointing) == (False, False, False)
    args = config(output_dir="unused", use_cpu=True, activation_checkpointing=True)
    assert args.bf16 is False and args.activation_checkpointing is True
