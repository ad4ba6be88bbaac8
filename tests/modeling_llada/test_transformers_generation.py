"""Generation the transformers way: a plain `GenerationConfig`, standard generation_config.json files and the
text-generation pipeline mean what users of transformers expect."""

import json

import pytest
import torch
from transformers import AutoModel, GenerationConfig, pipeline

from modeling_llada import LLaDAGenerationConfig
from tests.utils import TINY_CHAT_TEMPLATE, word_tokenizer

PROMPT = torch.tensor([[139, 252, 234, 156, 157, 142, 50, 68]])
SETTINGS = dict(max_new_tokens=16, steps=16, block_length=8)


def test_do_sample_false_is_greedy_whatever_the_temperature(official_model):
    greedy = official_model.generate(PROMPT, temperature=0.0, **SETTINGS)
    torch.manual_seed(0)
    assert torch.equal(official_model.generate(PROMPT, do_sample=False, temperature=0.7, **SETTINGS), greedy)
    plain = GenerationConfig(do_sample=False, temperature=0.7, **SETTINGS)
    torch.manual_seed(1)
    assert torch.equal(official_model.generate(PROMPT, generation_config=plain), greedy)
    torch.manual_seed(2)  # and sampling at 0.7 does give something else here, so the test can tell them apart
    assert not torch.equal(official_model.generate(PROMPT, temperature=0.7, **SETTINGS), greedy)


def test_do_sample_true_samples_at_the_given_temperature_or_one(official_model):
    def sample(**kwargs):
        torch.manual_seed(7)
        return official_model.generate(PROMPT, **SETTINGS, **kwargs)

    assert torch.equal(sample(do_sample=True, temperature=0.5), sample(temperature=0.5))
    assert torch.equal(sample(generation_config=GenerationConfig(do_sample=True, temperature=0.5)),
                       sample(temperature=0.5))
    assert torch.equal(sample(do_sample=True), sample(temperature=1.0))  # transformers' default temperature
    assert not torch.equal(sample(do_sample=True), official_model.generate(PROMPT, **SETTINGS))


def test_max_length_counts_the_prompt_and_max_new_tokens_wins_over_it(official_model):
    expected = official_model.generate(PROMPT, max_new_tokens=16, steps=16)
    out = official_model.generate(PROMPT, max_length=PROMPT.shape[1] + 16, steps=16)
    assert out.shape == (1, PROMPT.shape[1] + 16) and torch.equal(out, expected)
    assert torch.equal(official_model.generate(PROMPT, max_length=10, max_new_tokens=16, steps=16), expected)
    config = GenerationConfig(max_length=PROMPT.shape[1] + 16)
    assert torch.equal(official_model.generate(PROMPT, generation_config=config, steps=16), expected)
    with pytest.raises(ValueError, match="max_length"):
        official_model.generate(PROMPT, max_length=PROMPT.shape[1])


@pytest.mark.parametrize(
    "setting", [{"num_beams": 4}, {"repetition_penalty": 1.2}, {"output_scores": True}, {"min_new_tokens": 3}]
)
def test_autoregressive_only_settings_raise_naming_them(official_model, setting):
    (name, value), = setting.items()
    for call in (
        lambda: official_model.generate(PROMPT, **SETTINGS, **setting),
        lambda: official_model.generate(PROMPT, generation_config=GenerationConfig(**setting)),
        lambda: LLaDAGenerationConfig(**setting),
    ):
        with pytest.raises(ValueError, match=rf"{name}={value!r}.*not supported by LLaDA's diffusion generation"):
            call()


def test_neutral_autoregressive_settings_are_accepted(official_model):
    expected = official_model.generate(PROMPT, **SETTINGS)
    neutral = dict(num_beams=1, repetition_penalty=1.0, use_cache=True, output_scores=False, length_penalty=1.0)
    assert torch.equal(official_model.generate(PROMPT, **SETTINGS, **neutral), expected)


def test_unknown_generate_arguments_still_raise(official_model):
    with pytest.raises(ValueError, match="unexpected arguments.*stepz"):
        official_model.generate(PROMPT, stepz=4)


def write_generation_config(folder, model, fields: dict) -> None:
    model.save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps(fields))


def test_a_generation_config_json_with_standard_fields_loads_and_drives_generate(tmp_path, official_model):
    fields = {"do_sample": False, "num_beams": 1, "temperature": 0.9, "repetition_penalty": 1.0, "use_cache": True,
              "eos_token_id": 301, "bos_token_id": 302, "pad_token_id": 301, "max_new_tokens": 16, "steps": 8,
              "block_length": 8, "transformers_version": "4.46.0"}
    write_generation_config(tmp_path, official_model, fields)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded.generation_config, LLaDAGenerationConfig)
    assert reloaded.generation_config.do_sample is False
    expected = official_model.generate(PROMPT, max_new_tokens=16, steps=8, block_length=8)  # greedy: do_sample=False
    assert torch.equal(reloaded.generate(PROMPT), expected)


def test_a_generation_config_json_asking_for_beam_search_fails_to_load_naming_file_and_field(tmp_path, official_model):
    write_generation_config(tmp_path, official_model, {"num_beams": 4, "eos_token_id": 301})
    with pytest.raises(ValueError, match=r"generation_config.json.*num_beams=4.*generation_config=LLaDAGenerationConfig"):
        AutoModel.from_pretrained(tmp_path)
    # the way out the message names: an explicit generation config
    model = AutoModel.from_pretrained(tmp_path, generation_config=LLaDAGenerationConfig(max_new_tokens=16))
    assert model.generation_config.max_new_tokens == 16


@pytest.fixture(scope="module")
def chat_tokenizer():
    tokenizer = word_tokenizer()  # the fixture's 320 ids: mask t300, eos t301, bos t302
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def test_text_generation_pipeline_returns_the_text_generate_gives(official_model, chat_tokenizer):
    generator = pipeline("text-generation", model=official_model, tokenizer=chat_tokenizer)
    prompt = "t139 t252 t234 t156 t157 t142 t50 t68"
    ids = chat_tokenizer(prompt, return_tensors="pt").input_ids
    out = official_model.generate(ids, **SETTINGS)
    expected = chat_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert expected.strip()  # the model does write something before its EOS
    result = generator(prompt, return_full_text=False, **SETTINGS)
    assert result[0]["generated_text"] == expected
    # with no sampling settings the pipeline keeps LLaDA's greedy default (its own default would sample at 0.7)
    torch.manual_seed(3)
    assert generator(prompt, return_full_text=False, **SETTINGS)[0]["generated_text"] == expected


def test_text_generation_pipeline_samples_what_generate_samples_under_a_seed(official_model, chat_tokenizer):
    generator = pipeline("text-generation", model=official_model, tokenizer=chat_tokenizer)
    prompt = "t139 t252 t234 t156"
    ids = chat_tokenizer(prompt, return_tensors="pt").input_ids
    torch.manual_seed(11)
    out = official_model.generate(ids, temperature=0.7, **SETTINGS)
    torch.manual_seed(11)
    result = generator(prompt, return_full_text=False, do_sample=True, temperature=0.7, **SETTINGS)
    assert result[0]["generated_text"] == chat_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_text_generation_pipeline_with_chat_messages_answers_as_generate_does(official_model, chat_tokenizer):
    generator = pipeline("text-generation", model=official_model, tokenizer=chat_tokenizer)
    messages = [{"role": "user", "content": "t139 t252 t234 t156 t157"}]
    prompt = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
    out = official_model.generate(**prompt, **SETTINGS)
    expected = chat_tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    result = generator(messages, **SETTINGS)[0]["generated_text"]
    assert result[:-1] == messages
    assert result[-1] == {"role": "assistant", "content": expected}


@pytest.mark.skipif(not hasattr(torch.compiler, "is_exporting"), reason="torch < 2.7: transformers' masks do not compile")
def test_generate_uses_a_compiled_forward_and_compiles_it_once(official_model):
    """`model.forward = torch.compile(model.forward, fullgraph=True)`: every step of every block reuses one graph."""
    compilations = []

    def counting_backend(graph_module, example_inputs):
        compilations.append(graph_module)
        return graph_module.forward

    ids = PROMPT.repeat(2, 1)
    kwargs = dict(max_new_tokens=16, steps=16, block_length=4)  # 4 blocks, 4 steps each
    expected = official_model.generate(ids, **kwargs)
    torch._dynamo.reset()
    official_model.forward = torch.compile(official_model.forward, fullgraph=True, backend=counting_backend)
    try:
        assert torch.equal(official_model.generate(ids, **kwargs), expected)
        assert torch.equal(official_model.generate(ids, **kwargs), expected)
    finally:
        del official_model.forward  # back to the class's eager forward
        torch._dynamo.reset()
    assert len(compilations) == 1
