"""Small models built from configs: nothing is downloaded."""

import torch

from modeling_llada import LLaDAConfig, LLaDAModelLM


def tiny_config(**overrides) -> LLaDAConfig:
    """A small random LLaDA: 2 layers, d 32, vocab 64 (mask 60, eos 61, bos 62)."""
    values = dict(
        d_model=32,
        n_heads=4,
        n_kv_heads=4,
        n_layers=2,
        mlp_hidden_size=64,
        vocab_size=64,
        embedding_size=64,
        max_sequence_length=128,
        mask_token_id=60,
        eos_token_id=61,
        pad_token_id=61,
        bos_token_id=62,
    )
    values.update(overrides)
    return LLaDAConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> LLaDAModelLM:
    torch.manual_seed(seed)
    return LLaDAModelLM(tiny_config(**overrides)).eval()
