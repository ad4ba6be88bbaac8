import math

import pytest
import torch

from trainers import forward_process, pretraining_loss, random_length_cut, sample_p_mask, sft_loss
from trainers import weighted_token_losses

MASK = 60


def test_p_mask_lies_in_eps_to_one():
    p = sample_p_mask(10_000, eps=1e-3, generator=torch.Generator().manual_seed(0))
    assert p.min() >= 1e-3 and p.max() < 1.0
    assert abs(p.mean().item() - (1 + 1e-3) / 2) < 0.01


def test_low_discrepancy_p_mask_is_evenly_spread():
    eps = 1e-3
    p = sample_p_mask(8, eps, low_discrepancy=True, generator=torch.Generator().manual_seed(0))
    t = ((p - eps) / (1 - eps)).sort().values
    torch.testing.assert_close(t.diff(), torch.full((7,), 1 / 8), rtol=0, atol=1e-5)


def test_each_token_is_masked_with_its_rows_probability():
    ids = torch.randint(0, 50, (3, 20_000))
    p_mask = torch.tensor([0.1, 0.5, 0.9])
    noisy, masked = forward_process(ids, MASK, p_mask, generator=torch.Generator().manual_seed(0))
    fraction = masked.float().mean(-1)
    assert torch.allclose(fraction, p_mask, atol=0.015)
    assert torch.equal(noisy[masked], torch.full((int(masked.sum()),), MASK))
    assert torch.equal(noisy[~masked], ids[~masked])


def test_tokens_that_are_not_maskable_are_never_masked():
    ids = torch.randint(0, 50, (64, 30))
    maskable = torch.arange(30)[None] >= torch.randint(1, 29, (64, 1))  # a prompt of random length per row
    for seed in range(50):
        p_mask = sample_p_mask(64, generator=torch.Generator().manual_seed(seed))
        noisy, masked = forward_process(ids, MASK, p_mask, maskable=maskable,
                                        generator=torch.Generator().manual_seed(seed))
        assert not masked[~maskable].any()
        assert torch.equal(noisy[~maskable], ids[~maskable])


def crafted_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    masked = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    p_mask = torch.tensor([0.6, 0.25])
    return logits, targets, masked, p_mask


def hand_ce(logits, targets, row, position):
    row_logits = logits[row, position].tolist()
    log_z = math.log(sum(math.exp(v) for v in row_logits))
    return log_z - row_logits[targets[row, position]]


def test_pretraining_loss_equals_the_reference_formula_by_hand():
    logits, targets, masked, p_mask = crafted_batch()
    expected = sum(
        hand_ce(logits, targets, b, i) / p_mask[b].item() for b in range(2) for i in range(5) if masked[b, i]
    ) / (2 * 5)
    loss = pretraining_loss(weighted_token_losses(logits, targets, masked, p_mask), sequence_length=5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the same from flat logits of the masked positions only (what the trainers compute)
    flat = weighted_token_losses(logits[masked], targets, masked, p_mask)
    assert pretraining_loss(flat, 5).item() == pytest.approx(expected, rel=1e-6)


def test_sft_loss_divides_each_row_by_its_answer_length_then_by_batch():
    logits, targets, masked, p_mask = crafted_batch()
    answer_lengths = torch.tensor([4, 2])
    expected = sum(
        sum(hand_ce(logits, targets, b, i) / p_mask[b].item() for i in range(5) if masked[b, i]) / answer_lengths[b]
        for b in range(2)
    ) / 2
    loss = sft_loss(weighted_token_losses(logits, targets, masked, p_mask), answer_lengths)
    assert loss.item() == pytest.approx(float(expected), rel=1e-6)


def test_random_length_cut_keeps_a_prefix_of_random_length():
    ids = torch.arange(40).view(2, 20)
    assert random_length_cut(ids, 0.0) is ids
    lengths = {random_length_cut(ids, 1.0, torch.Generator().manual_seed(s)).shape[1] for s in range(200)}
    assert min(lengths) >= 1 and max(lengths) <= 20 and len(lengths) > 10
    cut = random_length_cut(ids, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(cut, ids[:, : cut.shape[1]])


def test_eps_outside_the_unit_interval_raises():
    with pytest.raises(ValueError, match="eps must be in"):
        sample_p_mask(4, eps=0.0)
