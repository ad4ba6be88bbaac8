"""Seeded, counter-based random draws shared by LLaDA's sampler, its likelihood estimator and the trainers.

A draw depends only on (row seed, step, position[, lane]), never on the other rows of the batch or on how many draws
came before it: a padded batch samples exactly what each row samples alone, and the same seed reproduces the same
answer on any batch composition. This file travels with checkpoints (the generation and likelihood files import it).
"""

import torch

U32 = 0xFFFFFFFF  # values of the 32-bit hash live in [0, 2**32)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds) on int64 tensors holding values in [0, 2**32).

    The multiplier is below 2**31, so every product stays below 2**63: no signed overflow.
    """
    x = (((x >> 16) ^ x) * 0x45D9F3B) & U32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & U32
    return (x >> 16) ^ x


def counter_uniform(row_seed: torch.Tensor, step: int, position: torch.Tensor, lanes: int | None = None) -> torch.Tensor:
    """Uniform float64 noise in (0, 1) that depends only on (row seed, step, position[, lane]).

    Unlike a stream RNG, a row's noise does not depend on which other rows share the batch, so a padded batch samples
    exactly what each row samples alone. row_seed (b,), position (b, W) positions counted from the row's first real
    token; returns (b, W) or, with `lanes` (the vocabulary size), (b, W, lanes).

    Each coordinate enters through an addition with an odd constant followed by a full hash round (XOR-combining
    structured inputs left measurable correlations that slowed training down).
    """
    key = mix32((row_seed[:, None] + step * 0x3C6EF372 + 0x165667B1) & U32)
    key = mix32((key + position * 0x27D4EB2F) & U32)
    if lanes is not None:
        key = key[..., None] + torch.arange(lanes, device=key.device) * 0x61C88647
    key = mix32((key + 0x2545F491) & U32)
    high = mix32((key + 0x68E31DA4) & U32)
    low = mix32((high + 0x1B56C4E9) & U32)
    # 53 random bits, shifted by half a unit so that the result is never 0 or 1.
    return ((high << 21) + (low >> 11)).double().add_(0.5).mul_(2.0**-53)


def row_seeds(num_prompts: int, copies: int, seed: int | list[int] | None, device=None) -> torch.Tensor:
    """One 32-bit seed per generated row, (num_prompts * copies,), rows ordered prompt-major as `repeat_interleave`.

    Each prompt gets a seed (from `seed`: one per prompt, or derived from one int and the prompt's index, or from one
    draw of torch's global RNG when None) and each of its copies a seed mixed from it and the copy index: rows are
    independent samples, and a row depends only on its prompt's seed, never on the rest of the batch.
    """
    if isinstance(seed, (list, tuple)):
        if len(seed) != num_prompts:
            raise ValueError(f"`seed` holds {len(seed)} seeds for {num_prompts} prompts; pass one per prompt.")
        prompt_seeds = torch.tensor([int(x) & U32 for x in seed], dtype=torch.long, device=device)
    else:
        base = int(torch.randint(0, 2**31, (1,))) if seed is None else int(seed) & U32
        index = torch.arange(num_prompts, device=device)
        prompt_seeds = mix32((mix32(torch.full_like(index, base)) + index * 0x9E3779B1) & U32)
    copy_index = torch.arange(num_prompts * copies, device=device) % copies
    return mix32((mix32(prompt_seeds.repeat_interleave(copies)) + copy_index * 0x85EBCA6B + 0x27D4EB2F) & U32)


__all__ = ["U32", "counter_uniform", "mix32", "row_seeds"]
