"""Library `generate` across the family members (issue #30): every setting either takes effect or is refused, the
members agree on context length and masks in prompts, and errors name the cause.

As tests/test_bad_inputs.py: one table of bad inputs, each row (id, what to call, the exception type, a regex the
message must match), then the cases that need more than one call (warnings, results that must change).
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, GenerationConfig

from modeling_llada import LLaDAGenerationConfig
from modeling_llada.generation_llada2 import LLaDA2GenerationConfig
from tests.utils import tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
IDS = torch.tensor([[1, 2, 3, 4]])
SETTINGS = dict(max_new_tokens=8, steps=8)
_MODELS = {}


def model():
    """One tiny dense LLaDA for the table (vocab 64: mask 60, eos/pad 61, bos 62; max_sequence_length 128)."""
    if "dense" not in _MODELS:
        _MODELS["dense"] = tiny_model()
    return _MODELS["dense"]


def llada2():
    """The tiny LLaDA 2 checkpoint (vocab 160, mask 155 not in its config, eos/pad 128, max_position_embeddings 512)."""
    if "llada2" not in _MODELS:
        _MODELS["llada2"] = AutoModel.from_pretrained(FIXTURES / "llada2-tiny-official").eval()
    return _MODELS["llada2"]


def moe():
    """The tiny LLaDA-MoE checkpoint (vocab 160, mask 150 not in its config, max_position_embeddings 512)."""
    if "moe" not in _MODELS:
        _MODELS["moe"] = AutoModel.from_pretrained(FIXTURES / "lladamoe-tiny-official").eval()
    return _MODELS["moe"]


def generate(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return model().generate(ids, **{**SETTINGS, **kwargs})


def generate2(**kwargs):
    ids = kwargs.pop("input_ids", IDS)
    return llada2().generate(ids, **{"max_new_tokens": 8, "mask_token_id": 155, **kwargs})


def long_prompt(length: int) -> torch.Tensor:
    return torch.arange(length)[None] % 100 + 1


# --- the table ---------------------------------------------------------------------------------------------------

TABLE = [
    # A transformers GenerationConfig with a field nobody knows: refused as the same typo as a kwarg is.
    ("config typo: dense", lambda: generate(generation_config=GenerationConfig(stepz=4)), ValueError,
     r"unknown fields \['stepz=4'\]"),
    ("config typo: llada2", lambda: generate2(generation_config=GenerationConfig(max_new_tokens=8, treshold=0.9)),
     ValueError, r"unknown fields \['treshold=0.9'\]"),
    ("config: llada2-only field on dense", lambda: generate(generation_config=GenerationConfig(editing_threshold=0.9)),
     ValueError, r"editing_threshold=0.9.*LLaDA 2"),
    # Context length: every member refuses a prompt + answer beyond its positions, in the same words.
    ("too long: dense", lambda: generate(input_ids=long_prompt(124)), ValueError,
     r"prompt length 124 \+ max_new_tokens 8 = 132 exceeds the model's max_sequence_length \(128\)"),
    ("too long: llada2", lambda: generate2(input_ids=long_prompt(500), max_new_tokens=32), ValueError,
     r"prompt length 500 \+ max_new_tokens 32 = 532 exceeds the model's max_position_embeddings \(512\)"),
    ("too long: llada2 by max_length", lambda: generate2(input_ids=long_prompt(500), max_new_tokens=None,
                                                        max_length=520), ValueError,
     r"500 \+ max_new_tokens 20 = 520 exceeds the model's max_position_embeddings \(512\)"),
    ("too long: moe", lambda: moe().generate(long_prompt(500), max_new_tokens=32, mask_token_id=150), ValueError,
     r"prompt length 500 \+ max_new_tokens 32 = 532 exceeds the model's max_position_embeddings \(512\)"),
    # A mask inside a LLaDA 2 prompt cannot be filled by its block-causal sampler: refused, not left in the output.
    ("mask in prompt: llada2", lambda: generate2(input_ids=torch.tensor([[1, 155, 3, 4]])), ValueError,
     r"mask token \(155\) at 1 prompt position.*cannot fill"),
    ("mask in prompt: llada2 batch", lambda: llada2().generate(
        torch.tensor([[128, 5, 155], [7, 155, 155]]), attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]),
        max_new_tokens=8, mask_token_id=155), ValueError, r"mask token \(155\) at 3 prompt position"),
    # Ids: the dtype is named; string or bool special ids are refused naming the field.
    *[(f"ids dtype {dtype}", lambda dtype=dtype: generate(input_ids=IDS.to(dtype)), ValueError,
       rf"input_ids must be integer ids of dtype torch.int64 \(or torch.int32\), got dtype {dtype}")
      for dtype in (torch.int8, torch.int16, torch.uint8, torch.bool, torch.float16)],
    ("ids dtype int8: llada2", lambda: generate2(input_ids=IDS.to(torch.int8)), ValueError, "dtype torch.int8"),
    ("ids as a list", lambda: generate(input_ids=[[1, 2, 3]]), TypeError, "input_ids must be a torch tensor.*list"),
    ("mask id string", lambda: generate(mask_token_id="60"), ValueError,
     r"`mask_token_id` must be an integer id >= 0 \(or None\), got '60' \(str\)"),
    ("mask id string: llada2", lambda: generate2(mask_token_id="155"), ValueError,
     r"`mask_token_id` must be an integer id >= 0 \(or None\), got '155'"),
    ("mask id bool", lambda: generate(mask_token_id=True), ValueError, r"`mask_token_id`.*got True \(bool\)"),
    ("mask id negative", lambda: generate(mask_token_id=-1), ValueError, r"`mask_token_id`.*got -1"),
    ("eos id list with a string", lambda: generate(eos_token_id=[61, "62"]), ValueError,
     r"`eos_token_id` must be an integer id >= 0 or a list of them.*\[61, '62'\]"),
    ("pad id float", lambda: generate(pad_token_id=61.0), ValueError, r"`pad_token_id`.*61.0 \(float\)"),
    ("bos id in a saved config", lambda: LLaDAGenerationConfig(bos_token_id="62"), ValueError, "`bos_token_id`"),
    # LLaDA 2's refusals name what LLaDA 2 takes, never a setting it refuses in turn.
    ("llada2 remasking random", lambda: generate2(remasking="random"), ValueError,
     r"^(?!.*margin).*remasking='random'.*one value it takes is 'low_confidence'"),
    ("llada2 remasking margin in config", lambda: LLaDA2GenerationConfig(remasking="margin"), ValueError,
     r"^(?!.*factor).*'low_confidence'"),
    ("llada2 factor", lambda: generate2(factor=0.5), ValueError,
     r"^(?!.*not both)`factor=0.5`: LLaDA 2's sampler does not take `factor`; it commits by `threshold`"),
]


@pytest.mark.parametrize("name, call, error, message", TABLE, ids=[row[0] for row in TABLE])
def test_bad_generate_input_gets_a_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- do_sample: saved only when set; under do_sample=False the sampling settings warn -----------------------------


def greedy(m, **kwargs):
    return m.generate(IDS, **SETTINGS, **kwargs)


def samples(m, seeds=range(6), **kwargs):
    return {tuple(m.generate(IDS, temperature=1.5, seed=seed, **SETTINGS, **kwargs)[0].tolist()) for seed in seeds}


def test_a_saved_generation_config_holds_do_sample_only_when_it_was_set(tmp_path):
    model().save_pretrained(tmp_path / "unset")
    assert "do_sample" not in json.loads((tmp_path / "unset" / "generation_config.json").read_text())
    LLaDAGenerationConfig(do_sample=False).save_pretrained(tmp_path / "set")
    assert json.loads((tmp_path / "set" / "generation_config.json").read_text())["do_sample"] is False
    LLaDA2GenerationConfig().save_pretrained(tmp_path / "llada2")
    assert "do_sample" not in json.loads((tmp_path / "llada2" / "generation_config.json").read_text())


def test_temperature_samples_after_a_save_and_reload(tmp_path):
    model().save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    drawn = samples(reloaded)
    assert drawn == samples(model())  # the same samples as before saving
    assert len(drawn) > 1  # and they are samples: the seeds give different answers


def test_a_checkpoint_saved_with_do_sample_false_and_no_sampling_setting_loads_as_unset(tmp_path):
    model().save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "do_sample": False}))  # what earlier saves wrote
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.generation_config.do_sample is None
    assert torch.equal(greedy(reloaded), greedy(model()))  # still greedy by default
    assert samples(reloaded) == samples(model()) and len(samples(reloaded)) > 1  # and a temperature samples


def test_a_saved_do_sample_false_beside_a_temperature_is_kept_and_warns(tmp_path, caplog):
    model().save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "do_sample": False, "temperature": 0.61}))
    with caplog.at_level("WARNING"):
        reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert reloaded.generation_config.do_sample is False
    assert "`do_sample` is False, so generation is greedy and temperature=0.61 is not used" in caplog.text
    assert torch.equal(greedy(reloaded), greedy(model()))


@pytest.mark.parametrize("member", ["dense", "llada2"])
def test_sampling_settings_under_do_sample_false_warn_as_transformers_does(member, caplog):
    m, extra = (model(), {}) if member == "dense" else (llada2(), {"mask_token_id": 155})
    expected = greedy(m, **extra)
    with caplog.at_level("WARNING"):
        out = greedy(m, do_sample=False, temperature=0.73 if member == "dense" else 0.74, seed=3, **extra)
    assert torch.equal(out, expected)
    assert "`do_sample` is False, so generation is greedy and temperature=0.7" in caplog.text
    assert "Pass do_sample=True" in caplog.text
    caplog.clear()
    plain = GenerationConfig(do_sample=False, top_k=5 if member == "dense" else 6, **SETTINGS)
    with caplog.at_level("WARNING"):
        assert torch.equal(m.generate(IDS, generation_config=plain, **extra), expected)
    assert f"top_k={5 if member == 'dense' else 6} is not used" in caplog.text


def test_top_p_at_temperature_zero_warns_and_a_plain_call_does_not(caplog):
    with caplog.at_level("WARNING"):
        generate()
        assert "is not used" not in caplog.text
        generate(top_p=0.42)
    assert "the temperature is 0, so generation is greedy and top_p=0.42 is not used" in caplog.text


# --- what must keep working ----------------------------------------------------------------------------------------


def test_a_plain_generation_config_with_diffusion_fields_drives_generate():
    plain = GenerationConfig(max_new_tokens=8, steps=4, block_length=4)
    expected = model().generate(IDS, max_new_tokens=8, steps=4, block_length=4)
    assert torch.equal(model().generate(IDS, generation_config=plain), expected)


def test_int32_ids_generate_what_int64_ids_do():
    assert torch.equal(generate(input_ids=IDS.int()), generate())
    assert torch.equal(generate2(input_ids=IDS.int()), generate2())


def test_dense_llada_fills_a_mask_inside_the_prompt():
    out = generate(input_ids=torch.tensor([[1, 60, 3, 4]]))
    assert not (out == 60).any()
