"""LLaDA-MoE configuration (inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct).

Field names are those of the official `config.json` (OLMoE heritage: `hidden_size`, `num_experts`,
`moe_layer_freq`, ...), so the official checkpoints load unchanged. The official files say `model_type: "llada"`,
the same as the dense LLaDA; `LLaDAConfig.from_dict` hands such a file to this class when its `architectures` name
`LLaDAMoEModelLM` (or it carries the MoE fields; `modeling_llada/__init__.py` connects the two), and this class
writes `model_type: "llada"` back.

The `[MASK]` id is not part of the official config (156895 in the LLaDA-MoE vocabulary); `mask_token_id` defaults to
it where the vocabulary holds it, and `generate(mask_token_id=...)` can always override it.

This file travels with every checkpoint (trust_remote_code): it imports only transformers and the shared rules of its
sibling `configuration_llada.py`.
"""

from typing import Any

from transformers import PreTrainedConfig

from .configuration_llada import (reject_other_family, DenseLLaDANamesMixin, check_dropout, check_finite_positive, check_key_value_heads,
                                  check_positive_ints, check_special_token_ids, check_supported,
                                  drop_unheld_default_ids, is_positive_int, reject_rope_scaling)

# The [MASK] id of the LLaDA-MoE vocabulary (tokenizer `<|mdm_mask|>`); not written in the official config.json.
LLADA_MOE_MASK_TOKEN_ID = 156895
# Defaults of the id fields (see the class docstring); each becomes None in a vocabulary too small to hold it.
LLADA_MOE_TOKEN_IDS = {"mask_token_id": LLADA_MOE_MASK_TOKEN_ID, "eos_token_id": 156892, "pad_token_id": 156892,
                       "bos_token_id": 156891}

SUPPORTED_ACTIVATIONS = ("silu",)
SUPPORTED_SCORE_FUNCTIONS = ("softmax",)


class LLaDAMoEConfig(DenseLLaDANamesMixin, PreTrainedConfig):
    r"""Configuration of a LLaDA-MoE masked-diffusion language model.

    An OLMoE-style bidirectional Transformer: pre-norm RMSNorm, RMSNorm on queries and keys per head (`qk_layernorm`),
    rotary embeddings, and a mixture-of-experts MLP in the layers where `moe_layer_freq[i]` is 1 (a dense SwiGLU MLP
    where it is 0). The router takes a softmax over `num_experts` and keeps the top `num_experts_per_tok`; with
    `moe_router_enable_expert_bias` a per-expert bias is added to the softmax scores (it moves both the choice and the
    weights, as in the official code); the weights are not renormalised (`norm_topk_prob=False`). An optional shared
    expert (width `shared_expert_intermediate_size`) runs on every token of the MoE layers. Untied output head.

    The official config.json files set every field but `mask_token_id`, so the defaults below only matter for configs
    built by hand; they are the LLaDA-MoE-7B-A1B architecture: 16 layers, all MoE (64 experts of width 1024, top-8),
    no shared expert, no dense layer, vocabulary 157184, d 2048, 16 heads. That layout was checked against public
    copies and measurements of the release (7,356,880,896 parameters: the 14.7 GB bf16 checkpoint, its 12288 MiB of
    expert weights), not read from the Hub file itself; `dense_intermediate_size` is unused by it. Ids: mask 156895
    (`<|mdm_mask|>`), eos/pad 156892 (`<|endoftext|>`), as in the official generate code; bos 156891 is not verified.

    Args:
        vocab_size (`int`, defaults to 157184), hidden_size (`int`, defaults to 2048).
        dense_intermediate_size (`int`, defaults to 8192): MLP width of the dense layers.
        expert_intermediate_size (`int`, defaults to 1024): MLP width of each routed expert.
        shared_expert_intermediate_size (`int`, *optional*, defaults to `None`): width of the shared expert; `None`
            (the real model) means no shared expert.
        num_hidden_layers (`int`, defaults to 16), num_attention_heads (`int`, defaults to 16),
        num_key_value_heads (`int`, *optional*): `None` means `num_attention_heads`.
        hidden_act (`str`, defaults to `"silu"`): the only supported activation.
        max_position_embeddings (`int`, defaults to 8192), initializer_range (`float`, defaults to 0.02),
        rms_norm_eps (`float`, defaults to 1e-5).
        rope_theta (`float`, defaults to 50000), partial_rotary_factor (`float`, defaults to 1.0): share of each head
            that is rotated. rope_scaling: must be `None` (no scaled rotary variant is implemented).
        attention_bias (`bool`), attention_dropout (`float`), clip_qkv (`float`, *optional*): clamp q, k, v.
        num_experts (`int`, defaults to 64), num_experts_per_tok (`int`, defaults to 8).
        norm_topk_prob (`bool`, defaults to `False`): renormalise the kept routing weights to sum to one.
        qk_layernorm (`bool`, defaults to `True`).
        moe_layer_freq (`list[int]`): one entry per layer, 1 for a MoE layer and 0 for a dense one; defaults to all
            MoE layers, as in the real model.
        moe_router_enable_expert_bias (`bool`, defaults to `True`): the `expert_bias` buffer of every router.
        moe_router_score_function (`str`, defaults to `"softmax"`): the only supported router score.
        routed_scaling_factor (`float`, defaults to 1), router_num_group / router_topk_group: official fields the
            official model does not use; only their neutral values are accepted.
        output_router_logits (`bool`), router_aux_loss_coef (`float`, defaults to 0.01): return the router logits and
            the load-balancing loss (`aux_loss`); with labels, `router_aux_loss_coef * aux_loss` is added to the loss.
        mask_token_id (`int`, *optional*, defaults to 156895): the `[MASK]` id; `None` when the vocabulary is too small
            to hold the default.
        pad_token_id / bos_token_id / eos_token_id (defaults 156892 / 156891 / 156892, see above): like
            `mask_token_id`, `None` where the vocabulary is too small for the default.
        tie_word_embeddings (`bool`, defaults to `False`).
    """

    model_type = "llada"  # what the official config.json files say (see the module docstring)
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 157184
    hidden_size: int = 2048
    dense_intermediate_size: int = 8192
    expert_intermediate_size: int = 1024
    shared_expert_intermediate_size: int | None = None
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = False
    rope_theta: float = 50000.0
    partial_rotary_factor: float = 1.0
    attention_bias: bool = False
    attention_dropout: float = 0.0
    clip_qkv: float | None = None
    num_experts_per_tok: int = 8
    num_experts: int = 64
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False
    qk_layernorm: bool = True
    moe_layer_freq: list[int] | None = None
    moe_router_enable_expert_bias: bool = True
    moe_router_score_function: str = "softmax"
    routed_scaling_factor: float = 1.0
    router_num_group: int = -2
    router_topk_group: int = -2
    mask_token_id: int | None = LLADA_MOE_TOKEN_IDS["mask_token_id"]
    pad_token_id: int | None = LLADA_MOE_TOKEN_IDS["pad_token_id"]
    bos_token_id: int | None = LLADA_MOE_TOKEN_IDS["bos_token_id"]
    eos_token_id: int | list[int] | None = LLADA_MOE_TOKEN_IDS["eos_token_id"]
    tie_word_embeddings: bool = False

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PreTrainedConfig.from_dict`, refusing another member's config.json (see `reject_other_family`)."""
        reject_other_family(cls, config_dict, moe=True)
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs: Any):
        reject_rope_scaling("LLaDAMoEConfig", "LLaDA-MoE", kwargs)
        super().__post_init__(**kwargs)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.moe_layer_freq is None:
            self.moe_layer_freq = [1] * self.num_hidden_layers
        drop_unheld_default_ids(self, LLADA_MOE_TOKEN_IDS)
        self._validate_lladamoe()

    # -- derived sizes ---------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Leading dimensions of each head that are rotated (all of them for the official models)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer_idx: int) -> bool:
        return bool(self.moe_layer_freq[layer_idx])

    # -- validation ------------------------------------------------------------------------------------------------
    def _validate_lladamoe(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"Invalid LLaDAMoEConfig: {message}")

        check_positive_ints(self, "vocab_size", "hidden_size", "dense_intermediate_size", "expert_intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                            "max_position_embeddings", "num_experts", "num_experts_per_tok")
        shared = self.shared_expert_intermediate_size
        if shared is not None and not is_positive_int(shared):
            fail(f"`shared_expert_intermediate_size` must be a positive integer or null, got "
                 f"{shared!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            fail(f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                 f"({self.num_attention_heads}).")
        check_key_value_heads(self)
        if not 0 < self.partial_rotary_factor <= 1 or self.rotary_dim % 2 != 0:
            fail(f"`partial_rotary_factor` ({self.partial_rotary_factor}) must be in (0, 1] and rotate an even number "
                 f"of dimensions of each head (head_dim {self.head_dim}).")
        if self.num_experts_per_tok > self.num_experts:
            fail(f"`num_experts_per_tok` ({self.num_experts_per_tok}) cannot exceed `num_experts` ({self.num_experts}).")
        if not isinstance(self.moe_layer_freq, (list, tuple)) or len(self.moe_layer_freq) != self.num_hidden_layers:
            fail(f"`moe_layer_freq` must list one 0/1 entry per layer ({self.num_hidden_layers}), got "
                 f"{self.moe_layer_freq!r}.")
        if any(value not in (0, 1) for value in self.moe_layer_freq):
            fail(f"`moe_layer_freq` entries must be 0 (dense) or 1 (MoE), got {self.moe_layer_freq!r}.")
        self.moe_layer_freq = [int(value) for value in self.moe_layer_freq]
        check_supported(self, "hidden_act", SUPPORTED_ACTIVATIONS, "LLaDA-MoE")
        check_supported(self, "moe_router_score_function", SUPPORTED_SCORE_FUNCTIONS, "LLaDA-MoE")
        if self.routed_scaling_factor != 1:
            fail(f"`routed_scaling_factor={self.routed_scaling_factor}` is not supported (the official model ignores "
                 "it); use 1.")
        if self.router_num_group not in (-2, None, 1) or self.router_topk_group not in (-2, None, 1):
            fail("grouped routing (`router_num_group`, `router_topk_group`) is not supported; use -2 (the official "
                 "value, meaning no groups).")
        check_finite_positive(self, {"rope_theta": "LLaDA-MoE uses 50000", "rms_norm_eps": "LLaDA-MoE uses 1e-5",
                                     "initializer_range": "LLaDA-MoE uses 0.02"})
        check_dropout(self, "attention_dropout")
        check_special_token_ids(self, "LLaDA-MoE: mask 156895, eos/pad 156892")


__all__ = ["LLaDAMoEConfig"]
