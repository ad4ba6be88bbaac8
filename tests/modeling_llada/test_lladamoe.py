"""LLaDA-MoE (inclusionAI/LLaDA-MoE-7B-A1B-*) against outputs recorded from the official code on a tiny checkpoint."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from modeling_llada import LLaDAConfig, LLaDAMoEConfig, LLaDAMoEModelLM
from tests.utils import assert_close_fp32

MOE_FIXTURE = Path(__file__).parent.parent / "fixtures" / "lladamoe-tiny-official"
MASK, EOS = 150, 147  # the fixture's ids; the mask id is not in its config, as in the official release


@pytest.fixture(scope="module")
def moe_reference() -> dict:
    return json.loads((MOE_FIXTURE / "reference_outputs.json").read_text())


@pytest.fixture(scope="module")
def moe_model() -> LLaDAMoEModelLM:
    return AutoModel.from_pretrained(MOE_FIXTURE).eval()


def official_kwargs(case: dict) -> dict:
    """The official generate.py argument names mapped to ours."""
    kwargs = dict(case["kwargs"])
    kwargs["max_new_tokens"] = kwargs.pop("gen_length")
    kwargs["mask_token_id"] = kwargs.pop("mask_id")
    return kwargs


def safetensors_keys(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def test_the_official_config_is_read_as_moe_although_its_model_type_is_llada(fixture_dir):
    raw = json.loads((MOE_FIXTURE / "config.json").read_text())
    assert raw["model_type"] == "llada" and raw["architectures"] == ["LLaDAMoEModelLM"]
    config = AutoConfig.from_pretrained(MOE_FIXTURE)
    assert type(config) is LLaDAMoEConfig
    assert config.moe_layer_freq == [0, 1, 1] and config.num_experts == 4 and config.num_experts_per_tok == 2
    assert config.qk_layernorm and config.moe_router_enable_expert_bias and not config.norm_topk_prob
    assert config.mask_token_id is None  # 156895 (the real model's) does not fit this 160-token vocabulary
    assert config.to_dict()["model_type"] == "llada"
    # the dense checkpoint still gives the dense config
    assert type(AutoConfig.from_pretrained(fixture_dir)) is LLaDAConfig


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM])
def test_every_auto_class_loads_the_fixture_with_no_missing_or_unexpected_keys(auto_class):
    model, info = auto_class.from_pretrained(MOE_FIXTURE, output_loading_info=True)
    assert type(model) is LLaDAMoEModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # the official per-expert weights are fused into two tensors per MoE layer, gate rows before up rows
    official = safetensors_keys(MOE_FIXTURE / "model.safetensors")
    fused = {k for k in official if ".mlp.experts." not in k}
    fused |= {f"model.layers.{i}.mlp.experts.{name}" for i in (1, 2) for name in ("gate_up_proj", "down_proj")}
    assert set(model.state_dict()) == fused
    with safe_open(str(MOE_FIXTURE / "model.safetensors"), "pt") as f:
        for i in (1, 2):
            experts = model.model.layers[i].mlp.experts
            for e in range(4):
                prefix = f"model.layers.{i}.mlp.experts.{e}."
                gate, up = f.get_tensor(prefix + "gate_proj.weight"), f.get_tensor(prefix + "up_proj.weight")
                assert torch.equal(experts.gate_up_proj[e], torch.cat([gate, up]))
                assert torch.equal(experts.down_proj[e], f.get_tensor(prefix + "down_proj.weight"))
    # layer 0 is dense, the others routed with a shared expert; the head is not tied
    assert not model.model.layers[0].is_moe and not hasattr(model.model.layers[0], "shared_expert")
    assert all(layer.is_moe and hasattr(layer, "shared_expert") for layer in model.model.layers[1:])
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert torch.count_nonzero(model.model.layers[1].mlp.expert_bias) > 0  # the buffer was loaded, not zeroed


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_equal_the_official_implementation(moe_reference, attn_implementation):
    model = AutoModel.from_pretrained(MOE_FIXTURE, attn_implementation=attn_implementation).eval()
    ids = torch.tensor(moe_reference["logits"]["input_ids"])
    assert (ids == MASK).any()
    with torch.no_grad():
        logits = model(ids).logits
    expected = torch.tensor(moe_reference["logits"]["logits"])
    # float32 rounding only: measured <= 6e-7 of the largest logit (~14) across kernels and thread counts
    assert_close_fp32(logits, expected)


def test_every_reference_generation_is_reproduced_token_for_token(moe_model, moe_reference):
    assert len(moe_reference["generate"]) >= 5
    for case in moe_reference["generate"]:
        ids = torch.tensor(case["input_ids"])
        mask = torch.tensor(case["attention_mask"]) if case["attention_mask"] is not None else None
        kwargs = official_kwargs(case)
        out = moe_model.generate(ids, attention_mask=mask, return_dict_in_generate=True, **kwargs)
        # the whole canvas the official sampler committed (ours pads `sequences` after the first EOS)
        assert out.raw_sequences.tolist() == case["output_ids"], case["name"]
        assert out.raw_sequences[:, ids.shape[1]:].tolist() == case["generated_ids"], case["name"]
        plain = moe_model.generate(ids, attention_mask=mask, **kwargs)
        assert plain.tolist() == out.sequences.tolist(), case["name"]


def test_generate_without_a_mask_id_says_how_to_give_one(moe_model):
    with pytest.raises(ValueError, match="mask_token_id"):
        moe_model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, steps=4)


def test_left_padded_batch_rows_equal_single_rows(moe_model):
    rows = [[116, 79, 25, 47, 111, 74, 25, 139, 105], [34, 124, 44, 11, 64, 124]]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[EOS] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    kwargs = dict(max_new_tokens=8, steps=8, block_length=8, mask_token_id=MASK, return_dict_in_generate=True)
    batch = moe_model.generate(ids, attention_mask=mask, **kwargs).raw_sequences
    for i, row in enumerate(rows):
        single = moe_model.generate(torch.tensor([row]), **kwargs).raw_sequences
        assert batch[i, width - len(row):].tolist() == single[0].tolist()


def test_save_pretrained_round_trip_keeps_logits_and_the_official_names(tmp_path, moe_model, moe_reference):
    moe_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llada" and saved["architectures"] == ["LLaDAMoEModelLM"]
    assert saved["moe_layer_freq"] == [0, 1, 1] and saved["rope_theta"] == 50000
    assert safetensors_keys(tmp_path / "model.safetensors") == safetensors_keys(MOE_FIXTURE / "model.safetensors")
    reloaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is LLaDAMoEModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.tensor(moe_reference["logits"]["input_ids"])
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(ids).logits, moe_model(ids).logits)


def test_router_logits_are_returned_per_moe_layer(moe_model):
    ids = torch.tensor([[1, 2, MASK, 4]])
    out = moe_model(ids, output_router_logits=True)
    assert len(out.router_logits) == 2  # layers 1 and 2
    assert all(r.shape == (4, 4) for r in out.router_logits)


def test_a_fresh_model_starts_with_a_zero_expert_bias():
    config = LLaDAMoEConfig(
        vocab_size=64, hidden_size=32, dense_intermediate_size=64, expert_intermediate_size=16,
        shared_expert_intermediate_size=16, num_hidden_layers=2, num_attention_heads=4, num_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=1,
        mask_token_id=63,
    )
    model = LLaDAMoEModelLM(config)
    assert torch.equal(model.model.layers[1].mlp.expert_bias, torch.zeros(4))
    assert model(torch.tensor([[0, 63, 5]])).logits.shape == (1, 3, 64)


REMOTE_SCRIPT = """
import sys
# our package must not be importable here: only the copied code files can serve the model
for name in ("modeling_llada", "trainers", "hub_cards"):
    sys.modules[name] = None
import torch
from transformers import AutoConfig, AutoModel
folder, ids_path, out_path = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model)
assert type(model).__name__ == "LLaDAMoEModelLM"
assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "LLaDAMoEConfig"
ids = torch.load(ids_path)
with torch.no_grad():
    torch.save({"logits": model(ids).logits,
                "generated": model.generate(ids, max_new_tokens=8, steps=8, block_length=4, mask_token_id=150)},
               out_path)
"""


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_our_package(tmp_path, moe_model, moe_reference):
    import subprocess
    import sys

    moe_model.save_pretrained(tmp_path / "ckpt")
    for code_file in ("configuration_lladamoe.py", "modeling_lladamoe.py", "modeling_llada.py", "generation_llada.py"):
        assert (tmp_path / "ckpt" / code_file).exists(), code_file
    ids = torch.tensor(moe_reference["logits"]["input_ids"])
    torch.save(ids, tmp_path / "ids.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt"), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        assert torch.equal(remote["logits"], moe_model(ids).logits)
        expected = moe_model.generate(ids, max_new_tokens=8, steps=8, block_length=4, mask_token_id=MASK)
    assert torch.equal(remote["generated"], expected)


def test_a_cached_forward_over_a_slice_equals_the_full_forward(moe_model):
    ids = torch.randint(0, 140, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        full = moe_model(ids, attention_mask=mask, use_cache=True)
        for start, stop in ((5, 12), (5, 9), (0, 4)):
            part = moe_model(ids[:, start:stop], attention_mask=mask, cache=full.cache, cache_position=start)
            # cached vs uncached attention: rounding only (measured <= 5e-7 of the largest logit)
            assert_close_fp32(part.logits, full.logits[:, start:stop])


@pytest.mark.parametrize("kwargs", [dict(kv_cache="prefix"), dict(kv_cache="dual", threshold=0.5)], ids=str)
def test_fast_decoding_modes_keep_padded_rows_equal_to_single_rows(moe_model, kwargs):
    rows = [[116, 79, 25, 47, 111, 74, 25, 139, 105], [34, 124, 44, 11, 64, 124]]
    ids = torch.tensor([[EOS] * (9 - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (9 - len(r)) + [1] * len(r) for r in rows])
    common = dict(max_new_tokens=16, block_length=4, mask_token_id=MASK, return_dict_in_generate=True, **kwargs)
    batch = moe_model.generate(ids, attention_mask=mask, **common).raw_sequences
    for i, row in enumerate(rows):
        single = moe_model.generate(torch.tensor([row]), **common).raw_sequences
        assert batch[i, 9 - len(row):].tolist() == single[0].tolist()
        assert not (single == MASK).any()


def test_aux_loss_is_the_load_balancing_loss_and_ignores_padding(moe_model):
    from modeling_llada.modeling_lladamoe import load_balancing_loss

    ids = torch.randint(0, 140, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    out = moe_model(ids, attention_mask=mask, output_router_logits=True)
    # by hand: over the 16 real tokens of both MoE layers, E * sum over slots and experts of f * P
    keep = mask.reshape(-1).bool()
    logits = torch.cat([r[keep] for r in out.router_logits])
    probs = logits.float().softmax(-1)
    chosen = torch.nn.functional.one_hot(probs.topk(2, dim=-1).indices, 4).float()
    expected = (chosen.mean(0) * probs.mean(0)[None]).sum() * 4
    torch.testing.assert_close(out.aux_loss, expected)
    # without a mask every token counts; with labels the loss adds coef * aux_loss
    plain = load_balancing_loss(out.router_logits, 4, 2)
    assert not torch.allclose(plain, out.aux_loss)
    labels = torch.where(ids % 3 == 0, ids, -100)
    with_aux = moe_model(ids, attention_mask=mask, labels=labels, output_router_logits=True)
    without = moe_model(ids, attention_mask=mask, labels=labels)
    assert without.aux_loss is None
    torch.testing.assert_close(with_aux.loss, without.loss + moe_model.config.router_aux_loss_coef * with_aux.aux_loss)


def test_log_likelihood_runs_once_the_config_knows_the_mask_id():
    model = AutoModel.from_pretrained(MOE_FIXTURE).eval()
    model.config.mask_token_id = MASK  # not in the official config; 156895 is the default for the real vocabulary
    prompt, answer = torch.tensor([116, 79, 25, 47]), torch.tensor([111, 74, 25])
    first = model.log_likelihood(prompt, answer, mc_num=16, seed=0)
    again = model.log_likelihood(prompt, answer, mc_num=16, seed=0)
    assert first.log_likelihood == again.log_likelihood and first.log_likelihood < 0


def test_a_saved_dense_folder_does_not_carry_the_moe_files(tmp_path):
    from tests.utils import tiny_model

    tiny_model().save_pretrained(tmp_path)
    assert (tmp_path / "configuration_llada.py").exists()
    assert not (tmp_path / "configuration_lladamoe.py").exists() and not (tmp_path / "modeling_lladamoe.py").exists()


def test_the_dense_config_class_hands_moe_dicts_to_the_moe_config():
    raw = json.loads((MOE_FIXTURE / "config.json").read_text())
    assert type(LLaDAConfig.from_dict(dict(raw))) is LLaDAMoEConfig
    assert type(LLaDAMoEConfig.from_dict(dict(raw))) is LLaDAMoEConfig


# LLaDA-MoE-7B-A1B (Base and Instruct share it): 16 layers, all MoE, 64 experts of width 1024 (top-8), no shared
# expert, d 2048, 16 heads of 128, vocabulary 157184, untied head. Sources: the inclusionAI model cards and the paper
# (arXiv 2509.24389: "7 billion total parameters, only 1.4 billion are activated"); the layout matches the public copies
# (dInfer fuses experts in every layer; the 14.7 GB bf16 checkpoint; 12288 MiB of bf16 expert weights measured).
LLADA_MOE_7B_A1B = dict(
    vocab_size=157184, hidden_size=2048, dense_intermediate_size=8192, expert_intermediate_size=1024,
    shared_expert_intermediate_size=None, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
    num_experts=64, num_experts_per_tok=8, moe_layer_freq=[1] * 16, rope_theta=50000, max_position_embeddings=8192,
    norm_topk_prob=False, tie_word_embeddings=False,
)


def test_the_defaults_are_the_real_architecture():
    defaults, real = LLaDAMoEConfig().to_dict(), LLaDAMoEConfig(**LLADA_MOE_7B_A1B).to_dict()
    assert {key: defaults[key] for key in LLADA_MOE_7B_A1B} == {key: real[key] for key in LLADA_MOE_7B_A1B}
    assert (defaults["mask_token_id"], defaults["eos_token_id"], defaults["pad_token_id"]) == (156895, 156892, 156892)


def test_the_real_config_builds_on_the_meta_device_with_the_published_sizes():
    config = LLaDAMoEConfig(**LLADA_MOE_7B_A1B)
    with torch.device("meta"):
        model = LLaDAMoEModelLM(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(not hasattr(layer, "shared_expert") for layer in model.model.layers)
    total = sum(p.numel() for p in model.parameters())
    # by hand: both vocabulary matrices, then per layer q/k/v/o, the two norms and the per-head q/k norms, the router
    # and 64 SwiGLU experts, then the final norm
    d, experts = 2048, 64 * 3 * 2048 * 1024
    assert total == 2 * 157184 * d + 16 * (4 * d * d + 2 * d + 2 * 128 + 64 * d + experts) + d == 7_356_880_896
    assert round(total / 1e9) == 7  # published: "7B" total
    # activated per token: everything but the 56 unchosen experts of each layer and the input embedding table (a
    # lookup, not a product; the output head counts): 1,397,823,488, the published "1.4B" (with the input table it
    # would be 1.72B)
    per_expert = 3 * d * 1024
    active = total - 16 * (64 - 8) * per_expert - model.model.embed_tokens.weight.numel()
    assert round(active / 1e9, 1) == 1.4, active
