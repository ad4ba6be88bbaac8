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
    # Switches are booleans, numbers are numbers: a string is refused naming the field, on every member.
    *[(f"switch {name}='yes'", lambda name=name: generate(**{name: "yes"}), ValueError,
       rf"`{name}` must be True or False, got 'yes' \(str\)")
      for name in ("early_exit", "logits_eos_inf", "confidence_eos_eot_inf", "output_history", "progress_bar")],
    ("switch on llada2", lambda: generate2(return_dict_in_generate=1), ValueError,
     r"`return_dict_in_generate` must be True or False, got 1 \(int\)"),
    *[(f"{name} a string", lambda name=name: generate(**{name: "0.5", "temperature": 1.0}), ValueError,
       rf"`{name}` must be .*got '0.5'") for name in ("top_p", "threshold", "factor")],
    ("generation_config a dict", lambda: generate(generation_config={"steps": 4}), TypeError,
     r"generation_config must be a transformers GenerationConfig, got a dict"),
    # Ids and masks: the offending value, row and position are named.
    ("id beyond vocab", lambda: generate(input_ids=torch.tensor([[1, 2, 64]])), ValueError,
     r"input_ids hold id 64 \(row 0, position 2\), outside the model's vocabulary \[0, 64\)"),
    ("negative id: llada2", lambda: generate2(input_ids=torch.tensor([[1, 2], [3, -5]])), ValueError,
     r"input_ids hold id -5 \(row 1, position 1\)"),
    ("no rows", lambda: generate(input_ids=torch.zeros(0, 4, dtype=torch.long)), ValueError,
     r"input_ids has no rows \(shape \(0, 4\)\)"),
    ("attention_mask not 0/1", lambda: generate(attention_mask=torch.tensor([[1, 2, 1, 1]])), ValueError,
     r"attention_mask must hold only 0 \(padding\) and 1 \(token\), got 2"),
    ("attention_mask empty row", lambda: generate(input_ids=torch.tensor([[1, 2], [61, 61], [3, 4]]),
                                                  attention_mask=torch.tensor([[1, 1], [0, 0], [1, 1]])), ValueError,
     r"attention_mask row 1 has no tokens"),
    ("logits_processor not callable", lambda: generate(logits_processor=[5]), TypeError,
     r"logits_processor must hold .*got 5 \(int\)"),
    ("logits_processor not callable: llada2", lambda: generate2(logits_processor=["ban"]), TypeError,
     r"logits_processor must hold .*got 'ban' \(str\)"),
    # The likelihood API names the argument and the value.
    ("likelihood mc_num a string", lambda: model().log_likelihood([1, 2], [3], mc_num="8"), TypeError,
     r"mc_num must be a positive integer, got '8' \(str\)"),
    ("likelihood batch_size a float", lambda: model().log_likelihood([1, 2], [3], batch_size=2.0), TypeError,
     r"batch_size must be a positive integer, got 2.0"),
    ("likelihood text", lambda: model().log_likelihood("hello", [3]), TypeError,
     r"prompt_ids must be token ids .*got a string 'hello'"),
    ("likelihood empty answer in a list", lambda: model().log_likelihood([([1], [2]), ([1], [])]), ValueError,
     r"answer_ids of pair 1 is empty"),
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


# --- masks inside the prompt: every member fills them (LLaDA 2: in their block, block-causal) ---------------------

HOLED = torch.tensor([[5, 155, 7, 8, 9, 10, 11, 12, 13, 14]])  # a hole in block 0 of 4; the answer starts in block 2
BLOCKS = dict(max_new_tokens=8, block_length=4, steps=4)


@pytest.mark.parametrize("kv_cache", ["prefix", None])
def test_llada2_fills_a_mask_in_an_early_prompt_block_from_that_block_alone(kv_cache):
    out = generate2(input_ids=HOLED, kv_cache=kv_cache, return_dict_in_generate=True, **BLOCKS)
    assert not (out.sequences == 155).any()
    kept = HOLED[0] != 155
    assert torch.equal(out.sequences[0, :10][kept], HOLED[0][kept])
    # Block-causal: block 0 sees only itself, so the (greedy, single) hole gets the argmax of one forward pass over
    # the first 4 tokens, the mask id excluded; and it is written at the first step.
    with torch.no_grad():
        logits = llada2()(HOLED[:, :4]).logits[0, 1].clone()
    logits[155] = -torch.inf
    assert out.sequences[0, 1] == logits.argmax()
    assert out.commit_step[0, 1] == 0 and (out.commit_step[0, :10][kept] == -1).all()
    # Once filled, the rest is what the filled prompt generates.
    filled = HOLED.clone()
    filled[0, 1] = out.sequences[0, 1]
    assert torch.equal(out.sequences, generate2(input_ids=filled, kv_cache=kv_cache, **BLOCKS))


def test_llada2_fills_holes_in_a_padded_batch_as_each_row_alone():
    ids = torch.tensor([[128, 128, 128, 2, 155, 4, 5, 6, 155], [5, 155, 7, 8, 9, 10, 11, 12, 13]])
    attention_mask = (ids != 128).long()
    batch = generate2(input_ids=ids, attention_mask=attention_mask, **BLOCKS)
    assert not (batch == 155).any()
    for row, pad in enumerate((3, 0)):
        alone = generate2(input_ids=ids[row:row + 1, pad:], **BLOCKS)
        assert torch.equal(batch[row, pad:], alone[0])


def test_llada2_token_editing_fills_a_hole_and_never_edits_the_prompt():
    out = generate2(input_ids=HOLED, editing_threshold=0.0, **BLOCKS)
    kept = HOLED[0] != 155
    assert not (out == 155).any() and torch.equal(out[0, :10][kept], HOLED[0][kept])


def test_max_length_beside_max_new_tokens_warns_as_transformers_does_and_max_new_tokens_wins(caplog):
    with caplog.at_level("WARNING"):
        out = generate(max_length=30)
    assert "Both `max_new_tokens` (=8) and `max_length` (=30) are set; `max_new_tokens` takes precedence" in caplog.text
    assert out.shape == (1, 12) and torch.equal(out, generate())
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert generate(max_new_tokens=None, steps=None, max_length=12).shape == (1, 12)  # alone: no warning
    assert "Both" not in caplog.text


def test_llada2_editing_threshold_of_1_or_more_warns_that_nothing_is_edited(caplog):
    with caplog.at_level("WARNING"):
        generate2(editing_threshold=0.5)
    assert "no token is ever edited" not in caplog.text
    with caplog.at_level("WARNING"):
        out = generate2(editing_threshold=1.5)
    assert "`editing_threshold=1.5` is at least 1, so no token is ever edited" in caplog.text
    assert not (out == 155).any()  # still generates (the official 2.1 loop, as the fixture's 1.01 case)
