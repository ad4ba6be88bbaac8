"""LLaDA 2.x configuration (inclusionAI/LLaDA2.0-mini, -flash and LLaDA2.1-mini, -flash; `model_type: "llada2_moe"`).

Field names are those of the official `config.json` (Ling 2.0 / BailingMoe V2 heritage: `n_group`, `topk_group`,
`first_k_dense_replace`, `num_shared_experts`, ...), so the official checkpoints load unchanged, and this class writes
them back. LLaDA 2.0 and 2.1 share the architecture and the config; they differ only in their sampler.

The `[MASK]` and EOS ids are not in the official config.json (only `pad_token_id` 156892 is): the official `generate`
defaults are `mask_id=156895` and `eos_id=156892`. `mask_token_id` / `eos_token_id` default to them where the
vocabulary holds them; `generate(mask_token_id=..., eos_token_id=...)` can always override them.

This file travels with every checkpoint (trust_remote_code): it imports only transformers and the shared rules of its
sibling `configuration_llada.py`.
"""

from typing import Any

from transformers import PreTrainedConfig

from .configuration_llada import (reject_other_family, DenseLLaDANamesMixin, check_dropout, check_finite_positive, check_key_value_heads,
                                  check_positive_ints, check_special_token_ids, check_supported,
                                  drop_unheld_default_ids, is_positive_int, reject_rope_scaling)

# The ids of the LLaDA 2 vocabulary (157184 tokens, the Ling 2.0 tokenizer): `<|mask|>` 156895 and `<|endoftext|>`
# 156892 (the official generate's `mask_id` / `eos_id` defaults; the official config's `pad_token_id` is 156892 too).
LLADA2_MASK_TOKEN_ID = 156895
LLADA2_EOS_TOKEN_ID = 156892
LLADA2_TOKEN_IDS = {"mask_token_id": LLADA2_MASK_TOKEN_ID, "eos_token_id": LLADA2_EOS_TOKEN_ID,
                    "pad_token_id": LLADA2_EOS_TOKEN_ID}

SUPPORTED_ACTIVATIONS = ("silu",)
SUPPORTED_SCORE_FUNCTIONS = ("sigmoid",)


class LLaDA2MoeConfig(DenseLLaDANamesMixin, PreTrainedConfig):
    r"""Configuration of a LLaDA 2.x block-diffusion mixture-of-experts language model.

    A bidirectional Transformer (block-causal when given a block mask): pre-norm RMSNorm, one fused
    `query_key_value` projection (grouped-query attention), RMSNorm over each head's queries and keys (`use_qk_norm`),
    rotary embeddings on the first `partial_rotary_factor * head_dim` dimensions of each head, and an MoE MLP in every
    layer from `first_k_dense_replace` on (a dense SwiGLU MLP of width `intermediate_size` before). The router scores
    every expert with a sigmoid (fp32); `expert_bias` is added for the choice only: the `topk_group` best of `n_group`
    expert groups (a group scores the sum of its two best biased scores), then the `num_experts_per_tok` best experts
    inside them. The weights are the chosen experts' unbiased scores, renormalised to sum to one and multiplied by
    `routed_scaling_factor`. `num_shared_experts` shared experts (one MLP of width `num_shared_experts *
    moe_intermediate_size`) run on every token of the MoE layers. Untied output head.

    Defaults are the LLaDA2.0-mini / LLaDA2.1-mini values of the official config.json (16B parameters), except
    `num_key_value_heads` and `head_dim`, which default to the official code's derived values.

    Args:
        vocab_size (`int`, defaults to 157184), hidden_size (`int`, defaults to 2048).
        intermediate_size (`int`, defaults to 5120): MLP width of the dense layers.
        moe_intermediate_size (`int`, defaults to 512): width of each routed (and each shared) expert.
        num_hidden_layers (`int`, defaults to 20), num_attention_heads (`int`, defaults to 16).
        num_key_value_heads (`int`, *optional*): `None` or 0 (the official default) means `num_attention_heads`; the
            real models use 4.
        head_dim (`int`, *optional*): `None` means `hidden_size // num_attention_heads` (128 for the defaults).
        hidden_act (`str`, defaults to `"silu"`): the only supported activation.
        use_qkv_bias (`bool`, defaults to `False`): bias of `query_key_value`. use_bias (`bool`, defaults to `False`):
            bias of the attention output projection `dense`.
        use_qk_norm (`bool`, defaults to `True`): RMSNorm on each head's queries and keys.
        rms_norm_eps (`float`, defaults to 1e-6), initializer_range (`float`, defaults to 0.02).
        max_position_embeddings (`int`, defaults to 32768).
        rope_theta (`float`, defaults to 600000), partial_rotary_factor (`float`, defaults to 0.5): share of each
            head that is rotated (the official code rotates `int(head_dim * partial_rotary_factor)` dimensions).
        rotary_dim (`int`, *optional*): written by the official configs (64); the official code ignores it and so do
            we; `None` is filled in with the rotated width.
        rope_scaling: must be `None` (no scaled rotary variant is implemented).
        attention_dropout (`float`, defaults to 0).
        num_experts (`int`, defaults to 256), num_experts_per_tok (`int`, defaults to 8), num_shared_experts
            (`int`, defaults to 1): `None` for no shared experts module; 0 keeps the official code's empty module.
        n_group (`int`, defaults to 8), topk_group (`int`, defaults to 4): group-limited routing.
        routed_scaling_factor (`float`, defaults to 2.5).
        first_k_dense_replace (`int`, defaults to 1): number of leading dense layers.
        score_function (`str`, defaults to `"sigmoid"`): the only supported router score.
        norm_topk_prob (`bool`, defaults to `True`), moe_router_enable_expert_bias (`bool`, defaults to `True`),
            router_dtype (`str`, defaults to `"fp32"`): official fields the official code does not read: it always
            renormalises the weights (with more than one expert per token), always has and uses the `expert_bias`
            buffer and always routes in fp32. We do the same and keep the fields for the round trip.
        output_router_logits (`bool`): return each MoE layer's router logits.
        embedding_dropout, output_dropout, norm_head, norm_softmax, use_rmsnorm, max_window_layers,
            use_sliding_window, sliding_window, using_split_qkv_in_self_attention: official fields the official model
            does not use; stored. `sliding_window` is stored as `None`: the official model attends to the whole
            sequence under sdpa (the recorded semantics), and transformers' caches would read a number there as a
            sliding window.
        mask_token_id (`int`, *optional*, defaults to 156895): the `[MASK]` id; `None` when the vocabulary is too small
            to hold it.
        eos_token_id / pad_token_id (defaults 156892 / 156892): as `mask_token_id`; where the vocabulary is too small
            for 156892, `eos_token_id` defaults to `pad_token_id` (the official models use one id for both).
        bos_token_id (`int`, *optional*): none in the official configs.
        tie_word_embeddings (`bool`, defaults to `False`).
    """

    model_type = "llada2_moe"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    moe_intermediate_size: int = 512
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    use_bias: bool = False
    use_qk_norm: bool = True
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    max_position_embeddings: int = 32768
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    attention_dropout: float = 0.0
    use_cache: bool = False
    num_experts: int = 256
    num_experts_per_tok: int = 8
    num_shared_experts: int | None = 1
    n_group: int | None = 8
    topk_group: int | None = 4
    routed_scaling_factor: float = 2.5
    first_k_dense_replace: int = 1
    score_function: str = "sigmoid"
    norm_topk_prob: bool = True
    moe_router_enable_expert_bias: bool = True
    router_dtype: str | None = "fp32"
    output_router_logits: bool = False
    # Official fields the official model does not read (see the docstring): stored for the round trip.
    rotary_dim: int | None = None
    embedding_dropout: float = 0.0
    output_dropout: float = 0.0
    norm_head: bool = False
    norm_softmax: bool = False
    use_rmsnorm: bool = True
    max_window_layers: int | None = 28
    use_sliding_window: bool = False
    sliding_window: int | None = None
    using_split_qkv_in_self_attention: bool = False
    mask_token_id: int | None = LLADA2_MASK_TOKEN_ID
    pad_token_id: int | None = LLADA2_EOS_TOKEN_ID
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = LLADA2_EOS_TOKEN_ID
    tie_word_embeddings: bool = False

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PreTrainedConfig.from_dict`, refusing another member's config.json (see `reject_other_family`)."""
        reject_other_family(cls, config_dict, moe=None)
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs: Any):
        reject_rope_scaling("LLaDA2MoeConfig", "LLaDA 2", kwargs)
        super().__post_init__(**kwargs)
        if self.num_key_value_heads in (None, 0):  # LLaDA2.1's config reads 0 as "as many as the query heads"
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and is_positive_int(self.hidden_size) and is_positive_int(self.num_attention_heads):
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.rotary_dim is None and is_positive_int(self.head_dim):
            self.rotary_dim = int(self.head_dim * self.partial_rotary_factor)
        if self.n_group in (None, 0):
            self.n_group = 1
        if self.topk_group in (None, 0):
            self.topk_group = self.n_group
        self.sliding_window = None  # see the class docstring
        if isinstance(self.vocab_size, int):
            drop_unheld_default_ids(self, LLADA2_TOKEN_IDS)
            if self.eos_token_id is None:
                self.eos_token_id = self.pad_token_id
        self._validate_llada2()

    # -- derived sizes ---------------------------------------------------------------------------------------------
    @property
    def rotated_dim(self) -> int:
        """Leading dimensions of each head that are rotated, as the official code computes them."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer_idx: int) -> bool:
        return self.num_experts is not None and layer_idx >= self.first_k_dense_replace

    # -- validation ------------------------------------------------------------------------------------------------
    def _validate_llada2(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"Invalid LLaDA2MoeConfig: {message}")

        check_positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                            "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                            "max_position_embeddings", "num_experts", "num_experts_per_tok", "n_group", "topk_group")
        for name in ("num_shared_experts", "first_k_dense_replace"):
            value = getattr(self, name)
            if name == "num_shared_experts" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(f"`{name}` must be an integer >= 0, got {value!r}.")
        check_key_value_heads(self)
        if not 0 < self.partial_rotary_factor <= 1 or self.rotated_dim % 2 != 0 or self.rotated_dim == 0:
            fail(f"`partial_rotary_factor` ({self.partial_rotary_factor}) must be in (0, 1] and rotate an even, "
                 f"non-zero number of dimensions of each head (head_dim {self.head_dim}).")
        if self.num_experts % self.n_group != 0:
            fail(f"`num_experts` ({self.num_experts}) must be divisible by `n_group` ({self.n_group}).")
        if self.topk_group > self.n_group:
            fail(f"`topk_group` ({self.topk_group}) cannot exceed `n_group` ({self.n_group}).")
        if self.num_experts_per_tok > self.topk_group * (self.num_experts // self.n_group):
            fail(f"`num_experts_per_tok` ({self.num_experts_per_tok}) exceeds the experts of the `topk_group` "
                 f"({self.topk_group}) kept groups of {self.num_experts // self.n_group}.")
        check_supported(self, "hidden_act", SUPPORTED_ACTIVATIONS, "LLaDA 2")
        check_supported(self, "score_function", SUPPORTED_SCORE_FUNCTIONS, "LLaDA 2", use="routes with")
        check_finite_positive(self, {"rope_theta": "LLaDA 2 uses 600000", "rms_norm_eps": "LLaDA 2 uses 1e-6",
                                     "initializer_range": "LLaDA 2 uses 0.02",
                                     "routed_scaling_factor": "LLaDA 2 uses 2.5"})
        check_dropout(self, "attention_dropout")
        check_special_token_ids(self, "LLaDA 2: mask 156895, eos/pad 156892")


__all__ = ["LLaDA2MoeConfig"]
