"""LLaDA configuration.

Field names are the ones of the official `config.json` files (OLMo heritage: `d_model`, `n_heads`, ...), so the
GSAI-ML checkpoints load unchanged; the usual transformers names (`hidden_size`, `num_attention_heads`, ...) are
aliases of them. Defaults are the LLaDA-8B values.

It also holds the validation rules the three configs share (the special-token ids, positive sizes, finite numbers,
the dense LLaDA names of the MoE configs' fields); configuration_lladamoe.py and configuration_llada2_moe.py import
them from here.

This file travels with every checkpoint (trust_remote_code): it imports only torch/transformers.
"""

import math
from typing import Any

from transformers import PreTrainedConfig

# Values the official configs carry that change the architecture, and the only ones we implement.
SUPPORTED_BLOCK_TYPES = ("llama",)
SUPPORTED_ACTIVATIONS = ("silu",)
SUPPORTED_LAYER_NORMS = ("rms",)

# The special tokens of the LLaDA-8B vocabulary: the defaults of the id fields below, meaningful in that vocabulary.
LLADA_8B_TOKEN_IDS = {"mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081, "bos_token_id": 126080}


# -- Rules shared by the three configuration files (configuration_lladamoe.py and configuration_llada2_moe.py import
# them from here) ----------------------------------------------------------------------------------------------------


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


class DenseLLaDANamesMixin:
    """For the configs with transformers' field names (LLaDA-MoE, LLaDA 2; before `PreTrainedConfig` in their bases):
    the dense LLaDA names that generation, likelihood and the input checks read."""

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output matrices (the same as `vocab_size` here; dense LLaDA pads them)."""
        return self.vocab_size

    @property
    def max_sequence_length(self) -> int:
        """The dense LLaDA name of `max_position_embeddings` (read by generation and likelihood)."""
        return self.max_position_embeddings


def check_positive_ints(config: PreTrainedConfig, *names: str) -> None:
    """Raise unless each named field is a positive integer."""
    for name in names:
        if not is_positive_int(getattr(config, name)):
            raise ValueError(
                f"Invalid {type(config).__name__}: `{name}` must be a positive integer, got {getattr(config, name)!r}."
            )


def check_supported(config: PreTrainedConfig, name: str, supported: tuple, family: str, use: str = "uses") -> None:
    """Raise unless the field `name` holds one of the `supported` values (the only ones implemented)."""
    value = getattr(config, name)
    if value not in supported:
        raise ValueError(
            f"Invalid {type(config).__name__}: `{name}` {value!r} is not supported; {family} {use} {supported}."
        )


def check_key_value_heads(config: PreTrainedConfig) -> None:
    """Raise unless `num_attention_heads` is a multiple of `num_key_value_heads` (grouped-query attention)."""
    if config.num_attention_heads % config.num_key_value_heads != 0:
        raise ValueError(
            f"Invalid {type(config).__name__}: `num_attention_heads` ({config.num_attention_heads}) must be a multiple "
            f"of `num_key_value_heads` ({config.num_key_value_heads})."
        )


def drop_unheld_default_ids(config: PreTrainedConfig, defaults: dict[str, int]) -> None:
    """Each special-token id still at its family's default (`defaults`: field name -> id) that the vocabulary is too
    small to hold becomes None: that token does not exist in the smaller vocabulary (so `vocab_size=99` builds,
    without special tokens). An id given that does not fit is left for `check_special_token_ids` to reject."""
    if not isinstance(config.vocab_size, int):
        return
    for name, default in defaults.items():
        if getattr(config, name) == default and default >= config.vocab_size:
            setattr(config, name, None)


def check_special_token_ids(config: PreTrainedConfig, known_ids: str) -> None:
    """Raise unless `mask_token_id`, `eos_token_id` (an id or a list), `pad_token_id` and `bos_token_id` are None or
    ids in [0, vocab_size), and the mask id is none of the others (the [MASK] token marks what the model must
    predict: were it also EOS, BOS or padding, those tokens would be read as holes to fill). `known_ids` names the
    family's real ids, for the message."""
    eos_ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    # EOS last: LLaDA 2's defaults to the padding id, whose own name is the one to report
    for name, value in [("mask_token_id", config.mask_token_id), ("pad_token_id", config.pad_token_id),
                        ("bos_token_id", config.bos_token_id), *[("eos_token_id", eos) for eos in eos_ids]]:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value < config.vocab_size):
            raise ValueError(
                f"Invalid {type(config).__name__}: `{name}` must be an integer id in [0, vocab_size="
                f"{config.vocab_size}), got {value!r}. Set it to the id your tokenizer uses for that token."
            )
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(config, name)
        if config.mask_token_id is not None and config.mask_token_id in (value if isinstance(value, list) else [value]):
            raise ValueError(
                f"Invalid {type(config).__name__}: `mask_token_id` ({config.mask_token_id}) must differ from `{name}` "
                f"({value}); the [MASK] token needs an id of its own ({known_ids})."
            )


def check_finite_positive(config: PreTrainedConfig, advice: dict[str, str]) -> None:
    """Raise unless each field named in `advice` (name -> what the official models use) is a finite number > 0."""
    for name, usual in advice.items():
        value = getattr(config, name)
        if not is_finite_positive(value):
            raise ValueError(
                f"Invalid {type(config).__name__}: `{name}` must be a finite number > 0 (anything else makes every "
                f"output NaN or meaningless), got {value!r}; {usual}."
            )


def check_dropout(config: PreTrainedConfig, *names: str) -> None:
    """Raise unless each named dropout probability is in [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"Invalid {type(config).__name__}: `{name}` must be in [0, 1), got {value}.")


def reject_rope_scaling(config_class: str, family: str, kwargs: dict) -> None:
    """`rope_scaling` is a deprecated alias of `rope_parameters` in transformers 5; the official MoE files carry
    `"rope_scaling": null`, which means plain rotary embeddings, the only kind implemented: take it out of `kwargs`
    and raise for any other value."""
    rope_scaling = kwargs.pop("rope_scaling", None)
    if rope_scaling is not None:
        raise ValueError(
            f"Invalid {config_class}: `rope_scaling={rope_scaling!r}` is not supported; {family} uses plain rotary "
            "embeddings (rope_scaling: null)."
        )


def is_lladamoe_config_dict(config_dict: dict) -> bool:
    """True when an official-format `model_type: "llada"` config dict describes LLaDA-MoE rather than dense LLaDA."""
    architectures = config_dict.get("architectures") or []
    moe_fields = ("num_experts", "moe_layer_freq", "expert_intermediate_size")
    return "LLaDAMoEModelLM" in architectures or any(name in config_dict for name in moe_fields)


def reject_other_family(config_class: type, config_dict: dict, moe: bool | None = None) -> None:
    """Raise when `config_dict` (a config.json) belongs to another member of the family than `config_class` reads:
    another `model_type`, or (both say "llada") dense LLaDA against LLaDA-MoE when `moe` says which one is wanted.
    Without this, the wrong class silently fills in its own defaults for the fields it does not know."""
    found = config_dict.get("model_type")
    kind = None
    if found is not None and found != config_class.model_type:
        kind = f"model_type {found!r}"
    elif moe is not None and found == "llada" and is_lladamoe_config_dict(config_dict) != moe:
        kind = "a LLaDA-MoE config" if not moe else "a dense LLaDA config"
    if kind is not None:
        raise ValueError(
            f"This config.json is {kind}, which {config_class.__name__} does not read (it reads "
            f"{'LLaDA-MoE' if moe else 'dense LLaDA' if moe is False else repr(config_class.model_type)} configs); "
            "load the checkpoint with AutoModel.from_pretrained (after `import modeling_llada`), which picks the "
            "right class."
        )


class LLaDAConfig(PreTrainedConfig):
    r"""Configuration of a LLaDA masked-diffusion language model (arXiv 2502.09992).

    A Llama-style bidirectional Transformer: pre-norm RMSNorm, SwiGLU MLP, rotary embeddings (NeoX style, fp32),
    no causal mask. A reserved `mask_token_id` marks the positions the model has to predict.

    Args:
        d_model (`int`, defaults to 4096): width of the residual stream (alias `hidden_size`).
        n_heads (`int`, defaults to 32): attention heads (alias `num_attention_heads`).
        n_kv_heads (`int`, *optional*): key/value heads for grouped-query attention; `None` (default) means `n_heads`
            (alias `num_key_value_heads`).
        n_layers (`int`, defaults to 32): Transformer blocks (alias `num_hidden_layers`).
        mlp_hidden_size (`int`, *optional*, defaults to 12288): SwiGLU hidden width; `None` means
            `mlp_ratio * d_model` (alias `intermediate_size`).
        mlp_ratio (`int`, defaults to 4): used only when `mlp_hidden_size` is `None`.
        vocab_size (`int`, defaults to 126464): number of token ids the tokenizer can produce.
        embedding_size (`int`, *optional*, defaults to 126464): rows of the embedding and output matrices, at least
            `vocab_size` (OLMo pads it for speed); `None` means `vocab_size`.
        max_sequence_length (`int`, defaults to 4096): longest canvas (prompt + answer) trained on
            (alias `max_position_embeddings`). Longer inputs run but warn once.
        rope_theta (`float`, defaults to 500000.0): rotary base.
        rms_norm_eps (`float`, defaults to 1e-5): RMSNorm epsilon.
        weight_tying (`bool`, defaults to `False`): share the input embedding with the output head
            (alias `tie_word_embeddings`).
        include_bias (`bool`): biases in every linear layer. include_qkv_bias (`bool`): biases in q/k/v only.
        mask_token_id (`int`, *optional*, defaults to 126336): the `[MASK]` id of the diffusion process; generation and
            training need it.
        eos_token_id / pad_token_id / bos_token_id (`int`, *optional*): 126081 / 126081 / 126080 for the 8B models.
            The four id defaults are those of the 8B vocabulary: where `vocab_size` is too small to hold one, it becomes
            `None` (so `LLaDAConfig(vocab_size=99)` builds, with no special tokens). An id given that does not fit the
            vocabulary is an error.
        init_std (`float`, defaults to 0.02): std of the normal initialisation of fresh weights.
        embedding_dropout, residual_dropout, attention_dropout (`float`, default 0.0): dropout probabilities.
        scale_logits (`bool`, defaults to `False`): multiply logits by `1/sqrt(d_model)`.
        multi_query_attention (`bool`, *optional*): legacy OLMo switch for a single key/value head.

    Every other field of the official files (`alibi`, `flash_attention`, `init_fn`, `precision`, ...) is accepted
    and stored; the ones that would change the architecture are checked and rejected when not supported.
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_sequence_length",
        "tie_word_embeddings": "weight_tying",
        "initializer_range": "init_std",
    }

    # Architecture (official names).
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = None
    n_layers: int = 32
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    max_sequence_length: int = 4096
    rope: bool = True
    rope_theta: float = 500000.0
    rope_full_precision: bool = True
    rms_norm_eps: float = 1e-5
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool | None = False
    attention_layer_norm: bool = False
    activation_type: str = "silu"
    block_type: str = "llama"
    block_group_size: int = 1
    weight_tying: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False
    alibi: bool = False
    clip_qkv: float | None = None
    input_emb_norm: bool = False
    scale_logits: bool = False
    multi_query_attention: bool | None = None
    # Dropout (training only).
    embedding_dropout: float = 0.0
    residual_dropout: float = 0.0
    attention_dropout: float = 0.0
    # Initialisation.
    init_std: float = 0.02
    # Special tokens.
    mask_token_id: int | None = LLADA_8B_TOKEN_IDS["mask_token_id"]
    eos_token_id: int | list[int] | None = LLADA_8B_TOKEN_IDS["eos_token_id"]
    pad_token_id: int | None = LLADA_8B_TOKEN_IDS["pad_token_id"]
    bos_token_id: int | None = LLADA_8B_TOKEN_IDS["bos_token_id"]
    # LLaDA decodes a whole canvas per step; the key/value cache is opt-in (see generation).
    use_cache: bool = False

    def __post_init__(self, **kwargs: Any):
        # Fields of the official files that have no effect here (init_device, precision, flash_attention, ...)
        # land in kwargs and are stored as plain attributes by the parent.
        super().__post_init__(**kwargs)
        drop_unheld_default_ids(self, LLADA_8B_TOKEN_IDS)
        self._validate_llada()

    # The config class of LLaDA-MoE, set by `modeling_llada/__init__.py`. Not imported here, so that this file (which
    # travels with dense checkpoints for trust_remote_code) does not pull the MoE files along.
    moe_config_class = None

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """`PreTrainedConfig.from_dict`, except that an official LLaDA-MoE config (also `model_type: "llada"`, but with
        `architectures: ["LLaDAMoEModelLM"]` and MoE fields) gives an `LLaDAMoEConfig`: that is how `AutoConfig`
        and `AutoModel` tell the two families apart."""
        reject_other_family(cls, config_dict)  # another model_type; dense against MoE is told apart below
        if cls is LLaDAConfig and is_lladamoe_config_dict(config_dict):
            if cls.moe_config_class is None:
                raise ValueError(
                    "This is a LLaDA-MoE config (architectures: LLaDAMoEModelLM), not a dense LLaDA one: "
                    "`import modeling_llada` first, or load it with LLaDAMoEConfig."
                )
            return cls.moe_config_class.from_dict(config_dict, **kwargs)
        reject_other_family(cls, config_dict, moe=None if cls is LLaDAConfig else False)
        return super().from_dict(config_dict, **kwargs)

    # -- derived sizes ---------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def num_key_value_heads(self) -> int:
        """Effective key/value heads (OLMo's `multi_query_attention` forces one)."""
        if self.multi_query_attention:
            return 1
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @num_key_value_heads.setter
    def num_key_value_heads(self, value: int) -> None:
        self.n_kv_heads = value
        self.multi_query_attention = None

    @property
    def intermediate_size(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @intermediate_size.setter
    def intermediate_size(self, value: int) -> None:
        self.mlp_hidden_size = value

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output matrices (`embedding_size`, falling back to `vocab_size`)."""
        return self.embedding_size if self.embedding_size is not None else self.vocab_size

    # -- validation ------------------------------------------------------------------------------------------------
    def _validate_llada(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"Invalid LLaDAConfig: {message}")

        check_positive_ints(self, "d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length")
        if self.d_model % self.n_heads != 0:
            fail(
                f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}); "
                f"choose n_heads among the divisors of d_model."
            )
        if self.head_dim % 2 != 0:
            fail(f"rotary embeddings need an even head dimension, got d_model/n_heads = {self.head_dim}.")
        kv = self.num_key_value_heads
        if not isinstance(kv, int) or kv <= 0 or self.n_heads % kv != 0:
            fail(
                f"`n_heads` ({self.n_heads}) must be a multiple of `n_kv_heads` ({self.n_kv_heads}); "
                f"use a divisor of n_heads (n_kv_heads == n_heads means no grouped-query attention)."
            )
        if self.intermediate_size <= 0:
            fail(f"the MLP hidden size must be positive, got {self.intermediate_size}.")
        if self.padded_vocab_size < self.vocab_size:
            fail(f"`embedding_size` ({self.embedding_size}) must be >= `vocab_size` ({self.vocab_size}).")
        if self.block_type not in SUPPORTED_BLOCK_TYPES:
            fail(f"`block_type` {self.block_type!r} is not supported; LLaDA uses {SUPPORTED_BLOCK_TYPES}.")
        if self.activation_type not in SUPPORTED_ACTIVATIONS:
            fail(
                f"`activation_type` {self.activation_type!r} is not supported; LLaDA uses "
                f"{SUPPORTED_ACTIVATIONS} (SwiGLU with a separate up projection)."
            )
        if self.layer_norm_type not in SUPPORTED_LAYER_NORMS:
            fail(f"`layer_norm_type` {self.layer_norm_type!r} is not supported; LLaDA uses {SUPPORTED_LAYER_NORMS}.")
        unsupported_switches = {
            "alibi": "LLaDA uses rotary embeddings; set alibi=false",
            "attention_layer_norm": "q/k layer norms are not part of LLaDA; set attention_layer_norm=false",
            "input_emb_norm": "embedding norms are not part of LLaDA; set input_emb_norm=false",
            "bias_for_layer_norm": "LLaDA's RMSNorm has no bias; set bias_for_layer_norm=false",
        }
        for name, advice in unsupported_switches.items():
            if getattr(self, name):
                fail(f"`{name}={getattr(self, name)!r}` is not supported: {advice}.")
        if not self.rope:
            fail("`rope=false` is not supported: LLaDA needs rotary position embeddings.")
        if not self.layer_norm_with_affine:
            fail("`layer_norm_with_affine=false` is not supported: LLaDA's RMSNorm has a weight.")
        if self.clip_qkv is not None:
            fail(f"`clip_qkv={self.clip_qkv}` is not supported; set it to null.")
        if self.block_group_size != 1:
            fail(f"`block_group_size={self.block_group_size}` is not supported; use 1.")
        check_finite_positive(self, {"rope_theta": "LLaDA uses 500000", "rms_norm_eps": "LLaDA uses 1e-5",
                                     "init_std": "LLaDA uses 0.02"})
        check_dropout(self, "embedding_dropout", "residual_dropout", "attention_dropout")
        check_special_token_ids(self, "LLaDA-8B: mask 126336, eos/pad 126081, bos 126080")


__all__ = ["LLaDAConfig"]
