"""Diffusion generation for LLaDA: the reverse process with low-confidence remasking (arXiv 2502.09992, §2.4).

The canvas `[prompt | mask x N]` is filled block by block, left to right. Within a block, each step runs one forward
pass over the whole canvas, proposes a token for every masked position, and commits the most confident proposals;
committed tokens never change. Masks already in the prompt are filled too (infilling).

This file travels with every checkpoint (trust_remote_code): it imports only torch and transformers.
"""

import copy
import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig

# transformers internals this file relies on (inventory: tests/test_upstream_internals.py). Besides these imports:
# GenerationConfig's `_get_default_generation_params`, its metadata fields (`_from_model_config`, `_commit_hash`,
# `transformers_version`), `validate(strict)`, `from_pretrained(_from_auto=, _from_pipeline=)` and save / load of a
# subclass that skips `GenerationConfig.__init__` (overriding `from_dict(config_dict, **kwargs)` and
# `to_json_string(use_diff, ignore_metadata, keys_to_pop)`, which save_pretrained calls with use_diff=True);
# PreTrainedModel's `generation_config_class`, `can_generate` (a base class named *GenerationMixin) and the
# `adjust_generation_fn` hook `from_pretrained` calls.
from transformers.generation import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper
from transformers.generation.streamers import BaseStreamer  # put(ids), end()
from transformers.utils import ModelOutput, logging
from transformers.utils.logging import tqdm  # transformers' progress bar (honours disable_progress_bar)

from .answers_llada import StreamState, cut_answers, finish_rows_at_eos, finish_rows_at_stop_strings, stop_list
from .draws_llada import counter_uniform, row_seeds

logger = logging.get_logger(__name__)

REMASKING_STRATEGIES = ("low_confidence", "random", "margin", "entropy")
KV_CACHE_MODES = ("prefix", "dual")
# Parallel decoding compares scores with a probability-like threshold: only these scores live in [0, 1].
PARALLEL_REMASKING = ("low_confidence", "margin")

# The diffusion fields of LLaDAGenerationConfig and their defaults (None = resolved at generate time).
_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": None,
    "max_length": None,
    "steps": None,
    "block_length": None,
    "do_sample": None,
    "temperature": 0.0,
    "top_k": None,
    "top_p": None,
    "cfg_scale": 0.0,
    "remasking": "low_confidence",
    "mask_token_id": None,
    "logits_eos_inf": False,
    "confidence_eos_eot_inf": False,
    "early_exit": False,
    "threshold": None,
    "factor": None,
    "kv_cache": None,
    "num_return_sequences": 1,
    "seed": None,
    "stop_strings": None,
    "output_history": False,
    "return_dict_in_generate": False,
    "progress_bar": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}
DEFAULT_MAX_NEW_TOKENS = 128
_METADATA_FIELDS = ("_commit_hash", "_from_model_config", "transformers_version")
# transformers GenerationConfig fields that have nothing to act on in diffusion whatever their value.
_IGNORED_STANDARD_FIELDS = ("use_cache", "low_memory", "disable_compile", "compile_config")
# The argument names of the official `generate` of LLaDA 2.x (and of the LLaDA reference code) -> ours. Both spellings
# of one setting in one call must agree.
OFFICIAL_ALIASES = {
    "gen_length": "max_new_tokens",
    "mask_id": "mask_token_id",
    "eos_id": "eos_token_id",
    "eos_early_stop": "early_exit",
}
# Settings of LLaDA 2.1's token editing: meaningful for the LLaDA 2 sampler only.
LLADA2_ONLY_SETTINGS = ("editing_threshold", "max_post_steps", "num_to_transfer", "minimal_topk")


def apply_official_aliases(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with the official argument names (`gen_length`, `mask_id`, `eos_id`, `eos_early_stop`) renamed to
    ours; raises when a setting is given under both names with different values."""
    kwargs = dict(kwargs)
    for official, ours in OFFICIAL_ALIASES.items():
        if official not in kwargs:
            continue
        value = kwargs.pop(official)
        if ours in kwargs and kwargs[ours] != value:
            raise ValueError(
                f"generate() got `{official}={value!r}` (the official name) and `{ours}={kwargs[ours]!r}` for the same "
                f"setting; pass it once (`{ours}` is the name here, `{official}` its alias)."
            )
        kwargs[ours] = value
    return kwargs


@functools.cache
def _standard_generation_defaults() -> dict[str, list]:
    """transformers' own generation fields and the values that mean "not set" for each (None, the value a plain
    `GenerationConfig()` holds, and the global default `generate` applies to unset fields)."""
    plain = GenerationConfig()
    global_defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    neutral = {}
    for name, value in vars(plain).items():
        if name.startswith("_") or name in _DIFFUSION_DEFAULTS or name in _METADATA_FIELDS:
            continue
        neutral[name] = [None, value, global_defaults.get(name)]
    return neutral


def unsupported_generation_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The transformers generation settings in `values` that diffusion generation cannot honour (set to something
    other than their neutral default). Fields that are not transformers' are left to the caller."""
    standard = _standard_generation_defaults()
    return {
        name: value
        for name, value in values.items()
        if name in standard and name not in _IGNORED_STANDARD_FIELDS and not any(
            value is neutral or (type(value) is type(neutral) and value == neutral) for neutral in standard[name]
        )
    }


def reject_unsupported_settings(values: dict[str, Any], where: str) -> None:
    """Raise, naming them, when `values` hold transformers generation settings diffusion cannot honour."""
    settings = unsupported_generation_settings(values)
    if not settings:
        return
    listed = ", ".join(f"{name}={value!r}" for name, value in sorted(settings.items()))
    raise ValueError(
        f"{where} sets {listed}: not supported by LLaDA's diffusion generation, which fills a masked canvas over "
        f"`steps` denoising steps rather than producing tokens left to right (no beam search, no per-token "
        f"penalties or scores). Remove them; per-step logits processors can be passed as `logits_processor=`. "
        f"The diffusion settings are {sorted(_DIFFUSION_DEFAULTS)}."
    )


# Offset that puts EOS proposals below every ordinary confidence when `confidence_eos_eot_inf` is on. All
# confidences lie in [-log(vocab), 1], so any offset beyond that keeps EOS last while preserving their own order.
_EOS_CONFIDENCE_OFFSET = 1e4


class LLaDAGenerationConfig(GenerationConfig):
    r"""Generation settings of the LLaDA reverse process; saved as `generation_config.json`.

    Only diffusion-relevant fields are accepted. transformers' own generation fields load when they hold their neutral
    value (`num_beams=1`, `repetition_penalty=1.0`, ...) and raise, naming them, when they ask for something diffusion
    cannot do; unknown fields raise, as in transformers.

    Args:
        max_new_tokens (`int`, defaults to 128): N, the number of masked positions appended to the prompt.
        steps (`int`, *optional*): S, the total number of denoising steps (forward passes, two rows per prompt with
            CFG). Must be a multiple of the number of blocks. Defaults to `max_new_tokens` (one token per step).
        block_length (`int`, *optional*): B, the block size; blocks are filled left to right (semi-autoregressive
            when B < N). `max_new_tokens` must be a multiple of it. Defaults to `max_new_tokens` (one block).
        max_length (`int`, *optional*): the prompt plus the answer, as in transformers; used when `max_new_tokens` is
            not set (`max_new_tokens` defaults to 128 when neither is).
        do_sample (`bool`, *optional*): transformers' switch: False is greedy whatever `temperature` says (sampling
            settings then warn, as in transformers), True samples at `temperature` (1.0 when it is 0). Unset,
            `temperature > 0` means sampling. Saved only when set; a saved `do_sample: false` with no sampling
            setting beside it (what llada-hf wrote into every generation_config.json before) loads as unset.
        temperature (`float`, defaults to 0.0): 0 proposes the argmax; > 0 samples with float64 Gumbel noise.
        top_k (`int`, *optional*) / top_p (`float`, *optional*): with temperature > 0, restrict sampled proposals to the
            k most likely tokens / the nucleus of probability mass p of the model's distribution (before temperature).
            Confidences stay the model's probabilities, so `top_k=1` reproduces the greedy (temperature 0) result.
        cfg_scale (`float`, defaults to 0.0): classifier-free guidance weight w; the unconditional canvas has every
            prompt position masked and `logits = uncond + (w + 1) * (cond - uncond)`.
        remasking (`str`, defaults to "low_confidence"): which proposals to commit first: `low_confidence` (highest
            probability of the proposed token), `random`, `margin` (top-1 minus top-2 probability) or `entropy`
            (lowest entropy of the position's distribution).
        mask_token_id (`int`, *optional*): defaults to the model config's `mask_token_id`.
        logits_eos_inf (`bool`, defaults to False): never propose an EOS id (all ids of `eos_token_id`).
        confidence_eos_eot_inf (`bool`, defaults to False): EOS proposals get the lowest confidence, so they are
            committed only when nothing else is left in the block.
        early_exit (`bool`, defaults to False): once a row has committed an EOS with no mask before it, fill its
            remaining masks with EOS and stop spending forward passes on it. Nothing before the first EOS changes.
        threshold (`float`, *optional*): confidence-aware parallel decoding (Fast-dLLM): each step commits every
            masked position of the current block whose confidence is at least `threshold` (at least one per row), and
            a block ends when it is complete; `steps` is then unused. With `low_confidence` or `margin` remasking.
        factor (`float`, *optional*): the factor-based variant: commit the n most confident positions, n the largest
            with (n + 1) * (1 - c_n) < factor (c_n the n-th highest confidence), at least one.
        kv_cache (`str`, *optional*): approximate key/value caching, refreshed when a block starts: `"prefix"`
            reuses the keys/values of the prompt and finished blocks; `"dual"` also those after the current block.
            Cached entries go stale as the canvas fills in, so results can differ from the exact sampler; the first
            step of every block is exact. None (default) keeps the exact sampler.
        num_return_sequences (`int`, defaults to 1): samples per prompt.
        seed (`int` or `list[int]`, *optional*): the sampler's seed (temperature > 0 or random remasking). Every row
            draws its own noise from its prompt's seed and its copy index, so repeated prompts and the
            `num_return_sequences` copies are independent samples. An int seeds the whole call (prompt i gets a seed
            derived from it and i); a list gives one seed per prompt, and a prompt then samples the same alone as in
            any batch, padded or not. None draws the seed from torch's RNG (`torch.manual_seed` reproduces a call).
        stop_strings (`str` or `list[str]`, *optional*): the answer of a row ends where the earliest of these strings
            begins in its decoded answer (the text of its generated tokens before the first EOS, decoded with special
            tokens kept, so `"<|eot_id|>"` works too). Needs `tokenizer=` in `generate`. The stop string is not
            returned: `sequences` keep the tokens that carry text before it other than whitespace and hold padding
            from the first token that begins inside it or holds only whitespace before it; a token that straddles
            its start (`".\\n"` for `"\\n"`) stays, so cut the decoded text at the string for the exact text. With
            `early_exit`, a row whose committed prefix holds a stop string skips its remaining blocks.
        output_history (`bool`, defaults to False): return every step's canvas and the step that committed each
            position (implies a [`LLaDAGenerateOutput`]).
        return_dict_in_generate (`bool`, defaults to False): return a [`LLaDAGenerateOutput`] instead of ids.
        progress_bar (`bool`, defaults to False): show a tqdm bar over the denoising steps.
        bos_token_id / eos_token_id / pad_token_id: default to the model config's. `eos_token_id` may be a list.
    """

    # The diffusion fields with their defaults, and the key/value cache modes (other samplers' subclasses extend them).
    _diffusion_fields: dict[str, Any] = _DIFFUSION_DEFAULTS
    _kv_cache_modes: tuple[str, ...] = KV_CACHE_MODES
    # The settings that decide what this sampler writes, in the order a model card shows them (`sampler_settings`).
    sampler_fields: tuple[str, ...] = (
        "max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "remasking", "cfg_scale",
        "logits_eos_inf", "confidence_eos_eot_inf", "early_exit", "threshold", "factor", "kv_cache",
    )

    def __init__(self, **kwargs):
        # Deliberately no super().__init__(): most autoregressive fields make no sense for diffusion.
        for name, default in self._diffusion_fields.items():
            setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        for name in _METADATA_FIELDS:
            setattr(self, name, kwargs.pop(name, None))
        if self.transformers_version is None:
            import transformers

            self.transformers_version = transformers.__version__
        # transformers' own fields (a generation_config.json written by GenerationConfig) load when they are neutral
        # (num_beams=1, repetition_penalty=1.0, ...); anything that asks for a behaviour diffusion lacks raises.
        reject_unsupported_settings(kwargs, "This generation config")
        standard = _standard_generation_defaults()
        unknown = sorted(name for name in kwargs if name not in standard)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unexpected fields {unknown}; valid fields are "
                f"{sorted(self._diffusion_fields)}."
            )
        self.validate()

    def validate(self, strict: bool = False, **unused) -> None:
        """Check every value on its own and the combinations that do not depend on the prompt."""

        def positive_int(name: str, value: Any) -> None:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")

        for name in ("max_new_tokens", "max_length", "steps", "block_length", "top_k", "num_return_sequences"):
            positive_int(name, getattr(self, name))

        def token_id(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        for name in ("mask_token_id", "bos_token_id", "pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            ids = value if name == "eos_token_id" and isinstance(value, (list, tuple)) and value else [value]
            if value is not None and not all(token_id(x) for x in ids):
                kind = "an integer id >= 0 or a list of them" if name == "eos_token_id" else "an integer id >= 0"
                raise ValueError(f"`{name}` must be {kind} (or None), got {value!r} ({type(value).__name__}).")
        if self.do_sample not in (None, True, False):
            raise ValueError(f"`do_sample` must be True, False or None, got {self.do_sample!r}.")
        for name in ("logits_eos_inf", "confidence_eos_eot_inf", "early_exit", "output_history",
                     "return_dict_in_generate", "progress_bar"):
            value = getattr(self, name, False)
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False, got {value!r} ({type(value).__name__}).")

        def finite_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not finite_number(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"`temperature` must be a finite number >= 0 (0 means argmax proposals), got {self.temperature!r}."
            )
        if not finite_number(self.cfg_scale) or self.cfg_scale < 0:
            raise ValueError(
                f"`cfg_scale` must be a finite number >= 0 (0 disables guidance; the paper uses up to 3), got "
                f"{self.cfg_scale!r}."
            )
        seeds = self.seed if isinstance(self.seed, (list, tuple)) else [self.seed]
        if self.seed is not None and (
            not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
        ):
            raise ValueError(f"`seed` must be an integer or a list of integers (one per prompt), got {self.seed!r}.")
        stops = [self.stop_strings] if isinstance(self.stop_strings, str) else self.stop_strings
        if self.stop_strings is not None and (
            not isinstance(stops, (list, tuple)) or not all(isinstance(x, str) and x for x in stops)
        ):
            raise ValueError(
                f"`stop_strings` must be a non-empty string or a list of non-empty strings, got {self.stop_strings!r}."
            )
        if self.top_p is not None and not (finite_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p!r}.")
        if self.remasking not in REMASKING_STRATEGIES:
            raise ValueError(f"`remasking` must be one of {REMASKING_STRATEGIES}, got {self.remasking!r}.")
        self._validate_schedule()
        if self.kv_cache is not None and self.kv_cache not in self._kv_cache_modes:
            raise ValueError(f"`kv_cache` must be None or one of {self._kv_cache_modes}, got {self.kv_cache!r}.")
        if self.threshold is not None and self.factor is not None:
            raise ValueError("Set either `threshold` or `factor` for parallel decoding, not both.")
        if self.threshold is not None and not (finite_number(self.threshold) and 0.0 < self.threshold <= 1.0):
            raise ValueError(f"`threshold` must be in (0, 1], got {self.threshold!r}; Fast-dLLM uses 0.9.")
        if self.factor is not None and not (finite_number(self.factor) and self.factor > 0):
            raise ValueError(f"`factor` must be > 0, got {self.factor!r}.")
        if (self.threshold is not None or self.factor is not None) and self.remasking not in PARALLEL_REMASKING:
            raise ValueError(
                f"Parallel decoding (threshold/factor) compares confidences in [0, 1]; use remasking in "
                f"{PARALLEL_REMASKING}, not {self.remasking!r}."
            )
        self._warn_unused_sampling_settings()

    def _warn_unused_sampling_settings(self) -> None:
        """Warn, as transformers' GenerationConfig does, when the sampling settings are set but generation is greedy
        (`do_sample=False`, or `top_k` / `top_p` at temperature 0): they would not be used."""
        if self.sampling_temperature > 0:
            return
        unused = [f"{name}={value!r}" for name, value, is_set in (
            ("temperature", self.temperature, self.temperature > 0),
            ("top_k", self.top_k, self.top_k is not None),
            ("top_p", self.top_p, self.top_p is not None and self.top_p < 1.0),
        ) if is_set]
        if not unused:
            return
        why = "`do_sample` is False" if self.do_sample is False else "the temperature is 0"
        logger.warning_once(
            f"{why}, so generation is greedy and {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used "
            "(only sampling uses them). "
            f"Pass do_sample=True (or leave do_sample unset and set temperature > 0) to sample, or unset "
            f"{', '.join(u.split('=')[0] for u in unused)}."
        )

    def _validate_schedule(self) -> None:
        """LLaDA's schedule: the answer splits into whole blocks and the steps evenly over them."""
        if self.max_new_tokens is not None:
            check_block_schedule(self.max_new_tokens, self.block_length, self.steps)

    def update(self, **kwargs) -> dict[str, Any]:
        """Set the given fields; return the kwargs that are neither fields of this config nor transformers' generation
        fields. Neutral transformers fields (`num_beams=1`, ...) are accepted and ignored; others raise."""
        reject_unsupported_settings(kwargs, "The generation call")
        standard = _standard_generation_defaults()
        unused = {}
        for key, value in kwargs.items():
            if key in self._diffusion_fields:
                setattr(self, key, value)
            elif key not in standard and key not in _METADATA_FIELDS:
                unused[key] = value
        return unused

    @property
    def sampling_temperature(self) -> float:
        """The temperature the sampler uses: transformers' `do_sample` decides when set (False = greedy, True =
        sample at `temperature`, 1.0 if that is 0); unset, `temperature > 0` means sampling (LLaDA's convention)."""
        if self.do_sample is False:
            return 0.0
        if self.do_sample and not self.temperature:
            return 1.0
        return float(self.temperature)

    def sampler_settings(self) -> dict[str, Any]:
        """What `generate` uses with no keyword, defaults resolved, as keyword arguments of `generate`: the
        `sampler_fields` that are set (`steps` and `block_length` default to `max_new_tokens`)."""
        values = {name: getattr(self, name) for name in self.sampler_fields}
        if self.max_new_tokens is None:
            values["max_new_tokens"] = None if self.max_length is not None else DEFAULT_MAX_NEW_TOKENS
            values = {"max_length": self.max_length, **values}
        self._resolve_sampler_settings(values)
        return {name: value for name, value in values.items() if value is not None}

    def _resolve_sampler_settings(self, values: dict[str, Any]) -> None:
        """The defaults `generate` resolves: `steps` and `block_length` equal to `max_new_tokens`."""
        for name in ("steps", "block_length"):
            if values[name] is None:
                values[name] = values["max_new_tokens"]

    def resolved_max_new_tokens(self, prompt_length: int) -> int:
        """N: `max_new_tokens`, else `max_length` minus the prompt, else 128."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.max_length is not None:
            if self.max_length <= prompt_length:
                raise ValueError(
                    f"max_length ({self.max_length}) leaves no room to generate after a prompt of {prompt_length} "
                    "tokens; raise it or pass max_new_tokens instead."
                )
            return self.max_length - prompt_length
        return DEFAULT_MAX_NEW_TOKENS

    @classmethod
    def from_model_config(cls, model_config) -> "LLaDAGenerationConfig":
        return cls(
            bos_token_id=getattr(model_config, "bos_token_id", None),
            eos_token_id=getattr(model_config, "eos_token_id", None),
            pad_token_id=getattr(model_config, "pad_token_id", None),
            _from_model_config=True,
        )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "LLaDAGenerationConfig":
        """Load a saved config. `do_sample: false` beside no sampling setting (temperature 0 or absent, no top_k /
        top_p) says nothing beyond the greedy default: every generation_config.json llada-hf saved before it wrote
        `do_sample` only when set holds it. It loads as unset, so that `generate(temperature=...)` samples (with
        `do_sample` unset, temperature > 0 means sampling) rather than being overridden by a value no one chose."""
        if config_dict.get("do_sample") is False and not config_dict.get("temperature") and config_dict.get(
            "top_k"
        ) is None and config_dict.get("top_p") in (None, 1.0):
            config_dict = {key: value for key, value in config_dict.items() if key != "do_sample"}
            logger.info("generation_config.json: `do_sample: false` with no sampling setting loads as unset "
                        "(greedy unless a call sets temperature > 0 or do_sample=True).")
        return super().from_dict(config_dict, **kwargs)

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False,
                       keys_to_pop: list[str] | None = None) -> str:
        """As transformers', except that the saved diff holds `do_sample` only when it is set (see `to_diff_dict`):
        a saved `do_sample: false` would make every later `temperature` a no-op."""
        if use_diff and self.do_sample is None:
            keys_to_pop = [*(keys_to_pop or []), "do_sample"]
        return super().to_json_string(use_diff=use_diff, ignore_metadata=ignore_metadata, keys_to_pop=keys_to_pop)

    def to_diff_dict(self) -> dict[str, Any]:
        """The non-default fields, and always `do_sample` (the effective one when unset): tools that fill in their own
        defaults (the text-generation pipeline samples at 0.7 unless the model's config says otherwise) then keep
        LLaDA's greedy default. The saved json (`to_json_string`) holds `do_sample` only when it is set."""
        defaults = self.__class__().to_dict()
        diff = {
            key: value
            for key, value in self.to_dict().items()
            if key == "transformers_version" or defaults.get(key, object()) != value
        }
        diff["do_sample"] = self.sampling_temperature > 0
        return diff

    def get_generation_mode(self, *args, **kwargs):
        raise NotImplementedError("LLaDA generation is diffusion; it has no autoregressive generation mode.")


def check_block_schedule(gen_length: int, block_length: int | None, steps: int | None) -> None:
    """Raise unless the answer splits into whole blocks and the steps split evenly over them (None = default)."""
    block_length = block_length or gen_length
    if gen_length % block_length:
        divisor = max(d for d in range(1, min(gen_length, block_length) + 1) if gen_length % d == 0)
        raise ValueError(
            f"max_new_tokens ({gen_length}) must be a multiple of block_length ({block_length}); "
            f"e.g. block_length={divisor}."
        )
    num_blocks = gen_length // block_length
    if steps is not None and steps % num_blocks:
        raise ValueError(
            f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks} = max_new_tokens "
            f"{gen_length} / block_length {block_length}); e.g. steps={max(num_blocks, steps - steps % num_blocks)}."
        )


@dataclass
class LLaDAGenerateOutput(ModelOutput):
    """What `generate` returns with `return_dict_in_generate=True` or `output_history=True`.

    Args:
        sequences: (b, P + N) the prompt followed by the answer, as autoregressive `generate` returns it: after the
            first EOS of a row (kept) and from a stop string on, every position holds the pad id
            (`pad_token_id`, else the first EOS id).
        raw_sequences: (b, P + N) the canvas as the sampler left it (everything it committed, after EOS too).
        answer_lengths: (b,) long, the generated tokens of each answer, before its EOS or stop string (not counting
            it): `sequences[:, P:P + answer_lengths]` is the answer.
        stopped: (b,) bool, True where an EOS or a stop string ended the answer (OpenAI's finish_reason "stop"),
            False where the canvas ran out first ("length").
        tokens_per_forward: (b,) float, tokens committed by the sampler per forward pass that row took part in (the
            figure diffusion papers report beside accuracy; 1.0 for one token per step).
        history: (num_steps, b, P + N) the raw canvas after every denoising step, masks included
            (`output_history`).
        commit_step: (b, P + N) the step (0-based, counted over the whole call) that committed each position; -1 for
            prompt tokens. Positions filled by `early_exit` carry the step at which the row finished.
    """

    sequences: torch.LongTensor | None = None
    raw_sequences: torch.LongTensor | None = None
    answer_lengths: torch.LongTensor | None = None
    stopped: torch.BoolTensor | None = None
    tokens_per_forward: torch.Tensor | None = None
    history: torch.LongTensor | None = None
    commit_step: torch.LongTensor | None = None


def num_transfer_tokens(masked_count: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to commit at each step of a block: `masked_count // steps`, one more in the first `count % steps` steps.

    masked_count: (b,) masked positions of each row in the block. Returns (b, steps) int64 summing to masked_count.
    """
    base = masked_count[:, None] // steps
    remainder = masked_count[:, None] % steps
    return base + (torch.arange(steps, device=masked_count.device)[None] < remainder).long()


def proposal_confidence(logits: torch.Tensor, proposal: torch.Tensor, remasking: str) -> torch.Tensor:
    """Confidence of each position's proposal, higher = commit earlier. logits (b, W, V), proposal (b, W).

    (`random` remasking draws its scores in the sampler, from the per-row counter RNG.)
    """
    probs = torch.softmax(logits.float(), dim=-1)
    if remasking == "low_confidence":
        return probs.gather(-1, proposal[..., None]).squeeze(-1)
    if remasking == "margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    # entropy: the negative entropy, so that peaked distributions come first
    return (probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(-1)


def select_top_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean (b, W) mask of the k[row] highest finite scores of each row, without a loop over rows or a host sync.

    Ties are broken towards the lower position (stable sort).
    """
    order = scores.argsort(dim=-1, descending=True, stable=True)
    keep_rank = torch.arange(scores.shape[-1], device=scores.device)[None] < k[:, None]
    chosen = torch.zeros_like(keep_rank).scatter(-1, order, keep_rank)
    return chosen & torch.isfinite(scores)


def select_parallel(scores: torch.Tensor, threshold: float | None, factor: float | None) -> torch.Tensor:
    """Confidence-aware parallel decoding: boolean (b, W) of the positions to commit this step.

    threshold: every finite score >= threshold. factor: the n best, n the largest with (n + 1) * (1 - c_n) < factor.
    Either way at least the best position of every row that has one.
    """
    finite = torch.isfinite(scores)
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranked = scores.gather(-1, order)
    if threshold is not None:
        count = (ranked >= threshold).sum(-1)
    else:
        n = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=ranked.dtype)
        count = ((n + 1) * (1 - ranked) < factor).cumprod(-1).sum(-1)
    return select_top_k(scores, count.clamp_min(1)) & finite


class DenoisingState:
    """What one `generate` call carries from one denoising step to the next, for every sampler: the canvas, the
    counters `LLaDAGenerateOutput` reports, and each sampler's own layout (set as attributes by its
    `_start_denoising`). Every tensor has one row per generated sequence, so rows advance independently."""

    def __init__(self, config, input_ids, canvas, eos_tensor, pad_id, stops, tokenizer, seeds, processors, warpers,
                 commit_step, history, bar):
        self.config, self.input_ids, self.canvas = config, input_ids, canvas
        self.prompt_length = input_ids.shape[1]
        self.eos_tensor, self.pad_id, self.stops, self.tokenizer = eos_tensor, pad_id, stops, tokenizer
        self.seeds, self.processors, self.warpers = seeds, processors, warpers
        self.commit_step, self.history, self.bar = commit_step, history, bar
        batch, device = canvas.shape[0], canvas.device
        self.forwards = torch.zeros(batch, dtype=torch.long, device=device)  # forward passes each row took part in
        self.sampled = torch.zeros(batch, dtype=torch.long, device=device)  # mask positions each row committed
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stream = None
        self.step = 0  # forward passes so far


class LLaDAGenerationMixin:
    """`generate` for LLaDA models: the diffusion reverse process in the transformers calling convention."""

    generation_config_class = LLaDAGenerationConfig

    def adjust_generation_fn(
        self,
        generation_config,
        from_auto_class,
        from_pipeline,
        pretrained_model_name_or_path,
        cache_dir,
        force_download,
        proxies,
        local_files_only,
        token,
        revision,
        subfolder,
        trust_remote_code,
        **kwargs,
    ):
        """Called by `from_pretrained`: load `generation_config.json` as a [`LLaDAGenerationConfig`]."""
        if generation_config is not None:
            self.generation_config = self._as_llada_generation_config(generation_config)
            return
        if pretrained_model_name_or_path is None:
            return
        try:
            self.generation_config = self.generation_config_class.from_pretrained(
                pretrained_model_name_or_path,
                cache_dir=cache_dir,
                force_download=force_download,
                proxies=proxies,
                local_files_only=local_files_only,
                token=token,
                revision=revision,
                subfolder=subfolder,
                _from_auto=from_auto_class,
                _from_pipeline=from_pipeline,
            )
        except OSError as error:
            local = os.path.join(str(pretrained_model_name_or_path), subfolder or "", "generation_config.json")
            if os.path.isfile(local) or "valid JSON" in str(error):
                # a file that is there but cannot be read must not fall back to the defaults silently
                raise ValueError(
                    f"The generation_config.json of {pretrained_model_name_or_path} cannot be read: {error} Fix or "
                    "delete the file, or pass `generation_config=LLaDAGenerationConfig(...)` to from_pretrained."
                ) from error
            logger.info("No generation_config.json found; using LLaDA's default generation settings.")
        except ValueError as error:
            raise ValueError(
                f"The generation_config.json of {pretrained_model_name_or_path} cannot drive LLaDA's generation: "
                f"{error} Fix the file, or pass `generation_config=LLaDAGenerationConfig(...)` to from_pretrained."
            ) from error

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask=None, **kwargs) -> dict:
        """Not used by diffusion generation; present because wrappers (PEFT's CausalLM model) swap it around."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}

    @classmethod
    def _as_llada_generation_config(cls, config: GenerationConfig) -> LLaDAGenerationConfig:
        target = cls.generation_config_class
        if isinstance(config, target):
            return config
        # A plain GenerationConfig (from a tool or a user), or another sampler's: the fields it sets that mean the same
        # here carry over (do_sample, temperature, max_new_tokens, ...); one that asks for what diffusion lacks raises.
        if isinstance(config, LLaDAGenerationConfig):
            values = {**config.to_diff_dict(), "do_sample": config.do_sample}  # unset stays unset
        else:
            values = config.to_dict()
            # transformers keeps a field it does not know as an attribute: a typo would otherwise vanish here.
            standard = _standard_generation_defaults()
            unknown = sorted(name for name in values if name not in standard and name not in target._diffusion_fields
                             and name not in _METADATA_FIELDS and not name.startswith("_"))
            if unknown:
                llada2_only = set(unknown) & set(LLADA2_ONLY_SETTINGS)
                raise ValueError(
                    f"The GenerationConfig passed to generate() has unknown fields "
                    f"{[f'{name}={values[name]!r}' for name in unknown]}"
                    + (" (settings of LLaDA 2.x's block-diffusion sampler, which this model does not use)"
                       if llada2_only else "")
                    + f"; {cls.__name__}'s diffusion generation takes {sorted(target._diffusion_fields)}. Fix or "
                    "remove them."
                )
        values = {k: v for k, v in values.items() if v is not None and k not in _METADATA_FIELDS}
        reject_unsupported_settings(values, "The GenerationConfig passed to generate()")
        return target(**{k: v for k, v in values.items() if k in target._diffusion_fields})

    def _resolve_generation_config(
        self, generation_config: GenerationConfig | None, kwargs: dict[str, Any]
    ) -> LLaDAGenerationConfig:
        if generation_config is not None and not isinstance(generation_config, GenerationConfig):
            raise TypeError(
                f"generation_config must be a transformers GenerationConfig, got a {type(generation_config).__name__} "
                f"({generation_config!r}); pass GenerationConfig(...) or the settings as keyword arguments."
            )
        base = generation_config if generation_config is not None else getattr(self, "generation_config", None)
        config = copy.deepcopy(self._as_llada_generation_config(base or self.generation_config_class()))
        kwargs = apply_official_aliases(kwargs)
        if kwargs.get("max_length") is not None and kwargs.get("max_new_tokens") is not None:
            logger.warning(  # as transformers' generate warns
                f"Both `max_new_tokens` (={kwargs['max_new_tokens']}) and `max_length` (={kwargs['max_length']}) are "
                "set; `max_new_tokens` takes precedence and `max_length` is not used. Pass only one of them."
            )
        unused = config.update(**kwargs)
        llada2_only = sorted(set(unused) & set(LLADA2_ONLY_SETTINGS))
        if llada2_only:
            raise ValueError(
                f"generate() got {llada2_only}: settings of LLaDA 2.x's block-diffusion sampler (token editing), which "
                f"{type(self).__name__} does not use; remove them."
            )
        if unused:
            raise ValueError(
                f"generate() got unexpected arguments {sorted(unused)}; LLaDA's diffusion generation accepts "
                f"input_ids, attention_mask, generation_config, streamer, logits_processor, tokenizer, the "
                f"generation config fields {sorted(config._diffusion_fields)} and the official names "
                f"{sorted(OFFICIAL_ALIASES)}."
            )
        config.validate()
        config.temperature, config.do_sample = config.sampling_temperature, None  # one switch for sampling from here on
        model_config = self.config
        if config.mask_token_id is None:
            config.mask_token_id = getattr(model_config, "mask_token_id", None)
        if config.mask_token_id is None:
            raise ValueError(
                "No mask token id: set `mask_token_id` in the model config or pass `mask_token_id=` to generate()."
            )
        for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if getattr(config, name) is None:
                setattr(config, name, getattr(model_config, name, None))
        return config

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: LLaDAGenerationConfig | None = None,
        streamer: BaseStreamer | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria=None,
        tokenizer=None,
        **kwargs,
    ) -> torch.LongTensor | LLaDAGenerateOutput:
        r"""Generate by iterative unmasking (the LLaDA reverse process).

        Args:
            input_ids: (b, P) int64 (or int32) prompt ids, left-padded when rows differ in length. Mask tokens inside
                the prompt are filled as well (infilling).
            attention_mask: (b, P), 1 for tokens and 0 for (left) padding.
            generation_config: base settings; defaults to the model's (`generation_config.json`).
            streamer: receives the prompt, then the answer's tokens in reading order as soon as every position
                before them is committed (`put`), up to its first EOS (included) or stop string (excluded), never
                what follows; and, if it has `put_draft`, the raw canvas after every step. Single sequence only.
            logits_processor: transformers `LogitsProcessor`s applied to each step's logits of the positions that can
                be committed (rows flattened to (b * W, V)); proposals and confidences use the processed logits. They
                see the current canvas as `input_ids`.
            tokenizer: the model's tokenizer; needed with `stop_strings` (transformers passes it with them).
            kwargs: any [`LLaDAGenerationConfig`] field (`max_new_tokens`, `steps`, `block_length`, `temperature`,
                `cfg_scale`, `remasking`, ...), overriding `generation_config`.

        Returns:
            (b * num_return_sequences, P + N) ids, or a [`LLaDAGenerateOutput`] with `return_dict_in_generate=True`
            or `output_history=True`. As in autoregressive `generate`, a row holds only padding after its first EOS
            (the EOS stays) and from its stop string on; the raw canvas is `LLaDAGenerateOutput.raw_sequences`.

        Example:

        ```python
        >>> out = model.generate(input_ids, max_new_tokens=64, steps=64, block_length=32)
        >>> # infilling: put the mask id where the model should write
        >>> ids = tokenizer("The capital of France is <|mdm_mask|><|mdm_mask|>.", return_tensors="pt").input_ids
        >>> model.generate(ids, max_new_tokens=8)
        ```
        """
        state = self.start_denoising(input_ids, attention_mask, generation_config, streamer, logits_processor,
                                     stopping_criteria, tokenizer, **kwargs)
        while self._denoising_step(state):
            pass
        return self._finish_denoising(state)

    # --- the step API: `generate` is `start_denoising`, then steps until the state is over, then `finish_denoising`.
    # An engine that serves many requests (llada-hf serve) holds one state per request and steps them together with
    # `denoising_steps`: each state keeps its own settings, canvas and draws, so it ends as it would alone.

    @torch.no_grad()
    def start_denoising(self, input_ids=None, attention_mask=None, generation_config=None, streamer=None,
                        logits_processor=None, stopping_criteria=None, tokenizer=None, **kwargs) -> "DenoisingState":
        """What `generate` does before its first step: the settings resolved and checked, the canvas laid out. Takes
        `generate`'s arguments; returns the state that `denoising_steps` advances and `finish_denoising` ends."""
        for processor in logits_processor or []:
            if not callable(processor):
                raise TypeError(
                    f"logits_processor must hold transformers LogitsProcessors (callables of (input_ids, scores)), got "
                    f"{processor!r} ({type(processor).__name__})."
                )
        return self._start_denoising(
            *self._prepare_generate(input_ids, attention_mask, generation_config, stopping_criteria, tokenizer, kwargs),
            streamer=streamer, logits_processor=logits_processor, tokenizer=tokenizer,
        )

    @torch.no_grad()
    def denoising_steps(self, states: list["DenoisingState"]) -> list[bool]:
        """One denoising step of each of `states` (from `start_denoising`, on this model). The states whose forward
        passes can be batched (`_shares_forward`: dense LLaDA and LLaDA-MoE without a key/value cache or CFG) run in
        shared forward passes, one per group of similar canvas widths (`_forward_groups`), their rows left-padded to
        one length with their own positions, and those whose sampler settings agree (`_commit_key`) then choose their
        commits together; the others step one after the other. Returns, per state, False once it is over (then call
        `finish_denoising`)."""
        running, together = [], []
        for state in states:
            if self._shares_forward(state):
                opened = self._open_step(state)
                if opened:
                    together.append(state)
                running.append(opened)
            else:
                running.append(self._denoising_step(state))
        for group in self._forward_groups(together):
            self._commit_steps(group, self._shared_window_logits(group))
        return running

    @staticmethod
    def _forward_groups(states: list["DenoisingState"]) -> list[list["DenoisingState"]]:
        """`states` in groups that share a forward pass: canvases of similar widths (the narrowest at least 3/4 of
        the widest), so that padding wastes at most a quarter of a group's compute."""
        groups: list[list[DenoisingState]] = []
        for state in sorted(states, key=lambda state: -state.canvas.shape[1]):
            if groups and 4 * state.canvas.shape[1] >= 3 * groups[-1][0].canvas.shape[1]:
                groups[-1].append(state)
            else:
                groups.append([state])
        return groups

    @torch.no_grad()
    def finish_denoising(self, state: "DenoisingState") -> torch.LongTensor | LLaDAGenerateOutput:
        """What `generate` returns, for a state that `denoising_steps` reported over."""
        return self._finish_denoising(state)

    @staticmethod
    def _shares_forward(state: "DenoisingState") -> bool:
        return state.config.kv_cache is None and not state.config.cfg_scale > 0

    def _shared_window_logits(self, states: list["DenoisingState"]) -> torch.Tensor:
        """One forward pass for the open windows of `states`: logits (R, W, V) for their R rows in order, row r's
        window in columns [0, its width) (W the widest window; the columns after a narrower window are zeros), as
        each state's own forward would give them (rows left-padded to the longest canvas, masked, at their own
        positions). The output head runs on the windows' positions only."""
        if len(states) == 1:
            state = states[0]
            return self._window_logits(state.canvas, state.attention_mask, state.window, state.prompt_positions,
                                       0.0, mask_token_id=state.config.mask_token_id)[0]
        length = max(state.canvas.shape[1] for state in states)
        device = states[0].canvas.device
        columns = torch.arange(length, device=device)
        rows, masks, positions, keep, widths = [], [], [], [], []
        for state in states:
            batch, width = state.canvas.shape
            pad = length - width
            mask = state.attention_mask if state.attention_mask is not None else state.canvas.new_ones(batch, width)
            rows.append(torch.nn.functional.pad(state.canvas, (pad, 0), value=state.pad_id or 0))
            masks.append(torch.nn.functional.pad(mask, (pad, 0), value=0))
            positions.append(torch.nn.functional.pad(state.relative_positions.clamp_min(0).expand(batch, -1),
                                                     (pad, 0), value=0))
            # (compared with Python ints: no host-to-device copy, which on a GPU would wait for the queued kernels)
            keep.append(((columns >= pad + state.window.start) & (columns < pad + state.window.stop)).expand(batch, -1))
            widths.append(state.window.stop - state.window.start)
        # a boolean logits_to_keep: logits (total window positions, V), row by row, each row's window in order
        flat = self(torch.cat(rows), attention_mask=torch.cat(masks), position_ids=torch.cat(positions),
                    logits_to_keep=torch.cat(keep), validate_inputs=False, return_dict=True).logits
        if min(widths) == max(widths):
            return flat.view(-1, widths[0], flat.shape[-1])
        window_columns = torch.arange(max(widths), device=device)
        filled = torch.cat([(window_columns < width).expand(state.canvas.shape[0], -1)
                            for state, width in zip(states, widths)])
        logits = flat.new_zeros(*filled.shape, flat.shape[-1])
        logits[filled] = flat
        return logits

    @staticmethod
    def _commit_key(state: "DenoisingState"):
        """States with equal keys choose their commits in one go (`_commit_steps`): the same kind of sampler (their
        temperatures, thresholds, factors and schedules may differ, row by row). None: the state commits alone
        (logits processors or top-k / top-p warpers, which act on a whole batch)."""
        config = state.config
        if state.processors or state.warpers:
            return None
        return (config.temperature > 0, config.remasking, state.parallel, config.threshold is not None,
                config.logits_eos_inf, config.confidence_eos_eot_inf, state.eos_ids, config.mask_token_id)

    def _commit_steps(self, states: list["DenoisingState"], logits: torch.Tensor) -> None:
        """After a shared forward pass: the commits of `states` from their logits (`_shared_window_logits`), those
        with the same `_commit_key` chosen together (one set of operations for all their rows)."""
        together: dict[Any, list[tuple[DenoisingState, slice]]] = {}
        row = 0
        for state in states:
            rows = slice(row, row + state.canvas.shape[0])
            row = rows.stop
            together.setdefault(state.commit_key if state.commit_key is not None else id(state), []).append(
                (state, rows))
        for members in together.values():
            if len(together) == 1:
                chosen = logits
            elif len(members) == 1:
                chosen = logits[members[0][1]]
            else:
                chosen = torch.cat([logits[rows] for _, rows in members])
            self._commit_rows([state for state, _ in members], chosen)

    def _commit_rows(self, states: list["DenoisingState"], logits: torch.Tensor) -> None:
        """After a step's forward pass, the one commit rule of the dense samplers: from the window logits (R, W', V)
        of `states`, stacked row by row (W' at least their widest window), the proposals and the commits. Several
        states share a `_commit_key`: each row is scored and selected with its own state's temperature, draws (seed,
        step, positions), schedule, threshold or factor, exactly as alone, and the narrower windows' extra columns are
        never committable. A state alone (`generate`, or a request with logits processors or top-k / top-p) keeps
        its processors and warpers, and its settings as plain numbers."""
        first, config = states[0], states[0].config
        alone = len(states) == 1
        device = logits.device
        widths = [state.window.stop - state.window.start for state in states]
        width = max(widths)
        logits = logits[:, :width]  # a wider pass (another group's window) adds columns no state here has

        def per_row(value, dtype):  # alone: the state's value; else (R, 1), each state's on its rows (filled on the
            if alone:  # device: no copy to it)
                return value(first)
            return torch.cat([torch.full((state.canvas.shape[0], 1), value(state), dtype=dtype, device=device)
                              for state in states])

        def joined(tensors):  # the states' tensors, row after row
            return tensors[0] if alone else torch.cat(tensors)

        def stacked(tensors, value):  # (R, width): the states' (b_i, w_i) rows, the narrower padded with `value`
            return joined([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) if t.shape[1] < width
                           else t for t in tensors])

        window_ids = stacked([state.canvas[:, state.window] for state in states], -1)  # -1: never a mask
        for state in states:
            state.forwards += (~state.finished).long()
        noise = temperature = None
        if first.seeds is not None:
            noise = (joined([state.seeds for state in states]),
                     per_row(lambda state: state.step, torch.long),
                     stacked([state.relative_positions[:, state.window].expand(state.canvas.shape[0], -1)
                              for state in states], 0))
        if config.temperature > 0 and not alone:  # alone: its config's
            temperature = per_row(lambda state: state.config.temperature, torch.float64)[..., None]
        # (states in a group have no processors or warpers: `_commit_key`)
        proposal, scores = self._scores(logits, window_ids, config, first.eos_tensor, noise, temperature,
                                        processors=first.processors, warpers=first.warpers, canvas=first.canvas)
        if first.parallel:
            threshold = factor = None
            if config.threshold is not None:
                threshold = per_row(lambda state: state.config.threshold, torch.float64)
            else:
                factor = per_row(lambda state: state.config.factor, torch.float64)
            transfer = select_parallel(scores, threshold, factor)
        else:
            transfer = select_top_k(scores, joined([state.schedule[:, state.block_step] for state in states]))
        row = 0
        for state, columns in zip(states, widths):
            rows = slice(row, row + state.canvas.shape[0])
            row = rows.stop
            self._apply_commits(state, transfer[rows, :columns], proposal[rows, :columns])

    # --- the sampler: a start, a step function, a finish. LLaDA 2's sampler overrides the three with its own.

    def _start_denoising(
        self, config, input_ids, attention_mask, eos_ids, stops, pad_id, synced_gpus, streamer, logits_processor,
        tokenizer,
    ) -> "DenoisingState":
        """Check the inputs and lay out the canvas: the prompt, then `max_new_tokens` mask tokens."""
        if synced_gpus and (config.early_exit or config.threshold is not None or config.factor is not None):
            raise ValueError(
                "synced_gpus=True with early_exit, threshold or factor: these make the number of forward passes "
                "depend on the prompt, so ranks sharding one model (DeepSpeed ZeRO-3, FSDP) would fall out of step. "
                "Without them every rank runs the same `steps` forward passes and needs no syncing."
            )
        device = input_ids.device
        mask_id = config.mask_token_id
        gen_length = config.resolved_max_new_tokens(input_ids.shape[1])
        block_length = config.block_length or gen_length
        steps = config.steps or gen_length
        self._check_generate_inputs(input_ids, attention_mask, config, gen_length, block_length, steps, eos_ids)
        input_ids, attention_mask, seeds = self._copies_and_seeds(
            input_ids, attention_mask, config, config.temperature > 0 or config.remasking == "random"
        )
        batch, prompt_length = input_ids.shape
        total = prompt_length + gen_length
        canvas = torch.cat([input_ids, input_ids.new_full((batch, gen_length), mask_id)], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, gen_length)], dim=1)
        positions = torch.arange(total, device=device)
        # Positions counted from each row's first real token, and per-row seeds: the sampler's randomness then
        # depends on the row and its prompt's seed alone, so a padded row samples what it samples alone.
        pad_count = (attention_mask[:, :prompt_length] == 0).sum(-1) if attention_mask is not None else None
        # Mask tokens inside the prompt (infilling) join the first block's window; one host sync, once.
        hole_columns = (canvas[:, :prompt_length] == mask_id).any(0)
        has_holes = prompt_length > 0 and bool(hole_columns.any())
        parallel = config.threshold is not None or config.factor is not None
        state = DenoisingState(
            config=config, input_ids=input_ids, canvas=canvas, eos_tensor=torch.tensor(eos_ids, device=device,
            dtype=torch.long), pad_id=pad_id, stops=stops, tokenizer=tokenizer, seeds=seeds,
            processors=LogitsProcessorList(logits_processor or []), warpers=self._build_sampling_warpers(config),
            commit_step=torch.full((batch, total), -1, dtype=torch.long, device=device),
            history=[] if config.output_history else None,
            bar=tqdm(total=None if parallel else steps, desc="denoising", disable=not config.progress_bar,
                     leave=False),
        )
        state.attention_mask = attention_mask
        # Prompt tokens (padding included), hidden from the unconditional canvas of CFG.
        state.prompt_positions = (positions[None] < prompt_length) & (canvas != mask_id)
        state.relative_positions = positions[None] - (pad_count[:, None] if pad_count is not None else 0)
        state.first_hole = int(hole_columns.long().argmax()) if has_holes else None
        state.num_blocks, state.block_length = gen_length // block_length, block_length
        state.steps_per_block = steps // state.num_blocks
        state.parallel = parallel
        state.eos_ids = tuple(eos_ids)
        state.commit_key = self._commit_key(state)
        state.block, state.window = 0, None
        if streamer is not None:
            state.stream = StreamState(streamer, canvas, prompt_length, mask_id, state.eos_tensor, tokenizer, stops)
        return state

    def _denoising_step(self, state: "DenoisingState") -> bool:
        """One forward pass over the current block's window and the commits it allows; opens and closes blocks as
        needed. Returns False, without a forward, once generation is over."""
        if not self._open_step(state):
            return False
        logits, state.cache = self._window_logits(
            state.canvas, state.attention_mask, state.window, state.prompt_positions, state.config.cfg_scale,
            state.config.kv_cache, state.cache, mask_token_id=state.config.mask_token_id,
        )
        self._commit_rows([state], logits)
        return True

    def _open_step(self, state: "DenoisingState") -> bool:
        """Before a step's forward pass: close the block that is over and open the next one (`state.window`). False
        once generation is over."""
        config, canvas = state.config, state.canvas
        mask_id, prompt_length = config.mask_token_id, state.prompt_length
        while True:
            if state.window is None:  # open the next block
                if state.block == state.num_blocks:
                    return False
                start = prompt_length + state.block * state.block_length
                if state.block == 0 and state.first_hole is not None:
                    start = state.first_hole
                state.window = slice(start, prompt_length + (state.block + 1) * state.block_length)
                state.schedule = num_transfer_tokens((canvas[:, state.window] == mask_id).sum(-1),
                                                     state.steps_per_block)
                state.cache, state.block_step = None, 0  # the cache is refreshed by the first step of every block
            window = state.window
            if state.parallel:  # a block ends when it is complete (one host sync per step)
                # Every step commits at least one position per row unless nothing is committable (every token
                # banned): then the block cannot finish, and the finish says why.
                block_over = state.block_step == window.stop - window.start or not bool(
                    (canvas[:, window] == mask_id).any())
            else:
                block_over = state.block_step == state.steps_per_block
            if not block_over and not (config.early_exit and bool(state.finished.all())):
                break
            if config.early_exit and state.stops and state.block + 1 < state.num_blocks:
                state.finished = finish_rows_at_stop_strings(
                    canvas, state.commit_step, state.finished, prompt_length, mask_id, state.eos_tensor,
                    state.pad_id, state.tokenizer, state.stops, state.step - 1,
                )
            state.window, state.block = None, state.block + 1
            if config.early_exit and bool(state.finished.all()):
                state.block = state.num_blocks
        return True

    def _apply_commits(self, state: "DenoisingState", transfer: torch.Tensor, proposal: torch.Tensor) -> None:
        """Write a step's commits (`transfer`, (b, W) over the window) into the state: its canvas, commit steps and
        counters, the rows its EOS finishes (early exit), then `_after_step`."""
        config, canvas, window = state.config, state.canvas, state.window
        canvas[:, window] = torch.where(transfer, proposal, canvas[:, window])
        state.commit_step[:, window].masked_fill_(transfer, state.step)
        state.sampled += transfer.sum(-1)
        if config.early_exit and state.eos_tensor.numel():
            state.finished |= finish_rows_at_eos(
                canvas, state.commit_step, state.prompt_length, config.mask_token_id, state.eos_tensor, state.step
            )
        state.block_step += 1
        self._after_step(state, canvas)

    def _after_step(self, state: "DenoisingState", view: torch.Tensor | None, stream: bool = True) -> None:
        """Bookkeeping after a forward pass: the history and the streamer (`stream`) get `view`, the (b, P + N)
        prompt-and-answer canvas; the progress bar and the step count advance."""
        if state.history is not None:
            state.history.append(view.clone())
        if stream and state.stream is not None:
            state.stream.update(view)
        state.bar.update(1)
        state.step += 1

    def _finish_denoising(self, state: "DenoisingState") -> torch.LongTensor | LLaDAGenerateOutput:
        return self._answers(state, state.canvas, state.commit_step)

    def _answers(self, state: "DenoisingState", raw: torch.Tensor, commit_step: torch.Tensor):
        """The one finish of every sampler: from the raw (b, P + N) canvas to what `generate` returns."""
        state.bar.close()
        prompt_length = state.prompt_length
        unfilled = int((raw[:, prompt_length:] == state.config.mask_token_id).sum())  # one host sync per call
        if unfilled:
            raise ValueError(
                f"Generation left {unfilled} position(s) masked: at some step every candidate token of a position "
                "had probability 0 or a non-finite score. A logits processor that bans every token, or non-finite "
                "logits (NaN weights, fp16 overflow), does this; check `logits_processor` and the model's dtype."
            )
        sequences, answer_lengths, kept, stopped = cut_answers(
            raw, prompt_length, state.eos_tensor, state.pad_id, state.tokenizer, state.stops
        )
        if state.stream is not None:
            state.stream.end(raw, int(kept[0]))
        config = state.config
        if not (config.return_dict_in_generate or config.output_history):
            return sequences
        return LLaDAGenerateOutput(
            sequences=sequences,
            raw_sequences=raw,
            answer_lengths=answer_lengths,
            stopped=stopped,
            tokens_per_forward=state.sampled.double() / state.forwards.clamp_min(1).double(),
            history=torch.stack(state.history) if state.history else None,
            commit_step=commit_step,
        )

    @staticmethod
    def _copies_and_seeds(input_ids, attention_mask, config, needs_noise: bool):
        """Repeat each prompt `num_return_sequences` times (prompt-major) and draw one seed per row (None without
        randomness)."""
        copies = config.num_return_sequences
        if copies > 1:
            input_ids = input_ids.repeat_interleave(copies, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(copies, dim=0)
        seeds = row_seeds(input_ids.shape[0] // copies, copies, config.seed, input_ids.device) if needs_noise else None
        return input_ids, attention_mask, seeds

    def _prepare_generate(self, input_ids, attention_mask, generation_config, stopping_criteria, tokenizer, kwargs):
        """What every sampler's `generate` does first: resolve the settings (official names included), check the
        arguments, and bring the prompt to (b, P) on the model's device with its left-padding mask (inferred from
        leading pad tokens when none is given). Returns (config, input_ids, attention_mask, eos_ids, stop strings,
        pad id, synced_gpus)."""
        if "inputs" in kwargs:  # transformers' name for the prompt
            if input_ids is not None:
                raise ValueError("generate() got both `input_ids` and `inputs`; pass the prompt once.")
            input_ids = kwargs.pop("inputs")
        synced_gpus = kwargs.pop("synced_gpus", None)
        self._reject_autoregressive_arguments(kwargs)
        config = self._resolve_generation_config(generation_config, kwargs)
        stops = stop_list(config.stop_strings)
        if stops and tokenizer is None:
            raise ValueError(
                "`stop_strings` needs the model's tokenizer to find the strings in the answer: pass `tokenizer=` to "
                "generate() together with `stop_strings`."
            )
        if stopping_criteria:
            raise ValueError(
                "stopping_criteria are not supported by diffusion generation (tokens are not produced left to "
                "right); use early_exit=True to stop at EOS, and `stop_strings=` (with `tokenizer=`) for stop strings."
            )
        if input_ids is None:
            raise ValueError("generate() needs `input_ids` (the prompt); use a BOS token for unconditional generation.")
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch tensor of token ids, got {type(input_ids).__name__}; pass the "
                            "tokenizer's output with return_tensors='pt'.")
        if input_ids.dtype not in (torch.int64, torch.int32):
            # int8 / int16 / uint8 hold few ids and compare wrongly against vocabulary sizes; bool is not ids at all
            raise ValueError(f"input_ids must be integer ids of dtype torch.int64 (or torch.int32), got dtype "
                             f"{input_ids.dtype}; convert them with `.long()`.")
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
        device = self.get_input_embeddings().weight.device
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device) if attention_mask is not None else None
        if attention_mask is None and input_ids.shape[0] > 1 and config.pad_token_id is not None:
            attention_mask = self._infer_left_padding(input_ids, config.pad_token_id)
        eos_ids = [] if config.eos_token_id is None else (
            list(config.eos_token_id) if isinstance(config.eos_token_id, (list, tuple)) else [config.eos_token_id]
        )
        pad_id = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
        if stops and pad_id is None:
            raise ValueError(
                "`stop_strings` needs a pad id for the positions after the stop string: set `pad_token_id` (or "
                "`eos_token_id`) in the generation config or pass it to generate()."
            )
        return config, input_ids, attention_mask, eos_ids, stops, pad_id, synced_gpus

    def _scores(self, logits, window_ids, config, eos_tensor, noise=None, temperature=None, processors=None,
                warpers=None, canvas=None):
        """Proposals (b, W) for a window and their commit scores (-inf where not committable), from its logits
        (`_window_logits`); `window_ids`: the window's current ids (only mask positions are committable).

        noise: (row seeds, step, relative positions of the window) for the counter RNG when sampling is random; the
        step may be a (b, 1) tensor, one per row. temperature: a (b, 1, 1) tensor of per-row temperatures instead of
        `config.temperature` (rows of several requests scored together). processors (which see `canvas`, the whole
        (b, L) canvas, as their input ids) and warpers: the request's logits processors and top-k / top-p.
        """
        # The mask token and the rows that pad the embedding beyond the tokenizer's vocabulary are never a clean
        # token: proposing one would leave a [MASK] (or an undecodable id) in the answer.
        logits[..., config.mask_token_id] = -torch.inf
        logits = self._banned_and_processed(logits, canvas, config, processors, eos_tensor)
        batch, width, vocab = logits.shape
        if config.temperature > 0:
            # top-k / top-p restrict what may be sampled; the confidence stays the model's probability.
            sampling_logits = logits
            if warpers:
                sampling_logits = warpers(None, logits.reshape(batch * width, vocab).clone()).view(batch, width, vocab)
            # Gumbel-max in float64, as the reference: argmax(l / T + g) == argmax(exp(l) / (-log u) ** T).
            uniform = counter_uniform(*noise, lanes=vocab)
            tempered = sampling_logits.double() / (config.temperature if temperature is None else temperature)
            proposal = (tempered - torch.log(-torch.log(uniform))).argmax(-1)
        else:
            proposal = logits.argmax(-1)
        if config.remasking == "random":
            seeds, step, position = noise
            confidence = counter_uniform(seeds ^ 0x2545F491, step, position)
        else:
            confidence = proposal_confidence(logits, proposal, config.remasking).double()
        if config.confidence_eos_eot_inf and eos_tensor.numel():
            confidence = confidence - _EOS_CONFIDENCE_OFFSET * torch.isin(proposal, eos_tensor)
        masked = window_ids == config.mask_token_id
        return proposal, confidence.masked_fill(~masked, -torch.inf)

    def _window_logits(
        self,
        canvas: torch.Tensor,
        attention_mask: torch.Tensor | None,
        window: slice,
        prompt_positions: torch.Tensor,
        cfg_scale: float,
        kv_cache: str | None = None,
        cache=None,
        mask_token_id: int | None = None,
    ):
        """Logits (b, W, V) of the window positions, and the key/value cache.

        With CFG the conditional and unconditional rows go through one forward. With `kv_cache`, a step without a
        cache runs the whole canvas and fills one; later steps run only the window and after it (`prefix`) or the
        window alone (`dual`) against the cached keys/values of the rest.
        """
        rows, mask = canvas, attention_mask
        if cfg_scale > 0:
            # the generation config's mask id: a model config may not hold it (LLaDA-MoE's official configs do not)
            mask_id = mask_token_id if mask_token_id is not None else self.config.mask_token_id
            rows = torch.cat([canvas, canvas.masked_fill(prompt_positions, mask_id)])
            mask = torch.cat([attention_mask, attention_mask]) if attention_mask is not None else None
        if kv_cache is None:
            # Positions as a tensor, not a slice: every block then has the same call signature, so a compiled forward
            # (`model.forward = torch.compile(model.forward)`) compiles once instead of once per block.
            keep = torch.arange(window.start, window.stop, device=canvas.device)
            logits = self(rows, attention_mask=mask, logits_to_keep=keep, validate_inputs=False,
                          return_dict=True).logits
        elif cache is None:
            out = self(rows, attention_mask=mask, logits_to_keep=window, validate_inputs=False, use_cache=True,
                       return_dict=True)
            logits, cache = out.logits, out.cache
        else:
            start, stop = window.start, (rows.shape[1] if kv_cache == "prefix" else window.stop)
            logits = self(rows[:, start:stop], attention_mask=mask, logits_to_keep=slice(0, window.stop - start),
                          cache=cache, cache_position=start, validate_inputs=False, return_dict=True).logits
        if cfg_scale > 0:
            cond, uncond = logits.chunk(2)
            logits = uncond + (cfg_scale + 1) * (cond - uncond)
        return logits, cache

    def _banned_and_processed(self, logits, canvas, config, processors, eos_tensor) -> torch.Tensor:
        """Every sampler's logits before proposing: the rows that pad the embedding beyond the tokenizer's vocabulary
        (and EOS with `logits_eos_inf`) at -inf, then the user's logits processors (rows flattened to (b * W, V),
        the canvas as their `input_ids`)."""
        logits[..., getattr(self.config, "vocab_size", logits.shape[-1]):] = -torch.inf
        if config.logits_eos_inf and eos_tensor.numel():
            logits[..., eos_tensor] = -torch.inf
        if processors:
            batch, width, vocab = logits.shape
            flat_ids = canvas.repeat_interleave(width, dim=0)
            logits = processors(flat_ids, logits.reshape(batch * width, vocab)).view(batch, width, vocab)
        return logits

    @staticmethod
    def _reject_autoregressive_arguments(kwargs: dict[str, Any]) -> None:
        """Raise, naming it, for a transformers `generate` argument diffusion cannot honour; drop neutral ones."""
        reasons = {
            "assistant_model": "assisted (speculative) decoding drafts tokens left to right",
            "assistant_tokenizer": "assisted (speculative) decoding drafts tokens left to right",
            "prefix_allowed_tokens_fn": "it constrains each token by the prefix before it; use `logits_processor=`",
            "negative_prompt_ids": "the unconditional canvas of classifier-free guidance is the masked prompt; use "
            "`cfg_scale=`",
            "negative_prompt_attention_mask": "the unconditional canvas of classifier-free guidance is the masked "
            "prompt; use `cfg_scale=`",
            "custom_generate": "LLaDA's generate is already a custom (diffusion) decoding loop",
        }
        kwargs.pop("use_model_defaults", None)  # the model's generation config is always the base here
        for name, reason in reasons.items():
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"generate() got `{name}`: not supported by LLaDA's diffusion generation ({reason}).")

    @staticmethod
    def _infer_left_padding(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor | None:
        """The attention mask of a batch passed without one: leading pad tokens are padding (one host sync).

        Without a mask the padding would be attended to and every padded row would differ from its unpadded run.
        Returns None when no row starts with the pad token.
        """
        leading_pad = (input_ids == pad_token_id).long().cumprod(-1).bool()
        if not bool(leading_pad.any()):
            return None
        logger.warning_once(
            f"generate() got a batch whose rows start with the pad token ({pad_token_id}) but no attention_mask; "
            "treating those leading pad tokens as left padding. Pass the attention_mask the tokenizer returns to "
            "silence this."
        )
        return (~leading_pad).long()

    @staticmethod
    def _build_sampling_warpers(config: LLaDAGenerationConfig) -> LogitsProcessorList:
        processors = LogitsProcessorList()
        if config.top_k is not None:
            processors.append(TopKLogitsWarper(top_k=config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p))
        return processors

    def _check_generate_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: LLaDAGenerationConfig,
        gen_length: int,
        block_length: int,
        steps: int,
        eos_ids: list[int],
    ) -> None:
        """LLaDA's schedule and context length, then the checks every sampler shares (`_check_prompt`: the shape
        included)."""
        check_block_schedule(gen_length, block_length, steps)
        self._check_context_length(input_ids.shape[1], gen_length)
        self._check_prompt(input_ids, attention_mask, config, eos_ids)

    def _check_context_length(self, prompt_length: int, gen_length: int) -> None:
        """Every member: the prompt (as passed, padding included) plus the answer must fit the model's positions."""
        limit = getattr(self.config, "max_sequence_length", None)
        if limit is not None and prompt_length + gen_length > limit:
            # the name the member's config.json uses (dense LLaDA: max_sequence_length; MoE / LLaDA 2: the alias)
            name = "max_sequence_length" if "max_sequence_length" in vars(self.config) else "max_position_embeddings"
            raise ValueError(
                f"prompt length {prompt_length} + max_new_tokens {gen_length} = {prompt_length + gen_length} exceeds "
                f"the model's {name} ({limit}); shorten the prompt or lower max_new_tokens."
            )

    def _check_prompt(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        config: LLaDAGenerationConfig,
        eos_ids: list[int],
    ) -> None:
        """The checks every sampler shares: ids and special ids inside the vocabulary, a left-padding mask."""
        if input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            raise ValueError(f"input_ids must be integer ids of shape (batch, length), got {tuple(input_ids.shape)}.")
        if input_ids.shape[0] == 0:
            raise ValueError(f"input_ids has no rows (shape {tuple(input_ids.shape)}); pass at least one prompt.")
        vocab = self.get_input_embeddings().weight.shape[0]
        for name, value in (("mask_token_id", config.mask_token_id), *(("eos_token_id", e) for e in eos_ids)):
            if not 0 <= value < vocab:
                raise ValueError(f"{name}={value} is outside the model's vocabulary [0, {vocab}).")
        checks = [((input_ids < 0) | (input_ids >= vocab)).any()]
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                    f"{tuple(input_ids.shape)}; pass the mask the tokenizer returned with the ids."
                )
            keep = attention_mask.bool()
            checks += [
                ((attention_mask != 0) & (attention_mask != 1)).any(),  # not a 0/1 mask
                (keep[:, :-1] & ~keep[:, 1:]).any(),  # a token followed by padding: right padding
                ((~keep) & (input_ids == config.mask_token_id)).any(),  # padding that reads as a mask token
                (~keep).all(-1).any(),  # an empty row
            ]
        flags = torch.stack(checks).tolist()  # one host sync for all input checks
        if flags[0]:
            rows, cols = torch.nonzero((input_ids < 0) | (input_ids >= vocab), as_tuple=True)
            raise ValueError(
                f"input_ids hold id {input_ids[rows[0], cols[0]].item()} (row {rows[0].item()}, position "
                f"{cols[0].item()}), outside the model's vocabulary [0, {vocab}); check the tokenizer."
            )
        if attention_mask is not None:
            if flags[1]:
                bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)][0].item()
                raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), got {bad!r}.")
            flags = flags[:1] + flags[2:]
            if flags[1]:
                raise ValueError(
                    "attention_mask shows right padding (a 0 after a 1). LLaDA appends the answer after the prompt, "
                    "so pad on the left: tokenizer.padding_side = 'left'."
                )
            if flags[2]:
                raise ValueError(
                    f"Padding positions hold the mask token id ({config.mask_token_id}), so they would be treated as "
                    "positions to fill. Use a pad token different from the mask token (LLaDA pads with EOS): "
                    "tokenizer.pad_token = tokenizer.eos_token."
                )
            if flags[3]:
                row = (~keep).all(-1).nonzero()[0].item()
                raise ValueError(f"attention_mask row {row} has no tokens (all zeros); every prompt needs a token.")


__all__ = [
    "LLaDAGenerationConfig",
    "LLaDAGenerateOutput",
    "LLaDAGenerationMixin",
    "select_parallel",
    "num_transfer_tokens",
]
