"""The training settings mean the same on every transformers release we support (5.20 up to the newest)."""

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
