"""Masked-diffusion trainers for LLaDA, built on transformers' Trainer and TRL's SFTTrainer and DPOTrainer (VRPO)."""

from .base import DiffusionArguments, DiffusionTrainerMixin
from .objectives import (
    forward_process,
    pretraining_loss,
    random_length_cut,
    sample_p_mask,
    sft_loss,
    weighted_token_losses,
)
from .peft_utils import LLADA_LORA_TARGET_MODULES, with_llada_defaults
from .pretraining import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset
from .sft import DiffusionSFTCollator, MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
from .vrpo import VRPOCollator, VRPOConfig, VRPOTrainer

__all__ = [
    "LLADA_LORA_TARGET_MODULES",
    "DiffusionArguments",
    "DiffusionSFTCollator",
    "DiffusionTrainerMixin",
    "MaskedDiffusionConfig",
    "MaskedDiffusionSFTConfig",
    "MaskedDiffusionSFTTrainer",
    "MaskedDiffusionTrainer",
    "VRPOCollator",
    "VRPOConfig",
    "VRPOTrainer",
    "forward_process",
    "pack_dataset",
    "pretraining_loss",
    "random_length_cut",
    "sample_p_mask",
    "sft_loss",
    "weighted_token_losses",
    "with_llada_defaults",
]
