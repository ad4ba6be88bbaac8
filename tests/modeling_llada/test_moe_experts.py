"""The fused LLaDA-MoE experts: every `experts_implementation` against a per-token hand computation, the official
per-expert checkpoint names in and out (model types "llada" and "llada2_moe"), and the implementation switch."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.integrations import moe as transformers_moe

from modeling_llada import LLaDAMoEConfig, LLaDAMoEModelLM
from modeling_llada.modeling_lladamoe import LLaDAMoEExperts
from tests.utils import assert_close_fp32

FIXTURES = Path(__file__).parent.parent / "fixtures"
MOE_FIXTURE = FIXTURES / "lladamoe-tiny-official"
DENSE_FIXTURE = FIXTURES / "llada-tiny-official"
GROUPED_MM_ON_CPU = hasattr(torch, "_grouped_mm") and tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 9)


def tiny_config(**overrides) -> LLaDAMoEConfig:
    settings = dict(
        vocab_size=64, hidden_size=32, dense_intermediate_size=64, expert_intermediate_size=16,
        shared_expert_intermediate_size=16, num_hidden_layers=3, moe_layer_freq=[0, 1, 1], num_attention_heads=4,
        num_experts=6,
        num_experts_per_tok=3, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=1,
        mask_token_id=63,
    )
    return LLaDAMoEConfig(**{**settings, **overrides})


def random_experts(implementation: str, seed: int = 0) -> LLaDAMoEExperts:
    config = tiny_config()
    config._experts_implementation = implementation
    experts = LLaDAMoEExperts(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=generator) * 0.3)
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=generator) * 0.3)
    return experts


def routing(tokens: int, num_experts: int, top_k: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct random experts per token (expert 0 never chosen, so one expert gets no tokens) and random weights."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(tokens, num_experts, generator=generator)
    scores[:, 0] = -1.0
    index = scores.topk(top_k, dim=-1).indices
    return index, torch.rand(tokens, top_k, generator=generator)


def hand_experts(gate_up, down, x, index, weights):
    """Per token and per chosen expert: weight * down_e(silu(gate_e x) * up_e x), with the official per-expert split
    of the fused tensor (gate rows first)."""
    inter = down.shape[-1]
    rows = []
    for t in range(x.shape[0]):
        total = torch.zeros_like(x[t])
        for slot in range(index.shape[1]):
            e = int(index[t, slot])
            gate, up = gate_up[e, :inter], gate_up[e, inter:]
            total = total + weights[t, slot] * (down[e] @ (F.silu(gate @ x[t]) * (up @ x[t])))
        rows.append(total)
    return torch.stack(rows)


IMPLEMENTATIONS = [
    ("eager", None),  # our default: grouped matmuls at this size where torch has them
    ("eager", -1),  # our per-expert loop (the large-batch path)
    ("grouped_mm", None),
    ("batched_mm", None),
]


@pytest.mark.parametrize("implementation,max_assignments", IMPLEMENTATIONS)
def test_every_implementation_equals_the_hand_computation_with_gradients(implementation, max_assignments):
    experts = random_experts(implementation)
    if max_assignments is not None:
        experts.grouped_mm_max_assignments = max_assignments
    index, weights = routing(tokens=11, num_experts=6, top_k=3)
    x = torch.randn(11, 32, generator=torch.Generator().manual_seed(2))
    x_ours, w_ours = x.clone().requires_grad_(), weights.clone().requires_grad_()
    out = experts(x_ours, index, w_ours)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * upstream).sum().backward()

    gate_up = experts.gate_up_proj.detach().clone().requires_grad_()
    down = experts.down_proj.detach().clone().requires_grad_()
    x_hand, w_hand = x.clone().requires_grad_(), weights.clone().requires_grad_()
    expected = hand_experts(gate_up, down, x_hand, index, w_hand)
    (expected * upstream).sum().backward()

    # another summation order than the hand loop: rounding only (measured <= 5e-7 of the largest value; gradients
    # reach ~30, and a fixed atol of 1e-5 saw errors of 9.5e-6)
    assert_close_fp32(out, expected)
    for ours, hand in ((x_ours, x_hand), (w_ours, w_hand), (experts.gate_up_proj, gate_up), (experts.down_proj, down)):
        assert_close_fp32(ours.grad, hand.grad)
    assert torch.count_nonzero(experts.gate_up_proj.grad[0]) == 0  # the expert nobody chose


@pytest.mark.skipif(not GROUPED_MM_ON_CPU, reason="torch < 2.9 has no CPU grouped matmul")
def test_the_eager_forward_takes_the_grouped_path_for_small_batches_and_the_loop_for_large_ones(monkeypatch):
    experts = random_experts("eager")
    calls = []
    monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(1) or torch.ops.aten._grouped_mm(*a, **k))
    index, weights = routing(tokens=5, num_experts=6, top_k=3)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    small = experts(x, index, weights)
    assert len(calls) == 2  # gate/up and down, one kernel each
    experts.grouped_mm_max_assignments = 14  # 15 assignments: over the threshold
    large = experts(x, index, weights)
    assert len(calls) == 2
    assert_close_fp32(small, large)  # grouped kernel vs per-expert loop: rounding only


def test_an_unaligned_width_falls_back_to_the_loop():
    """torch's grouped kernel needs 16-byte rows: a width of 6 floats (24 bytes) must not reach it."""
    config = tiny_config(expert_intermediate_size=6)
    config._experts_implementation = "eager"
    experts = LLaDAMoEExperts(config)
    generator = torch.Generator().manual_seed(0)  # seeded, weights of the same scale as random_experts'
    with torch.no_grad():
        experts.gate_up_proj.copy_(torch.randn(experts.gate_up_proj.shape, generator=generator) * 0.3)
        experts.down_proj.copy_(torch.randn(experts.down_proj.shape, generator=generator) * 0.3)
    index, weights = routing(tokens=4, num_experts=6, top_k=3)
    x = torch.randn(4, 32, generator=generator)
    with torch.no_grad():
        expected = hand_experts(experts.gate_up_proj, experts.down_proj, x, index, weights)
        assert_close_fp32(experts(x, index, weights), expected)


def test_the_constructor_reads_either_family_s_width_field():
    llada2_like = PreTrainedConfig()
    llada2_like.hidden_size, llada2_like.hidden_act, llada2_like.num_experts = 32, "silu", 8
    llada2_like.moe_intermediate_size = 16
    experts = LLaDAMoEExperts(llada2_like)
    assert experts.gate_up_proj.shape == (8, 32, 32) and experts.down_proj.shape == (8, 32, 16)
    experts = LLaDAMoEExperts(tiny_config(), num_experts=5, intermediate_size=8)
    assert experts.gate_up_proj.shape == (5, 16, 32) and experts.down_proj.shape == (5, 32, 8)


# --- experts_implementation through from_pretrained -------------------------------------------------------------------


def test_the_default_is_our_eager_forward_and_an_unknown_name_is_refused():
    model = AutoModel.from_pretrained(MOE_FIXTURE)
    assert model.config._experts_implementation == "eager"
    with pytest.raises(ValueError, match="experts_implementation"):
        AutoModel.from_pretrained(MOE_FIXTURE, experts_implementation="no_such_kernel")


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_from_pretrained_selects_transformers_implementations(monkeypatch, implementation):
    mapping = transformers_moe.ExpertsInterface._global_mapping
    calls = []

    def counting(self, *args, original=mapping[implementation], **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setitem(mapping, implementation, counting)
    ids = torch.tensor([[3, 150, 7, 150, 9]])
    default = AutoModel.from_pretrained(MOE_FIXTURE).eval()
    model = AutoModel.from_pretrained(MOE_FIXTURE, experts_implementation=implementation).eval()
    assert model.config._experts_implementation == implementation
    with torch.no_grad():
        logits = model(ids).logits
        assert calls == ["LLaDAMoEExperts"] * 2  # both MoE layers went through transformers' function
        assert_close_fp32(logits, default(ids).logits)  # another experts kernel: rounding only
    model.set_experts_implementation("eager")
    with torch.no_grad():
        model(ids)
    assert len(calls) == 2


# --- checkpoint conversion --------------------------------------------------------------------------------------------


def safetensors_dict(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_a_random_model_saves_official_per_expert_names_and_reloads_identically(tmp_path):
    torch.manual_seed(0)
    model = LLaDAMoEModelLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    saved = safetensors_dict(tmp_path / "model.safetensors")
    assert not any(k.endswith(("gate_up_proj", "experts.down_proj")) for k in saved)
    for i in (1, 2):
        experts = model.model.layers[i].mlp.experts
        for e in range(6):
            prefix = f"model.layers.{i}.mlp.experts.{e}."
            assert torch.equal(saved[prefix + "gate_proj.weight"], experts.gate_up_proj[e, :16])
            assert torch.equal(saved[prefix + "up_proj.weight"], experts.gate_up_proj[e, 16:])
            assert torch.equal(saved[prefix + "down_proj.weight"], experts.down_proj[e])
    assert sum(".mlp.experts." in k for k in saved) == 2 * 6 * 3
    reloaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_the_dense_llada_checkpoint_is_untouched_by_the_expert_mapping(tmp_path):
    model, info = AutoModel.from_pretrained(DENSE_FIXTURE, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.save_pretrained(tmp_path)
    official = safetensors_dict(DENSE_FIXTURE / "model.safetensors")
    saved = safetensors_dict(tmp_path / "model.safetensors")
    assert set(saved) == set(official)
    assert all(torch.equal(saved[k], official[k]) for k in official)


class _LLaDA2LikeConfig(PreTrainedConfig):
    model_type = "llada2_moe"


class _LLaDA2LikeModel(PreTrainedModel):
    """Only the experts of LLaDA 2's layout (`model.layers.{i}.mlp.experts.{e}.*_proj.weight`), for the mapping test."""

    config_class = _LLaDA2LikeConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(torch.nn.Module() for _ in range(3))
        for layer in self.model.layers[1:]:
            layer.mlp = torch.nn.Module()
            layer.mlp.experts = LLaDAMoEExperts(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, LLaDAMoEExperts):
            torch.nn.init.zeros_(module.gate_up_proj)
            torch.nn.init.zeros_(module.down_proj)


def test_llada2_per_expert_names_load_into_the_fused_tensors_and_save_back(tmp_path):
    generator = torch.Generator().manual_seed(0)
    official = {}
    for i in (1, 2):
        for e in range(8):
            prefix = f"model.layers.{i}.mlp.experts.{e}."
            official[prefix + "gate_proj.weight"] = torch.randn(16, 32, generator=generator)
            official[prefix + "up_proj.weight"] = torch.randn(16, 32, generator=generator)
            official[prefix + "down_proj.weight"] = torch.randn(32, 16, generator=generator)
    config = _LLaDA2LikeConfig(hidden_size=32, hidden_act="silu", num_experts=8, moe_intermediate_size=16)
    (tmp_path / "official").mkdir()
    config.save_pretrained(tmp_path / "official")
    save_file(official, str(tmp_path / "official" / "model.safetensors"), metadata={"format": "pt"})

    model, info = _LLaDA2LikeModel.from_pretrained(tmp_path / "official", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for i in (1, 2):
        experts = model.model.layers[i].mlp.experts
        for e in range(8):
            prefix = f"model.layers.{i}.mlp.experts.{e}."
            assert torch.equal(experts.gate_up_proj[e, :16], official[prefix + "gate_proj.weight"])
            assert torch.equal(experts.gate_up_proj[e, 16:], official[prefix + "up_proj.weight"])
            assert torch.equal(experts.down_proj[e], official[prefix + "down_proj.weight"])
    model.save_pretrained(tmp_path / "saved")
    saved = safetensors_dict(tmp_path / "saved" / "model.safetensors")
    assert set(saved) == set(official)
    assert all(torch.equal(saved[k], official[k]) for k in official)
