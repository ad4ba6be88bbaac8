"""Small models built from configs (nothing is downloaded), and float comparisons sized to float32 rounding."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def word_tokenizer(vocab_size: int = 320, mask_id: int = 300, eos_id: int = 301, bos_id: int = 302):
    """A word-level fast tokenizer over tokens "t0".."t{n-1}" (no training, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=f"t{eos_id}",
        pad_token=f"t{eos_id}",
        bos_token=f"t{bos_id}",
        mask_token=f"t{mask_id}",
    )


# Chat template of the tiny tokenizer: per turn "<role> content <eot>", the generation prompt is the assistant role.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ 't57' if m['role'] == 'user' else 't58' }} {{ m['content'] }} t59 {% endfor %}"
    "{% if add_generation_prompt %}t58 {% endif %}"
)


def tiny_chat_tokenizer():
    """Word tokenizer over the tiny model's 64 ids: mask t60, eos t61, bos t62, user t57, assistant t58, eot t59."""
    tokenizer = word_tokenizer(vocab_size=64, mask_id=60, eos_id=61, bos_id=62)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def words(ids) -> str:
    return " ".join(f"t{i}" for i in ids)


def run_two_cpu_processes(worker: Path, *args) -> list[dict]:
    """Run `worker args...` in 2 CPU processes (torchrun, gloo, one thread each) and fail with the end of stderr when a
    process fails. Returns what each rank saved as `<args[0]>/rank<r>.pt` (empty when the worker saves none)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
         *map(str, args)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    files = [Path(args[0]) / f"rank{rank}.pt" for rank in range(2)]
    return [torch.load(path) for path in files] if all(path.exists() for path in files) else []


# --- float comparisons ----------------------------------------------------------------------------------------------
# One float32 rounding is a relative error of 2**-24 ~ 6e-8. Two routes to the same logits (another attention kernel,
# thread count or CPU instruction set, a cache, another batch layout, the official code on another machine) differ by
# rounding only: measured on the tiny fixtures (3 layers, logits up to ~17) up to 8e-7 of the largest logit. The
# error of a matmul or softmax output follows the size of the terms summed, not of the output, so a logit near 0 is as
# uncertain as the largest one: the absolute tolerance is a fraction of max|expected|. FP32_RTOL = 1e-5 (~170
# roundings) leaves a 12x margin over what was measured; a real bug moves logits far more (scaling one layer's
# attention output by 1 + 1e-4 moves the LLaDA 2 fixture's by 9e-4; a wrong cached position or mask by several units).
FP32_RTOL = 1e-5


def assert_close_fp32(actual: torch.Tensor, expected, rtol: float = FP32_RTOL, msg=None) -> None:
    """Float32 values equal up to rounding: |actual - expected| <= rtol * (|expected| + max |expected|) elementwise."""
    expected = torch.as_tensor(expected)
    atol = rtol * expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=msg)


def assert_same_estimate(actual, expected, rel: float = FP32_RTOL) -> None:
    """Two likelihood estimates of one pair reached by different float routes (batching, padding, a block layout): the
    log-likelihood, a sum of float32 log-probs, within `rel` of its size; the standard error within the same absolute
    amount, since its rounding follows the size of the samples it spreads, not its own (measured 1.5e-5 on a standard
    error of 5.6 beside a log-likelihood of 143)."""
    assert actual.log_likelihood == pytest.approx(expected.log_likelihood, rel=rel)
    assert actual.std_error == pytest.approx(expected.std_error, rel=rel, abs=rel * abs(expected.log_likelihood))
