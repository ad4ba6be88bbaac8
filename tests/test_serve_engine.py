"""Continuous batching (issue #28): requests join a running batch between denoising steps, leave when they are done,
keep their own settings, and each answer is token for token the one `model.generate` gives the request alone.

The library's step API (`start_denoising`, `denoising_steps`, `finish_denoising`) is checked on the three family
members with staggered joins and mixed settings; the serving engine (`llada_cli.serve_engine.BatchingEngine`) on top
of it for concurrency, its bounds (batch size, queue: 429), cancellation and failures. No timing assertions.
"""

import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from llada_cli.serve_engine import BatchingEngine, EngineJob
from llada_cli.serve_requests import RequestError
from tests.utils import tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
_MODELS = {}


def member(name: str):
    if name not in _MODELS:
        _MODELS[name] = tiny_model() if name == "dense" else AutoModel.from_pretrained(
            FIXTURES / {"moe": "lladamoe-tiny-official", "llada2": "llada2-tiny-official"}[name]).eval()
    return _MODELS[name]


def ids(*tokens):
    return torch.tensor([list(tokens)])


# Mixed settings per member: lengths, block lengths, steps, threshold decoding, sampling with seeds, random
# remasking, n > 1, a key/value cache (which steps on its own, interleaved), CFG.
REQUESTS = {
    "dense": [
        (ids(1, 2, 3, 4), dict(max_new_tokens=8, steps=8, block_length=4)),
        (ids(5, 6, 7, 8, 9, 10, 11), dict(max_new_tokens=16, steps=4, block_length=8, threshold=0.5)),
        (ids(12, 13), dict(max_new_tokens=4, steps=4, temperature=1.0, seed=7, num_return_sequences=2)),
        (ids(14, 15, 16), dict(max_new_tokens=8, steps=8, block_length=2, remasking="random", temperature=0.7,
                               seed=3)),
        (ids(17, 18, 19), dict(max_new_tokens=8, steps=8, block_length=4, kv_cache="prefix")),
        (ids(20, 21), dict(max_new_tokens=12, steps=6, block_length=4, cfg_scale=1.0)),
        (ids(22, 23, 24, 25), dict(max_new_tokens=8, steps=2, block_length=8, factor=1.0)),
    ],
    "moe": [
        (ids(1, 2, 3, 4), dict(max_new_tokens=8, steps=8, block_length=4)),
        (ids(5, 6, 7, 8, 9), dict(max_new_tokens=16, steps=8, block_length=8, threshold=0.3)),
        (ids(10, 11), dict(max_new_tokens=8, steps=8, temperature=0.9, seed=11, num_return_sequences=2)),
        (ids(12, 13, 14), dict(max_new_tokens=4, steps=2)),
    ],
    "llada2": [
        (ids(1, 2, 3, 4, 5), dict(max_new_tokens=8, block_length=4, steps=4)),
        (ids(6, 7), dict(max_new_tokens=16, block_length=8, steps=8, threshold=0.5, kv_cache=None)),
        (ids(8, 9, 10), dict(max_new_tokens=8, block_length=4, steps=4, temperature=1.0, seed=5)),
        (ids(11, 12, 13), dict(max_new_tokens=8, block_length=4, steps=4, editing_threshold=0.9, threshold=0.5)),
    ],
}
MASK = {"dense": {"logits_eos_inf": True}, "moe": {"mask_token_id": 150}, "llada2": {"mask_token_id": 155}}


def settings(name: str, kwargs: dict) -> dict:
    return {**MASK[name], **kwargs}


class ForwardCounter:
    """Counts the forward passes of a model's top module."""

    def __init__(self, model):
        self.count = 0
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, *args):
        self.count += 1

    def __exit__(self, *args):
        self.handle.remove()

    def __enter__(self):
        return self


@pytest.mark.parametrize("name", ["dense", "moe", "llada2"])
def test_staggered_requests_with_mixed_settings_equal_lone_generate(name):
    """Request i joins at step i (mid-batch), each leaves when its own sampler is over (mid-batch too)."""
    model, requests = member(name), REQUESTS[name]
    with ForwardCounter(model) as lone:
        alone = [model.generate(prompt, **settings(name, kwargs)) for prompt, kwargs in requests]
    states, results, joined, left = {}, {}, [], []
    with ForwardCounter(model) as batched:
        tick = 0
        while len(results) < len(requests):
            if tick < len(requests):
                prompt, kwargs = requests[tick]
                states[tick] = model.start_denoising(prompt, **settings(name, kwargs))
                joined.append((tick, sorted(states)))
            running = sorted(states)
            for index, going in zip(running, model.denoising_steps([states[i] for i in running])):
                if not going:
                    results[index] = model.finish_denoising(states.pop(index))
                    left.append((index, tick))
            tick += 1
    for index, expected in enumerate(alone):
        assert torch.equal(results[index], expected), (name, index, requests[index][1])
    assert len({tuple(out[0, -4:].tolist()) for out in alone}) > 1  # the answers differ: the check can fail
    assert any(len(running) > 2 for _, running in joined)  # requests joined while others ran
    assert [index for index, _ in left] != sorted(index for index, _ in left) or len({t for _, t in left}) > 1
    if name != "llada2":  # dense LLaDA and LLaDA-MoE without a cache or CFG share their forward passes
        assert batched.count < lone.count


def test_rows_with_different_block_length_steps_and_threshold_share_one_forward():
    model = member("dense")
    mixed = [(ids(1, 2, 3), dict(max_new_tokens=16, steps=16, block_length=4)),
             (ids(4, 5, 6, 7, 8), dict(max_new_tokens=16, steps=4, block_length=16)),
             (ids(9, 10), dict(max_new_tokens=16, steps=2, block_length=8, threshold=0.9))]
    states = [model.start_denoising(prompt, **settings("dense", kwargs)) for prompt, kwargs in mixed]
    with ForwardCounter(model) as forwards:
        assert model.denoising_steps(states) == [True, True, True]
    assert forwards.count == 1  # three block lengths, step counts and decoders: one forward pass
    # each state took its own first step: the 1-token-per-step schedule, 4 per step, and the threshold's
    committed = [int((state.commit_step == 0).sum()) for state in states]
    assert committed[0] == 1 and committed[1] == 4 and committed[2] >= 1


def test_the_output_head_of_a_shared_pass_runs_on_each_rows_window_only():
    """Rows at different blocks have windows at different columns: the head (hidden -> vocabulary logits, the
    largest activation of a real model) sees each row's window positions, not the union of the windows."""
    model = member("dense")
    requests = [(ids(1, 2, 3), dict(max_new_tokens=16, steps=16, block_length=4)),
                (ids(4, 5, 6, 7), dict(max_new_tokens=16, steps=4, block_length=16, num_return_sequences=2))]
    states = [model.start_denoising(prompt, **settings("dense", kwargs)) for prompt, kwargs in requests]
    for _ in range(9):  # the first request moves to its third block (columns 11-14); the second stays in its only one
        model.denoising_steps(states[:1])
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    try:
        model.denoising_steps(states)
    finally:
        handle.remove()
    assert states[0].window == slice(11, 15) and states[1].window == slice(4, 20)
    # 36 positions, not 3 rows x the 16 columns of the union
    assert [shape[:-1] for shape in seen] == [(1 * 4 + 2 * 16,)]


# Requests whose samplers are of one kind (`_commit_key`) but whose values differ row by row: block lengths, steps and
# window widths (the canvases within 3/4 of each other's width, so they share forwards); temperatures and seeds;
# thresholds; factors; random remasking; n > 1; prompts of different lengths.
SAME_KIND = {
    "exact greedy": [(ids(1, 2, 3), dict(max_new_tokens=16, steps=16, block_length=4)),
                     (ids(4, 5, 6, 7, 8), dict(max_new_tokens=16, steps=8, block_length=16)),
                     (ids(9, 10), dict(max_new_tokens=16, steps=8, block_length=8))],
    "sampling": [(ids(1, 2, 3), dict(max_new_tokens=12, steps=12, block_length=4, temperature=0.7, seed=3)),
                 (ids(4, 5), dict(max_new_tokens=12, steps=6, block_length=12, temperature=1.3, seed=9,
                                  num_return_sequences=2)),
                 (ids(6, 7, 8, 9), dict(max_new_tokens=12, steps=12, block_length=6, temperature=1.0, seed=3))],
    "threshold": [(ids(1, 2, 3), dict(max_new_tokens=16, block_length=4, threshold=0.2)),
                  (ids(4, 5, 6, 7), dict(max_new_tokens=16, block_length=8, threshold=0.05)),
                  (ids(8, 9), dict(max_new_tokens=16, block_length=16, threshold=0.6))],
    "factor": [(ids(1, 2, 3), dict(max_new_tokens=16, block_length=8, factor=1.0)),
               (ids(4, 5), dict(max_new_tokens=16, block_length=16, factor=3.0))],
    "random remasking": [(ids(1, 2), dict(max_new_tokens=8, steps=8, block_length=4, remasking="random", seed=1)),
                         (ids(3, 4, 5), dict(max_new_tokens=8, steps=4, block_length=8, remasking="random", seed=2,
                                             temperature=0.0))],
}


@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize("kind", sorted(SAME_KIND))
def test_rows_of_one_sampler_kind_commit_together_and_each_equals_lone_generate(name, kind, monkeypatch):
    """Their commits are chosen in one set of operations (`_commit_rows`), each row with its own temperature, draws,
    schedule, threshold or factor: every answer (and its commit steps) equals the request's lone `generate`."""
    model, requests = member(name), SAME_KIND[kind]
    alone = [model.generate(prompt, return_dict_in_generate=True, **settings(name, kwargs))
             for prompt, kwargs in requests]
    together = []
    original = type(model)._commit_rows
    monkeypatch.setattr(type(model), "_commit_rows", lambda self, states, logits: (
        together.append(len(states)), original(self, states, logits))[-1])
    states = [model.start_denoising(prompt, return_dict_in_generate=True, **settings(name, kwargs))
              for prompt, kwargs in requests]
    assert len({state.commit_key for state in states}) == 1
    results, running = {}, []
    for tick in range(10_000):  # request i joins at step i: rows at different steps (draws), blocks and windows
        if tick < len(states):
            running.append(tick)
        if not running:
            break
        going = model.denoising_steps([states[i] for i in running])
        for index, still in zip(list(running), going):
            if not still:
                results[index] = model.finish_denoising(states[index])
                running.remove(index)
    assert together and max(together) == len(requests)  # the shared commit ran, over every request
    for index, expected in enumerate(alone):
        assert torch.equal(results[index].sequences, expected.sequences), (kind, index)
        assert torch.equal(results[index].commit_step, expected.commit_step), (kind, index)
    # the requests' answers or commit orders differ from each other: equality with the right one is informative
    assert len({repr((out.sequences[0, -12:].tolist(), out.commit_step[0, -12:].tolist())) for out in alone}) == len(
        alone)


def test_a_logits_processor_commits_its_own_rows():
    """A request with logits processors (or top-k / top-p) has no commit key: it commits alone, as generate."""
    from transformers import LogitsProcessorList, NoBadWordsLogitsProcessor

    model = member("dense")
    banned = LogitsProcessorList([NoBadWordsLogitsProcessor([[7], [9]], eos_token_id=1)])
    plain = dict(max_new_tokens=8, steps=8, block_length=4)
    alone = [model.generate(ids(1, 2, 3), logits_processor=banned, **settings("dense", plain)),
             model.generate(ids(4, 5), top_k=3, temperature=1.0, seed=2, **settings("dense", plain)),
             model.generate(ids(6, 7, 8), **settings("dense", plain))]
    states = [model.start_denoising(ids(1, 2, 3), logits_processor=banned, **settings("dense", plain)),
              model.start_denoising(ids(4, 5), top_k=3, temperature=1.0, seed=2, **settings("dense", plain)),
              model.start_denoising(ids(6, 7, 8), **settings("dense", plain))]
    assert states[0].commit_key is None and states[1].commit_key is None and states[2].commit_key is not None
    while any(model.denoising_steps(states)):
        pass
    for state, expected in zip(states, alone):
        assert torch.equal(model.finish_denoising(state), expected)


def test_a_group_with_narrower_windows_than_another_request_in_its_pass_commits_as_alone():
    """One forward pass, two commit groups: a request with a logits processor and a window of 8 beside two greedy
    ones with windows of 4. The pass's logits are 8 columns wide; the greedy group keeps its own 4 (this step used to
    fail every request in it on a shape mismatch)."""
    from transformers import LogitsProcessorList, NoBadWordsLogitsProcessor

    model = member("dense")
    banned = LogitsProcessorList([NoBadWordsLogitsProcessor([[7], [9]], eos_token_id=1)])
    requests = [(ids(1, 2, 3), dict(max_new_tokens=8, steps=8, block_length=8, logits_processor=banned)),
                (ids(4, 5), dict(max_new_tokens=8, steps=8, block_length=4)),
                (ids(6, 7, 8), dict(max_new_tokens=8, steps=8, block_length=4))]
    alone = [model.generate(prompt, **settings("dense", kwargs)) for prompt, kwargs in requests]
    states = [model.start_denoising(prompt, **settings("dense", kwargs)) for prompt, kwargs in requests]
    with ForwardCounter(model) as forwards:
        while any(model.denoising_steps(states)):
            pass
    assert forwards.count == 8  # every step in one shared pass
    for state, expected in zip(states, alone):
        assert torch.equal(model.finish_denoising(state), expected)


def test_canvases_of_very_different_widths_run_in_separate_forwards():
    """Padding a 10-position canvas to 68 would waste most of the pass: widths within 3/4 of each other share."""
    model = member("dense")
    prompts = [(ids(1, 2), 8), (ids(3, 4), 8), (ids(5, 6, 7, 8), 64), (ids(9, 10, 11), 56)]  # widths 10 10 68 59
    states = [model.start_denoising(prompt, **settings("dense", dict(max_new_tokens=n, steps=n)))
              for prompt, n in prompts]
    with ForwardCounter(model) as forwards:
        model.denoising_steps(states)
    assert forwards.count == 2


@pytest.mark.parametrize("name", ["dense", "llada2"])
def test_the_step_api_records_no_autograd_graph_where_grad_mode_is_on(name):
    """`generate` runs under no_grad; the step API must too: an engine calls it from a thread of its own, where grad
    mode is on (it is per thread), and a step that recorded a graph would keep every activation of its forward."""
    model, (prompt, kwargs) = member(name), REQUESTS[name][0]
    grad_in_forward = []
    handle = model.register_forward_pre_hook(lambda *args: grad_in_forward.append(torch.is_grad_enabled()))
    try:
        with torch.enable_grad():
            state = model.start_denoising(prompt, **settings(name, kwargs))
            while model.denoising_steps([state])[0]:
                assert not state.canvas.requires_grad
            out = model.finish_denoising(state)
    finally:
        handle.remove()
    assert grad_in_forward and not any(grad_in_forward)
    assert torch.equal(out, model.generate(prompt, **settings(name, kwargs)))


# --- the engine -----------------------------------------------------------------------------------------------------


def engine_job(name, prompt, kwargs):
    return EngineJob({"input_ids": prompt, **settings(name, kwargs)}, rows=kwargs.get("num_return_sequences", 1))


class StepLog:
    """Wraps a model's `denoising_steps` to record the rows stepped together; `gate` (an Event) holds each step."""

    def __init__(self, model, monkeypatch, gate=None):
        self.rows, self.gate, self.steps = [], gate, model.denoising_steps
        monkeypatch.setattr(model, "denoising_steps", self)

    def __call__(self, states):
        if self.gate is not None:
            assert self.gate.wait(60)
        self.rows.append(sum(state.canvas.shape[0] for state in states))
        return self.steps(states)


@pytest.mark.parametrize("name", ["dense", "llada2"])
def test_the_engine_answers_concurrent_requests_as_generate_alone(name, monkeypatch):
    model, requests = member(name), REQUESTS[name]
    alone = [model.generate(prompt, **settings(name, kwargs)) for prompt, kwargs in requests]
    gate = threading.Event()
    log = StepLog(model, monkeypatch, gate)
    engine = BatchingEngine(model, max_batch_size=64, max_queue=64)
    try:
        jobs = [engine_job(name, prompt, kwargs) for prompt, kwargs in requests]
        for job in jobs:
            engine.submit(job)
        gate.set()
        results = [job.future.result(timeout=120) for job in jobs]
    finally:
        engine.shutdown()
    for index, (result, expected) in enumerate(zip(results, alone)):
        assert torch.equal(result, expected), (name, index)
    assert max(log.rows) > 2  # they ran together


def test_max_batch_size_bounds_the_rows_stepped_together_and_waiting_requests_join_as_rows_leave(monkeypatch):
    model = member("dense")
    log = StepLog(model, monkeypatch)
    engine = BatchingEngine(model, max_batch_size=3, max_queue=64)
    try:
        jobs = [engine_job("dense", ids(1 + i, 2 + i), dict(max_new_tokens=4 * (1 + i % 3), steps=4 * (1 + i % 3)))
                for i in range(7)]
        jobs.append(engine_job("dense", ids(9, 9), dict(max_new_tokens=4, steps=4, num_return_sequences=2)))
        for job in jobs:
            engine.submit(job)
        for job in jobs:
            job.future.result(timeout=120)
    finally:
        engine.shutdown()
    assert max(log.rows) == 3 and 3 in log.rows  # full batches, never more


def test_a_full_queue_answers_429_with_retry_after(monkeypatch):
    model = member("dense")
    gate = threading.Event()
    StepLog(model, monkeypatch, gate)
    engine = BatchingEngine(model, max_batch_size=1, max_queue=1)
    try:
        running = engine_job("dense", ids(1, 2), dict(max_new_tokens=4, steps=4))
        engine.submit(running)
        for _ in range(600):  # the engine takes the first request (and then waits at the gate)
            if engine.load()["running"] == 1:
                break
            threading.Event().wait(0.05)
        waiting = engine_job("dense", ids(3, 4), dict(max_new_tokens=4, steps=4))
        engine.submit(waiting)
        with pytest.raises(RequestError) as refused:
            engine.submit(engine_job("dense", ids(5, 6), dict(max_new_tokens=4, steps=4)))
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        assert "--max_queue 1" in refused.value.message
        gate.set()
        assert running.future.result(timeout=60) is not None and waiting.future.result(timeout=60) is not None
    finally:
        gate.set()
        engine.shutdown()


def test_a_cancelled_request_leaves_at_the_next_step_and_the_others_are_unaffected(monkeypatch):
    model = member("dense")
    long = (ids(1, 2, 3), dict(max_new_tokens=32, steps=32, block_length=8))
    short = (ids(4, 5), dict(max_new_tokens=8, steps=8))
    expected = model.generate(short[0], **settings("dense", short[1]))
    gate = threading.Event()
    log = StepLog(model, monkeypatch, gate)
    engine = BatchingEngine(model, max_batch_size=8, max_queue=8)
    try:
        leaving, staying = engine_job("dense", *long), engine_job("dense", *short)
        engine.submit(leaving)
        engine.submit(staying)
        leaving.cancelled.set()
        gate.set()
        assert leaving.future.result(timeout=60) is None  # left early: no answer
        assert torch.equal(staying.future.result(timeout=60), expected)
    finally:
        engine.shutdown()
    assert len(log.rows) < 32  # the 32-step request did not run to its end


def test_a_request_whose_settings_generate_refuses_fails_alone():
    model = member("dense")
    engine = BatchingEngine(model)
    try:
        bad = engine_job("dense", ids(1, 2), dict(max_new_tokens=8, steps=3, block_length=4))
        good = engine_job("dense", ids(1, 2), dict(max_new_tokens=8, steps=8))
        engine.submit(bad)
        engine.submit(good)
        with pytest.raises(ValueError, match="steps"):
            bad.future.result(timeout=60)
        assert good.future.result(timeout=60).shape == (1, 10)
    finally:
        engine.shutdown()
