"""Masked-diffusion trainers for LLaDA, built on transformers' Trainer (and, for SFT, TRL's SFTTrainer)."""

from .objectives import (
    forward_process,
    pretraining_loss,
    random_length_cut,
    sample_p_mask,
    sft_loss,
    weighted_token_losses,
)
from .pretraining import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset

__all__ = [
    "MaskedDiffusionConfig",
    "MaskedDiffusionTrainer",
    "forward_process",
    "pack_dataset",
    "pretraining_loss",
    "random_length_cut",
    "sample_p_mask",
    "sft_loss",
    "weighted_token_losses",
]
