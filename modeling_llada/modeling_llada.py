"""LLaDA: a Llama-style Transformer without the causal mask, trained as a masked-diffusion language model.

One file, read top to bottom: norm, rotary embedding, block (attention + SwiGLU MLP), pre-trained base, bare model,
model with head. Parameter names are exactly the official ones (`model.transformer.blocks.{i}.q_proj.weight`, ...)
so the GSAI-ML safetensors load without conversion, and what we save loads in other LLaDA tooling.

It is also the one home of what the three model files share (modeling_lladamoe.py and modeling_llada2_moe.py import
it): the rotary embedding, the attention (`LLaDAAttentionMixin`), the `past_key_values=` shim, the steps of the
forwards (`open_forward`, `check_inputs`, `run_layers`, `head_forward`, ...), the pre-trained base's settings
(`LLaDAPreTrainedMixin`) and the head's accessors (`LLaDAHeadMixin`).

This file travels with every checkpoint (trust_remote_code): it imports only torch, transformers and its siblings.
"""

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

# transformers internals this file relies on (inventory: tests/test_upstream_internals.py). Besides these imports:
# PreTrainedModel's `_init_weights`, `_no_split_modules`, `_supports_sdpa` / `_flash_attn` / `_flex_attn` /
# `_attention_backend`, `_tied_weights_keys` (a {target: source} dict), `_auto_class`, `generation_config_class`,
# `can_generate`, `adjust_generation_fn` (generation_llada.py), and `config._attn_implementation`.
from transformers import initialization as init  # normal_ / zeros_ / ones_ that skip `_is_hf_initialized` tensors
from transformers.masking_utils import create_bidirectional_mask  # (config=, inputs_embeds=, attention_mask=)
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs  # TypedDict: forward kwargs we accept
from transformers.modeling_layers import GradientCheckpointingLayer  # activation checkpointing of the blocks
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # .get_interface(name, default)(module, q, k, v, ...)
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple, logging

from .configuration_llada import LLaDAConfig
from .generation_llada import LLaDAGenerationMixin
from .likelihood_llada import LLaDALikelihoodMixin

logger = logging.get_logger(__name__)


def auto_map(config_class: str, model_class: str) -> dict[str, str]:
    """What `save_pretrained` writes into config.json, so that the folder loads with trust_remote_code through every
    Auto class: the config's and the model-with-head's "file.Class" (each model file calls this for its `AUTO_MAP`)."""
    auto_classes = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM")
    return {"AutoConfig": config_class, **{auto_class: model_class for auto_class in auto_classes}}


AUTO_MAP = auto_map("configuration_llada.LLaDAConfig", "modeling_llada.LLaDAModelLM")


# -- Compatibility with every transformers release we support (5.20 and later: published code outlives our caps) ----
# The only place in the modeling files that knows about older releases; the rest follows the newest conventions.
# 5.24 renamed the cache argument and output field `past_key_values` to `cache`; its ModelOutput still reads
# `output.past_key_values` and older releases (and older callers) pass `past_key_values=`.


def legacy_cache_argument(cache, kwargs: dict):
    """The cache passed as `cache=` or, from callers written before transformers 5.24, as `past_key_values=` (with
    the FutureWarning transformers' own renamed arguments give). Every forward of the three model files takes it
    here."""
    legacy = kwargs.pop("past_key_values", None)
    if legacy is None:
        return cache
    if cache is not None:
        raise ValueError("Pass the cache once, as `cache=` (`past_key_values=` is its pre-5.24 name).")
    # worded as transformers words its own renamed arguments (its common tests look for this sentence)
    warnings.warn("`past_key_values` is deprecated for `forward`. Use `cache` instead.", FutureWarning, stacklevel=2)
    return legacy


class LegacyCacheOutputMixin:
    """Gives an output with a `cache` field the pre-5.24 attribute `past_key_values` (5.24's ModelOutput has it)."""

    @property
    def past_key_values(self):
        return self.cache


# --------------------------------------------------------------------------------------------------------------------


class LLaDARMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back before the weight, as in the official (OLMo) implementation."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_cos_sin(position_ids: torch.Tensor, rotary_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of NeoX-style rotary embeddings over `rotary_dim` dimensions, always in fp32 (the official
    `rope_full_precision`); the rotary embedding of all three model files (dense LLaDA rotates the whole head,
    LLaDA-MoE and LLaDA 2 the first `rotary_dim` dimensions of it).

    position_ids: (b or 1, L) integer positions. Returns two (b or 1, 1, L, rotary_dim) fp32 tensors.
    Recomputed per call: it is L * rotary_dim / 2 products, negligible next to a forward, and avoids a buffer that
    would need special handling for meta-device loading.
    """
    exponents = torch.arange(0, rotary_dim, 2, device=position_ids.device, dtype=torch.float) / rotary_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = position_ids.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def rotary_for_positions(
    position_ids: torch.Tensor | None, start: int, hidden: torch.Tensor, rotary_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rotary_cos_sin` of a forward's `position_ids`, which default to start, start + 1, ... over hidden's length
    (the same for every row: RoPE is relative, so left padding is harmless)."""
    if position_ids is None:
        position_ids = torch.arange(start, start + hidden.shape[1], device=hidden.device)[None]
    return rotary_cos_sin(position_ids, rotary_dim, theta)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` dimensions of (b, heads, L, head_dim) `x` in fp32 and cast them back to its
    dtype; the rest (none for dense LLaDA) pass through."""
    rotary_dim = cos.shape[-1]
    rot = x[..., :rotary_dim].float()
    rot = (rot * cos + rotate_half(rot) * sin).to(x.dtype)
    if rotary_dim == x.shape[-1]:
        return rot
    return torch.cat((rot, x[..., rotary_dim:]), dim=-1)


class LLaDACache:
    """Key/value cache of a LLaDA canvas (the transformers `cache` of this model, formerly `past_key_values`).

    A forward with `use_cache=True` and no cache stores every layer's rotated keys and values of all L positions. A
    later forward over a slice of the canvas starting at `cache_position` computes fresh keys and values for its own
    positions and reads the cached ones everywhere else. In a bidirectional model cached entries go stale as the
    canvas fills in, so diffusion generation refreshes the cache once per block (REFERENCE.md section 7).
    """

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[2] if self.keys else 0

    def store(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        if layer_idx == len(self.keys):
            self.keys.append(keys)
            self.values.append(values)
        else:
            self.keys[layer_idx], self.values[layer_idx] = keys, values

    def around(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, start: int):
        """Keys and values of the whole canvas: the fresh ones at [start, start + len) and cached ones elsewhere."""
        end = start + keys.shape[2]
        cached_k, cached_v = self.keys[layer_idx], self.values[layer_idx]
        if cached_k.shape[0] != keys.shape[0]:
            raise ValueError(f"The cache holds {cached_k.shape[0]} rows but the input has {keys.shape[0]}.")
        full_k = torch.cat([cached_k[:, :, :start], keys, cached_k[:, :, end:]], dim=2)
        full_v = torch.cat([cached_v[:, :, :start], values, cached_v[:, :, end:]], dim=2)
        return full_k, full_v

    def keys_values(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor, cache_position: int | None):
        """The keys and values a layer attends to: a full forward (no `cache_position`) stores and returns its own;
        a slice at `cache_position` gets them inside the cached canvas (`around`)."""
        if cache_position is None:
            self.store(layer_idx, keys, values)
            return keys, values
        return self.around(layer_idx, keys, values, cache_position)


class LLaDAAttentionMixin:
    """The attention of the three model files, for the module that holds the query, key and value projections: the
    dense block (the official names put them there) and the attention modules of LLaDA-MoE and LLaDA 2 (whose
    `forward` is `attention`).

    A class calls `init_attention` in its `__init__` and defines `queries_keys_values` and `project_out`, its own
    projections. Deriving from this mixin (not directly from `nn.Module`) also keeps the MoE files within
    transformers' test of whether a model may switch its attention later (`_can_set_attn_implementation` reads the
    model's module for an `...Attention(nn.Module)` class that calls `ALL_ATTENTION_FUNCTIONS.get_interface(`
    itself): `set_attn_implementation` works for all three.
    """

    def init_attention(self, config, layer_idx: int) -> None:
        """`config`, `layer_idx`, `num_heads`, `num_kv_heads`, `head_dim`, and for the attention functions
        `num_key_value_groups`, `is_causal` (False: bidirectional) and `scaling`."""
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.is_causal = False
        self.scaling = self.head_dim**-0.5

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, L, d) -> queries (b, heads, L, head_dim), keys and values (b, kv heads, L, head_dim)."""
        raise NotImplementedError

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        """The output projection, (b, L, heads * head_dim) -> (b, L, d)."""
        raise NotImplementedError

    def attention(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache=None,
        cache_position: int | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bidirectional attention over (b, L, d) `x`: `queries_keys_values`, rotary embeddings on the queries and
        keys, the cache, the attention function of `config._attn_implementation` ([`eager_attention`] by default),
        `project_out`. Returns the output and the attention weights (eager attention only).

        cache: a [`LLaDACache`] (dense LLaDA, LLaDA-MoE), which stores a whole canvas or, with `cache_position`,
        puts this slice's keys and values into it; or a transformers `Cache` (LLaDA 2), which appends them.
        """
        q, k, v = self.queries_keys_values(x)
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if isinstance(cache, LLaDACache):
            k, v = cache.keys_values(self.layer_idx, k, v, cache_position)
        elif cache is not None:  # attend to everything cached so far
            k, v = cache.update(k, v, self.layer_idx)
        attention_fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention)
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = attention_fn(
            self, q, k, v, attention_mask, dropout=dropout, scaling=self.scaling, is_causal=False, **kwargs
        )
        return self.project_out(out.reshape(q.shape[0], q.shape[2], -1)), weights


class LLaDABlock(LLaDAAttentionMixin, GradientCheckpointingLayer):
    """One pre-norm Transformer block: bidirectional attention, then a SwiGLU MLP.

    The projections sit directly on the block (official names: `q_proj`, `k_proj`, `v_proj`, `attn_out`,
    `ff_proj` = the SiLU-gated branch, `up_proj`, `ff_out` = the down projection).
    """

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.init_attention(config, layer_idx)
        d, hidden = config.d_model, config.intermediate_size
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(self.num_heads * self.head_dim, d, bias=config.include_bias)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, hidden, bias=config.include_bias)
        self.up_proj = nn.Linear(d, hidden, bias=config.include_bias)
        self.ff_out = nn.Linear(hidden, d, bias=config.include_bias)
        self.dropout = nn.Dropout(config.residual_dropout)

    def queries_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def project_out(self, out: torch.Tensor) -> torch.Tensor:
        return self.attn_out(out)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: LLaDACache | None = None,
        cache_position: int | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(
            self.attn_norm(hidden_states), rotary, attention_mask, cache, cache_position, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attended)
        x = self.ff_norm(hidden_states)
        x = self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))
        return hidden_states + self.dropout(x), weights


def eager_attention(
    module: LLaDABlock,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, (b, heads, L, head_dim) in, (b, L, heads, head_dim) out; the fallback and the only
    implementation that returns attention weights."""
    key = key.repeat_interleave(module.num_key_value_groups, dim=1)
    value = value.repeat_interleave(module.num_key_value_groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@dataclass
class LLaDAModelOutput(LegacyCacheOutputMixin, ModelOutput):
    """Output of [`LLaDAModel`].

    Args:
        last_hidden_state: (b, L, d_model) output of the final norm.
        cache: the [`LLaDACache`] filled or read by this forward, with `use_cache=True` (transformers >= 5.24 name;
            `past_key_values` still reads it).
        hidden_states: with `output_hidden_states`, L+1 tensors of (b, L, d_model): the input of every block, then
            the output of the final norm (the official implementation's and transformers' convention).
        attentions: with `output_attentions`, per-block (b, heads, L, L) attention weights (eager attention only).
    """

    last_hidden_state: torch.Tensor | None = None
    cache: "LLaDACache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class LLaDAOutput(LegacyCacheOutputMixin, ModelOutput):
    """Output of [`LLaDAModelLM`].

    Args:
        loss: masked-token cross-entropy when `labels` are given (no shift: position i predicts token i).
        logits: (b, L', embedding_size) scores of the clean token at every kept position.
        cache: the [`LLaDACache`] filled or read by this forward, with `use_cache=True` (transformers >= 5.24 name;
            `past_key_values` still reads it).
        hidden_states: as in [`LLaDAModelOutput`]; the last one is the input of the output head.
        attentions: as in [`LLaDAModelOutput`].
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: "LLaDACache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# Keyword arguments that transformers passes to the forward of any model (`TransformersKwargs`: loss normalisation by
# the Trainer, packed-sequence boundaries for flash attention, ...). Any other unknown keyword is a mistake.
TRANSFORMERS_FORWARD_KWARGS = (
    TransformersKwargs.__required_keys__
    | TransformersKwargs.__optional_keys__
    | FlashAttentionKwargs.__required_keys__
    | FlashAttentionKwargs.__optional_keys__
)


def keep_positions(hidden: torch.Tensor, logits_to_keep) -> torch.Tensor:
    """The hidden states the head runs on: `logits_to_keep` 0 keeps every position, an int k the last k, a slice or
    index tensor those positions, a boolean (b, n) tensor the selected tokens (flattened to (selected, d))."""
    if isinstance(logits_to_keep, int):
        return hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
    if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool:
        if logits_to_keep.shape != hidden.shape[:2]:
            raise ValueError(
                f"A boolean logits_to_keep must have the inputs' shape {tuple(hidden.shape[:2])}, got "
                f"{tuple(logits_to_keep.shape)}."
            )
        return hidden[logits_to_keep]  # (number of kept positions, d_model)
    return hidden[:, logits_to_keep]


def label_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy of `labels` at their own positions (no shift; -100 = no loss): the mean, or the sum divided by
    `num_items_in_batch` when a trainer passes it (gradient accumulation)."""
    if logits.dim() != 3 or logits.shape[1] != labels.shape[1]:
        raise ValueError("`labels` need logits for every position; do not combine them with logits_to_keep.")
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=-100, reduction=reduction
    )
    if num_items_in_batch is not None:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def check_forward_kwargs(kwargs: dict, model_name: str) -> None:
    """Raise on keyword arguments that neither the forward nor transformers' calling convention defines."""
    unknown = sorted(set(kwargs) - TRANSFORMERS_FORWARD_KWARGS)
    if unknown:
        hint = ""
        if "shift_labels" in unknown:
            hint = " LLaDA predicts the token at its own position: pass the targets as `labels`, unshifted."
        raise TypeError(
            f"{model_name}.forward() got unexpected keyword arguments {unknown}.{hint} Besides its named arguments it "
            f"accepts transformers' keyword arguments {sorted(TRANSFORMERS_FORWARD_KWARGS)}."
        )
    if kwargs.get("is_causal"):
        raise ValueError(f"{model_name} attends bidirectionally (no causal mask); `is_causal=True` is not supported.")


# -- The forwards of the three model files (dense LLaDA, LLaDA-MoE, LLaDA 2) share these steps -------------------------


def open_forward(model: PreTrainedModel, family: str, input_ids, inputs_embeds, cache, kwargs: dict):
    """The opening of a bare model's forward: the cache under its current or pre-5.24 name, the keyword arguments
    checked (then only the attention functions' ones are kept in `kwargs`), exactly one of `input_ids` and
    `inputs_embeds`. Returns the cache."""
    cache = legacy_cache_argument(cache, kwargs)
    check_forward_kwargs(kwargs, type(model).__name__)
    # what is left for the attention functions (is_causal is checked and always False here)
    for name in ("num_items_in_batch", "output_router_logits", "is_causal"):
        kwargs.pop(name, None)
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"{family} forward needs exactly one of `input_ids` or `inputs_embeds`.")
    return cache


def open_canvas_forward(
    model: PreTrainedModel, family: str, input_ids, inputs_embeds, attention_mask, cache, use_cache: bool,
    cache_position: int | None, validate_inputs: bool, kwargs: dict,
) -> LLaDACache | None:
    """`open_forward` for the canvas models (dense LLaDA and LLaDA-MoE), which then check the inputs against the
    canvas and return its [`LLaDACache`]: the one passed in, a new one for `use_cache=True`, or None."""
    cache = open_forward(model, family, input_ids, inputs_embeds, cache, kwargs)
    if cache is not None and not isinstance(cache, LLaDACache):
        raise ValueError(
            f"`cache` must be the LLaDACache that a use_cache=True forward of this model returned, got "
            f"{type(cache).__name__}."
        )
    if validate_inputs:
        canvas_length = cache.get_seq_length() if cache_position is not None and cache is not None else None
        check_inputs(model.config, input_ids, inputs_embeds, attention_mask, canvas_length)
    if cache_position is not None and cache is None:
        raise ValueError("cache_position needs `cache` (the LLaDACache of a use_cache=True forward).")
    if use_cache and cache is None:
        cache = LLaDACache()
    return cache


def canvas_layer_inputs(
    model: PreTrainedModel, hidden: torch.Tensor, attention_mask, position_ids, cache: LLaDACache | None,
    cache_position: int | None, rotary_dim: int,
) -> tuple:
    """What every layer of a canvas model takes after the hidden states: (rotary tables, attention mask, cache,
    cache_position). A slice at `cache_position` attends to the whole cached canvas with a padding mask."""
    start = cache_position if cache_position is not None else 0
    rotary = rotary_for_positions(position_ids, start, hidden, rotary_dim, model.config.rope_theta)
    if cache_position is not None:
        mask = cached_padding_mask(model.config, attention_mask)
    else:
        mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask)
    return rotary, mask, cache, cache_position


# Attention implementations that take a dense (b, 1, L, S) mask: needed for cached forwards and block masks.
DENSE_MASK_ATTENTION = ("eager", "sdpa")


def require_dense_mask_attention(config, what: str) -> None:
    """Raise unless the model runs an attention implementation that takes a dense mask (`DENSE_MASK_ATTENTION`)."""
    if config._attn_implementation not in DENSE_MASK_ATTENTION:
        raise ValueError(
            f"{what} needs one of the sdpa and eager attention implementations, not {config._attn_implementation!r}; "
            "load the model with attn_implementation='sdpa'."
        )


def cached_padding_mask(config, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Padding mask of the new positions' queries against the keys of every cached and new position: (b, 1, 1, S)
    bool from a (b, S) mask, or None."""
    require_dense_mask_attention(config, "A forward with a cache")
    return None if attention_mask is None else attention_mask[:, None, None, :].bool()


def run_layers(
    model: PreTrainedModel, layers: nn.ModuleList, norm: nn.Module, hidden: torch.Tensor, layer_inputs: tuple,
    kwargs: dict, output_hidden_states: bool | None, output_attentions: bool | None,
    output_router_logits: bool | None = False,
) -> dict:
    """The layers in turn, then the final norm. Returns the output fields `last_hidden_state`, `hidden_states`
    (with `output_hidden_states`: the input of every layer, then the final norm's output), `attentions` and, with
    `output_router_logits`, `router_logits` (one per MoE layer; a MoE model's layers return them third). The
    `output_*` switches default to the config's."""
    config = model.config
    output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
    output_attentions = config.output_attentions if output_attentions is None else output_attentions
    output_router_logits = config.output_router_logits if output_router_logits is None else output_router_logits
    all_hidden = () if output_hidden_states else None
    all_attentions = () if output_attentions else None
    all_router_logits = () if output_router_logits else None
    for layer in layers:
        if output_hidden_states:
            all_hidden += (hidden,)
        hidden, weights, *router_logits = layer(hidden, *layer_inputs, **kwargs)
        if output_attentions:
            all_attentions += (weights,)
        if output_router_logits and router_logits[0] is not None:
            all_router_logits += (router_logits[0],)
    hidden = norm(hidden)
    if output_hidden_states:
        all_hidden += (hidden,)
    fields = {"last_hidden_state": hidden, "hidden_states": all_hidden, "attentions": all_attentions}
    if all_router_logits is not None:
        fields["router_logits"] = all_router_logits
    return fields


def head_forward(model: PreTrainedModel, head, labels, logits_to_keep, cache, kwargs: dict, **inputs):
    """The forward of a model with its output head: `model.model` over the inputs, then `head` (hidden states ->
    logits) over the positions `logits_to_keep` selects, and the loss of `labels`. Returns (the bare model's
    output, logits, loss)."""
    cache = legacy_cache_argument(cache, kwargs)
    check_forward_kwargs(kwargs, type(model).__name__)
    num_items_in_batch = kwargs.pop("num_items_in_batch", None)
    outputs = model.model(**inputs, cache=cache, return_dict=True, **kwargs)
    logits = head(keep_positions(outputs.last_hidden_state, logits_to_keep))
    loss = None if labels is None else label_loss(logits, labels, num_items_in_batch)
    return outputs, logits, loss


class LLaDAPreTrainedMixin:
    """What the pre-trained bases of the three model files share (it comes before `PreTrainedModel` in their bases):
    the attention implementations and the gradient checkpointing they support, and a `save_pretrained` that saves
    the code files and an `auto_map` for every Auto class (`code_auto_map`, the family's `AUTO_MAP`) with the
    weights. Their `_init_weights` start with [`init_shared_weights`]."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # save_pretrained copies the model's file and its siblings next to the weights (trust_remote_code).
    _auto_class = "AutoModel"
    code_auto_map: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the code files and an `auto_map` for every Auto class."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.code_auto_map}
        type(self.config)._auto_class = "AutoConfig"
        return super().save_pretrained(save_directory, *args, **kwargs)


@torch.no_grad()
def init_shared_weights(module: nn.Module, std: float) -> None:
    """The initialisation of fresh weights the three model files share: linear and embedding weights normal(0, std),
    biases zero (and an embedding's padding row, as in the official LLaDA 2 code and transformers), norm weights one."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)
        # a slice of the weight loses the flag that protects loaded weights: check it on the whole matrix
        padding_idx = getattr(module, "padding_idx", None)
        if padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
            init.zeros_(module.weight[padding_idx])
    elif isinstance(module, LLaDARMSNorm):
        init.ones_(module.weight)


class LLaDAPreTrainedModel(LLaDAPreTrainedMixin, PreTrainedModel):
    config_class = LLaDAConfig
    config: LLaDAConfig
    _no_split_modules = ["LLaDABlock"]
    code_auto_map = AUTO_MAP

    def __init__(self, config: LLaDAConfig, *inputs, **kwargs):
        # `LLaDAConfig.from_dict` turns an official LLaDA-MoE config.json (also model_type "llada") into an
        # LLaDAMoEConfig: this class would then read fields that config does not have.
        if not any(base.__name__ == "LLaDAConfig" for base in type(config).__mro__):  # (a trust_remote_code copy too)
            raise ValueError(
                f"{type(self).__name__} builds dense LLaDA from a LLaDAConfig, got a {type(config).__name__} (another "
                "member of the family); load the checkpoint with AutoModel.from_pretrained (after `import "
                "modeling_llada`), which picks the right class."
            )
        super().__init__(config, *inputs, **kwargs)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, **kw):
        """Resize embedding and head; keeps `vocab_size` and `embedding_size` consistent with the new matrices."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, **kw)
        rows = embeddings.weight.shape[0]
        self.config.embedding_size = rows
        self.config.vocab_size = min(self.config.vocab_size, rows) if new_num_tokens is None else new_num_tokens
        return embeddings

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        init_shared_weights(module, self.config.init_std)


class LLaDAModel(LLaDAPreTrainedModel):
    """The bare LLaDA Transformer: token ids in, final-norm hidden states out.

    The output head `transformer.ff_out` lives here as well, because the official checkpoints name it
    `model.transformer.ff_out.weight`; [`LLaDAModelLM`] applies it.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        vocab = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
                "ln_f": LLaDARMSNorm(config.d_model, config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, vocab, bias=config.include_bias),
            }
        )
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    @can_return_tuple
    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None, output_attentions: bool | None = None, validate_inputs: bool = True,
        cache: LLaDACache | None = None, use_cache: bool = False, cache_position: int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDAModelOutput:
        """Run the Transformer over a whole canvas (no causal mask).

        Args:
            input_ids: (b, L) token ids, `mask_token_id` at the positions to predict.
            attention_mask: (b, L) with 1 for real tokens and 0 for padding (left padding is the convention);
                a prepared 4-D mask is passed through unchanged.
            position_ids: (b, L); defaults to 0..L-1 for every row (RoPE is relative, so left padding is harmless).
            inputs_embeds: (b, L, d_model) instead of `input_ids`.
            validate_inputs: check ids and mask (one host sync; under `torch.compile` only the shapes are checked);
                internal loops that validated once pass False.
            use_cache / cache / cache_position: `use_cache=True` without a cache runs the whole canvas and
                returns a [`LLaDACache`] of it; with `cache` and `cache_position=s`, the inputs are the
                canvas slice starting at s, `attention_mask` still covers the whole canvas, and the other positions
                are read from the cache (positions default to s, s+1, ...).
            kwargs: transformers' keyword arguments (`TransformersKwargs`); the attention ones (e.g. `cu_seq_lens_q`
                for flash attention) reach the attention function, unknown ones raise a TypeError.
            return_dict: `False` returns the fields of [`LLaDAModelOutput`] that are set, as a tuple.
        """
        cache = open_canvas_forward(self, "LLaDA", input_ids, inputs_embeds, attention_mask, cache, use_cache,
                                    cache_position, validate_inputs, kwargs)
        hidden = self.embedding_dropout(self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds)
        layer_inputs = canvas_layer_inputs(self, hidden, attention_mask, position_ids, cache, cache_position,
                                           self.config.head_dim)
        fields = run_layers(self, self.transformer.blocks, self.transformer.ln_f, hidden, layer_inputs, kwargs,
                            output_hidden_states, output_attentions)
        return LLaDAModelOutput(cache=cache, **fields)


def check_inputs(
    config,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    canvas_length: int | None = None,
) -> None:
    """The input checks of the three bare models' forwards (with `validate_inputs`): a (batch, length) shape, integer
    ids inside the vocabulary (`config.padded_vocab_size`), a (batch, length) mask (the whole canvas's with
    `canvas_length`) or a prepared 4-D one, and a token in every mask row; a warning beyond
    `config.max_sequence_length`. The value checks take one host sync; under `torch.compile` only the shapes are
    checked."""
    shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:2])
    if len(shape) != 2 or (inputs_embeds is not None and inputs_embeds.dim() != 3):
        raise ValueError(
            f"LLaDA expects input_ids of shape (batch, length) or inputs_embeds of shape (batch, length, d_model); "
            f"got {tuple((input_ids if input_ids is not None else inputs_embeds).shape)}. Add a batch dimension "
            "with `ids[None]` for a single sequence."
        )
    if input_ids is not None and input_ids.dtype.is_floating_point:
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}.")
    if attention_mask is not None and attention_mask.dim() == 2:
        expected = shape if canvas_length is None else (shape[0], canvas_length)
        if tuple(attention_mask.shape) != expected:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the inputs have shape {shape}"
                + ("" if canvas_length is None else f" in a cached canvas of length {canvas_length}")
                + "; pass a (batch, length) mask with 1 for tokens and 0 for padding, as the tokenizer returns it."
            )
    elif attention_mask is not None and attention_mask.dim() != 4:
        raise ValueError(
            f"attention_mask must be 2-D (batch, length) or a prepared 4-D mask; got shape "
            f"{tuple(attention_mask.shape)}."
        )
    if torch.compiler.is_compiling():
        # The checks below read tensor values (a host sync, a graph break): a compiled forward checks shapes only.
        return
    if shape[1] > config.max_sequence_length:
        logger.warning_once(
            f"Sequence length {shape[1]} exceeds max_sequence_length={config.max_sequence_length}; "
            "LLaDA was not trained on such canvases and quality may degrade."
        )
    checks = []
    if input_ids is not None:
        checks.append(((input_ids < 0) | (input_ids >= config.padded_vocab_size)).any())
    if attention_mask is not None and attention_mask.dim() == 2:
        checks.append((attention_mask == 0).all(dim=-1).any())
    if not checks:
        return
    flags = torch.stack(checks).tolist()  # a single host sync for all checks
    if input_ids is not None and flags[0]:
        bad = input_ids[(input_ids < 0) | (input_ids >= config.padded_vocab_size)]
        raise ValueError(
            f"input_ids contain ids outside the vocabulary [0, {config.padded_vocab_size}): "
            f"{bad.unique()[:8].tolist()}. Check that the tokenizer matches this model."
        )
    if attention_mask is not None and attention_mask.dim() == 2 and flags[-1]:
        raise ValueError(
            "attention_mask has a row with no attended token (all zeros); every row needs at least one token."
        )


class LLaDAHeadMixin:
    """What the models with an output head of the three model files share besides their forward (`head_forward`):
    the input embeddings are the bare model's (`self.model`), and `generate` exists."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    @classmethod
    def can_generate(cls) -> bool:
        """True: `generate` is the (block) diffusion reverse process (pipelines and `from_pretrained` read this)."""
        return True


class LLaDAModelLM(LLaDAHeadMixin, LLaDAGenerationMixin, LLaDALikelihoodMixin, LLaDAPreTrainedModel):
    """LLaDA with its output head: predicts the clean token at every position of a (partly masked) canvas.

    `generate` runs the reverse diffusion process (see `generation_llada.py`); `log_likelihood` and `perplexity`
    estimate the likelihood bound (see `likelihood_llada.py`).
    """

    _tied_weights_keys = {"model.transformer.ff_out.weight": "model.transformer.wte.weight"}

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer.ff_out = value

    @can_return_tuple
    def forward(
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None, output_hidden_states: bool | None = None,
        output_attentions: bool | None = None, logits_to_keep: int | slice | torch.Tensor = 0,
        validate_inputs: bool = True, cache: LLaDACache | None = None, use_cache: bool = False,
        cache_position: int | None = None, **kwargs: Unpack[TransformersKwargs],
    ) -> LLaDAOutput:
        """Logits of the clean tokens for a (partly masked) canvas.

        Args:
            input_ids / attention_mask / position_ids / inputs_embeds: as in [`LLaDAModel.forward`].
            labels: (b, L) ids to predict, -100 where ignored. The loss is their plain cross-entropy with no shift
                (averaged over the predicted tokens, or summed and divided by `num_items_in_batch` when the Trainer
                passes it); the diffusion objectives (1/p_mask weighting, normalisation) live in `trainers/`.
            logits_to_keep: compute the head only on some positions: an int n > 0 keeps the last n, a slice or an
                index tensor selects positions (0 keeps all); a boolean (b, L) tensor selects positions per row and
                gives flat (number selected, embedding_size) logits. Generation scores only the current block this
                way, and the diffusion losses only the masked positions.
            kwargs / return_dict: as in [`LLaDAModel.forward`].
        Returns:
            [`LLaDAOutput`] with `logits` of shape (b, kept positions, embedding_size), or (kept, embedding_size) for a
            boolean `logits_to_keep`.
        """
        outputs, logits, loss = head_forward(
            self, self._head, labels, logits_to_keep, cache, kwargs, input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids, inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, validate_inputs=validate_inputs, use_cache=use_cache,
            cache_position=cache_position,
        )
        return LLaDAOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states,
                           attentions=outputs.attentions)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head `transformer.ff_out`, times 1/sqrt(d_model) with `scale_logits`."""
        logits = self.model.transformer.ff_out(hidden)
        if self.config.scale_logits:
            logits = logits * (self.config.d_model**-0.5)
        return logits


__all__ = [
    "AUTO_MAP",
    "LLaDACache",
    "LLaDAPreTrainedModel",
    "LLaDAModel",
    "LLaDAModelLM",
    "LLaDAModelOutput",
    "LLaDAOutput",
]
