"""Properties of `generate` over randomly drawn valid settings and randomly drawn padded batches.

Each case draws its settings and its batch from a seeded RNG (the case number), so a failure names a reproducible
case. For every draw: no mask id and no id outside the vocabulary in any output, the prompt is kept, and every row of
the padded batch equals the run of its unpadded prompt alone (with the same per-prompt seed).
"""

import random

import pytest
import torch

MASK, EOS, VOCAB = 300, 301, 320
CASES = 24


def draw_settings(rng: random.Random) -> dict:
    max_new_tokens = rng.choice([4, 8, 12, 16])
    block_length = rng.choice([d for d in (2, 4, 8, 16) if max_new_tokens % d == 0] + [max_new_tokens])
    blocks = max_new_tokens // block_length
    remasking = rng.choice(["low_confidence", "random", "margin", "entropy"])
    settings = dict(
        max_new_tokens=max_new_tokens,
        block_length=block_length,
        steps=blocks * rng.choice([1, 2, block_length]),
        remasking=remasking,
        cfg_scale=rng.choice([0.0, 0.0, 0.5, 2.0]),
        temperature=rng.choice([0.0, 0.0, 0.5, 1.0, 3.0]),
        kv_cache=rng.choice([None, None, "prefix", "dual"]),
        early_exit=rng.random() < 0.3,
        logits_eos_inf=rng.random() < 0.2,
        confidence_eos_eot_inf=rng.random() < 0.2,
        num_return_sequences=rng.choice([1, 1, 2]),
    )
    if settings["temperature"] > 0:
        settings["top_k"] = rng.choice([None, 5])
        settings["top_p"] = rng.choice([None, 0.9])
    if remasking in ("low_confidence", "margin") and rng.random() < 0.4:
        if rng.random() < 0.5:
            settings["threshold"] = rng.choice([0.3, 0.9])
        else:
            settings["factor"] = rng.choice([0.5, 1.0])
    return settings


def draw_batch(rng: random.Random) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """2-4 prompts of 1-8 ordinary ids, left-padded with EOS."""
    prompts = [[rng.randrange(0, MASK) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(2, 4))]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[EOS] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, prompts


@pytest.mark.parametrize("case", range(CASES))
def test_random_settings_on_random_padded_batches(official_model, case):
    rng = random.Random(case)
    settings = draw_settings(rng)
    ids, mask, prompts = draw_batch(rng)
    seeds = [rng.randrange(2**31) for _ in prompts]
    copies = settings["num_return_sequences"]

    out = official_model.generate(ids, attention_mask=mask, seed=seeds, **settings)

    assert out.shape == (len(prompts) * copies, ids.shape[1] + settings["max_new_tokens"]), settings
    assert not (out == MASK).any(), settings
    assert ((out >= 0) & (out < VOCAB)).all(), settings
    assert torch.equal(out[:, : ids.shape[1]], ids.repeat_interleave(copies, dim=0)), settings
    for index, prompt in enumerate(prompts):
        alone = official_model.generate(torch.tensor([prompt]), seed=[seeds[index]], **settings)
        pad = ids.shape[1] - len(prompt)
        for copy in range(copies):
            row = out[index * copies + copy, pad:]
            assert row.tolist() == alone[copy].tolist(), (settings, index, copy)
