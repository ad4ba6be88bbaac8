"""Masked-diffusion trainers for LLaDA, built on transformers' Trainer and TRL's SFTTrainer, DPOTrainer (VRPO) and
GRPOTrainer (diffu-GRPO)."""

from modeling_llada.mask_id import resolve_mask_token_id

from .base import DiffusionArguments, DiffusionTrainerMixin
from .objectives import (
    block_diffusion_attention_mask,
    block_diffusion_inputs,
    block_diffusion_loss,
    forward_process,
    pretraining_loss,
    random_length_cut,
    sample_p_mask,
    sft_loss,
    weighted_token_losses,
)
from .peft_utils import (
    LLADA2_LORA_TARGET_MODULES,
    LLADA_LORA_TARGET_MODULES,
    LLADA_MOE_LORA_TARGET_MODULES,
    default_lora_target_modules,
    lora_target_parameters,
    with_llada_defaults,
)
from .pretraining import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset
from .sft import DiffusionSFTCollator, MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
from .grpo import DiffuGRPOConfig, DiffuGRPOTrainer, exact_match_reward
from .vrpo import VRPOCollator, VRPOConfig, VRPOTrainer

__all__ = [
    "LLADA2_LORA_TARGET_MODULES",
    "LLADA_LORA_TARGET_MODULES",
    "LLADA_MOE_LORA_TARGET_MODULES",
    "DiffuGRPOConfig",
    "DiffuGRPOTrainer",
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
    "block_diffusion_attention_mask",
    "block_diffusion_inputs",
    "block_diffusion_loss",
    "default_lora_target_modules",
    "exact_match_reward",
    "forward_process",
    "lora_target_parameters",
    "pack_dataset",
    "pretraining_loss",
    "random_length_cut",
    "resolve_mask_token_id",
    "sample_p_mask",
    "sft_loss",
    "weighted_token_losses",
    "with_llada_defaults",
]
