"""LLaDA 2.x: a Ling 2.0-style mixture-of-experts Transformer without the causal mask, trained by block diffusion.

One file, read top to bottom: attention (fused `query_key_value`, QK-norm, partial rotary), MLP, router, sparse MoE
block, decoder layer, pre-trained base, bare model, model with head. Parameter names are exactly the official ones
(`model.word_embeddings.weight`, `model.layers.{i}.attention.query_key_value.weight`,
`model.layers.{i}.attention.dense.weight`, `model.layers.{i}.mlp.gate.weight`, `model.layers.{i}.mlp.gate.expert_bias`,
`model.layers.{i}.mlp.shared_experts.up_proj.weight`, `model.norm.weight`, `lm_head.weight`, ...), so the inclusionAI
safetensors load as they are, except the routed experts: the official per-expert weights
(`mlp.experts.{e}.gate_proj.weight`, ...) are fused into two tensors per layer on load and split back on save by the
conversion mapping that `modeling_lladamoe.py` registers for `model_type` "llada2_moe".

The semantics follow the official `modeling_llada2_moe.py` (LLaDA2.0 and LLaDA2.1 share it):
- one `query_key_value` projection, viewed as (heads + 2 * kv_heads) heads of `head_dim`: queries, keys, values;
- RMSNorm over each head's queries and keys (`use_qk_norm`), then NeoX rotary embeddings on the first
  `int(head_dim * partial_rotary_factor)` dimensions of each head (`rope_theta`); the rest pass through;
- layers from `first_k_dense_replace` on have a routed MoE MLP plus shared experts, the ones before a dense MLP;
- the router (`mlp.gate`) scores in fp32 with a sigmoid; `expert_bias` is added for the choice only: groups of
  `num_experts / n_group` experts score the sum of their two best biased scores, the `topk_group` best groups are
  kept, and the `num_experts_per_tok` best biased scores inside them are chosen; the weights are the chosen experts'
  unbiased scores divided by their sum (+1e-20; whenever more than one expert is chosen, whatever `norm_topk_prob`
  says), times `routed_scaling_factor`;
- no attention mask means full bidirectional attention (the official file gives that under sdpa but silently turns
  causal under eager attention; we do not copy that); a 4-D mask (boolean `True` = may attend, or additive floats)
  gives block diffusion's block-causal attention; untied output head.
Deliberate differences: the rotation is computed in fp32 and cast back (the official code casts cos/sin to the
activation dtype first), and the logits keep the model's dtype (the official code casts them to fp32); in float32 both
are identical.

This file travels with every checkpoint (trust_remote_code): it imports only torch, transformers and its siblings.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

# transformers internals this file relies on (inventory: tests/test_upstream_internals.py). Besides these imports:
# PreTrainedModel's `_init_weights`, `_no_split_modules`, `_can_record_outputs`, `_tied_weights_keys` and
# `_can_set_experts_implementation_cached_value`. The internals every model file shares (attention dispatch,
# `_supports_*`, `_auto_class`, `config._attn_implementation`) are used in modeling_llada.py, and the MoE ones
# (`get_correct_experts_implementation`, the experts dispatch) in modeling_lladamoe.py: this file imports their
# shared pieces.
from transformers import initialization as init  # normal_ / zeros_ / ones_ that skip `_is_hf_initialized` tensors
from transformers.cache_utils import Cache, DynamicCache  # update(k, v, layer_idx) -> all keys/values; get_seq_length
from transformers.masking_utils import create_bidirectional_mask  # (config=, inputs_embeds=, attention_mask=)
from transformers.modeling_layers import GradientCheckpointingLayer  # activation checkpointing of the layers
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.output_capturing import OutputRecorder  # (target_class, index=) in `_can_record_outputs`

from .configuration_llada2_moe import LLaDA2MoeConfig
from .generation_llada2 import LLaDA2GenerationMixin
from .likelihood_llada import LLaDALikelihoodMixin
from .modeling_llada import (LLaDAAttentionMixin, LLaDAHeadMixin, LLaDAPreTrainedMixin, LLaDARMSNorm, auto_map,
                             cached_padding_mask, check_inputs, head_forward, open_forward,
                             require_dense_mask_attention, rotary_for_positions, run_layers)
from .modeling_lladamoe import (DecoderLayerMixin, DecoderStackMixin, ExpertsPreTrainedMixin, LinearHeadMixin,
                                LLaDAMoEExperts, LLaDAMoEMLP, LLaDAMoEModelOutput, LLaDAMoEOutput, SparseMoeBlockMixin)

AUTO_MAP = auto_map("configuration_llada2_moe.LLaDA2MoeConfig", "modeling_llada2_moe.LLaDA2MoeModelLM")


class LLaDA2MoeAttention(LLaDAAttentionMixin, nn.Module):
    """Grouped-query attention with a fused `query_key_value` projection, QK-norm and partial rotary embeddings."""

    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.init_attention(config, layer_idx)
        d = config.hidden_size
        self.query_key_value = nn.Linear(
            d, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=config.use_qkv_bias
        )
        if config.use_qk_norm:
            self.query_layernorm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)
            self.key_layernorm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, d, bias=config.use_bias)

    forward = LLaDAAttentionMixin.attention

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        qkv = self.query_key_value(x).view(b, length, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        if self.config.use_qk_norm:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        return self.dense(out)


class LLaDA2MoeMLP(LLaDAMoEMLP):
    """SwiGLU MLP (LLaDA-MoE's, `gate_proj`/`up_proj`/`down_proj`): the dense layers' MLP and the shared experts."""


class LLaDA2MoeRouter(nn.Module):
    """The official `mlp.gate`: sigmoid scores in fp32, expert bias for the choice only, group-limited top-k."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.num_experts, config.hidden_size))
        # A persistent buffer, as in the official code (which has it whatever `moe_router_enable_expert_bias` says):
        # it is in the checkpoints and is updated by the trainer's load balancing, not by gradients.
        self.register_buffer("expert_bias", torch.zeros(self.num_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (T, E) and routing weights (T, k), both fp32, and chosen experts (T, k) of flat tokens x."""
        logits = F.linear(x.float(), self.weight.float())
        scores = torch.sigmoid(logits)
        biased = scores + self.expert_bias.float()
        if self.n_group > 1:
            num_tokens = biased.shape[0]
            grouped = biased.view(num_tokens, self.n_group, -1)
            group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
            kept_groups = group_scores.topk(self.topk_group, dim=-1, sorted=False).indices
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
            biased = biased.masked_fill(~keep.repeat_interleave(grouped.shape[-1], dim=1), float("-inf"))
        experts = biased.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, experts)
        if self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, weights * self.routed_scaling_factor, experts


class LLaDA2MoeSparseMoeBlock(SparseMoeBlockMixin, nn.Module):
    """Routed experts (fused, [`LLaDAMoEExperts`]) weighted by the router, plus the shared experts."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.gate = LLaDA2MoeRouter(config)
        self.experts = LLaDAMoEExperts(config, intermediate_size=config.moe_intermediate_size)
        if config.num_shared_experts is not None:  # as the official code: 0 gives an empty (zero-width) module
            self.shared_experts = LLaDA2MoeMLP(config, config.moe_intermediate_size * config.num_shared_experts)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.gate(x)


class LLaDA2MoeDecoderLayer(DecoderLayerMixin, GradientCheckpointingLayer):
    """Pre-norm block: attention, then the dense MLP or the routed plus shared experts."""

    attention_name = "attention"

    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.is_moe = config.is_moe_layer(layer_idx)
        self.input_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LLaDA2MoeAttention(config, layer_idx)
        self.post_attention_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.is_moe:
            self.mlp = LLaDA2MoeSparseMoeBlock(config)
        else:
            self.mlp = LLaDA2MoeMLP(config, config.intermediate_size)


@dataclass
class LLaDA2MoeModelOutput(LLaDAMoEModelOutput):
    """Output of [`LLaDA2MoeModel`].

    last_hidden_state: (b, L, hidden) after the final norm. cache: the transformers `Cache` of the forward (with
    `use_cache=True` or a cache passed in), every layer's keys and values of all positions seen so far.
    hidden_states / attentions: per layer, with `output_hidden_states` / `output_attentions`.
    router_logits: with `output_router_logits`, per MoE layer, the (b * L, num_experts) fp32 logits of its router."""


@dataclass
class LLaDA2MoeOutput(LLaDAMoEOutput):
    """Output of [`LLaDA2MoeModelLM`]: `loss` (with `labels`), `logits` and the fields of [`LLaDA2MoeModelOutput`].
    `aux_loss` is always None: LLaDA 2 balances its experts with `expert_bias` (no auxiliary loss; official too)."""


class LLaDA2MoePreTrainedModel(ExpertsPreTrainedMixin, LLaDAPreTrainedMixin, PreTrainedModel):
    config_class = LLaDA2MoeConfig
    config: LLaDA2MoeConfig
    _no_split_modules = ["LLaDA2MoeDecoderLayer"]
    # `experts_implementation=` is accepted where transformers finds `@use_experts_implementation` in the model's own
    # module source; our experts class carries it in its sibling `modeling_lladamoe.py`, so say so directly (this is
    # the value transformers caches after that check).
    _can_set_experts_implementation_cached_value = True
    # Declares where `output_router_logits` comes from (transformers' MoE convention; collected by `forward` itself).
    _can_record_outputs = {"router_logits": OutputRecorder(LLaDA2MoeSparseMoeBlock, index=1)}
    code_auto_map = AUTO_MAP

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        self.init_moe_weights(module)
        if isinstance(module, LLaDA2MoeRouter):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.expert_bias)


class LLaDA2MoeModel(DecoderStackMixin, LLaDA2MoePreTrainedModel):
    """The bare LLaDA 2 Transformer: token ids in, final-norm hidden states out (official name `model.*`)."""

    embeddings_name = "word_embeddings"

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        # as the official model: the padding id's embedding row gets no gradient
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.init_layers(config, LLaDA2MoeDecoderLayer)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None, output_attentions: bool | None = None,
        output_router_logits: bool | None = None, validate_inputs: bool = True, cache: Cache | None = None,
        use_cache: bool = False, **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDA2MoeModelOutput:
        """Run the Transformer over a canvas, or over a chunk that follows a cache.

        Args:
            input_ids: (b, n) token ids, `mask_token_id` at the positions to predict.
            attention_mask: with no cache, S = n; with a cache holding s positions, S = s + n. One of
                - None: every position attends to every other (and to everything cached): no causal mask;
                - (b, S) with 1 for tokens and 0 for padding (left padding is the convention);
                - (b or 1, n, S) or (b or 1, 1 or heads, n, S): which keys each query may attend to, e.g. LLaDA 2's
                  block-causal mask: boolean (True = may attend), integer (nonzero = may attend) or transformers'
                  additive float form (0 = attend, -inf or a large negative number = do not; positive values are
                  rejected, since they usually mean a 0/1 mask meant as boolean). Needs eager or sdpa attention.
            position_ids: (b or 1, n); default s, s+1, ..., s+n-1 (s = the cache's length, 0 without a cache).
            inputs_embeds: (b, n, hidden) instead of `input_ids`.
            cache: a transformers `Cache` (e.g. `DynamicCache`): each layer appends this chunk's rotated keys and
                values (`cache.update`) and attends to all it holds; `cache.crop(-k)` drops the last k positions
                again (e.g. a block that is decoded further). `use_cache=True` without one starts a `DynamicCache`.
                (`past_key_values=` is the pre-5.24 name and still accepted.)
            validate_inputs: check ids and mask (one host sync; under `torch.compile` only the shapes are checked).
            output_router_logits: defaults to `config.output_router_logits`.
            kwargs: transformers' keyword arguments (`TransformersKwargs`); unknown ones raise a TypeError.
            return_dict: `False` returns the fields of [`LLaDA2MoeModelOutput`] that are set, as a tuple.
        """
        cache = open_forward(self, "LLaDA 2", input_ids, inputs_embeds, cache, kwargs)
        if cache is not None and not isinstance(cache, Cache):
            raise ValueError(
                f"`cache` must be a transformers Cache (e.g. DynamicCache()), got {type(cache).__name__}."
            )
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None and attention_mask.dim() == 3:
            attention_mask = attention_mask[:, None]
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        self._check_mask_shape(attention_mask, batch, length, past)
        if validate_inputs:
            check_inputs(self.config, input_ids, inputs_embeds, attention_mask, past + length)
        hidden = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        rotary = rotary_for_positions(position_ids, past, hidden, self.config.rotated_dim, self.config.rope_theta)
        mask = self._attention_mask(attention_mask, hidden, past, check_values=validate_inputs)
        fields = run_layers(self, self.layers, self.norm, hidden, (rotary, mask, cache), kwargs, output_hidden_states,
                            output_attentions, output_router_logits)
        return LLaDA2MoeModelOutput(cache=cache, **fields)

    def _check_mask_shape(self, attention_mask: torch.Tensor | None, b: int, length: int, past: int) -> None:
        """Raise a ValueError naming the expected shapes when `attention_mask` (2-D or 4-D) fits none of them."""
        if attention_mask is None:
            return
        total = past + length
        if attention_mask.dim() == 2:
            if tuple(attention_mask.shape) != (b, total):
                raise ValueError(
                    f"A 2-D attention_mask is a padding mask of shape (batch, cached + new length) = ({b}, {total}); "
                    f"got {tuple(attention_mask.shape)}. Pass an attention pattern with a batch dimension, as "
                    f"(batch or 1, 1, {length}, {total})."
                )
            return
        if attention_mask.dim() != 4:
            raise ValueError(
                f"attention_mask must be 2-D (batch, length) padding, or a 3-/4-D (batch or 1, [1 or heads,] queries, "
                f"keys) attention pattern; got shape {tuple(attention_mask.shape)}."
            )
        rows, heads, queries, keys = attention_mask.shape
        heads_ok = heads in (1, self.config.num_attention_heads)
        if rows not in (1, b) or not heads_ok or (queries, keys) != (length, total):
            raise ValueError(
                f"A 4-D attention_mask must have shape (1 or {b}, 1 or {self.config.num_attention_heads}, {length}, "
                f"{total}) (batch, heads, new positions, cached + new positions); got {tuple(attention_mask.shape)}."
            )

    def _attention_mask(
        self, attention_mask: torch.Tensor | None, hidden: torch.Tensor, past: int, check_values: bool = True
    ) -> torch.Tensor | None:
        """The mask the attention functions take, from any accepted form of `attention_mask` (see `forward`); its
        shape was checked by `_check_mask_shape`."""
        if attention_mask is None:
            return None
        if attention_mask.dim() == 2:
            if past == 0:
                return create_bidirectional_mask(
                    config=self.config, inputs_embeds=hidden, attention_mask=attention_mask
                )
            return cached_padding_mask(self.config, attention_mask)
        require_dense_mask_attention(self.config, "A 3-D or 4-D attention_mask")
        if attention_mask.dtype == torch.bool:
            return attention_mask
        if not attention_mask.is_floating_point():
            return attention_mask != 0
        if check_values and not torch.compiler.is_compiling() and bool((attention_mask > 0).any()):
            raise ValueError(
                "A float attention_mask is additive: 0 where attention is allowed and -inf (or a large negative "
                "number) where it is not, so it cannot hold positive values. For a 0/1 mask with 1 = may attend, "
                "pass it as bool (`mask.bool()`)."
            )
        return attention_mask.to(hidden.dtype)


class LLaDA2MoeModelLM(
    LinearHeadMixin, LLaDAHeadMixin, LLaDA2GenerationMixin, LLaDALikelihoodMixin, LLaDA2MoePreTrainedModel
):
    """LLaDA 2 with its output head: predicts the clean token at every position of a (partly masked) canvas.

    `generate` is LLaDA 2's block diffusion (`generation_llada2.py`); the official checkpoints do not store the
    `[MASK]` or EOS ids: the config defaults them to 156895 and 156892, the official sampler's values.
    """

    # tied only when the config says so (`tie_word_embeddings`, false in the official models)
    _tied_weights_keys = {"lm_head.weight": "model.word_embeddings.weight"}

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        self.init_head(config, LLaDA2MoeModel(config))

    def _likelihood_block_length(self) -> int:
        """`log_likelihood` scores LLaDA 2 by block diffusion, as it is sampled and trained: blocks of the block
        length of its `generate` (`generation_config.block_length`; the official 32 when unset)."""
        return getattr(self.generation_config, "block_length", None) or 32

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None, output_hidden_states: bool | None = None,
        output_attentions: bool | None = None, output_router_logits: bool | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0, validate_inputs: bool = True, cache: Cache | None = None,
        use_cache: bool = False, **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDA2MoeOutput:
        """Logits of the clean tokens for a (partly masked) canvas or a chunk after a cache; arguments as in
        [`LLaDA2MoeModel.forward`], plus:

        labels: (b, n) targets at their own positions (no shift), -100 where no loss is taken; the loss is the mean
            cross-entropy (or the sum divided by `num_items_in_batch` when the trainer passes it).
        logits_to_keep: 0 keeps every position; an int k the last k; a slice or index tensor those positions; a
            boolean (b, n) tensor the selected tokens, flattened to (selected, vocab).
        """
        outputs, logits, loss = head_forward(
            self, self.lm_head, labels, logits_to_keep, cache, kwargs, input_ids=input_ids,
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            output_router_logits=output_router_logits, validate_inputs=validate_inputs, use_cache=use_cache,
        )
        return LLaDA2MoeOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states,
                               attentions=outputs.attentions, router_logits=outputs.router_logits)


__all__ = [
    "AUTO_MAP",
    "LLaDA2MoePreTrainedModel",
    "LLaDA2MoeModel",
    "LLaDA2MoeModelLM",
    "LLaDA2MoeModelOutput",
    "LLaDA2MoeOutput",
]
