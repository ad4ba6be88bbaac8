"""LLaDA-MoE: an OLMoE-style mixture-of-experts Transformer without the causal mask, trained as a masked-diffusion LM.

One file, read top to bottom: attention (with q/k RMSNorm), MLP, fused experts, sparse MoE block, decoder layer,
pre-trained base, bare model, model with head. What the three model files share (rotary embedding, attention, the steps
of the forwards) comes from modeling_llada.py; what the two MoE files share (experts, the `...Mixin` classes of the
MoE block, decoder layer, pre-trained base, bare model and head) is defined here and imported by modeling_llada2_moe.py.

Parameter names are the official ones (`model.layers.{i}.self_attn.q_norm.weight`, `model.layers.{i}.mlp.expert_bias`,
`model.layers.{i}.shared_expert.up_proj.weight`, `lm_head.weight`, ...) except the routed experts, which live in two
fused tensors per layer as in transformers 5's own MoE models (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`);
the checkpoint conversion mapping registered in this file reads the official per-expert weights
(`model.layers.{i}.mlp.experts.{e}.gate_proj.weight`, ...) into them and `save_pretrained` writes them back, so the
inclusionAI safetensors load as they are and what we save loads in the official code.

The semantics follow the official `modeling_lladamoe.py`:
- RMSNorm over each head's queries and keys (`qk_layernorm`) before the rotary embedding;
- layer i has a routed MoE MLP when `moe_layer_freq[i]` is 1, else a dense SwiGLU MLP (the released 7B-A1B: all MoE);
- the router scores are a softmax over `num_experts` (fp32); `expert_bias` (a persistent buffer) is added to the
  scores and the top `num_experts_per_tok` of the biased scores are both the choice and the weights; no
  renormalisation unless `norm_topk_prob`;
- when `shared_expert_intermediate_size` is set (not in the released 7B-A1B), a shared expert, a layer-level module
  (`model.layers.{i}.shared_expert`), runs on the same normed input as the routed experts in the MoE layers, its
  output added to theirs;
- rotary embeddings with `rope_theta` on the first `partial_rotary_factor * head_dim` dimensions; untied head.
One deliberate difference: the rotation is computed in fp32 and cast back (the official code casts cos/sin to the
activation dtype first); in float32 the two are identical.

The experts' forward is chosen by `experts_implementation` (transformers' `use_experts_implementation`): "eager",
the default, is [`LLaDAMoEExperts.forward`] (sort the (token, expert) assignments by expert, then grouped matmuls, or
one matmul per expert for large CPU batches); "grouped_mm" and "batched_mm" are transformers' implementations.

This file travels with every checkpoint (trust_remote_code): it imports only torch, transformers and its siblings.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

# transformers internals this file relies on (inventory: tests/test_upstream_internals.py). Besides these imports:
# PreTrainedModel's `_init_weights`, `_no_split_modules`, `_can_record_outputs`, `_tied_weights_keys`,
# `get_correct_experts_implementation` (overridden in `ExpertsPreTrainedMixin`, which LLaDA 2 shares), and the
# `_apply_gate` that `use_experts_implementation` gives the experts class. The internals every model file shares
# (attention dispatch, masks, `_supports_*`, `_auto_class`, `config._attn_implementation`) are used in
# modeling_llada.py, whose shared pieces this file imports.
from transformers import initialization as init  # normal_ / zeros_ / ones_ that skip `_is_hf_initialized` tensors
from transformers.activations import ACT2FN
from transformers.conversion_mapping import register_checkpoint_conversion_mapping  # (name, mapping, overwrite=)
from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter  # the expert merge recipe
from transformers.integrations.moe import use_experts_implementation  # bare class decorator: experts dispatch
from transformers.modeling_layers import GradientCheckpointingLayer  # activation checkpointing of the layers
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import OutputRecorder  # (target_class, index=) in `_can_record_outputs`

from .configuration_lladamoe import LLaDAMoEConfig
from .generation_llada import LLaDAGenerationMixin
from .likelihood_llada import LLaDALikelihoodMixin
from .modeling_llada import (LegacyCacheOutputMixin, LLaDAAttentionMixin, LLaDACache, LLaDAHeadMixin, LLaDAModelOutput,
                             LLaDAPreTrainedMixin, LLaDARMSNorm, auto_map, canvas_layer_inputs, head_forward,
                             init_shared_weights, open_canvas_forward, run_layers)

AUTO_MAP = auto_map("configuration_lladamoe.LLaDAMoEConfig", "modeling_lladamoe.LLaDAMoEModelLM")


class LLaDAMoEAttention(LLaDAAttentionMixin, nn.Module):
    """Bidirectional multi-head attention with RMSNorm on each head's queries and keys."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.init_attention(config, layer_idx)
        d, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=bias)
        if config.qk_layernorm:
            self.q_norm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)

    forward = LLaDAAttentionMixin.attention

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim)
        if self.config.qk_layernorm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.clip_qkv is not None:
            clip = self.config.clip_qkv
            q, k, v = q.clamp(-clip, clip), k.clamp(-clip, clip), v.clamp(-clip, clip)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        return self.o_proj(out)


class LLaDAMoEMLP(nn.Module):
    """SwiGLU MLP: the dense layers' MLP, each routed expert and the shared expert (different widths)."""

    def __init__(self, config: LLaDAMoEConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# (major, minor) of the running torch, for the grouped-matmul checks below.
_TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def _grouped_mm_supported(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether torch's grouped matmul runs for these operands: a CPU kernel (torch >= 2.9) or a CUDA GPU of compute
    capability 8.0+ (9.x only before torch 2.9), a float32/bfloat16/float16 dtype, and weight rows whose byte lengths
    and start addresses are multiples of 16 (the kernel's alignment rule)."""
    if not hasattr(torch, "_grouped_mm") or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if x.device.type == "cpu":
        if _TORCH_VERSION < (2, 9):
            return False
    elif x.device.type == "cuda":
        capability = torch.cuda.get_device_capability(x.device)
        if capability < (8, 0) or (_TORCH_VERSION < (2, 9) and capability[0] != 9):
            return False
    else:
        return False
    size = x.element_size()
    return all(
        w.dtype == x.dtype and w.shape[-1] * size % 16 == 0 and w.shape[-2] * size % 16 == 0 and w.data_ptr() % 16 == 0
        for w in weights
    )


def _grouped_matmul(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows `offsets[e-1]:offsets[e]` of the expert-sorted (S, in) `x` times `weight[e].T`; weight is (E, out, in)."""
    # torch >= 2.10 has the public `F.grouped_mm` (measured faster than `torch._grouped_mm` on CPU at decode sizes)
    grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm
    return grouped_mm(x, weight.transpose(-2, -1), offs=offsets)


@use_experts_implementation
class LLaDAMoEExperts(nn.Module):
    """The routed experts of one MoE layer as two fused tensors, in transformers 5's MoE layout (`qwen2_moe`,
    `deepseek_v3`, `olmoe`): `gate_up_proj` (num_experts, 2 * intermediate, hidden), gate rows first, and `down_proj`
    (num_experts, hidden, intermediate); expert e computes `down_proj[e] @ (silu(gate) * up)`.

    The official checkpoints store one module per expert (`mlp.experts.{e}.gate_proj.weight`, ...); the conversion
    mapping registered below merges them on load and splits them back on save.

    `config._experts_implementation` picks the forward (`use_experts_implementation`): `"grouped_mm"` and
    `"batched_mm"` are transformers' own; `"eager"` (our default) is the forward below, which sorts the (token,
    expert) assignments by expert and then runs either grouped matmuls (one kernel per projection, no host sync) or,
    for large batches on CPU where torch's grouped kernel is slower, a loop over the experts that received tokens
    (one matmul each, its output `index_add_`-ed into its tokens' rows). Either way there is no loop over tokens.

    Args:
        config: a LLaDA-MoE or LLaDA 2 config (`hidden_size`, `hidden_act`, `num_experts`).
        num_experts (`int`, *optional*): defaults to `config.num_experts`.
        intermediate_size (`int`, *optional*): width of each expert; defaults to `config.expert_intermediate_size`
            (LLaDA-MoE) or `config.moe_intermediate_size` (LLaDA 2).
    """

    # On CPU, grouped matmuls beat the per-expert loop up to about this many (token, expert) assignments (measured
    # with torch 2.13, 64 experts, hidden 256-512: loop/grouped 1.65x at 256, 1.0x at 4096, 0.5x at 65536); above it
    # the loop runs. On CUDA grouped matmuls are used at every size.
    grouped_mm_max_assignments = 4096

    def __init__(self, config, num_experts: int | None = None, intermediate_size: int | None = None):
        super().__init__()
        if intermediate_size is None:
            intermediate_size = getattr(config, "expert_intermediate_size", None)
            if intermediate_size is None:
                intermediate_size = config.moe_intermediate_size
        self.num_experts = config.num_experts if num_experts is None else num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]

    def use_grouped_mm(self, hidden_states: torch.Tensor, num_assignments: int) -> bool:
        """Whether the eager forward takes the grouped-matmul path for `num_assignments` (token, expert) pairs."""
        if not _grouped_mm_supported(hidden_states, self.gate_up_proj, self.down_proj):
            return False
        return hidden_states.device.type != "cpu" or num_assignments <= self.grouped_mm_max_assignments

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Weighted sum of the chosen experts' outputs.

        hidden_states: (T, hidden) tokens; top_k_index: (T, k) chosen experts; top_k_weights: (T, k) their weights.
        Returns (T, hidden) in hidden_states' dtype.
        """
        num_tokens, top_k = top_k_index.shape
        flat_experts = top_k_index.reshape(-1)
        # Sort the T*k assignments by expert: each expert then reads one contiguous run of rows.
        sorted_experts, order = torch.sort(flat_experts, stable=True)
        tokens = order // top_k
        x = hidden_states[tokens].to(self.gate_up_proj.dtype)
        sorted_weights = top_k_weights.reshape(-1)[order, None].to(x.dtype)
        # Assignments per expert; histc (float on CPU, int on CUDA, as transformers does) has a fixed output size,
        # where bincount would read the largest id back to the host.
        on_cpu = sorted_experts.device.type == "cpu"
        counts = torch.histc(
            sorted_experts.float() if on_cpu else sorted_experts.int(), bins=self.num_experts, min=0,
            max=self.num_experts - 1,
        ).long()
        if self.use_grouped_mm(x, order.numel()):
            offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
            h = self._apply_gate(_grouped_matmul(x, self.gate_up_proj, offsets))
            y = _grouped_matmul(h, self.down_proj, offsets) * sorted_weights
            # Back to (token, slot) order, then a deterministic sum over the k slots of each token.
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            return y[inverse].view(num_tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)
        # One matmul per expert that has tokens, its weighted output added into its tokens' rows. split / unbind
        # rather than indexing: their backward is one cat / stack, where indexing would add a zero-filled full-size
        # gradient per expert.
        counts = counts.tolist()  # one host sync per layer
        out = torch.zeros(num_tokens, self.hidden_dim, device=x.device, dtype=x.dtype)
        for x_e, tokens_e, weights_e, gate_up, down, count in zip(
            x.split(counts), tokens.split(counts), sorted_weights.split(counts), self.gate_up_proj.unbind(0),
            self.down_proj.unbind(0), counts,
        ):
            if count:
                out.index_add_(0, tokens_e, F.linear(self._apply_gate(F.linear(x_e, gate_up)), down) * weights_e)
        return out.to(hidden_states.dtype)


def expert_conversion_mapping() -> list[WeightConverter]:
    """Official per-expert weights <-> fused [`LLaDAMoEExperts`] tensors (transformers' `qwen2_moe` recipe): on load
    the `mlp.experts.{e}.gate_proj/up_proj.weight` are stacked over e and concatenated (gate first) into
    `mlp.experts.gate_up_proj`, the `down_proj.weight` stacked into `mlp.experts.down_proj`; `save_pretrained` runs
    the same steps backwards, so saved checkpoints keep the official names."""
    return [
        WeightConverter(
            source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
            target_patterns="mlp.experts.gate_up_proj",
            operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
        ),
        WeightConverter(
            source_patterns="mlp.experts.*.down_proj.weight",
            target_patterns="mlp.experts.down_proj",
            operations=[MergeModulelist(dim=0)],
        ),
    ]


# Registered at import, so that it also holds when this file is loaded as remote code (trust_remote_code): transformers
# applies a mapping to a model class outside its own package only when it was registered this way. LLaDA 2 has a model
# type of its own ("llada2_moe"; its experts have the same names and layout). LLaDA-MoE's official model type "llada"
# is the dense LLaDA's too, which has no experts: its mapping is registered under the LLaDA-MoE class names instead,
# so the dense model gets none.
for _key in ("LLaDAMoEModelLM", "LLaDAMoEModel", "llada2_moe"):
    register_checkpoint_conversion_mapping(_key, expert_conversion_mapping(), overwrite=True)


class SparseMoeBlockMixin:
    """The forward of the sparse MoE blocks of LLaDA-MoE and LLaDA 2: `route` the tokens, weight the outputs of the
    chosen `experts`, add those of the `shared_experts` where the block has them (LLaDA 2's)."""

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., hidden) -> the MoE output in that shape, and the (tokens, num_experts) router logits."""
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        router_logits, weights, experts = self.route(x)
        y = self.experts(x, experts, weights)
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(x)
        return y.reshape(shape), router_logits


class LLaDAMoESparseMoeBlock(SparseMoeBlockMixin, nn.Module):
    """Routed experts: softmax router (+ expert bias), top-k, weighted sum of the chosen experts' outputs."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, self.num_experts, bias=False)
        self.experts = LLaDAMoEExperts(config)
        if config.moe_router_enable_expert_bias:
            # A persistent buffer, as in the official code: it is in the checkpoints but not trained by gradients.
            self.register_buffer("expert_bias", torch.zeros(self.num_experts))
        else:
            self.expert_bias = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (T, E), routing weights (T, k) in x's dtype and chosen experts (T, k) of flat tokens x."""
        router_logits = self.gate(x)
        scores = F.softmax(router_logits, dim=-1, dtype=torch.float)
        if self.expert_bias is not None:
            scores = scores + self.expert_bias.float()
        weights, experts = torch.topk(scores, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return router_logits, weights.to(x.dtype), experts


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...],
    num_experts: int,
    top_k: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss over all MoE layers (the official LLaDA-MoE / OLMoE definition).

    `num_experts * sum_e f_e * P_e` per top-k slot, summed: f_e is the share of tokens whose k-th choice is expert e
    and P_e the mean router probability of e, both over the non-padding tokens of every MoE layer. The choice here is
    the top-k of the plain softmax (without `expert_bias`), as in the official code.

    router_logits: per MoE layer, (b * L, num_experts) logits; attention_mask: (b, L), 1 for tokens, or None.
    """
    logits = torch.cat([layer_logits.to(router_logits[0].device) for layer_logits in router_logits])
    probs = F.softmax(logits.float(), dim=-1)
    chosen = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).float()  # (N, k, E)
    if attention_mask is None:
        weights = torch.ones(probs.shape[0], device=probs.device)
    else:  # the layers' logits are concatenated layer after layer, each in (b, L) order
        weights = attention_mask.reshape(-1).to(probs.device, torch.float).repeat(len(router_logits))
    total = weights.sum()
    tokens_per_expert = (chosen * weights[:, None, None]).sum(0) / total  # (k, E)
    prob_per_expert = (probs * weights[:, None]).sum(0) / total  # (E,)
    return (tokens_per_expert * prob_per_expert[None]).sum() * num_experts


class DecoderLayerMixin:
    """The pre-norm layer of LLaDA-MoE and LLaDA 2: the attention module named `attention_name` (the official names
    differ) over `input_layernorm`, then `mlp` over `post_attention_layernorm`: a dense MLP or, where `is_moe`, the
    routed experts, whose router logits the layer returns third, plus a layer-level `shared_expert` where there is
    one (LLaDA-MoE; LLaDA 2's shared experts are part of its `mlp`)."""

    attention_name = "self_attn"

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache=None,
        cache_position: int | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attention = getattr(self, self.attention_name)
        attended, weights = attention(
            self.input_layernorm(hidden_states), rotary, attention_mask, cache, cache_position, **kwargs
        )
        hidden_states = hidden_states + attended
        x = self.post_attention_layernorm(hidden_states)
        router_logits = None
        if self.is_moe:
            y, router_logits = self.mlp(x)
            if hasattr(self, "shared_expert"):
                y = y + self.shared_expert(x)
        else:
            y = self.mlp(x)
        return hidden_states + y, weights, router_logits


class LLaDAMoEDecoderLayer(DecoderLayerMixin, GradientCheckpointingLayer):
    """Pre-norm block: attention, then the dense MLP or the routed experts plus the shared expert."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.is_moe = config.is_moe_layer(layer_idx)
        self.self_attn = LLaDAMoEAttention(config, layer_idx)
        self.input_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.is_moe:
            self.mlp = LLaDAMoESparseMoeBlock(config)
            if config.shared_expert_intermediate_size is not None:
                self.shared_expert = LLaDAMoEMLP(config, config.shared_expert_intermediate_size)
        else:
            self.mlp = LLaDAMoEMLP(config, config.dense_intermediate_size)


@dataclass
class LLaDAMoEModelOutput(LLaDAModelOutput):
    """Output of [`LLaDAMoEModel`]: as [`LLaDAModelOutput`], plus `router_logits` (with `output_router_logits`):
    per MoE layer, the (b * L, num_experts) logits of its router."""

    router_logits: tuple[torch.Tensor, ...] | None = None


@dataclass
class LLaDAMoEOutput(LegacyCacheOutputMixin, ModelOutput):
    """Output of [`LLaDAMoEModelLM`]: as [`LLaDAOutput`], plus `router_logits` as in [`LLaDAMoEModelOutput`] and,
    with them, `aux_loss`, the load-balancing loss ([`load_balancing_loss`]; `loss` then includes
    `router_aux_loss_coef * aux_loss`)."""

    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: "LLaDACache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None


class ExpertsPreTrainedMixin:
    """What the pre-trained bases of LLaDA-MoE and LLaDA 2 add to [`LLaDAPreTrainedMixin`] (before `PreTrainedModel`
    in their bases): the default experts implementation, and the initialisation of the fused experts."""

    def get_correct_experts_implementation(self, requested_experts: str | None) -> str:
        """transformers' check of `experts_implementation`, except that the default (None) is `"eager"`, our own
        forward of [`LLaDAMoEExperts`], which picks grouped matmuls or the per-expert loop by size; transformers
        would default to `"grouped_mm"`, slower than the loop on CPU for large batches."""
        return super().get_correct_experts_implementation("eager" if requested_experts is None else requested_experts)

    @torch.no_grad()
    def init_moe_weights(self, module: nn.Module) -> None:
        """[`init_shared_weights`], and the fused experts' weights normal(0, `initializer_range`)."""
        std = self.config.initializer_range
        init_shared_weights(module, std)
        if isinstance(module, LLaDAMoEExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)


class LLaDAMoEPreTrainedModel(ExpertsPreTrainedMixin, LLaDAPreTrainedMixin, PreTrainedModel):
    config_class = LLaDAMoEConfig
    config: LLaDAMoEConfig
    _no_split_modules = ["LLaDAMoEDecoderLayer"]
    # What `output_router_logits` returns: the second output of each sparse MoE block (recorded by our forward).
    _can_record_outputs = {"router_logits": OutputRecorder(LLaDAMoESparseMoeBlock, index=1)}
    code_auto_map = AUTO_MAP

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        self.init_moe_weights(module)
        if isinstance(module, LLaDAMoESparseMoeBlock) and module.expert_bias is not None:
            init.zeros_(module.expert_bias)


class DecoderStackMixin:
    """What the bare models of LLaDA-MoE and LLaDA 2 share besides the steps of their forward: a token embedding (the
    module named `embeddings_name`; the official names differ), then `layers` and a final `norm`."""

    embeddings_name = "embed_tokens"

    def init_layers(self, config, layer_class: type[nn.Module]) -> None:
        """`layers` (one `layer_class(config, i)` per layer) and `norm`, then transformers' `post_init`."""
        self.layers = nn.ModuleList(layer_class(config, i) for i in range(config.num_hidden_layers))
        self.norm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.embeddings_name)

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        setattr(self, self.embeddings_name, value)


class LinearHeadMixin:
    """The output head of LLaDA-MoE and LLaDA 2: `lm_head`, a linear map from `hidden_size` to `vocab_size` (no
    bias) after the bare model `model`."""

    def init_head(self, config, model: nn.Module) -> None:
        """`model` and `lm_head`, then transformers' `post_init`."""
        self.model = model
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value


class LLaDAMoEModel(DecoderStackMixin, LLaDAMoEPreTrainedModel):
    """The bare LLaDA-MoE Transformer: token ids in, final-norm hidden states out (official name `model.*`)."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.init_layers(config, LLaDAMoEDecoderLayer)

    @can_return_tuple
    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None, output_attentions: bool | None = None,
        output_router_logits: bool | None = None, validate_inputs: bool = True, cache: LLaDACache | None = None,
        use_cache: bool = False, cache_position: int | None = None, **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDAMoEModelOutput:
        """Run the Transformer over a whole canvas (no causal mask). Arguments as in [`LLaDAModel.forward`], plus
        `output_router_logits` (defaults to `config.output_router_logits`)."""
        cache = open_canvas_forward(self, "LLaDA-MoE", input_ids, inputs_embeds, attention_mask, cache, use_cache,
                                    cache_position, validate_inputs, kwargs)
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        layer_inputs = canvas_layer_inputs(self, hidden, attention_mask, position_ids, cache, cache_position,
                                           self.config.rotary_dim)
        fields = run_layers(self, self.layers, self.norm, hidden, layer_inputs, kwargs, output_hidden_states,
                            output_attentions, output_router_logits)
        return LLaDAMoEModelOutput(cache=cache, **fields)


class LLaDAMoEModelLM(
    LinearHeadMixin, LLaDAHeadMixin, LLaDAGenerationMixin, LLaDALikelihoodMixin, LLaDAMoEPreTrainedModel
):
    """LLaDA-MoE with its output head: predicts the clean token at every position of a (partly masked) canvas.

    `generate` is the same diffusion sampler as the dense [`LLaDAModelLM`]'s (`generation_llada.py`); the official
    checkpoints do not store the `[MASK]` id, so pass `mask_token_id=156895` (the default of the config) or set it.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.init_head(config, LLaDAMoEModel(config))

    @can_return_tuple
    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None, output_hidden_states: bool | None = None,
        output_attentions: bool | None = None, output_router_logits: bool | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0, validate_inputs: bool = True, cache: LLaDACache | None = None,
        use_cache: bool = False, cache_position: int | None = None, **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDAMoEOutput:
        """Logits of the clean tokens for a (partly masked) canvas; arguments as in [`LLaDAModelLM.forward`], plus
        `output_router_logits`: with it, `aux_loss` is the load-balancing loss of the routers (padding excluded)
        and, when `labels` are given, `loss` adds `config.router_aux_loss_coef * aux_loss` (the OLMoE convention; the
        official code returns the aux loss only)."""
        outputs, logits, loss = head_forward(
            self, self.lm_head, labels, logits_to_keep, cache, kwargs, input_ids=input_ids,
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            output_router_logits=output_router_logits, validate_inputs=validate_inputs, use_cache=use_cache,
            cache_position=cache_position,
        )
        aux_loss = None
        if outputs.router_logits:
            mask = attention_mask
            if mask is not None and (mask.dim() != 2 or mask.shape != outputs.last_hidden_state.shape[:2]):
                mask = None  # a prepared 4-D mask or a cached slice's canvas mask: count every token
            aux_loss = load_balancing_loss(
                outputs.router_logits, self.config.num_experts, self.config.num_experts_per_tok, mask
            )
            if loss is not None:
                loss = loss + self.config.router_aux_loss_coef * aux_loss.to(loss.device)
        return LLaDAMoEOutput(loss=loss, aux_loss=aux_loss, logits=logits, cache=outputs.cache,
                              hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                              router_logits=outputs.router_logits)


__all__ = [
    "AUTO_MAP",
    "LLaDAMoEExperts",
    "expert_conversion_mapping",
    "LLaDAMoEPreTrainedModel",
    "LLaDAMoEModel",
    "LLaDAMoEModelLM",
    "LLaDAMoEModelOutput",
    "LLaDAMoEOutput",
    "load_balancing_loss",
]
