import math
import statistics
from itertools import combinations

import pytest
import torch

from modeling_llada.likelihood_llada import exact_masks, monte_carlo_masks
from tests.utils import assert_same_estimate, tiny_model


@pytest.fixture(scope="module")
def pair(reference):
    case = reference["log_likelihood"]
    return case["prompt"], case["answer"]


def test_exact_mode_equals_the_reference_bound(official_model, reference, pair):
    estimate = official_model.log_likelihood(*pair, exact=True)
    # a sum of float32 log-probs: compared relatively (measured <= 6e-8 of the value against the official code's)
    assert estimate.log_likelihood == pytest.approx(reference["log_likelihood"]["exact_bound"], rel=1e-5)
    assert estimate.std_error == 0.0 and estimate.answer_length == 5


def test_exact_mode_equals_a_subset_enumeration_by_hand():
    model = tiny_model()
    prompt, answer = [5, 9, 2], [7, 11, 3]
    expected = 0.0
    for count in (1, 2, 3):
        for subset in combinations(range(3), count):
            ids = torch.tensor([prompt + answer])
            noisy = ids.clone()
            for j in subset:
                noisy[0, 3 + j] = 60
            log_probs = model(noisy).logits.log_softmax(-1)[0]
            total = sum(log_probs[3 + j, answer[j]].item() for j in subset)
            expected += (1 / 3) * (3 / count) * total / math.comb(3, count)
    assert model.log_likelihood(prompt, answer, exact=True).log_likelihood == pytest.approx(expected, rel=1e-5)


def test_monte_carlo_mean_is_within_four_standard_errors_of_the_exact_bound(official_model, reference, pair):
    values = [official_model.log_likelihood(*pair, mc_num=128, seed=s).log_likelihood for s in range(60)]
    standard_error = statistics.stdev(values) / math.sqrt(len(values))
    assert abs(statistics.mean(values) - reference["log_likelihood"]["exact_bound"]) < 4 * standard_error


def test_monte_carlo_spread_is_no_larger_than_the_references(official_model, reference, pair):
    values = [official_model.log_likelihood(*pair, mc_num=128, seed=s).log_likelihood for s in range(60)]
    assert statistics.stdev(values) <= reference["log_likelihood"]["reference_mc128_std"]


def test_reported_standard_error_does_not_understate_the_spread(official_model, pair):
    estimates = [official_model.log_likelihood(*pair, mc_num=128, seed=s) for s in range(40)]
    spread = statistics.stdev(e.log_likelihood for e in estimates)
    assert statistics.mean(e.std_error for e in estimates) >= spread


def test_same_seed_same_value_other_seed_other_value(official_model, pair):
    first = official_model.log_likelihood(*pair, seed=3).log_likelihood
    assert official_model.log_likelihood(*pair, seed=3).log_likelihood == first
    assert official_model.log_likelihood(*pair, seed=4).log_likelihood != first


def test_batched_pairs_of_different_lengths_equal_one_pair_at_a_time(official_model):
    pairs = [([131, 198, 149], [196, 24, 241, 43]), ([7], [12, 13]), ([1, 2, 3, 4, 5, 6, 7], [99, 98, 97, 96, 95, 94])]
    for cfg_scale in (0.0, 1.0):
        batched = official_model.log_likelihood(pairs, mc_num=32, batch_size=24, cfg_scale=cfg_scale, seed=1)
        for (prompt, answer), estimate in zip(pairs, batched):
            alone = official_model.log_likelihood(prompt, answer, mc_num=32, cfg_scale=cfg_scale, seed=1)
            assert_same_estimate(estimate, alone)


def test_single_token_answers_are_exact_with_one_sample(official_model):
    exact = official_model.log_likelihood([3, 4, 5], [17], exact=True).log_likelihood
    assert official_model.log_likelihood([3, 4, 5], [17], mc_num=1).log_likelihood == pytest.approx(exact, abs=1e-9)
    log_probs = official_model(torch.tensor([[3, 4, 5, 300]])).logits.log_softmax(-1)
    assert exact == pytest.approx(log_probs[0, 3, 17].item(), rel=1e-5)


def test_cfg_changes_the_conditional_estimate(official_model, pair):
    plain = official_model.log_likelihood(*pair, exact=True).log_likelihood
    guided = official_model.log_likelihood(*pair, exact=True, cfg_scale=1.0).log_likelihood
    assert guided != pytest.approx(plain, abs=1e-3)


def test_monte_carlo_masks_are_stratified_and_balanced():
    masks, counts = monte_carlo_masks(5, 100, seed=7)
    assert masks.shape == (100, 5)
    assert torch.equal(masks.sum(-1), counts)
    assert counts.min() >= 1 and counts.max() <= 5
    assert counts.bincount(minlength=6)[1:].tolist() == [20] * 5  # every count equally often
    for group in range(20):  # groups of 5 share a count and mask every position `count` times
        block = masks[group * 5 : (group + 1) * 5]
        if counts[group * 5 : (group + 1) * 5].unique().numel() == 1:
            assert torch.equal(block.sum(0), torch.full((5,), int(counts[group * 5])))


def test_exact_masks_weights_sum_to_one_per_position():
    masks, weights = exact_masks(4)
    assert masks.shape == (15, 4)
    # a position lies in C(L-1, l-1) subsets of size l, so its total weight is sum_l C(L-1, l-1) / (l C(L, l)) = 1
    torch.testing.assert_close((masks.double() * weights[:, None]).sum(0), torch.ones(4, dtype=torch.float64))


def test_perplexity_is_the_exponential_of_the_unconditional_bound(official_model):
    text = [131, 198, 149, 49, 57, 3]
    bound = official_model.log_likelihood([], text, mc_num=64, seed=0).log_likelihood
    assert official_model.perplexity(text, mc_num=64, seed=0) == pytest.approx(math.exp(-bound / len(text)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt_ids=[1, 2], answer_ids=[]), "at least one token"),
    (dict(prompt_ids=[1, 300], answer_ids=[4]), "mask token id"),
    (dict(prompt_ids=[1], answer_ids=list(range(13)), exact=True), "exceeds 12"),
    (dict(prompt_ids=[1], answer_ids=[2], mc_num=0), "mc_num"),
    (dict(prompt_ids=torch.tensor([1.7, 2.2]), answer_ids=[4]), "prompt_ids must hold integer token ids.*float32"),
    (dict(prompt_ids=[1, 2], answer_ids=[4.9]), r"answer_ids must hold integer token ids, got \[4.9\]"),
    (dict(prompt_ids=[1, 2], answer_ids=[320, 5]), r"Token ids \[320\] are outside the model's vocabulary \[0, 320\)"),
    (dict(prompt_ids=[-1, 2], answer_ids=[5]), r"Token ids \[-1\] are outside"),
    (dict(prompt_ids=list(range(250)), answer_ids=list(range(10))), "260 tokens, more than the model's max_sequence"),
    (dict(prompt_ids=[1], answer_ids=[2], cfg_scale=float("nan")), "cfg_scale must be a finite number"),
])
def test_invalid_requests_raise(official_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        official_model.log_likelihood(**kwargs)
