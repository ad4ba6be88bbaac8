"""Masked-diffusion trainers for LLaDA (pre-training, SFT, LoRA). Not yet implemented: see the project issues."""
