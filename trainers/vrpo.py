"""VRPO (LLaDA 1.5, arXiv 2505.19223): DPO for masked-diffusion models on TRL's `DPOTrainer`.

A diffusion LM has no exact log-likelihood, so each log p(y | x) of DPO is replaced by the ELBO of the response given
the prompt (the SFT bound: the prompt is never masked), estimated by Monte Carlo:

    B(y | x) = E_t E_{y_t ~ q(. | t, y)} [ (1 / p_t) * sum_{i masked in y_t} log p_theta(y_i | x, y_t) ],
    p_t = (1 - eps) * t + eps,  t ~ U(0, 1)

    loss = -log sigmoid(beta * [(B_theta(y_w) - B_ref(y_w)) - (B_theta(y_l) - B_ref(y_l))])

(`loss_type=["sigmoid", "sft"]` adds, with its `loss_weights` weight, TRL's SFT term on the chosen responses:
-sum_w B_theta(y_w) / number of chosen tokens, the masked-diffusion SFT loss.)

with the paper's variance reductions, each a config field:
- a budget of `elbo_samples` (n) masked copies per ELBO;
- optimal allocation: n distinct timesteps with one mask each (off: one timestep shared by n masks);
- antithetic sampling: the policy and the reference score a response on the *same* timesteps and masks, so the
  noise common to both cancels in B_theta - B_ref;
- optionally stratified timesteps t_j = (u + j / n) mod 1.

The noise of a response depends only on (its example's stored `noise_seed`, the optimizer step, chosen/rejected,
policy/reference when antithetic sampling is off): never on how the batch is split or padded. With
`precompute_ref_log_probs=True` the reference ELBO samples are computed once with the step left out of the noise,
and the policy then uses that same stored noise, so antithetic sampling still holds.
"""

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from modeling_llada.draws_llada import U32, counter_uniform, mix32
from modeling_llada.mask_id import resolve_mask_token_id

from .base import (
    LOSS_REPLACED_FIELDS,
    CPUSafeDefaults,
    DiffusionNoiseArguments,
    LLaDARecordMixin,
    _seed32,
    check_no_null_fields,
    refuse_unsupported_fields,
    resolve_args,
)
from .compat import (
    DataCollatorForPreference,
    is_peft_model,
    logging,
    quiet_upstream_deprecations,
    sync_checkpointing_names,
    use_adapter,
)
from .objectives import weighted_token_losses
from .peft_utils import adapters_in_training_precision, with_llada_defaults, wrap_kbit_model

logger = logging.get_logger(__name__)
NOISE_SEED = "noise_seed"
_REJECTED_SALT = 0x7F4A7C15  # rejected responses draw other noise than chosen ones
_REFERENCE_SALT = 0x5BD1E995  # the reference's own noise when antithetic sampling is off
_SAMPLE_STRIDE = 0x9E3779B9
# TRL's loss names VRPO implements: the paper's DPO loss on ELBOs, and TRL's "sft" term (the negative ELBO of the
# chosen responses per chosen token: the masked-diffusion SFT loss), combined with DPOConfig's loss_weights
LOSS_TYPES = ("sigmoid", "sft")
_SYNC = "it is read only with sync_ref_model, which VRPO does not support"
# The DPOConfig / TrainingArguments fields VRPO refuses unless left at their defaults: field -> (the values accepted,
# why another would do nothing). DPOConfig's other fields reach what they govern: TRL's own code reads them (data
# preparation, dropout, activation offloading, the precomputation of the reference), or ours does (beta, loss_type,
# loss_weights, label_smoothing in the loss; max_length, truncation_mode, pad_to_multiple_of and pad_token in the
# collator); tests/test_flag_walk_trainers.py classifies every field.
VRPO_REFUSED_FIELDS = {
    **LOSS_REPLACED_FIELDS,
    "padding_free": ((False,), "the bidirectional model would attend across packed sequences"),
    "ld_alpha": ((None,), "LD-DPO weights the tokens of exact log-likelihoods, which VRPO's ELBO estimates replace"),
    "use_weighting": ((False,), "WPO's weights need the exact per-token probabilities VRPO's ELBO estimates replace"),
    "f_divergence_type": (("reverse_kl",), "VRPO is the DPO loss of the paper (reverse KL)"),
    "f_alpha_divergence_coef": ((0.5,), "it is read only with f_divergence_type='alpha_divergence', which VRPO does "
                                        "not support"),
    "discopop_tau": ((0.05,), "it is read only with loss_type='discopop', which VRPO does not support"),
    "sync_ref_model": ((False,), "VRPO's reference (a frozen copy, or the adapter-disabled base under PEFT) is never "
                                 "synced with the policy"),
    "ref_model_mixup_alpha": ((0.6,), _SYNC),
    "ref_model_sync_steps": ((512,), _SYNC),
    "model_init_kwargs": ((None,), "VRPOTrainer takes a loaded model; pass these to from_pretrained when loading it"),
    "router_aux_loss_coef": ((None, 0, 0.0), "VRPO's loss has no load-balancing term (its ELBO passes return no "
                                             "router logits)"),
}


@dataclass
class VRPOConfig(CPUSafeDefaults, DiffusionNoiseArguments, DPOConfig):
    """[`trl.DPOConfig`] plus VRPO's ELBO estimator settings, with defaults that are safe on a CPU.

    Differences from DPOConfig: `bf16` defaults to True only when CUDA is available, activation (gradient)
    checkpointing defaults to False, and `loss_type` accepts the DPO loss of the paper (`"sigmoid"`, reverse KL, no
    length weighting) and TRL's `"sft"` term, here the masked-diffusion SFT loss of the chosen responses (their
    negative ELBO summed over the batch and divided by the number of chosen tokens, as TRL averages its SFT
    cross-entropy over the chosen tokens); `loss_type=["sigmoid", "sft"]` with `loss_weights` combines them as TRL
    does (sum of weight x loss), keeping the chosen likelihood from drifting down. `label_smoothing` e gives TRL's
    conservative DPO: -(1 - e) log sigmoid(score) - e log sigmoid(-score). The fields in `VRPO_REFUSED_FIELDS` are
    refused unless left at their defaults (one line naming the field and why).
    """

    elbo_samples: int = field(
        default=8, metadata={"help": "Monte-Carlo budget n: masked copies per ELBO estimate (the paper uses 8)."}
    )
    optimal_allocation: bool = field(
        default=True,
        metadata={"help": "Spend the budget on n distinct timesteps with one mask each (the paper's choice); "
                  "False draws one timestep per ELBO and n masks at it."},
    )
    antithetic_sampling: bool = field(
        default=True,
        metadata={"help": "Score a response with the policy and the reference on the same timesteps and masks."},
    )
    stratified_timesteps: bool = field(
        default=False,
        metadata={"help": "Stratify an ELBO's n timesteps: t_j = (u + j / n) mod 1 (each still uniform)."},
    )

    def __post_init__(self):
        self._resolve_device_defaults()
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}: beta=0 trains nothing (every "
                             "gradient is 0) and beta < 0 trains toward the rejected answers. LLaDA 1.5 and TRL use "
                             "0.1 (higher keeps the policy closer to the reference).")
        if self.elbo_samples < 1:
            raise ValueError(f"elbo_samples must be >= 1, got {self.elbo_samples}; the paper uses 8.")
        self._check_noise_arguments()
        if self.padding_free:
            raise ValueError("padding_free is not supported for LLaDA: the bidirectional model would attend across "
                             "packed sequences. Set padding_free=False.")
        sync_checkpointing_names(self)
        super().__post_init__()
        unsupported = [name for name in self.loss_type if name not in LOSS_TYPES]
        if unsupported or not self.loss_type or len(set(self.loss_type)) != len(self.loss_type):
            raise ValueError(f"VRPO is the sigmoid DPO loss on ELBOs; loss_type={self.loss_type} is not supported. "
                             "Set loss_type='sigmoid' (the paper's), or ['sigmoid', 'sft'] to add the masked-diffusion "
                             "SFT loss of the chosen responses (weights: loss_weights).")
        refuse_unsupported_fields(self, VRPO_REFUSED_FIELDS, "VRPO")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}: it is the assumed "
                             "probability that a pair's preference is flipped (conservative DPO); 0 trusts every pair.")


@dataclass
class VRPOCollator(DataCollatorForPreference):
    """TRL's preference collator (rows [chosen..., rejected...], right-padded, `completion_mask`), plus each example's
    `noise_seed` and, when precomputed, the reference's ELBO samples (b, n)."""

    def torch_call(self, examples):
        output = super().torch_call(examples)
        output[NOISE_SEED] = torch.tensor([int(example[NOISE_SEED]) for example in examples], dtype=torch.long)
        return output


def check_preference_dataset(dataset, name: str = "train") -> None:
    """Check, before anything is tokenized, that a dataset has TRL's preference columns; a `ValueError` naming the
    dataset, its columns and the accepted ones otherwise (a dict of datasets is checked entry by entry)."""
    if dataset is None:
        return
    if isinstance(dataset, dict):
        for key, entry in dataset.items():
            check_preference_dataset(entry, key)
        return
    label = f"{name} dataset" if name in ("train", "eval") else f"eval dataset {name!r}"
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The {label} is empty (0 rows); pass preference pairs (prompt, chosen, rejected).")
    columns = list(getattr(dataset, "column_names", None) or [])
    if not columns and not isinstance(dataset, Dataset):
        return  # an IterableDataset whose features are unknown until read
    if {"chosen", "rejected"} <= set(columns) or {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(columns):
        check_no_null_fields(dataset, ("prompt", "chosen", "rejected"), label)
        return
    raise ValueError(
        f"The {label} has columns {columns}; VRPO reads TRL's preference format: 'prompt', 'chosen' and 'rejected' "
        "(plain text or chat messages; without 'prompt', chosen and rejected conversations share their first "
        "turns). Rename your columns (dataset.rename_columns)."
    )


def _dataset_label(name: str) -> str:
    return f"{name} dataset" if name in ("train", "eval") else f"eval dataset {name!r}"


def _answer_text(answer) -> str:
    """The text of an answer: a string, or the contents of its chat messages (text parts included)."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (list, tuple)):
        return "".join(_answer_text(part) for part in answer)
    if isinstance(answer, dict):  # a message ("content") or a part of one ("text")
        return _answer_text(answer["content"] if "content" in answer else answer.get("text"))
    return "" if answer is None else str(answer)


def _uninformative_pair(example) -> str | None:
    """Why a preference pair teaches nothing ("identical", "empty"), or None: with chosen == rejected the two ELBO
    differences estimate the same quantity and the loss trains on their masking noise alone; with both answers empty
    (blank text, no message content) there is nothing to prefer either. One empty answer is a real preference (it is
    scored as its EOS / end of turn, an answer the model can give) and is kept. In tokenized data an answer with no
    token at all has nothing to score: "empty"."""
    if "chosen_ids" in example and "chosen" not in example:  # already tokenized
        chosen, rejected = list(example["chosen_ids"]), list(example["rejected_ids"])
        return "empty" if not chosen or not rejected else "identical" if chosen == rejected else None
    chosen, rejected = example["chosen"], example["rejected"]
    if chosen == rejected:
        return "identical"
    return "empty" if not _answer_text(chosen).strip() and not _answer_text(rejected).strip() else None


def drop_uninformative_pairs(dataset, name: str = "train"):
    """`dataset` (a `Dataset`) without the pairs whose chosen and rejected answers are identical or both empty (blank
    text, or no message content), with a warning that counts them; a `ValueError` when no pair is left.
    Pairs without a `prompt` column have their shared first turns split off first (TRL's `extract_prompt`)."""
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return dataset
    columns = dataset.column_names
    if "chosen" in columns and "prompt" not in columns:
        from trl import extract_prompt

        dataset = dataset.map(extract_prompt, desc=f"Extracting prompt from {name} dataset")
    answers = [c for c in ("chosen", "rejected", "chosen_ids", "rejected_ids") if c in dataset.column_names]
    reasons = [_uninformative_pair(example) for example in dataset.select_columns(answers)]
    identical, empty = reasons.count("identical"), reasons.count("empty")
    if not identical and not empty:
        return dataset
    label = _dataset_label(name)
    found = " and ".join(part for part in (f"{identical} with chosen identical to rejected" if identical else "",
                                           f"{empty} with both answers empty" if empty else "")
                         if part)
    first = next(index for index, reason in enumerate(reasons) if reason)
    if identical + empty == len(dataset):
        raise ValueError(f"No pair of the {label} can train VRPO: all {len(dataset)} pairs are uninformative "
                         f"({found}; e.g. row {first}). A pair needs two different answers, at least one non-empty.")
    logger.warning(f"Dropped {identical + empty} of {len(dataset)} pairs of the {label} ({found}; first: row "
                   f"{first}): such a pair trains on masking noise alone. A pair needs two different answers, at "
                   "least one non-empty.")
    return dataset.select([index for index, reason in enumerate(reasons) if reason is None])


def _truncated(prompt_ids, answer_ids, max_length: int, truncation_mode: str):
    """What the collator trains on for one answer: the ids of prompt + answer and its answer mask, truncated as
    `DataCollatorForPreference` truncates them."""
    ids, answer = list(prompt_ids) + list(answer_ids), [0] * len(prompt_ids) + [1] * len(answer_ids)
    cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
    return ids[cut], answer[cut]


def drop_pairs_identical_after_truncation(dataset, max_length: int, truncation_mode: str, name: str = "train"):
    """A tokenized `dataset` without the pairs whose chosen and rejected answers differ only beyond `max_length`
    (after the collator's truncation both rows are the same sequence: the loss would train on masking noise alone),
    with a warning that counts them; a `ValueError` when no pair is left."""
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return dataset
    rows = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    same = [
        _truncated(row["prompt_ids"], row["chosen_ids"], max_length, truncation_mode)
        == _truncated(row["prompt_ids"], row["rejected_ids"], max_length, truncation_mode)
        for row in rows
    ]
    count = sum(same)
    if not count:
        return dataset
    label, first = _dataset_label(name), same.index(True)
    why = (f"their chosen and rejected answers differ only after the first max_length={max_length} tokens of prompt + "
           f"answer (truncation_mode={truncation_mode!r}), so both are trained as the same sequence (first: row "
           f"{first})")
    if count == len(dataset):
        raise ValueError(f"No pair of the {label} can train VRPO: in all {count} pairs {why}. Raise max_length "
                         "(or use truncation_mode='keep_end' when the answers differ at their ends).")
    logger.warning(f"Dropped {count} of {len(dataset)} pairs of the {label}: {why}; such a pair trains on masking "
                   "noise alone. Raise max_length to keep them.")
    return dataset.select([index for index, is_same in enumerate(same) if not is_same])


def frozen_copy(model):
    """A frozen deep copy of `model` that runs its own weights.

    Trainers patch `forward` on the instance (TRL's SFTTrainer and DPOTrainer wrap it to fuse the LM head); such a
    wrapper keeps the *original* model's forward in its closure, which `copy.deepcopy` does not rebind, so a copy of a
    fine-tuned model would silently run the policy. The copy drops these instance-level overrides and uses the
    class's forward.
    """
    reference = copy.deepcopy(model)
    for module in reference.modules():
        module.__dict__.pop("forward", None)
    return reference.eval().requires_grad_(False)


class VRPOTrainer(LLaDARecordMixin, DPOTrainer):
    """Preference optimisation of a LLaDA model with VRPO's ELBO estimates in place of log-likelihoods.

    Accepts TRL's preference datasets (`prompt`/`chosen`/`rejected`, plain or conversational, or implicit prompts).
    A null field is refused with its row; pairs whose chosen and rejected answers are identical (or both empty) teach
    nothing (the loss would train on masking noise alone): they are dropped with a warning that counts them, and
    a dataset with none left is refused (`drop_uninformative_pairs`), as is one whose prompts all fill `max_length`.
    The reference is `ref_model`, else a frozen copy of `model`; under LoRA (`peft_config`) the base with the adapter
    disabled (no second copy). `peft_config=LoraConfig(...)` without `target_modules` picks LLaDA's block projections.
    Logs TRL's `rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`, `logps/*` (the ELBOs)
    and `preference_score/variance`: the estimator's variance of the preference score, measured on the batch.
    Saves write atomic checkpoints, the training record (a "VRPO" stage after those of the model it started from)
    and a LLaDA model card in place of TRL's (`LLaDARecordMixin`). The mask id is the model config's, else the
    tokenizer's mask token, written into the config (`resolve_mask_token_id`).
    """

    _tag_names = ["trl", "dpo", "vrpo", "llada"]
    # the method and its paper, for TRL's card helpers (the card written is LLaDA's: LLaDARecordMixin)
    _name = "VRPO"
    _paper = {
        "title": "LLaDA 1.5: Variance-Reduced Preference Optimization for Large Language Diffusion Models",
        "id": "2505.19223",
        "citation": (
            "@article{zhu2025llada,\n"
            "    title   = {{LLaDA 1.5: Variance-Reduced Preference Optimization for Large Language Diffusion "
            "Models}},\n"
            "    author  = {Fengqi Zhu and Rongzhen Wang and Shen Nie and Xiaolu Zhang and Chunwei Wu and Jun Hu and "
            "Jun Zhou and Jianfei Chen and Yankai Lin and Ji-Rong Wen and others},\n"
            "    journal = {arXiv preprint arXiv:2505.19223},\n"
            "    year    = 2025,\n"
            "}"
        ),
    }

    def __init__(self, model, ref_model=None, args: VRPOConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, peft_config=None, **kwargs):
        args = resolve_args(args, VRPOConfig, "llada-vrpo")
        if processing_class is None:
            raise ValueError("Pass the tokenizer as processing_class (it tokenizes the data and is saved with the "
                             "model).")
        if train_dataset is None:
            raise ValueError("Pass a train_dataset of preference pairs (prompt, chosen, rejected).")
        check_preference_dataset(train_dataset, "train")
        check_preference_dataset(eval_dataset, "eval")
        if isinstance(model, str):
            raise ValueError("Pass a loaded LLaDA model (AutoModel.from_pretrained(...)), not a name.")
        resolve_mask_token_id(model, processing_class)  # the config's, else the tokenizer's (written into the config)
        if ref_model is not None and not isinstance(ref_model, str):
            resolve_mask_token_id(ref_model, processing_class)
        model, peft_config = wrap_kbit_model(model, peft_config, args)  # a 4/8-bit base: wrapped here, no config left
        if peft_config is not None:
            peft_config = with_llada_defaults(peft_config, model)  # the member's default targets (MoE: its own)
        elif ref_model is None and not is_peft_model(model) and not args.precompute_ref_log_probs:
            # TRL would reload the reference from the model's path; a frozen in-memory copy works for any model
            ref_model = frozen_copy(model)
        if data_collator is None:
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            if args.pad_token is not None:  # DPOConfig.pad_token: the tokenizer's pad token from now on, as in TRL
                if args.pad_token not in tokenizer.get_vocab():
                    raise ValueError(f"pad_token={args.pad_token!r} is not a token of the tokenizer "
                                     "(processing_class); pass one of its tokens, or leave it unset (its pad token, "
                                     "else EOS).")
                tokenizer.pad_token = args.pad_token
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            data_collator = VRPOCollator(pad_token_id=pad, max_length=args.max_length,
                                         truncation_mode=args.truncation_mode,
                                         pad_to_multiple_of=args.pad_to_multiple_of)
        with quiet_upstream_deprecations():
            super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                             train_dataset=train_dataset, eval_dataset=eval_dataset,
                             processing_class=processing_class, peft_config=peft_config, **kwargs)
        adapters_in_training_precision(self.model, args)
        self.model_accepts_loss_kwargs = False

    # ----------------------------------------------------------------------------------------------------- data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's preparation, then one stored noise seed per example (its VRPO settings included, so reference ELBOs
        cached by `precompute_ref_log_probs` are recomputed when the estimator changes)."""
        if NOISE_SEED in (getattr(dataset, "column_names", None) or []):
            return dataset  # prepared already
        dataset = drop_uninformative_pairs(dataset, dataset_name)
        raw = dataset
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        self._check_truncation_drops(raw, dataset, processing_class, args, dataset_name)
        if args.max_length is not None:  # pairs that differ only beyond max_length are identical as trained
            dataset = drop_pairs_identical_after_truncation(dataset, args.max_length, args.truncation_mode,
                                                            dataset_name)
        settings = (args.seed, args.elbo_samples, args.optimal_allocation, args.antithetic_sampling,
                    args.stratified_timesteps, round(args.mask_eps * 1e9))

        def add_seed(example, index):
            return {NOISE_SEED: _seed32(*settings, index)}

        if isinstance(dataset, Dataset):  # `IterableDataset.map` takes no `desc`
            return dataset.map(add_seed, with_indices=True, desc=f"Storing noise seeds of the {dataset_name} dataset")
        return dataset.map(add_seed, with_indices=True)

    def _check_truncation_drops(self, raw, prepared, processing_class, args, dataset_name) -> None:
        """TRL drops the pairs whose prompt alone fills `max_length` (no answer token left): a warning counts them, a
        `ValueError` says by how much the prompts are too long when that drops every pair (instead of training on
        zero samples)."""
        if not (isinstance(raw, Dataset) and isinstance(prepared, Dataset)) or len(prepared) == len(raw):
            return
        label, dropped = _dataset_label(dataset_name), len(raw) - len(prepared)
        if len(prepared) > 0:
            logger.warning(f"{dropped} of {len(raw)} pairs of the {label} were dropped: their prompt fills "
                           f"max_length={args.max_length} tokens, leaving no answer token to compare. Raise "
                           "max_length to keep them.")
            return
        unlimited = copy.copy(args)  # the same preparation without the filter, to measure the prompts
        unlimited.max_length = None
        full = super()._prepare_dataset(raw, processing_class, unlimited, dataset_name)
        prompts = [len(ids) for ids in full["prompt_ids"]]
        longest = max(len(p) + max(len(c), len(r)) for p, c, r in zip(full["prompt_ids"], full["chosen_ids"],
                                                                         full["rejected_ids"]))
        raise ValueError(
            f"All {len(raw)} pairs of the {label} were dropped: max_length={args.max_length} leaves no answer token "
            f"in any of them, because every prompt fills it (prompt lengths: shortest {min(prompts)}, longest "
            f"{max(prompts)} tokens). Set max_length to at least {max(prompts) + 1} to keep every pair ({longest} "
            "keeps every answer whole), or shorten the prompts."
        )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if NOISE_SEED not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, NOISE_SEED]

    # ---------------------------------------------------------------------------------------------------- noise
    def _response_seeds(self, inputs, *, reference: bool, training: bool) -> torch.Tensor:
        """One 32-bit seed per row of the batch [chosen..., rejected...]."""
        base = inputs[NOISE_SEED].long() & U32
        if not self.args.precompute_ref_log_probs:  # fresh noise every step; fixed noise for evaluations
            salt = _seed32(self.state.global_step, 11) if training else _seed32(self.args.eval_noise_seed, 13)
            base = mix32(base ^ salt)
        seeds = torch.cat([base, mix32(base ^ _REJECTED_SALT)])
        if reference and not self.args.antithetic_sampling:
            seeds = mix32(seeds ^ _REFERENCE_SALT)
        return seeds

    def sample_noise(self, inputs, *, reference: bool = False, training: bool = True):
        """The timesteps and masks of every ELBO of the batch: p_mask (2b, n) float32 and masked (2b, n, l) bool,
        only completion positions maskable. Depends on each row's seed alone (not on the batch or its padding)."""
        completion = inputs["completion_mask"].bool()
        rows, length = completion.shape
        n = self.args.elbo_samples
        seeds = self._response_seeds(inputs, reference=reference, training=training).to(completion.device)
        samples = torch.arange(n, device=completion.device)
        u = counter_uniform(seeds, 0, samples[None].expand(rows, -1))  # (2b, n)
        if not self.args.optimal_allocation:
            u = u[:, :1].expand(-1, n)  # one timestep, n masks
        elif self.args.stratified_timesteps:
            u = (u[:, :1] + samples[None] / n) % 1.0
        eps = self.args.mask_eps
        p_mask = ((1 - eps) * u + eps).float()
        sample_seeds = mix32((seeds[:, None] + (samples[None] + 1) * _SAMPLE_STRIDE) & U32).reshape(-1)
        positions = torch.arange(length, device=completion.device)[None].expand(rows * n, -1)
        draws = counter_uniform(sample_seeds, 1, positions).view(rows, n, length)
        masked = (draws < p_mask[..., None]) & completion[:, None, :]
        return p_mask, masked

    # ------------------------------------------------------------------------------------------------- the ELBO
    def elbo_samples(self, model, inputs, p_mask: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """The n single-sample ELBO estimates of every response, (2b, n) float32: for each masked copy,
        sum over its masked positions of log p(clean token) / p_mask. One forward pass over the 2b * n copies, the
        head computed only at masked positions."""
        ids = inputs["input_ids"]
        rows, n, length = masked.shape
        flat_masked = masked.reshape(rows * n, length)
        targets = ids.repeat_interleave(n, dim=0)
        noisy = targets.masked_fill(flat_masked, resolve_mask_token_id(model))
        attention = inputs["attention_mask"].repeat_interleave(n, dim=0)
        attention = None if bool(attention.all()) else attention
        logits = model(input_ids=noisy, attention_mask=attention, logits_to_keep=flat_masked, return_dict=True).logits
        return -weighted_token_losses(logits, targets, flat_masked, p_mask.reshape(-1)).view(rows, n)

    def _reference_context(self):
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    @torch.no_grad()
    def _reference_elbo_samples(self, model, inputs, training: bool) -> torch.Tensor:
        p_mask, masked = self.sample_noise(inputs, reference=True, training=training)
        with self._reference_context():
            return self.elbo_samples(model, inputs, p_mask, masked)

    def compute_ref_log_probs(self, model, inputs):
        """The reference's ELBO samples of a batch, (b, n) for chosen and rejected (what `precompute_ref_log_probs`
        stores per example; their mean is the ELBO)."""
        was_training = model.training
        model.eval()
        try:
            samples = self._reference_elbo_samples(model, inputs, training=True)
        finally:
            model.train(was_training)
        return samples.chunk(2, dim=0)

    # ----------------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        training = mode == "train"
        p_mask, masked = self.sample_noise(inputs, training=training)
        policy = self.elbo_samples(model, inputs, p_mask, masked)  # (2b, n)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = (inputs[key].float() for key in ("ref_chosen_logps", "ref_rejected_logps"))
            reference = torch.cat([ref_chosen, ref_rejected]).to(policy.device)
            if reference.dim() == 1:  # scalar reference log-probs from elsewhere
                reference = reference[:, None].expand_as(policy)
        else:
            ref_model = self.ref_model if self.ref_model is not None else model
            reference = self._reference_elbo_samples(ref_model, inputs, training)
        per_sample_ratio = policy - reference  # (2b, n): B_theta - B_ref for each shared (or own) noise draw
        chosen_ratio, rejected_ratio = per_sample_ratio.mean(-1).chunk(2)
        score = self.beta * (chosen_ratio - rejected_ratio)
        chosen_elbo, rejected_elbo = policy.mean(-1).chunk(2)
        losses = {}
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":  # with label_smoothing e, conservative DPO: each preference flipped w.p. e
                smoothing = self.args.label_smoothing
                losses[loss_type] = (-(1 - smoothing) * F.logsigmoid(score) - smoothing * F.logsigmoid(-score)).mean()
            else:  # "sft": -sum of chosen ELBOs / chosen tokens (TRL: mean NLL over the chosen tokens)
                chosen_tokens = inputs["completion_mask"].chunk(2)[0].sum().clamp(min=1)
                losses[loss_type] = -chosen_elbo.sum() / chosen_tokens
        loss = sum(weight * losses[name] for name, weight in zip(self.loss_types, self.loss_weights, strict=True))

        # metrics (TRL's names), gathered over processes
        n = per_sample_ratio.shape[1]
        sample_scores = self.beta * torch.sub(*per_sample_ratio.detach().chunk(2))  # (b, n)
        variance = sample_scores.var(dim=1) / n if n > 1 else torch.full_like(score, float("nan"))
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio.detach(), self.beta * rejected_ratio.detach()
        chosen_elbo, rejected_elbo = chosen_elbo.detach(), rejected_elbo.detach()
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["logps/chosen"].append(gather(chosen_elbo).mean().item())
        metrics["logps/rejected"].append(gather(rejected_elbo).mean().item())
        metrics["preference_score/variance"].append(gather(variance).mean().item())
        if len(losses) > 1:
            for name, value in losses.items():
                metrics[f"loss/{name}"].append(gather(value.detach()[None]).mean().item())
        if training:
            tokens = gather(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens = getattr(self, "_total_train_tokens", 0) + tokens
            metrics["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            return loss, {"scores": score.detach(), "elbo_samples": policy.detach()}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    @torch.no_grad()
    def preference_scores(self, dataset=None, batch_size: int | None = None) -> torch.Tensor:
        """The estimated preference score beta * [(B_theta - B_ref)(chosen) - (B_theta - B_ref)(rejected)] of every
        pair of a prepared dataset (default: the eval dataset, else the train dataset), with the evaluation noise;
        the preference accuracy is `(scores > 0).float().mean()`."""
        dataset = dataset if dataset is not None else (self.eval_dataset if isinstance(self.eval_dataset, Dataset)
                                                       else self.train_dataset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size or self.args.per_device_eval_batch_size,
                                             collate_fn=self.data_collator, shuffle=False)
        was_training = self.model.training
        self.model.eval()
        scores = []
        try:
            for batch in loader:
                batch = self._prepare_inputs(batch)
                with self.compute_loss_context_manager():
                    _, outputs = self.compute_loss(self.model, batch, return_outputs=True)
                scores.append(outputs["scores"].cpu())
            for key in list(self._metrics["eval"]):  # these batches are not an evaluation
                self._metrics["eval"][key].clear()
        finally:
            self.model.train(was_training)
        return torch.cat(scores)


__all__ = [
    "VRPOCollator", "VRPOConfig", "VRPOTrainer", "check_preference_dataset", "drop_pairs_identical_after_truncation",
    "drop_uninformative_pairs",
]
