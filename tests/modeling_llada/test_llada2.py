"""LLaDA 2.x (inclusionAI/LLaDA2.0-*, LLaDA2.1-*; model_type "llada2_moe") against outputs recorded from the official
code on a tiny checkpoint, plus the routing, mask and cache contracts the block-diffusion sampler relies on."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, DynamicCache

from modeling_llada import LLaDA2MoeConfig, LLaDA2MoeModel, LLaDA2MoeModelLM
from modeling_llada.modeling_llada2_moe import LLaDA2MoeRouter
from tests.utils import assert_close_fp32

LLADA2_FIXTURE = Path(__file__).parent.parent / "fixtures" / "llada2-tiny-official"
MASK, EOS = 155, 128  # the fixture's ids (README); the mask id is not in its config, as in the official release
BLOCK = 4  # the block length of the fixture's `logits_block_mask`

# The official config.json values of the real models (inclusionAI/LLaDA2.0-mini and LLaDA2.1-mini share theirs;
# LLaDA2.0-flash as in inclusionAI/dFactory configs/model_configs/llada2_flash/config.json). Fields not listed are the
# same in both and are the config's defaults.
LLADA2_MINI = dict(
    vocab_size=157184, hidden_size=2048, intermediate_size=5120, moe_intermediate_size=512, num_hidden_layers=20,
    num_attention_heads=16, num_key_value_heads=4, head_dim=128, num_experts=256, num_experts_per_tok=8,
    num_shared_experts=1, n_group=8, topk_group=4, first_k_dense_replace=1, routed_scaling_factor=2.5,
    partial_rotary_factor=0.5, rotary_dim=64, rope_theta=600000, rms_norm_eps=1e-6, pad_token_id=156892,
    use_qk_norm=True, use_qkv_bias=False, use_bias=False, tie_word_embeddings=False, score_function="sigmoid",
)
LLADA2_FLASH = dict(
    LLADA2_MINI, num_hidden_layers=32, hidden_size=4096, intermediate_size=9216, moe_intermediate_size=1024,
    num_attention_heads=32,
)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((LLADA2_FIXTURE / "reference_outputs.json").read_text())


@pytest.fixture(scope="module")
def model() -> LLaDA2MoeModelLM:
    return AutoModel.from_pretrained(LLADA2_FIXTURE).eval()


def safetensors_keys(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def block_causal(length: int, block: int) -> torch.Tensor:
    """(length, length) bool: position i may attend to j when j's block is not after i's (True = may attend)."""
    blocks = torch.arange(length) // block
    return blocks[None, :] <= blocks[:, None]


# -- config and loading ----------------------------------------------------------------------------------------------


def test_the_official_config_loads_as_llada2_with_the_real_models_ids_as_defaults():
    raw = json.loads((LLADA2_FIXTURE / "config.json").read_text())
    assert raw["model_type"] == "llada2_moe" and "mask_token_id" not in raw and "eos_token_id" not in raw
    config = AutoConfig.from_pretrained(LLADA2_FIXTURE)
    assert type(config) is LLaDA2MoeConfig
    assert (config.n_group, config.topk_group, config.num_experts, config.num_experts_per_tok) == (4, 2, 8, 2)
    assert config.head_dim == 16 and config.rotated_dim == 8 == raw["rotary_dim"]
    assert config.is_moe_layer(1) and not config.is_moe_layer(0)
    # 156895 / 156892 (the real models') do not fit this 160-token vocabulary; EOS falls back to the pad id
    assert config.mask_token_id is None and config.eos_token_id == EOS == config.pad_token_id
    assert config.sliding_window is None  # a number here would make DynamicCache(config=...) a sliding window
    # every official key survives a round trip (`rope_scaling: null` is the transformers 5 default and not written)
    assert set(raw) - {"rope_scaling"} <= set(config.to_dict())
    real = LLaDA2MoeConfig()
    assert (real.mask_token_id, real.eos_token_id, real.pad_token_id) == (156895, 156892, 156892)
    assert real.head_dim == 128 and real.rotary_dim == 64


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(n_group=3), "divisible by `n_group`"),
        (dict(topk_group=5), "cannot exceed `n_group`"),
        (dict(num_experts_per_tok=5), "exceeds the experts"),
        (dict(score_function="softmax"), "score_function"),
        (dict(num_key_value_heads=3), "multiple of `num_key_value_heads`"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
        (dict(mask_token_id=128), "must differ"),
    ],
)
def test_invalid_configs_are_rejected_with_the_field_named(overrides, match):
    base = json.loads((LLADA2_FIXTURE / "config.json").read_text())
    base = {k: v for k, v in base.items() if k not in ("architectures", "auto_map", "model_type")}
    with pytest.raises(ValueError, match=match):
        LLaDA2MoeConfig(**{**base, **overrides})


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM])
def test_every_auto_class_loads_the_fixture_with_no_missing_or_unexpected_keys(auto_class):
    model, info = auto_class.from_pretrained(LLADA2_FIXTURE, output_loading_info=True)
    assert type(model) is LLaDA2MoeModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    official = safetensors_keys(LLADA2_FIXTURE / "model.safetensors")
    assert "model.word_embeddings.weight" in official and "model.layers.0.attention.query_key_value.weight" in official
    fused = {k for k in official if ".mlp.experts." not in k}
    fused |= {f"model.layers.{i}.mlp.experts.{name}" for i in (1, 2) for name in ("gate_up_proj", "down_proj")}
    assert set(model.state_dict()) == fused
    with safe_open(str(LLADA2_FIXTURE / "model.safetensors"), "pt") as f:
        for i in (1, 2):
            experts = model.model.layers[i].mlp.experts
            for e in range(8):
                prefix = f"model.layers.{i}.mlp.experts.{e}."
                gate_up = torch.cat([f.get_tensor(prefix + name) for name in ("gate_proj.weight", "up_proj.weight")])
                assert torch.equal(experts.gate_up_proj[e], gate_up)
                assert torch.equal(experts.down_proj[e], f.get_tensor(prefix + "down_proj.weight"))
            # the bias buffer was loaded, not re-initialised
            bias = f.get_tensor(f"model.layers.{i}.mlp.gate.expert_bias")
            assert torch.equal(model.model.layers[i].mlp.gate.expert_bias, bias)
    assert torch.count_nonzero(model.model.layers[1].mlp.gate.expert_bias) > 0
    assert model.lm_head.weight.data_ptr() != model.model.word_embeddings.weight.data_ptr()


# -- exactness -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_equal_the_official_implementation(reference, attn_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, attn_implementation=attn_implementation).eval()
    ids = torch.tensor(reference["logits"]["input_ids"])
    assert (ids == MASK).any()
    with torch.no_grad():
        logits = model(ids).logits
    # float32 rounding only (measured up to 6e-7 of the largest logit across kernels and thread counts); scaling one
    # layer's attention output by 1 + 1e-4 already moves the logits by 9e-4 and fails
    assert_close_fp32(logits, torch.tensor(reference["logits"]["logits"]))


def mask_forms(pattern: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same (L, S) pattern (True = may attend) in every accepted form."""
    return {
        "bool (1, 1, L, S)": pattern[None, None],
        "bool (b, L, S)": pattern[None].expand(2, -1, -1),
        "int 0/1 (1, 1, L, S)": pattern.long()[None, None],
        "additive -inf": torch.zeros(pattern.shape).masked_fill(~pattern, float("-inf"))[None, None],
        "additive finfo.min": torch.zeros(pattern.shape).masked_fill(~pattern, torch.finfo().min)[None, None],
    }


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_block_mask_logits_equal_the_official_implementation_in_every_mask_form(reference, attn_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, attn_implementation=attn_implementation).eval()
    case = reference["logits_block_mask"]
    ids = torch.tensor(case["input_ids"])
    pattern = torch.tensor(case["attention_mask_4d"]).bool()
    assert case["block_length"] == BLOCK and torch.equal(pattern, block_causal(ids.shape[1], BLOCK))
    expected = torch.tensor(case["logits"])
    for name, mask in mask_forms(pattern).items():
        with torch.no_grad():
            logits = model(ids, attention_mask=mask).logits
        assert_close_fp32(logits, expected, msg=name)  # rounding only, as in the test above
    # the block mask matters: without it the logits differ
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, expected, atol=1e-3)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_no_mask_means_bidirectional_attention_under_every_implementation(attn_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, attn_implementation=attn_implementation).eval()
    ids = torch.randint(0, 150, (1, 10), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 150
    with torch.no_grad():
        plain, ones = model(ids).logits, model(ids, attention_mask=torch.ones_like(ids)).logits
        later = model(changed).logits
    assert_close_fp32(plain, ones)  # the same attention up to the kernel's rounding
    # the first position sees the last token: not causal (the official file's eager path silently was)
    assert not torch.allclose(plain[0, 0], later[0, 0], atol=1e-4)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_left_padded_rows_equal_single_rows(attn_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, attn_implementation=attn_implementation).eval()
    rows = [[116, 79, 25, 47, 111, MASK, 25, 139, 105], [34, MASK, 44, 11, 64, 124]]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[EOS] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            single = model(torch.tensor([row])).logits[0]
            assert_close_fp32(batch[i, width - len(row):], single)  # another batch layout: rounding only


def test_bad_masks_are_rejected_with_what_to_do(model):
    ids = torch.randint(0, 150, (2, 8), generator=torch.Generator().manual_seed(2))
    pattern = block_causal(8, BLOCK)
    with pytest.raises(ValueError, match="cannot hold positive values"):  # a 0/1 float mask is not additive
        model(ids, attention_mask=pattern.float()[None, None])
    with pytest.raises(ValueError, match=r"\(1 or 2, 1 or 4, 8, 8\)"):
        model(ids, attention_mask=pattern[None, None, :4])
    with pytest.raises(ValueError, match="padding mask"):
        model(ids, attention_mask=pattern)  # 2-D is (batch, length) padding; patterns need a batch dimension
    with pytest.raises(ValueError, match="must be 2-D"):
        model(ids, attention_mask=pattern[None, None, None])
    with pytest.raises(ValueError, match="no attended token"):
        model(ids, attention_mask=torch.zeros(2, 8, dtype=torch.long))


# -- routing ---------------------------------------------------------------------------------------------------------


def reference_routing(logits, bias, n_group, topk_group, top_k, scale):
    """One token at a time, as written in the DeepSeek-V3 / Ling 2.0 papers: sigmoid scores; groups ranked by the sum
    of their two best biased scores; the top_k best biased scores among the kept groups; weights = unbiased scores,
    normalised, times the scale."""
    experts_out, weights_out = [], []
    for row in logits.tolist():
        scores = [1 / (1 + torch.exp(torch.tensor(-x, dtype=torch.float64)).item()) for x in row]
        biased = [s + b for s, b in zip(scores, bias.tolist())]
        size = len(row) // n_group
        group_score = [sum(sorted(biased[g * size:(g + 1) * size], reverse=True)[:2]) for g in range(n_group)]
        kept = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
        candidates = [e for e in range(len(row)) if e // size in kept]
        chosen = sorted(candidates, key=lambda e: -biased[e])[:top_k]
        total = sum(scores[e] for e in chosen)
        experts_out.append(chosen)
        weights_out.append([scores[e] / total * scale for e in chosen])
    return experts_out, weights_out


def test_the_router_matches_a_hand_written_group_limited_top_k():
    config = LLaDA2MoeConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=2,
        num_attention_heads=2, num_experts=16, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, pad_token_id=0,
    )
    router = LLaDA2MoeRouter(config)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        router.weight.copy_(torch.randn(16, 16, generator=generator))
        # a bias large enough to move choices: the choice follows the biased scores, the weights the unbiased ones
        router.expert_bias.copy_(torch.randn(16, generator=generator) * 0.3)
    x = torch.randn(64, 16, generator=generator)
    logits, weights, experts = router(x)
    expected_experts, expected_weights = reference_routing(logits, router.expert_bias, 4, 2, 3, 2.5)
    assert experts.tolist() == expected_experts
    # a sigmoid, a sum of 3 and a division in float32 against float64: a few roundings, well under 1e-6
    assert_close_fp32(weights, torch.tensor(expected_weights, dtype=torch.float32), rtol=1e-6)
    # the groups matter here: some token's best three biased scores are not all in its two kept groups
    plain = (torch.sigmoid(logits) + router.expert_bias).topk(3, dim=-1).indices
    assert (plain.sort(-1).values != experts.sort(-1).values).any()
    assert logits.dtype == weights.dtype == torch.float32


def test_router_logits_are_returned_per_moe_layer(model):
    ids = torch.tensor([[1, 2, MASK, 4], [5, 6, 7, MASK]])
    out = model(ids, output_router_logits=True)
    assert len(out.router_logits) == 2  # layers 1 and 2 (layer 0 is dense: first_k_dense_replace 1)
    assert all(r.shape == (8, 8) and r.dtype == torch.float32 for r in out.router_logits)
    assert out.aux_loss is None and model(ids).router_logits is None


# -- the cache contract of block diffusion ---------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_cached_prefix_plus_a_block_equals_the_full_forward_under_the_block_mask(attn_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, attn_implementation=attn_implementation).eval()
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 150, (2, 12), generator=generator)
    pattern = block_causal(12, BLOCK)
    with torch.no_grad():
        full = model(ids, attention_mask=pattern[None, None]).logits
        prefix = model(ids[:, :8], attention_mask=pattern[None, None, :8, :8], use_cache=True)
        cache = prefix.cache
        assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 8
        # cached and uncached attention sum in another order: equal up to float32 rounding (measured <= 8e-7 of the
        # largest logit); a wrong cached position or mask moves them by several units
        assert_close_fp32(prefix.logits, full[:, :8])
        # the last block sees everything cached and itself: no mask needed; positions continue at 8
        block = model(ids[:, 8:], cache=cache)
        assert_close_fp32(block.logits, full[:, 8:])
        assert cache.get_seq_length() == 12
        # the sampler's step loop: crop back to the prefix, then run the block again with other tokens and an
        # explicit (b, 1, n, s + n) mask
        cache.crop(-4)  # transformers 5: a negative count of tokens to drop
        other = ids.clone()
        other[:, 8:] = MASK
        full_other = model(other, attention_mask=pattern[None, None]).logits
        again = model(other[:, 8:], attention_mask=pattern[None, None, 8:].expand(2, 1, -1, -1), cache=cache)
        assert_close_fp32(again.logits, full_other[:, 8:])
        # past_key_values= (the pre-5.24 name) is the same cache
        cache.crop(-4)  # transformers 5: a negative count of tokens to drop
        with pytest.warns(FutureWarning, match="past_key_values"):
            legacy = model(other[:, 8:], past_key_values=cache)
        assert_close_fp32(legacy.logits, full_other[:, 8:])


def test_cached_forwards_with_padding_equal_the_uncached_forward(model):
    ids = torch.randint(0, 150, (2, 12), generator=torch.Generator().manual_seed(5))
    ids[1, :3] = EOS
    padding = torch.ones_like(ids)
    padding[1, :3] = 0
    pattern = block_causal(12, BLOCK)[None, None] & padding.bool()[:, None, None, :]
    with torch.no_grad():
        full = model(ids, attention_mask=pattern).logits
        cache = model(ids[:, :8], attention_mask=pattern[:, :, :8, :8], use_cache=True).cache
        block = model(ids[:, 8:], attention_mask=padding, cache=cache)  # a 2-D mask covers cached + new positions
    assert_close_fp32(block.logits, full[:, 8:])  # cached vs uncached: rounding only, as above
    cache.crop(-4)
    with pytest.raises(ValueError, match=r"\(2, 12\)"):
        model(ids[:, 8:], attention_mask=padding[:, 8:], cache=cache)


# -- outputs, saving, real sizes -------------------------------------------------------------------------------------


def test_logits_to_keep_and_labels(model):
    ids = torch.randint(0, 150, (2, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(ids).logits
        # the head's matmul over fewer rows may block its sums differently: rounding only (a wrong position is O(1))
        assert_close_fp32(model(ids, logits_to_keep=3).logits, full[:, -3:])
        keep = ids % 2 == 0
        assert_close_fp32(model(ids, logits_to_keep=keep).logits, full[keep])
        labels = torch.where(keep, ids, -100)
        loss = model(ids, labels=labels).loss
    expected = torch.nn.functional.cross_entropy(full[keep], ids[keep])
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("experts_implementation", ["eager", "grouped_mm", "batched_mm"])
def test_every_experts_implementation_gives_the_official_logits(reference, experts_implementation):
    model = AutoModel.from_pretrained(LLADA2_FIXTURE, experts_implementation=experts_implementation).eval()
    ids = torch.tensor(reference["logits"]["input_ids"])
    with torch.no_grad():
        logits = model(ids).logits
    assert_close_fp32(logits, torch.tensor(reference["logits"]["logits"]))  # rounding only (see the first parity test)


def test_save_pretrained_round_trip_keeps_logits_and_the_official_names(tmp_path, model, reference):
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    raw = json.loads((LLADA2_FIXTURE / "config.json").read_text())
    assert saved["model_type"] == "llada2_moe" and saved["architectures"] == ["LLaDA2MoeModelLM"]
    assert set(raw) - {"rope_scaling"} <= set(saved)
    assert safetensors_keys(tmp_path / "model.safetensors") == safetensors_keys(LLADA2_FIXTURE / "model.safetensors")
    reloaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is LLaDA2MoeModelLM
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = torch.tensor(reference["logits"]["input_ids"])
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(ids).logits, model(ids).logits)


@pytest.mark.parametrize(
    "values, published_total, published_active",
    [
        # Hub model pages: LLaDA2.0-mini "16B" (model card: 16B total, 1.4B activated per token, embeddings included);
        # LLaDA2.0-flash "103B" (model card: 100BA6B, i.e. 6B activated).
        (LLADA2_MINI, 16, 1.4),
        (LLADA2_FLASH, 103, 6),
    ],
    ids=["LLaDA2.0-mini", "LLaDA2.0-flash"],
)
def test_the_real_configs_build_on_the_meta_device_with_the_published_sizes(values, published_total, published_active):
    config = LLaDA2MoeConfig(**values)
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    # the published figures are rounded: to the billion for the totals, to the shown digit for the activated counts
    assert round(total / 1e9) == published_total, total
    experts = model.model.layers[-1].mlp.experts
    per_expert = (experts.gate_up_proj.numel() + experts.down_proj.numel()) // config.num_experts
    moe_layers = config.num_hidden_layers - config.first_k_dense_replace
    active = total - (config.num_experts - config.num_experts_per_tok) * per_expert * moe_layers
    digits = 1 if published_active < 5 else 0
    assert round(active / 1e9, digits) == published_active, active


def test_the_bare_model_returns_hidden_states(model):
    bare = model.model
    assert isinstance(bare, LLaDA2MoeModel)
    ids = torch.tensor([[1, 2, MASK, 4]])
    out = bare(ids, output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 4, 64) and len(out.hidden_states) == 4


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
assert type(model).__name__ == "LLaDA2MoeModelLM"
assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "LLaDA2MoeConfig"
ids = torch.load(ids_path)
with torch.no_grad():
    torch.save({"logits": model(ids).logits}, out_path)
"""


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_our_package(tmp_path, model, reference):
    import subprocess
    import sys

    model.save_pretrained(tmp_path / "ckpt")
    for code_file in ("configuration_llada2_moe.py", "modeling_llada2_moe.py", "modeling_lladamoe.py",
                      "modeling_llada.py", "generation_llada2.py"):
        assert (tmp_path / "ckpt" / code_file).exists(), code_file
    ids = torch.tensor(reference["logits"]["input_ids"])
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
        assert torch.equal(remote["logits"], model(ids).logits)
