"""LLaDA 2.x block-diffusion `generate` against the official code's recorded outputs, and its own invariants."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from modeling_llada import LLaDA2MoeConfig, LLaDA2MoeModelLM  # importing the package registers the Auto classes
from modeling_llada.generation_llada2 import LLaDA2GenerationConfig
from tests.utils import tiny_model

FIXTURE = Path(__file__).parent.parent / "fixtures" / "llada2-tiny-official"
REFERENCE = json.loads((FIXTURE / "reference_outputs.json").read_text())
CASES = REFERENCE["generate"]
MASK, EOS = 155, 128  # the fixture's ids (README): mask not in the config, EOS also the pad
OURS = {"gen_length": "max_new_tokens", "mask_id": "mask_token_id", "eos_id": "eos_token_id",
        "eos_early_stop": "early_exit"}


@pytest.fixture(scope="module")
def model():
    return AutoModel.from_pretrained(FIXTURE).eval()


class CountForwards:
    """Counts the forward passes of a model (patched on the instance for the duration of a `with`)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        original = self.model.forward

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        self.model.forward = counted
        return self

    def __exit__(self, *exc):
        del self.model.forward


def official_result(output: torch.Tensor, prompt_length: int) -> list[int]:
    """What the official call returns: the generated part, cut after the first EOS."""
    generated = output[0, prompt_length:].tolist()
    return generated[: generated.index(EOS) + 1] if EOS in generated else generated


@pytest.mark.parametrize("kv_cache", ["prefix", None])
@pytest.mark.parametrize("names", ["official", "ours"])
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_every_official_generate_case_token_for_token(model, case, names, kv_cache):
    kwargs = dict(case["kwargs"])
    if names == "ours":
        kwargs = {OURS.get(key, key): value for key, value in kwargs.items()}
    prompt = torch.tensor(case["input_ids"])
    with CountForwards(model) as counter:
        if names == "official":
            out = model.generate(inputs=prompt, kv_cache=kv_cache, **kwargs)
        else:
            out = model.generate(prompt, kv_cache=kv_cache, **kwargs)
    gen_length = case["kwargs"]["gen_length"]
    assert out.shape == (1, prompt.shape[1] + gen_length)
    assert torch.equal(out[:, : prompt.shape[1]], prompt)
    assert official_result(out, prompt.shape[1]) == case["generated_ids"][0]
    # The cached sampler adds a finished block's keys/values with the next block's first step: same forward count.
    assert counter.calls == case["stats"]["forward_calls"]


def test_the_cache_is_on_by_default_and_use_cache_false_turns_it_off(model):
    case = CASES[0]
    prompt = torch.tensor(case["input_ids"])
    assert model.generation_config.kv_cache == "prefix"
    shapes = []
    original = model.forward

    def recording(input_ids, **kwargs):
        shapes.append(input_ids.shape[1])
        return original(input_ids, **kwargs)

    model.forward = recording
    try:
        cached = model.generate(inputs=prompt, **case["kwargs"])
        cached_shapes, shapes[:] = list(shapes), []
        uncached = model.generate(inputs=prompt, use_cache=False, **case["kwargs"])
    finally:
        del model.forward
    assert torch.equal(cached, uncached)
    # Block 32, prompt 7 + 64 new: 3 blocks. Uncached steps run the whole prefix (32, 64, then 96 columns); cached
    # steps run one block, except a block's first step, which also adds the finished block's keys/values.
    uncached_shapes = shapes
    assert set(uncached_shapes) == {32, 64, 96} and len(cached_shapes) == len(uncached_shapes)
    block_starts = [i > 0 and uncached_shapes[i] > uncached_shapes[i - 1] for i in range(len(uncached_shapes))]
    assert cached_shapes == [64 if start else 32 for start in block_starts]


def test_dict_output_fields_follow_the_llada_convention(model):
    case = next(c for c in CASES if "pure top-k" in c["name"])
    prompt = torch.tensor(case["input_ids"])
    out = model.generate(inputs=prompt, return_dict_in_generate=True, output_history=True, **case["kwargs"])
    answer = case["generated_ids"][0]
    length = len(answer) - 1  # before the EOS
    assert answer[-1] == EOS
    assert out.answer_lengths.tolist() == [length] and out.stopped.tolist() == [True]
    prompt_length = prompt.shape[1]
    assert out.sequences[0, prompt_length : prompt_length + length + 1].tolist() == answer
    assert (out.sequences[0, prompt_length + length + 1 :] == EOS).all()  # padding (pad id = EOS) after the EOS
    kept = prompt_length + length + 1
    assert torch.equal(out.raw_sequences[:, :kept], out.sequences[:, :kept])
    assert (out.commit_step[0, :prompt_length] == -1).all() and (out.commit_step[0, prompt_length:] >= 0).all()
    # one canvas per forward; the blocks a finished row never ran are filled with the pad id (after its EOS)
    last = out.history[-1]
    assert out.history.shape[0] == case["stats"]["forward_calls"]
    assert torch.equal(torch.where(last == MASK, EOS, last), out.raw_sequences) and (last == MASK).any()
    assert out.tokens_per_forward.item() == pytest.approx(
        (last[0, prompt_length:] != MASK).sum().item() / case["stats"]["forward_calls"]
    )
    # no EOS in the answer: the canvas ran out ("length")
    first = CASES[0]
    full = model.generate(inputs=torch.tensor(first["input_ids"]), return_dict_in_generate=True, **first["kwargs"])
    assert full.stopped.tolist() == [False] and full.answer_lengths.tolist() == [first["kwargs"]["gen_length"]]


def test_token_editing_rewrites_written_tokens(model):
    """LLaDA 2.1: with editing on, some position is written twice (its history changes after it left the mask)."""
    case = next(c for c in CASES if c["name"].startswith("2.1: editing, 2 blocks"))
    prompt = torch.tensor(case["input_ids"])
    out = model.generate(inputs=prompt, output_history=True, **case["kwargs"])
    history = out.history[:, 0, prompt.shape[1]:]
    written = history != MASK
    rewritten = (written[:-1] & written[1:] & (history[:-1] != history[1:])).any()
    assert rewritten
    off = dict(case["kwargs"], editing_threshold=1.01)
    history = model.generate(inputs=prompt, output_history=True, **off).history[:, 0, prompt.shape[1]:]
    written = history != MASK
    assert not (written[:-1] & written[1:] & (history[:-1] != history[1:])).any()


SETTINGS = [
    dict(max_new_tokens=20, block_length=8, steps=4, threshold=0.5),
    dict(max_new_tokens=13, block_length=4, steps=2, threshold=None, early_exit=True),
    dict(max_new_tokens=20, block_length=8, threshold=0.7, editing_threshold=0.5, max_post_steps=3),
    dict(max_new_tokens=16, block_length=4, threshold=0.9, editing_threshold=0.3, max_post_steps=4, early_exit=True),
    dict(max_new_tokens=12, block_length=4, steps=4, temperature=1.0, top_k=8, seed=[1, 2, 3, 4]),
]


@pytest.mark.parametrize("eos", [EOS, 159], ids=["eos-128", "rare-eos"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items())[:60])
def test_a_left_padded_batch_generates_what_each_row_generates_alone_with_and_without_cache(model, settings, eos):
    generator = torch.Generator().manual_seed(0)
    lengths = [3, 9, 17, 5]  # prompts ending in different blocks, one spanning two whole blocks
    prompts = [torch.randint(0, 128, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    ids = torch.full((len(prompts), width), EOS)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = prompt, 1
    common = dict(settings, mask_token_id=MASK, eos_token_id=eos, pad_token_id=EOS)
    batched = {cache: model.generate(ids, attention_mask=mask, kv_cache=cache, **common) for cache in ("prefix", None)}
    assert torch.equal(batched["prefix"], batched[None])
    assert torch.equal(batched["prefix"][:, :width], ids)
    for row, prompt in enumerate(prompts):
        alone = dict(common, seed=[settings["seed"][row]]) if "seed" in settings else common
        single = model.generate(prompt[None], **alone)
        assert torch.equal(single[0, len(prompt):], batched["prefix"][row, width:]), row


def test_official_names_are_aliases_and_disagreeing_spellings_raise(model):
    prompt = torch.tensor(CASES[1]["input_ids"])
    common = dict(block_length=8, steps=4, threshold=0.5)
    ours = model.generate(prompt, max_new_tokens=16, mask_token_id=MASK, eos_token_id=EOS, early_exit=True, **common)
    official = model.generate(inputs=prompt, gen_length=16, mask_id=MASK, eos_id=EOS, eos_early_stop=True, **common)
    assert torch.equal(ours, official)
    both = model.generate(prompt, gen_length=16, max_new_tokens=16, mask_id=MASK, mask_token_id=MASK, **common)
    assert torch.equal(both, ours)
    for official_name, our_name, values in (("gen_length", "max_new_tokens", (16, 8)), ("mask_id", "mask_token_id",
                                            (MASK, 150)), ("eos_id", "eos_token_id", (EOS, 3)),
                                            ("eos_early_stop", "early_exit", (True, False))):
        kwargs = dict(mask_token_id=MASK, max_new_tokens=16, **common)
        kwargs.update({official_name: values[0], our_name: values[1]})
        with pytest.raises(ValueError, match=f"`{official_name}=.*`{our_name}="):
            model.generate(prompt, **kwargs)
    with pytest.raises(ValueError, match="use_cache=True.*kv_cache=None"):
        model.generate(prompt, use_cache=True, kv_cache=None, mask_token_id=MASK, max_new_tokens=8)


def test_llada_generate_accepts_the_official_names_and_rejects_llada2_settings():
    model = tiny_model()
    prompt = torch.tensor([[1, 2, 3, 4]])
    ours = model.generate(prompt, max_new_tokens=8, steps=8, block_length=4, mask_token_id=60, eos_token_id=61,
                          early_exit=True)
    official = model.generate(prompt, gen_length=8, steps=8, block_length=4, mask_id=60, eos_id=61,
                              eos_early_stop=True)
    assert torch.equal(ours, official)
    with pytest.raises(ValueError, match="`gen_length=8`.*`max_new_tokens=16`"):
        model.generate(prompt, gen_length=8, max_new_tokens=16)
    with pytest.raises(ValueError, match="editing_threshold.*LLaDA 2"):
        model.generate(prompt, max_new_tokens=8, editing_threshold=0.9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kv_cache="dual"), "kv_cache"),
        (dict(cfg_scale=1.0), "cfg_scale"),
        (dict(factor=1.0), "factor"),
        (dict(remasking="random"), "remasking"),
        (dict(editing_threshold=-0.1), "editing_threshold"),
        (dict(max_post_steps=-1), "max_post_steps"),
        (dict(block_length=0), "block_length"),
    ],
)
def test_bad_llada2_settings_raise_naming_the_argument(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.generate(torch.tensor([[1, 2, 3]]), mask_token_id=MASK, max_new_tokens=8, **kwargs)


def test_generation_defaults_carry_the_real_mask_and_eos_ids():
    config = LLaDA2MoeConfig(vocab_size=157184, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                             num_experts=4, num_experts_per_tok=2, n_group=2, topk_group=1, num_shared_experts=1)
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(config)
    assert isinstance(model.generation_config, LLaDA2GenerationConfig)
    resolved = model._resolve_generation_config(None, {})
    assert (resolved.mask_token_id, resolved.eos_token_id) == (156895, 156892)
    # the official defaults of the sampler
    assert (resolved.block_length, resolved.steps, resolved.threshold) == (32, 32, 0.95)
    assert resolved.editing_threshold is None and resolved.kv_cache == "prefix"


def test_the_generation_config_round_trips(tmp_path):
    config = LLaDA2GenerationConfig(editing_threshold=0.9, max_post_steps=8, threshold=0.5, kv_cache=None)
    config.save_pretrained(tmp_path)
    loaded = LLaDA2GenerationConfig.from_pretrained(tmp_path)
    assert (loaded.editing_threshold, loaded.max_post_steps, loaded.threshold, loaded.kv_cache) == (0.9, 8, 0.5, None)


class RecordingStreamer:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("variant", ["2.0", "2.1"])
def test_the_streamer_gets_the_prompt_then_exactly_the_answer(model, variant):
    case = next(c for c in CASES if c["variant"] == f"llada{variant}" and c["generated_ids"][0][-1] == EOS)
    prompt = torch.tensor(case["input_ids"])
    streamer = RecordingStreamer()
    model.generate(inputs=prompt, streamer=streamer, **case["kwargs"])
    assert streamer.ended and streamer.chunks[0] == case["input_ids"][0]
    assert [token for chunk in streamer.chunks[1:] for token in chunk] == case["generated_ids"][0]
