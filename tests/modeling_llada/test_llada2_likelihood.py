"""LLaDA 2's likelihood bound is block diffusion's: checked on the tiny official-format fixture against a hand
computation that never builds the [noisy; clean] layout (one block-causal forward pass per block and mask subset,
the decoding-time layout), plus the invariants the batched estimator must keep."""

import math
from itertools import combinations
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tests.utils import assert_same_estimate, tiny_model

LLADA2_FIXTURE = Path(__file__).parent.parent / "fixtures" / "llada2-tiny-official"
MASK = 155  # the fixture's mask id (README); the official config does not store it


@pytest.fixture(scope="module")
def llada2():
    return AutoModel.from_pretrained(LLADA2_FIXTURE, mask_token_id=MASK).eval()


def block_causal_log_probs(model, canvas: list[int], block: int, prompt_length: int = 0, cfg_scale: float = 0.0):
    """log-softmax (float64) of one canvas under the block-causal mask (a block sees itself and the blocks before it);
    with `cfg_scale`, guided by the same canvas with its first `prompt_length` tokens masked."""
    blocks = torch.arange(len(canvas)) // block
    causal = (blocks[None, :] <= blocks[:, None])[None, None]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([canvas]), attention_mask=causal).logits[0].double()
        if cfg_scale > 0:
            blank = [MASK] * prompt_length + canvas[prompt_length:]
            uncond = model(input_ids=torch.tensor([blank]), attention_mask=causal).logits[0].double()
            logits = uncond + (cfg_scale + 1) * (logits - uncond)
    return logits.log_softmax(-1)


def hand_block_bound(model, prompt: list[int], answer: list[int], block: int, cfg_scale: float = 0.0) -> float:
    """sum over the blocks k holding answer tokens (blocks counted from the first prompt token) of the exact
    masked-diffusion bound of block k's n answer tokens: for every non-empty subset S of them, weight
    1 / (|S| C(n, |S|)) times sum_{i in S} log p(x_i) from the canvas [prompt + earlier blocks, clean; block k with S
    masked] (later blocks absent)."""
    sequence, total = prompt + answer, 0.0
    for start in range(len(prompt) // block * block, len(sequence), block):
        end = min(start + block, len(sequence))
        targets = range(max(start, len(prompt)), end)
        for count in range(1, len(targets) + 1):
            for subset in combinations(targets, count):
                canvas = sequence[:start] + [MASK if i in subset else sequence[i] for i in range(start, end)]
                log_probs = block_causal_log_probs(model, canvas, block, len(prompt), cfg_scale)
                weight = 1 / (count * math.comb(len(targets), count))
                total += weight * sum(log_probs[i, sequence[i]].item() for i in subset)
    return total


@pytest.mark.parametrize(
    "prompt, answer, block",
    [
        ([5, 6, 7], [8, 9, 10, 11], 2),  # the answer starts inside the prompt's last block, ends in a partial block
        ([5, 6, 7, 12], [8, 9, 10, 11, 13], 4),  # the prompt fills its block: the answer starts a fresh one
        ([], [8, 9, 10, 11, 13], 3),  # unconditional
        ([5, 6], [8, 9, 10], 1),  # one token per block: the exact autoregressive log-likelihood
        ([5, 6, 7], [8, 9], 32),  # everything in one block: the bidirectional bound
    ],
)
def test_exact_bound_equals_the_block_by_block_hand_computation(llada2, prompt, answer, block):
    estimate = llada2.log_likelihood(prompt, answer, exact=True, block_length=block)
    assert estimate.std_error == 0 and estimate.answer_length == len(answer)
    # a sum of float32 log-probs reached through another layout: equal up to rounding, compared relatively (measured
    # <= 2e-7 of the value, e.g. 1.1e-5 on -59.8 with SSE-only kernels)
    assert estimate.log_likelihood == pytest.approx(hand_block_bound(llada2, prompt, answer, block), rel=1e-5)


def test_cfg_follows_the_hand_computation(llada2):
    prompt, answer = [5, 6, 7], [8, 9, 10]
    estimate = llada2.log_likelihood(prompt, answer, exact=True, block_length=2, cfg_scale=1.5)
    hand = hand_block_bound(llada2, prompt, answer, 2, cfg_scale=1.5)
    assert estimate.log_likelihood == pytest.approx(hand, rel=1e-5)  # rounding only, as above
    assert abs(hand - hand_block_bound(llada2, prompt, answer, 2)) > 1e-3  # the guidance matters


def test_one_token_per_block_is_the_autoregressive_chain_rule(llada2):
    """block_length=1: each answer token given every token before it, under a causal mask; exact with one sample."""
    prompt, answer = [5, 6], [8, 9, 10]
    sequence = prompt + answer
    with torch.no_grad():
        causal = torch.ones(len(sequence), len(sequence), dtype=torch.bool).tril()[None, None]
        total = 0.0
        for i in range(len(prompt), len(sequence)):
            canvas = sequence[:i] + [MASK]
            logits = llada2(input_ids=torch.tensor([canvas]), attention_mask=causal[..., : i + 1, : i + 1]).logits
            total += logits[0, i].double().log_softmax(-1)[sequence[i]].item()
    estimate = llada2.log_likelihood(prompt, answer, mc_num=1, block_length=1)
    assert estimate.std_error == 0 and estimate.log_likelihood == pytest.approx(total, rel=1e-5)


def test_the_default_block_length_is_the_generate_block_length(llada2):
    assert llada2._likelihood_block_length() == 32 and tiny_model()._likelihood_block_length() is None
    prompt, answer = list(range(20, 60)), [8, 9, 10, 11]  # 40 + 4 tokens: the answer sits in the second block of 32
    default = llada2.log_likelihood(prompt, answer, exact=True).log_likelihood
    assert default == pytest.approx(llada2.log_likelihood(prompt, answer, exact=True, block_length=32).log_likelihood,
                                    abs=1e-9)
    assert default == pytest.approx(hand_block_bound(llada2, prompt, answer, 32), rel=1e-5)
    assert abs(default - llada2.log_likelihood(prompt, answer, exact=True, block_length=64).log_likelihood) > 1e-4
    llada2.generation_config.block_length = 8
    try:
        assert llada2.log_likelihood(prompt, answer, exact=True).log_likelihood == pytest.approx(
            llada2.log_likelihood(prompt, answer, exact=True, block_length=8).log_likelihood, abs=1e-9)
    finally:
        llada2.generation_config.block_length = 32


def test_padded_batches_equal_one_pair_at_a_time(llada2):
    pairs = [([5, 6, 7], [8, 9, 10, 11, 13, 14]), ([], [20, 21, 22]), ([5] * 9, [30, 31]), ([40, 41], [42])]
    for kwargs in (dict(mc_num=6, batch_size=4, seed=3), dict(exact=True, batch_size=5),
                   dict(mc_num=2, batch_size=3, cfg_scale=1.0)):
        batched = llada2.log_likelihood(pairs, block_length=4, **kwargs)
        for pair, estimate in zip(pairs, batched):
            alone = llada2.log_likelihood(*pair, block_length=4, **kwargs)
            assert_same_estimate(estimate, alone)


def test_monte_carlo_is_within_four_standard_errors_of_the_exact_bound(llada2):
    prompt, answer = [5, 6, 7], [8, 9, 10, 11, 13, 14, 15, 16, 17]  # blocks of 4: 1, 4 and 4 answer tokens
    exact = llada2.log_likelihood(prompt, answer, exact=True, block_length=4).log_likelihood
    estimate = llada2.log_likelihood(prompt, answer, mc_num=32, batch_size=32, block_length=4)
    assert 0 < estimate.std_error < 1.0
    assert abs(estimate.log_likelihood - exact) < 4 * estimate.std_error + 1e-6
    other_seed = llada2.log_likelihood(prompt, answer, mc_num=32, batch_size=32, block_length=4, seed=1)
    assert other_seed.log_likelihood != estimate.log_likelihood


def test_exact_counts_answer_tokens_per_block():
    """The 2**n - 1 subsets are enumerated per block: a 20-token answer in blocks of 4 is exact; one block of 13 is
    refused, naming block_length."""
    model = tiny_model()
    model.log_likelihood([1, 2], list(range(3, 23)), exact=True, block_length=4)
    with pytest.raises(ValueError, match="block_length"):
        model.log_likelihood([1, 2], list(range(3, 16)), exact=True, block_length=16)


def test_one_block_is_the_bidirectional_bound_on_dense_llada():
    """A block holding prompt + answer runs the [noisy; clean] layout with a 4-D mask and must give what the plain
    bidirectional pass gives (same masks: the first block draws the bidirectional estimator's noise)."""
    model = tiny_model()
    pairs = [([1, 2, 3], [4, 5, 6, 7, 8]), ([9], [10, 11])]
    for kwargs in (dict(exact=True), dict(mc_num=8, seed=2)):
        plain = model.log_likelihood(pairs, **kwargs)
        blocked = model.log_likelihood(pairs, block_length=64, **kwargs)
        for a, b in zip(plain, blocked):
            assert_same_estimate(b, a)


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "32"])
def test_bad_block_length_is_refused(value):
    with pytest.raises(ValueError, match="block_length"):
        tiny_model().log_likelihood([1, 2], [3, 4], block_length=value)


def test_perplexity_takes_the_block_length(llada2):
    text = [8, 9, 10, 11, 13]
    value = llada2.perplexity(text, mc_num=4, block_length=2)
    expected = llada2.log_likelihood([], text, mc_num=4, block_length=2).log_likelihood
    assert value == pytest.approx(math.exp(-expected / len(text)), rel=1e-9)
    assert value != pytest.approx(llada2.perplexity(text, mc_num=4), rel=1e-6)  # the default: one block of 32


def test_greedy_check_masks_each_block_given_the_clean_blocks_before_it(llada2):
    """lm-eval's is_greedy under block diffusion: a continuation built block by block from the argmax of its fully
    masked block (given the clean prompt and earlier blocks) is greedy; changing its last token is not."""
    prompt, block, greedy = [5, 6, 7], 2, []
    for end in (4, 6):  # blocks [7 a0] and [a1 a2]
        canvas = prompt + greedy + [MASK] * (end - len(prompt + greedy))
        greedy += block_causal_log_probs(llada2, canvas, block)[len(prompt + greedy) : end].argmax(-1).tolist()
    changed = greedy[:-1] + [(greedy[-1] + 1) % 150]
    pairs = [(prompt, greedy), (prompt, changed), ([5], greedy + [9, 9, 9])]
    batched = llada2._block_greedy(pairs, block_length=block)
    assert batched[:2] == [True, False]
    assert batched == [llada2._block_greedy([pair], block_length=block)[0] for pair in pairs]  # padding changes nothing


def test_lm_eval_scores_llada2_block_by_block(llada2, tmp_path):
    """lm-eval on the official folder: the value is the model's block bound (default blocks of 32), is_greedy the
    block-wise check; the continuation below is greedy block by block but not when masked all at once."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    import trainers.lm_eval_llada as lm_eval_llada
    from tests.utils import word_tokenizer

    prompt, greedy = list(range(10, 40)), []  # 30 prompt tokens: the continuation straddles blocks 0 and 1
    for end in (32, 36):
        canvas = prompt + greedy + [MASK] * (end - len(prompt + greedy))
        greedy += block_causal_log_probs(llada2, canvas, 32)[len(prompt + greedy) : end].argmax(-1).tolist()
    with torch.no_grad():
        at_once = llada2(input_ids=torch.tensor([prompt + [MASK] * len(greedy)])).logits[0, len(prompt) :]
    assert at_once.argmax(-1).tolist() != greedy  # the check below tells the two rules apart
    word_tokenizer(vocab_size=160, mask_id=MASK, eos_id=128, bos_id=129).save_pretrained(tmp_path / "tokenizer")
    lm = lm_eval_llada.LLaDAEvalModel(pretrained=str(LLADA2_FIXTURE), tokenizer=str(tmp_path / "tokenizer"),
                                      mc_num="4", batch_size="2", device="cpu")
    text = lambda ids: " ".join(f"t{i}" for i in ids)  # noqa: E731
    changed = greedy[:-1] + [(greedy[-1] + 1) % 150]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=(text(prompt), " " + text(answer)), idx=i)
                for i, answer in enumerate([greedy, changed])]
    (value, is_greedy), (_, changed_is_greedy) = lm.loglikelihood(requests)
    assert (is_greedy, changed_is_greedy) == (True, False)
    expected = llada2.log_likelihood(prompt, greedy, mc_num=4, seed=0, block_length=32).log_likelihood
    assert value == pytest.approx(expected, rel=1e-5)
