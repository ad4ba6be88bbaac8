"""diffu-GRPO (d1, arXiv 2504.12216): GRPO for masked-diffusion models on TRL's `GRPOTrainer`.

TRL's GRPO machinery is kept as it is: reward functions (plain callables and reward models), group-relative
advantages, clipping, the KL term to the reference (`beta`), the μ inner iterations (`num_iterations`), logging and
metrics. Two hooks change, because a diffusion LM neither samples left to right nor has exact per-token
log-probabilities:

- rollouts come from the model's own diffusion sampler (`model.generate`: `steps`, `block_length`, `remasking`,
  `threshold`, `kv_cache`, `cfg_scale` and TRL's `temperature`, `top_k`, `top_p`), left-padded prompts with their
  attention mask; the `num_generations` copies of a prompt are independent draws (generate seeds every row from the
  prompt's seed and the copy index);
- the per-token log-probability of a completion token is d1's one-step estimate: ONE forward pass over
  `[prompt with each token masked with probability p_mask_prompt | the whole completion masked]`, log-softmax at the
  completion positions, gathered at the completion's tokens (log-softmax of the raw logits: no division by the
  sampling temperature).

The prompt mask is new for each of the μ inner iterations, and at iteration k the policy, the old policy and the
reference all see the same mask (d1's per-iteration mask seeds): when a batch is generated, the old-policy and
reference log-probabilities are computed for every iteration at once and stored as (B, μ, C); iteration k reads
column k. The mask of a row is a function of (its 32-bit mask seed, k, position counted from the row's first real
token) alone, drawn with the counter-based RNG of generate, so it does not depend on how the batch is split or
padded. Padding is never masked and never scored; completion positions after the first EOS are hidden by the
attention mask (TRL's convention) and not scored.
"""

import copy
import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import re
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from modeling_llada.draws_llada import U32, counter_uniform, mix32
from modeling_llada.generation_llada import KV_CACHE_MODES, REMASKING_STRATEGIES, LLaDAGenerationConfig
from modeling_llada.mask_id import resolve_mask_token_id, unwrap

from .base import (
    LOSS_REPLACED_FIELDS,
    CPUSafeDefaults,
    LLaDARecordMixin,
    _seed32,
    check_no_null_fields,
    refuse_unsupported_fields,
    resolve_args,
)
from .compat import is_peft_model, quiet_upstream_deprecations, sync_checkpointing_names
from .peft_utils import adapters_in_training_precision, with_llada_defaults, wrap_kbit_model
from .vrpo import frozen_copy

MASK_SEEDS = "mask_seeds"
_AUTOREGRESSIVE = "it samples autoregressively; diffu-GRPO rolls out with the model's diffusion sampler"
_NOT_SAMPLER = "the diffusion sampler has no such setting"
_SYNC = "it is read only with sync_ref_model, which diffu-GRPO does not support"
# The GRPOConfig / TrainingArguments fields diffu-GRPO refuses unless left at their defaults: field -> (the values
# accepted, why another would do nothing). GRPOConfig's other fields reach what they govern: TRL's own code reads them
# (rewards, advantages, the loss, logging, batching), or ours does (temperature, top_k, top_p, generation_kwargs,
# max_completion_length in the rollouts); tests/test_flag_walk_trainers.py classifies every field.
GRPO_REFUSED_FIELDS = {
    "use_liger_kernel": ((False,), "the per-token log-probabilities of a diffusion model come from a masked forward "
                                   "pass, not Liger's fused causal-LM loss"),
    "liger_kernel_config": LOSS_REPLACED_FIELDS["liger_kernel_config"],
    "label_smoothing_factor": ((0.0, 0), "GRPO's loss is computed from the completions' log-probabilities, without "
                                         "the Trainer's label-smoothed cross-entropy"),
    "use_vllm": ((False,), _AUTOREGRESSIVE),
    "use_transformers_continuous_batching": ((False,), _AUTOREGRESSIVE),
    "use_transformers_paged": ((False,), _AUTOREGRESSIVE),
    "transformers_continuous_batching_config": ((None,), "it is read only with use_transformers_continuous_batching, "
                                                         "which diffu-GRPO does not support"),
    **{f.name: ((f.default,), "it is read only with use_vllm, which diffu-GRPO does not support")
       for f in dataclasses.fields(GRPOConfig) if f.name.startswith("vllm_")},
    "min_p": ((None,), _NOT_SAMPLER + " (top_k and top_p it has)"),
    "repetition_penalty": ((1.0, 1), _NOT_SAMPLER + " (top_k and top_p it has)"),
    "cache_implementation": ((None,), "the diffusion sampler keeps no transformers cache; set kv_cache ('prefix' or "
                                      "'dual') for its approximate caching"),
    "cast_lm_head_to_fp32": ((False,), "the scoring pass takes its log-softmax in fp32 from the model's logits and "
                                       "does not read it"),
    "ds3_gather_for_generation": ((True,), "the diffusion rollouts run on the unwrapped model, without TRL's ZeRO-3 "
                                           "parameter gathering"),
    "pad_to_multiple_of": ((None, "auto"), "neither the rollouts nor the scoring pass pad to a multiple"),
    "sync_ref_model": ((False,), "DiffuGRPOTrainer's reference (a frozen copy, or the adapter-disabled base under "
                                 "PEFT) is never synced with the policy"),
    "ref_model_mixup_alpha": ((0.6,), _SYNC),
    "ref_model_sync_steps": ((512,), _SYNC),
    "model_init_kwargs": ((None,), "DiffuGRPOTrainer takes a loaded model; pass these to from_pretrained when "
                                   "loading it"),
    "max_tool_calling_iterations": ((None,), "tools are not supported (single-turn diffusion rollouts)"),
}
_ROW_STRIDE = 0x9E3779B9
_PROMPT_MASK_SALT = 0x3C6EF35F


@dataclass
class DiffuGRPOConfig(CPUSafeDefaults, GRPOConfig):
    """[`trl.GRPOConfig`] plus d1's log-probability estimator and the diffusion sampler's settings.

    The sampler fields have the names of `model.generate` / `llada-hf generate` (`max_completion_length` is its
    `max_new_tokens`, `temperature`, `top_k` and `top_p` are TRL's own); `generation_kwargs` passes any other
    generate setting (e.g. `{"logits_eos_inf": True}`). Differences from GRPOConfig: `bf16` defaults to True only when
    CUDA is available, activation (gradient) checkpointing defaults to False, and vLLM / continuous batching are
    refused (a diffusion model does not sample autoregressively), as is every other field of `GRPO_REFUSED_FIELDS`
    set away from its default (one line naming the field and why). The sampler settings are checked by the sampler's
    own rules (`check_rollout_settings`): LLaDA's generation config here, the model's own (`LLaDA2GenerationConfig`
    for LLaDA 2) again when the trainer is built.
    """

    p_mask_prompt: float = field(
        default=0.15,
        metadata={"help": "Probability of masking each prompt token in the forward pass that scores a completion "
                  "(d1: 0.15); a new prompt mask for each of the num_iterations inner updates."},
    )
    steps: int | None = field(
        default=None,
        metadata={"help": "Denoising steps of a rollout (a forward pass each), a multiple of the number of blocks; "
                  "default: max_completion_length (one token per step)."},
    )
    block_length: int | None = field(
        default=None,
        metadata={"help": "Rollouts fill blocks of this many positions left to right (max_completion_length must be a "
                  "multiple of it); default: max_completion_length (one block)."},
    )
    remasking: str = field(
        default="low_confidence",
        metadata={"help": "Which proposals a rollout commits first.", "choices": list(REMASKING_STRATEGIES)},
    )
    threshold: float | None = field(
        default=None,
        metadata={"help": "Parallel decoding of rollouts: commit every masked position of the block whose confidence "
                  "reaches this (e.g. 0.9); default: off."},
    )
    kv_cache: str | None = field(
        default=None,
        metadata={"help": "Approximate key/value caching of rollouts (prefix or dual); default: off (exact).",
                  "choices": [*KV_CACHE_MODES, None]},
    )
    cfg_scale: float = field(default=0.0, metadata={"help": "Classifier-free guidance weight of rollouts (0: off)."})
    eval_mask_seed: int = field(
        default=1234, metadata={"help": "Seed of the fixed prompt masks of evaluations (comparable evaluations)."}
    )

    def __post_init__(self):
        self._resolve_device_defaults()
        self._check_diffusion_settings()
        sync_checkpointing_names(self)
        super().__post_init__()
        self.check_rollout_settings()  # after TrainingArguments has read a JSON `generation_kwargs` into a dict

    def rollout_settings(self) -> dict:
        """The rollouts' sampler settings under `model.generate`'s names (the model's ids and `generation_kwargs`
        aside); unset `threshold` and `kv_cache` leave the model's generation config its own."""
        length = self.max_completion_length
        settings = dict(max_new_tokens=length, steps=length if self.steps is None else self.steps,
                        block_length=length if self.block_length is None else self.block_length,
                        temperature=self.temperature, do_sample=self.temperature > 0, remasking=self.remasking,
                        cfg_scale=self.cfg_scale)
        if self.threshold is not None:
            settings["threshold"] = self.threshold
        if self.kv_cache is not None:
            settings["kv_cache"] = self.kv_cache
        if self.top_k:
            settings["top_k"] = self.top_k
        if self.top_p is not None and self.top_p < 1.0:
            settings["top_p"] = self.top_p
        return settings

    def check_rollout_settings(self, generation_config: LLaDAGenerationConfig | None = None) -> None:
        """Check the rollout settings by the sampler's own rules: set on a copy of `generation_config` (the model's,
        which its `generate` starts from; default: LLaDA's, whose schedule rule is `check_block_schedule`) and
        validated there. A `ValueError` names the setting as this config calls it."""
        config = copy.deepcopy(generation_config) if generation_config is not None else LLaDAGenerationConfig()
        extra = self.generation_kwargs or {}
        if not isinstance(extra, dict):
            raise ValueError(f"generation_kwargs must be a dict of model.generate settings, got "
                             f"{type(extra).__name__} {extra!r:.80}.")
        try:
            unknown = config.update(**{**self.rollout_settings(), **extra})
            if unknown:
                name = next(iter(unknown))
                close = difflib.get_close_matches(name, list(config.to_dict()), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "; see model.generation_config for its settings."
                raise ValueError(f"generation_kwargs has {name!r}, which is not a setting of model.generate "
                                 f"({type(config).__name__}){hint}")
            config.validate()
        except ValueError as error:
            message = str(error)
            if "max_new_tokens" not in extra:  # generate's max_new_tokens is max_completion_length here
                message = re.sub(r"\bmax_new_tokens\b", "max_completion_length", message)
            raise ValueError(f"DiffuGRPOConfig's rollouts ({type(config).__name__}): {message}") from None

    def _check_diffusion_settings(self) -> None:
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares the completions of a prompt with each "
                             f"other), got {self.num_generations!r}; d1 uses 6.")
        if not 0.0 <= self.p_mask_prompt < 1.0:
            raise ValueError(f"p_mask_prompt must be in [0, 1), got {self.p_mask_prompt}; d1 uses 0.15 (0 never masks "
                             "the prompt).")
        if self.temperature == 0 and self.remasking != "random" and self.num_generations > 1:
            raise ValueError(
                f"temperature=0 with remasking={self.remasking!r} makes the num_generations={self.num_generations} "
                "completions of a prompt identical (greedy proposals, deterministic order): every group advantage "
                "would be 0 and nothing would train. Set temperature > 0 (d1 uses 0.9) or remasking='random'."
            )
        length = self.max_completion_length
        if length is None or length < 1:
            raise ValueError(f"max_completion_length must be a positive int (the rollouts' max_new_tokens), got "
                             f"{length!r}.")
        refuse_unsupported_fields(self, GRPO_REFUSED_FIELDS, "diffu-GRPO")
        if getattr(self, "padding_free", False):
            raise ValueError("padding_free is not supported for LLaDA; set padding_free=False.")


class RewardFunctionError(ValueError):
    """A reward function raised: the message names it (its `__name__`), the original exception is the cause."""


def _is_async(function) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(getattr(function, "__call__", None))


def named_reward_function(function, name: str):
    """`function` (sync or async), whose exceptions are re-raised as `RewardFunctionError` naming it, with the
    original as the cause; TRL reads the wrapper's `__name__` (the same) for its metric names."""

    def failure(error: Exception) -> RewardFunctionError:
        return RewardFunctionError(f"reward function {name!r} raised {type(error).__name__}: {error}")

    if _is_async(function):
        async def reward(*args, **kwargs):
            try:
                result = await function(*args, **kwargs)
            except Exception as error:
                raise failure(error) from error
            return _checked_rewards(result, name)
    else:
        def reward(*args, **kwargs):
            try:
                result = function(*args, **kwargs)
            except Exception as error:
                raise failure(error) from error
            return _checked_rewards(result, name)
    reward.__name__ = reward.__qualname__ = name
    reward.__wrapped__ = function
    return reward


def _checked_rewards(rewards, name: str):
    """`rewards` as returned by reward function `name`, if each is a real number or None (TRL's "not applicable");
    a `RewardFunctionError` naming the function, the completion and the value otherwise (a NaN would be read as "not
    applicable" and a string fails deep inside TRL). TRL itself checks the count."""
    if isinstance(rewards, (str, bytes)) or not hasattr(rewards, "__iter__"):
        raise RewardFunctionError(f"reward function {name!r} returned {type(rewards).__name__} {rewards!r:.80}; it "
                                  "must return a list with one float (or None: not applicable) per completion.")
    for index, value in enumerate(rewards):
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (str, bytes)) or not isinstance(value, numbers.Real):
            raise RewardFunctionError(f"reward function {name!r} returned {type(value).__name__} {value!r:.80} for "
                                      f"completion {index}; rewards must be numbers (or None: not applicable).")
        if not math.isfinite(value):
            raise RewardFunctionError(f"reward function {name!r} returned {value} for completion {index}; rewards "
                                      "must be finite numbers (return None where a reward does not apply).")
    return rewards


def _check_reward_funcs(reward_funcs) -> None:
    """Each reward function is a callable, a reward model or a Hub id / path (TRL's three kinds)."""
    for index, function in enumerate(reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]):
        if not (callable(function) or isinstance(function, (str, torch.nn.Module))):
            where = f"reward_funcs[{index}]" if isinstance(reward_funcs, (list, tuple)) else "reward_funcs"
            raise ValueError(f"{where} is {type(function).__name__} {function!r:.80}; pass a function (prompts, "
                             "completions, **columns) -> list of floats, a reward model, or its Hub id or path.")


def _check_chat_template(dataset, tokenizer) -> None:
    """Conversational prompts need the tokenizer's chat template (TRL applies it only when rolling out)."""
    if not isinstance(dataset, Dataset) or len(dataset) == 0 or "prompt" not in dataset.column_names:
        return
    if isinstance(dataset[0]["prompt"], list) and not getattr(tokenizer, "chat_template", None):
        raise ValueError("The train dataset's prompts are conversations (lists of messages), but the tokenizer "
                         "(processing_class) has no chat_template to render them; set tokenizer.chat_template or "
                         "pass plain-text prompts.")


def _check_prompts(dataset, name: str) -> None:
    if isinstance(dataset, dict):
        for key, entry in dataset.items():
            _check_prompts(entry, key)
        return
    check_no_null_fields(dataset, ("prompt",), f"{name} dataset" if name in ("train", "eval") else
                         f"eval dataset {name!r}")


class DiffuGRPOTrainer(LLaDARecordMixin, GRPOTrainer):
    """GRPO for a LLaDA model with diffusion rollouts and d1's one-step per-token log-probabilities.

    Same arguments as [`trl.GRPOTrainer`] (reward functions: callables, reward models or Hub ids; datasets with a
    `prompt` column, plain or conversational; a null prompt is refused with its row), with a loaded LLaDA model. A
    reward function that raises stops training with a `RewardFunctionError` naming it (the original is its cause).
    The reference (when `beta` > 0) is a frozen copy of `model`; under LoRA (`peft_config`; a `LoraConfig` without
    `target_modules` gets LLaDA's block projections) the base with the adapter disabled. The mask id is the model
    config's, else the tokenizer's mask token, written into the config (`resolve_mask_token_id`).
    """

    _tag_names = ["trl", "grpo", "diffu-grpo", "d1", "llada"]

    def __init__(self, model, reward_funcs=None, args: DiffuGRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, peft_config=None, **kwargs):
        args = resolve_args(args, DiffuGRPOConfig, "llada-diffu-grpo")
        if isinstance(model, str):
            raise ValueError("Pass a loaded LLaDA model (AutoModel.from_pretrained(...)), not a name.")
        if processing_class is None:
            raise ValueError("Pass the tokenizer as processing_class (it tokenizes the prompts and decodes the "
                             "completions for the reward functions).")
        if reward_funcs is None or (isinstance(reward_funcs, list) and not reward_funcs):
            raise ValueError("Pass reward_funcs: a function (prompts, completions, **columns) -> list of floats, a "
                             "reward model, or a list of them.")
        for name in ("tools", "rollout_func", "environment_factory"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name} is not supported by DiffuGRPOTrainer (single-turn diffusion rollouts).")
        _check_reward_funcs(reward_funcs)
        _check_prompts(train_dataset, "train")
        _check_prompts(eval_dataset, "eval")
        _check_chat_template(train_dataset, processing_class)
        mask_id = resolve_mask_token_id(model, processing_class)  # the config's, else the tokenizer's
        llada = unwrap(model)
        family = getattr(llada, "generation_config_class", LLaDAGenerationConfig)  # LLaDA 2: LLaDA2GenerationConfig
        own = getattr(llada, "generation_config", None)
        args.check_rollout_settings(own if isinstance(own, family) else family())
        beta = args.beta
        model, peft_config = wrap_kbit_model(model, peft_config, args)  # a 4/8-bit base: wrapped here, no config left
        own_reference = beta != 0.0 and peft_config is None and not is_peft_model(model)
        reference = frozen_copy(model) if own_reference else None
        if peft_config is not None:
            peft_config = with_llada_defaults(peft_config, model)
        if own_reference:
            # TRL would reload the reference from the model's Hub id; a frozen in-memory copy works for any model
            args.beta = 0.0
        try:
            with quiet_upstream_deprecations():
                super().__init__(model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                                 eval_dataset=eval_dataset, processing_class=processing_class,
                                 peft_config=peft_config, **kwargs)
        finally:
            args.beta = beta
        adapters_in_training_precision(self.model, args)
        self.beta = beta
        for index, (function, name) in enumerate(zip(self.reward_funcs, self.reward_func_names)):
            if callable(function) and not isinstance(function, torch.nn.Module):  # reward models report themselves
                self.reward_funcs[index] = named_reward_function(function, name)
        if own_reference:
            self.ref_model = self.accelerator.prepare_model(reference, evaluation_mode=True)
        self._mask_id = mask_id
        stops = list(getattr(self, "eos_token_ids", None) or [])  # TRL >= 1.15 also reads the generation config's
        if not stops:
            configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            configured = [configured] if isinstance(configured, int) else list(configured or [])
            stops = [self._tokenizer.eos_token_id, *[i for i in configured if i != self._tokenizer.eos_token_id]]
        self._stop_ids = stops
        self._noise = None  # (row mask seeds, iterations) of the scoring under way

    # ------------------------------------------------------------------------------------------------ rollouts
    def diffusion_generation_kwargs(self) -> dict:
        """The `model.generate` settings of the rollouts."""
        return {**self.args.rollout_settings(), "eos_token_id": list(self._stop_ids),
                "pad_token_id": self._tokenizer.pad_token_id, "mask_token_id": self._mask_id,
                **(self.args.generation_kwargs or {})}

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *args, **kwargs):
        """Diffusion rollouts of the (already repeated) prompts: one batched `generate` call on left-padded prompts.
        Returns TRL's (completion ids per row, up to and including the first EOS; no sampling log-probs)."""
        if images is not None and any(image for image in images) or multimodal_fields:
            raise ValueError("DiffuGRPOTrainer rolls out text prompts only (no images).")
        device = self.accelerator.device
        lengths = torch.tensor([len(ids) for ids in prompt_ids], device=device)
        longest = int(lengths.max())
        flat = torch.tensor([token for ids in prompt_ids for token in ids], dtype=torch.long, device=device)
        columns = torch.arange(longest, device=device)
        attention = columns[None] >= (longest - lengths)[:, None]
        input_ids = torch.full((len(prompt_ids), longest), self._tokenizer.pad_token_id, dtype=torch.long,
                               device=device)
        input_ids[attention] = flat  # row-major order: each row's tokens land right-aligned
        unwrapped = self.accelerator.unwrap_model(self.model)
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad():
                sequences = unwrapped.generate(input_ids, attention_mask=attention.long(),
                                               **self.diffusion_generation_kwargs())
        finally:
            unwrapped.train(was_training)
        completions = sequences[:, longest:]
        is_eos = torch.isin(completions, torch.tensor(self._stop_ids, device=completions.device))
        ends = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, completions.shape[1]).tolist()
        rows = completions.tolist()
        return [row[:end] for row, end in zip(rows, ends)], None

    # ------------------------------------------------------------------------------------------- prompt masks
    def row_mask_seeds(self, rows: int, training: bool) -> torch.Tensor:
        """One 32-bit prompt-mask seed per row of a generation batch (int64, on the trainer's device): from the run's
        seed, the step and the process when training; fixed (`eval_mask_seed`) in evaluation."""
        if training:
            base = _seed32(self.args.seed, self.state.global_step, self._step, self.accelerator.process_index, 7)
        else:
            base = _seed32(self.args.eval_mask_seed, self.accelerator.process_index, 9)
        index = torch.arange(rows, device=self.accelerator.device)
        return mix32((mix32(torch.full_like(index, base)) + index * _ROW_STRIDE) & U32)

    def prompt_noise_mask(self, attention_mask: torch.Tensor, prompt_length: int, mask_seeds: torch.Tensor,
                          iteration: int) -> torch.Tensor:
        """Which prompt positions the scoring pass masks at inner iteration `iteration`: (B, prompt_length) bool, each
        real prompt token independently with probability `p_mask_prompt`, never padding. A function of (the row's
        seed, the iteration, the position counted from the row's first real token) alone."""
        real = attention_mask[:, :prompt_length].bool()
        pad_count = (~real).sum(-1, keepdim=True)
        positions = torch.arange(prompt_length, device=real.device)[None] - pad_count
        seeds = mix32((mask_seeds.to(real.device).long() ^ _PROMPT_MASK_SALT) & U32)
        draws = counter_uniform(seeds, iteration, positions)
        return (draws < self.args.p_mask_prompt) & real

    def per_token_logps(self, model, input_ids, attention_mask, logits_to_keep: int, mask_seeds: torch.Tensor,
                        iteration: int, compute_entropy: bool = False, compute_aux_loss: bool = False):
        """d1's per-token log-probabilities of the last `logits_to_keep` tokens (the completion): one forward pass with
        the completion fully masked and the prompt masked by `prompt_noise_mask(..., iteration)`; log-softmax at the
        completion positions, gathered at the completion tokens. Returns (logps (B, C) float32, entropies or None,
        aux loss or None); positions outside the attention mask are 0."""
        prompt_length = input_ids.shape[1] - logits_to_keep
        noisy = input_ids.clone()
        noisy[:, :prompt_length].masked_fill_(
            self.prompt_noise_mask(attention_mask, prompt_length, mask_seeds, iteration), self._mask_id)
        noisy[:, prompt_length:] = self._mask_id
        attention = None if bool(attention_mask.all()) else attention_mask
        extra = {"output_router_logits": True} if compute_aux_loss else {}
        with self.accelerator.autocast():
            outputs = model(input_ids=noisy, attention_mask=attention, logits_to_keep=logits_to_keep, return_dict=True,
                            **extra)
        logits = outputs.logits[:, -logits_to_keep:].float()
        targets = input_ids[:, prompt_length:]
        scored = attention_mask[:, prompt_length:].bool()
        log_norm = torch.logsumexp(logits, dim=-1)
        logps = (logits.gather(-1, targets[..., None]).squeeze(-1) - log_norm).masked_fill(~scored, 0.0)
        entropies = None
        if compute_entropy:
            with torch.set_grad_enabled(torch.is_grad_enabled() and bool(getattr(self, "_entropy_bonus_enabled", 0))):
                log_probs = logits - log_norm[..., None]
                entropies = -(log_probs.exp() * log_probs).sum(-1).masked_fill(~scored, 0.0)
        return logps, entropies, getattr(outputs, "aux_loss", None) if compute_aux_loss else None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **kwargs):
        """TRL's hook, with d1's estimator. While a generation batch is scored (old policy, reference) it returns the
        log-probs of every inner iteration, (B, num_iterations, C); in the loss, those of the current iteration."""
        if any(value is not None for value in kwargs.values()):
            raise ValueError("DiffuGRPOTrainer scores text only; got multimodal inputs "
                             f"{sorted(k for k, v in kwargs.items() if v is not None)}.")
        if self._noise is None:
            raise RuntimeError("DiffuGRPOTrainer scores completions inside its own steps only (no prompt-mask seeds "
                               "are set); call per_token_logps(...) with explicit seeds instead.")
        seeds, iterations, stacked = self._noise
        batch_size = batch_size or input_ids.shape[0]
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.shape[0], batch_size):  # chunks of rows, as TRL, to bound memory
            chunk = slice(start, start + batch_size)
            per_iteration = [self.per_token_logps(model, input_ids[chunk], attention_mask[chunk], logits_to_keep,
                                                  seeds[chunk], k, compute_entropy, compute_aux_loss)
                             for k in iterations]
            logps.append(torch.stack([p[0] for p in per_iteration], 1) if stacked else per_iteration[0][0])
            if compute_entropy:
                entropies.append(per_iteration[0][1])
            if compute_aux_loss and per_iteration[0][2] is not None:
                aux.append(per_iteration[0][2])
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if aux else None)

    # ------------------------------------------------------------------------------------------ TRL's steps
    def _current_iteration(self) -> int:
        if not self.model.training:
            return 0
        return (self._step // self.args.steps_per_generation) % self.num_iterations

    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        rows = len(inputs)
        seeds = self.row_mask_seeds(rows, training)
        iterations = list(range(self.num_iterations)) if training else [0]
        self._noise = (seeds, iterations, True)
        try:
            with quiet_upstream_deprecations():
                output = super()._generate_and_score_completions(inputs)
        finally:
            self._noise = None
        output[MASK_SEEDS] = seeds
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        iteration = self._current_iteration()
        inputs = dict(inputs)
        seeds = inputs.pop(MASK_SEEDS)
        for key in ("old_per_token_logps", "ref_per_token_logps"):
            if key in inputs and inputs[key] is not None and inputs[key].dim() == 3:
                inputs[key] = inputs[key][:, min(iteration, inputs[key].shape[1] - 1)]
        self._noise = (seeds, [iteration], False)
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        finally:
            self._noise = None


def exact_match_reward(completions, answer, **kwargs) -> list[float]:
    """A TRL reward function for verifiable tasks with an `answer` column: 1.0 when the completion (text, or the
    content of the assistant message), cut at the first `<|eot_id|>` and stripped, equals the answer, else 0.0."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(text.split("<|eot_id|>")[0].strip() == str(expected).strip()) for text, expected in
            zip(texts, answer)]


__all__ = ["DiffuGRPOConfig", "DiffuGRPOTrainer", "RewardFunctionError", "exact_match_reward"]
