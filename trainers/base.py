"""What the pre-training and SFT trainers share: the diffusion settings, the per-example corruption and the loss step.

The corruption of an example depends only on (seed, optimizer step, example id), drawn from a counter-based RNG:
the loss of a step is then the same however the batch is split (gradient accumulation, several processes), a run
resumed from a checkpoint corrupts its batches exactly as the uninterrupted run, and `eval_loss` uses the same noise
at every evaluation, so evaluations are comparable.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset

from modeling_llada.draws_llada import U32, counter_uniform, mix32
from modeling_llada.mask_id import model_config, resolve_mask_token_id, unwrap

from .checkpoints import AtomicCheckpointsMixin
from .objectives import (
    BLOCK_DIFFUSION_BLOCK_SIZE,
    BLOCK_DIFFUSION_NOISE_RANGE,
    DEFAULT_EPS,
    block_diffusion_inputs,
    block_diffusion_loss,
    forward_process,
    pretraining_loss,
    random_length_cut,
    sft_loss,
    weighted_token_losses,
)

EXAMPLE_ID = "example_id"
OBJECTIVES = ("masked_diffusion", "block_diffusion")
# model_type -> the objective its official recipe trains with (others: masked_diffusion, LLaDA's)
DEFAULT_OBJECTIVES = {"llada2_moe": "block_diffusion"}
# model types whose official recipe trains without the routers' load-balancing loss (expert bias only)
NO_AUX_LOSS_MODEL_TYPES = ("llada2_moe",)


# The TrainingArguments settings whose machinery our own losses replace: field -> (the values accepted, why any other
# value would do nothing). Each config's table of refused fields starts from these (diffu-GRPO's keeps TRL's loss and
# with it average_tokens_across_devices); `refuse_unsupported_fields` reads the table.
LOSS_REPLACED_FIELDS = {
    "use_liger_kernel": ((False,), "Liger's kernels fuse a causal-LM head and cross-entropy, which the "
                                   "masked-diffusion loss replaces"),
    "liger_kernel_config": ((None,), "it configures use_liger_kernel, which is not supported"),
    "label_smoothing_factor": ((0.0, 0), "the diffusion loss (compute_loss) replaces the Trainer's label-smoothed "
                                         "cross-entropy"),
    "average_tokens_across_devices": ((True,), "the diffusion losses are means over examples, never sums over a "
                                               "token count, so there is no token count to average or not"),
}


def refuse_unsupported_fields(config, table: dict, owner: str) -> None:
    """A one-line `ValueError` naming the first field of `table` (field -> (accepted values, why)) whose value in
    `config` is not accepted, its value, why and what to do. Fields the installed transformers / TRL lack are
    skipped."""
    for name, (accepted, why) in table.items():
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        if not any(value is ok or (value == ok and not isinstance(value, bool)) for ok in accepted):
            raise ValueError(f"{name}={value!r} is not supported by {owner}: {why}. Leave it at {accepted[0]!r}.")


@dataclass
class DeviceDefaults:
    """Defaults whose best value depends on where training runs, safe on a CPU: pinned data-loader memory only when
    training runs on a CUDA GPU (pinning without one only prints warnings), and, where a config leaves `bf16` unset
    (None: the TRL configs), bf16 only there too (bf16 on a CPU is ~25x slower than fp32). Mixed in before the
    transformers / TRL config; the config's `__post_init__` calls `_resolve_device_defaults` before
    TrainingArguments' own."""

    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin data-loader memory; default: on only when training on a CUDA GPU."}
    )

    def _resolve_device_defaults(self) -> None:
        """Settings whose best value depends on the device; call before TrainingArguments.__post_init__."""
        on_gpu = bool(torch.cuda.is_available() and not getattr(self, "use_cpu", False))
        if getattr(self, "bf16", False) is None:
            self.bf16 = on_gpu and not self.fp16
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = on_gpu


@dataclass
class ActivationCheckpointingOff:
    """Activation checkpointing off unless asked for (TRL's configs turn it on). Declared here also so that the flag
    exists on transformers < 5.23, which knows only `gradient_checkpointing` (`compat.sync_checkpointing_names`
    carries the value over)."""

    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )


@dataclass
class CPUSafeDefaults(ActivationCheckpointingOff, DeviceDefaults):
    """The defaults of our TRL configs (SFT, VRPO, diffu-GRPO) that are safe on a CPU: `bf16` left unset, so that
    `DeviceDefaults` turns it on only when training runs on a CUDA GPU, pinned memory likewise, and activation
    checkpointing off (`ActivationCheckpointingOff`; TRL turns it on). Mixed in before the TRL config."""

    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to True only when a CUDA GPU is available."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5)."}
    )


@dataclass
class DiffusionNoiseArguments:
    """The noise settings of every trainer that masks the answers at a random level t (pre-training, SFT, VRPO)."""

    mask_eps: float = field(
        default=DEFAULT_EPS, metadata={"help": "eps of p_mask = (1 - eps) * t + eps; the reference uses 1e-3."}
    )
    eval_noise_seed: int = field(
        default=1234, metadata={"help": "Seed of the fixed noise of evaluations (comparable evaluations)."}
    )

    def _check_noise_arguments(self) -> None:
        if not 0.0 < self.mask_eps < 1.0:
            raise ValueError(f"mask_eps must be in (0, 1), got {self.mask_eps}; the reference uses 1e-3.")


@dataclass
class DiffusionArguments(DiffusionNoiseArguments):
    """Masked-diffusion settings shared by [`MaskedDiffusionConfig`] and [`MaskedDiffusionSFTConfig`]. Each of them
    declares `random_length_probability` itself: its default differs (0.01 for pre-training, the reference's; 0 for
    SFT)."""

    low_discrepancy_sampling: bool = field(
        default=False,
        metadata={
            "help": "Spread t evenly over each micro-batch (t_i = (u + i/b) mod 1) for lower-variance gradients. "
            "The noise then depends on how the batch is split across accumulation steps and processes."
        },
    )
    objective: str | None = field(
        default=None,
        metadata={
            "help": "The training objective: masked_diffusion (LLaDA, LLaDA-MoE: t ~ U(eps, 1) per sequence, "
            "bidirectional attention, CE / t) or block_diffusion (LLaDA 2, inclusionAI's dFactory recipe: the noisy "
            "and the clean copy in one pass under the block-diffusion mask, noise level in [noise_range_low, "
            "noise_range_high], CE averaged over the masked tokens). Default: the model's own (block_diffusion for "
            "llada2_moe, else masked_diffusion).",
            "choices": list(OBJECTIVES),
        },
    )
    diffusion_block_size: int = field(
        default=BLOCK_DIFFUSION_BLOCK_SIZE,
        metadata={"help": "block_diffusion: length of the attention blocks (dFactory: 32)."},
    )
    noise_range_low: float = field(
        default=BLOCK_DIFFUSION_NOISE_RANGE[0],
        metadata={"help": "block_diffusion: lowest masking probability of an example (dFactory: 0.3)."},
    )
    noise_range_high: float = field(
        default=BLOCK_DIFFUSION_NOISE_RANGE[1],
        metadata={"help": "block_diffusion: highest masking probability of an example (dFactory: 0.8)."},
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Mixture-of-experts models: weight of the routers' load-balancing loss added to the diffusion "
            "loss (logged as aux_loss); 0 turns it off. Default: the model config's router_aux_loss_coef (LLaDA-MoE: "
            "0.01), 0 for LLaDA 2 (its official recipe balances experts with the expert bias alone)."
        },
    )
    eval_likelihood_mc_num: int = field(
        default=0,
        metadata={
            "help": "When > 0, evaluation also reports eval_nll_bound (per token) and eval_perplexity from the "
            "model's likelihood estimator (model.log_likelihood) with this many Monte-Carlo samples per example; "
            "SFT examples are scored on their answer given the prompt."
        },
    )

    def _check_diffusion_arguments(self) -> None:
        self._check_noise_arguments()
        if self.eval_likelihood_mc_num < 0:
            raise ValueError(f"eval_likelihood_mc_num must be >= 0, got {self.eval_likelihood_mc_num}.")
        if not 0.0 <= self.random_length_probability <= 1.0:
            raise ValueError(f"random_length_probability must be in [0, 1], got {self.random_length_probability}.")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)} (or unset: the model's own), got "
                             f"{self.objective!r}.")
        if self.diffusion_block_size < 1:
            raise ValueError(f"diffusion_block_size must be >= 1, got {self.diffusion_block_size}; dFactory uses 32.")
        if not 0.0 < self.noise_range_low <= self.noise_range_high <= 1.0:
            raise ValueError(f"noise_range_low ({self.noise_range_low}) and noise_range_high ({self.noise_range_high}) "
                             "must satisfy 0 < low <= high <= 1; dFactory uses 0.3 and 0.8.")
        if self.router_aux_loss_coef is not None and self.router_aux_loss_coef < 0:
            raise ValueError(f"router_aux_loss_coef must be >= 0 (0 turns the load-balancing loss off), got "
                             f"{self.router_aux_loss_coef}.")


def resolve_args(args, config_class, default_output_dir: str):
    """The trainer's config: the one given (it must be a `config_class`), else the defaults."""
    if args is None:
        return config_class(output_dir=default_output_dir)
    if not isinstance(args, config_class):
        raise TypeError(f"args must be a {config_class.__name__}, got {type(args).__name__}.")
    return args


def check_no_null_fields(dataset, fields, label: str) -> None:
    """A `ValueError` naming the field and the first row of `dataset` whose value there is null (None, e.g. `null` in
    a JSON Lines file), for each of `fields` the dataset has; the trainers would otherwise fail deep inside the
    tokenization. `label` names the dataset ("train dataset"). Only a `Dataset` is checked (an `IterableDataset`'s
    rows are unknown until read)."""
    if not isinstance(dataset, Dataset):
        return
    for name in fields:
        if name not in dataset.column_names:
            continue
        if getattr(dataset, "_indices", None) is None and dataset.data.column(name).null_count == 0:
            _check_no_null_message_fields(dataset.data.column(name), name, label)
            continue  # the Arrow column says so without reading the rows
        rows = [index for index, value in enumerate(dataset[name]) if value is None]
        if rows:
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            raise ValueError(f"Row {rows[0]}{more} of the {label} has a null {name!r}; every row needs a value there. "
                             f"Fix or drop those rows (e.g. dataset.filter(lambda row: row[{name!r}] is not None)).")
        _check_no_null_message_fields(dataset.select_columns([name]).flatten_indices().data.column(name), name, label)


def _check_no_null_message_fields(column, name: str, label: str) -> None:
    """For a column of chat conversations (an Arrow list of message structs): a `ValueError` naming the first row and
    message whose "role" or "content" is null or missing (chat templates would render it as an empty turn, or fail
    deep inside). Read column-wise by Arrow, no loop over rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
        return
    keys = [key for key in ("role", "content") if kind.value_type.get_field_index(key) >= 0]
    if not keys:
        return
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    messages = pc.list_flatten(column)
    rows = pc.list_parent_indices(column)  # per message: its row (ascending)
    for key in keys:
        values = pc.struct_field(messages, key)
        if values.null_count == 0:
            continue
        nulls = pc.indices_nonzero(pc.is_null(values)).to_pylist()
        first = nulls[0]
        row = rows[first].as_py()
        within = first - pc.index(rows, row).as_py()
        more = f" (and {len(nulls) - 1} more messages)" if len(nulls) > 1 else ""
        what = "a 'content' (a string; '' for an empty turn)" if key == "content" else "a 'role' ('user', ...)"
        raise ValueError(f"Row {row} of the {label} has a message with a null or missing {key!r}: {name}[{within}]"
                         f"{more}; every message needs {what}. Fix or drop those rows.")


def with_example_ids(dataset: Dataset | None) -> Dataset | None:
    """Number the examples: their corruption is keyed on this id."""
    if dataset is None or EXAMPLE_ID in dataset.column_names:
        return dataset
    return dataset.add_column(EXAMPLE_ID, list(range(len(dataset))))


def _seed32(*parts: int) -> int:
    return hash(tuple(parts)) & U32  # the hash of a tuple of ints is the same in every process


class LLaDARecordMixin(AtomicCheckpointsMixin):
    """What every llada-hf trainer does on save, mixed in before `transformers.Trainer` or a TRL trainer:
    checkpoints are atomic and resuming skips incomplete ones (`AtomicCheckpointsMixin`, trainers/checkpoints.py),
    and every save writes the training record (`llada_training.json`: this run's stage after those of the model it
    started from) and a LLaDA model card (README.md), also the card `push_to_hub` uploads in place of TRL's."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False, *,
                   dataset_name: str | list[str] | None = None):
        """Save as usual, plus the training record and a LLaDA model card (README.md) next to the weights.

        dataset_name: the training data's name(s), for the record and the card: a Hub dataset id (also listed in
        the card metadata), a local file (recorded by its file name) or a short description. Remembered for later
        saves and `create_model_card`.
        """
        super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            self._write_model_card(Path(output_dir or self.args.output_dir), dataset_name)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | list[str] | None = None,
                          tags=None, **kwargs):
        """The card `push_to_hub` uploads: a LLaDA card rendered from the saved files and this trainer's state."""
        if self.is_world_process_zero():
            self._write_model_card(Path(self.args.output_dir), dataset_name)

    def _write_model_card(self, folder: Path, dataset_names: str | list[str] | None = None) -> None:
        """Write the training record (this run's stage after those recorded with the model it started from) and
        the card rendered from the folder."""
        from hub_cards.cards import TRAINING_RECORD, card_for_folder, earlier_stages, training_record

        if dataset_names:
            self._llada_dataset_names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
        if not hasattr(self, "_llada_earlier_stages"):
            # read once, before any save of this run could overwrite the record it started from
            self._llada_earlier_stages = earlier_stages(self.model)
        record = training_record(self, getattr(self, "_llada_dataset_names", None), self._llada_earlier_stages)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if (folder / "config.json").exists() or (folder / "adapter_config.json").exists():
            repo_id = self.args.hub_model_id or folder.name
            card_for_folder(folder, repo_id).save(folder / "README.md")


class DiffusionTrainerMixin(LLaDARecordMixin):
    """Loss step of the masked-diffusion trainers; mixed into `transformers.Trainer` / `trl.SFTTrainer`.

    Saves write atomic checkpoints, the training record and a LLaDA card (`LLaDARecordMixin`).
    """

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if EXAMPLE_ID not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, EXAMPLE_ID]

    def _row_seeds(self, example_ids: torch.Tensor, training: bool) -> torch.Tensor:
        base = _seed32(self.args.seed, self.state.global_step) if training else _seed32(self.args.eval_noise_seed)
        return mix32((mix32(example_ids.long() & U32) ^ base) & U32)

    def training_objective(self, model) -> str:
        """The objective of this run: `args.objective`, else the one the model's official recipe uses."""
        if self.args.objective is not None:
            return self.args.objective
        return DEFAULT_OBJECTIVES.get(getattr(model_config(model), "model_type", None), "masked_diffusion")

    def aux_loss_coef(self, model) -> float:
        """Weight of the routers' load-balancing loss: `args.router_aux_loss_coef`, else the model's (0 without
        experts, and for the models whose official recipe trains without it)."""
        config = model_config(model)
        if self.args.router_aux_loss_coef is not None:
            if self.args.router_aux_loss_coef > 0 and getattr(config, "num_experts", None) is None:
                raise ValueError(f"router_aux_loss_coef={self.args.router_aux_loss_coef} needs a mixture-of-experts "
                                 f"model; {type(config).__name__} has no routers. Leave it unset or 0.")
            return self.args.router_aux_loss_coef
        if getattr(config, "num_experts", None) is None or config.model_type in NO_AUX_LOSS_MODEL_TYPES:
            return 0.0
        return float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0)

    def diffusion_loss(
        self,
        model,
        input_ids: torch.Tensor,
        example_ids: torch.Tensor,
        maskable: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        answer_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrupt the batch, run one forward pass, return (loss, masked positions).

        masked_diffusion: sum of CE / p_mask over b * l (pre-training) or over each row's `answer_lengths` (SFT),
        then over b. block_diffusion: CE averaged over the masked tokens of the batch, from one pass over the noisy
        and the clean copy. Mixture-of-experts models add `aux_loss_coef * aux_loss` (logged as `aux_loss`). The head
        is computed only at masked positions (`logits_to_keep=masked`).
        """
        training = model.training
        if training and self.args.random_length_probability > 0:
            generator = torch.Generator().manual_seed(_seed32(self.args.seed, self.state.global_step, 7))
            input_ids = random_length_cut(input_ids, self.args.random_length_probability, generator)
            length = input_ids.shape[1]
            maskable = maskable[:, :length] if maskable is not None else None
            attention_mask = attention_mask[:, :length] if attention_mask is not None else None
        batch, length = input_ids.shape
        seeds = self._row_seeds(example_ids, training)
        u = counter_uniform(seeds, 0, torch.zeros(batch, 1, dtype=torch.long, device=seeds.device))[:, 0]
        if self.args.low_discrepancy_sampling:
            u = (u[:1] + torch.arange(batch, device=u.device, dtype=u.dtype) / batch) % 1.0
        objective = self.training_objective(model)
        if objective == "block_diffusion":
            low, high = self.args.noise_range_low, self.args.noise_range_high
            p_mask = (low + (high - low) * u).float()
        else:
            p_mask = ((1 - self.args.mask_eps) * u + self.args.mask_eps).float()
        positions = torch.arange(length, device=seeds.device)[None].expand(batch, -1)
        draws = counter_uniform(seeds, 1, positions)
        noisy, masked = forward_process(input_ids, resolve_mask_token_id(model), p_mask, maskable=maskable,
                                        draws=draws)
        coef = self.aux_loss_coef(model)
        extra = {"output_router_logits": True} if coef > 0 else {}
        if objective == "block_diffusion":
            inputs = block_diffusion_inputs(noisy, input_ids, self.args.diffusion_block_size, attention_mask)
            keep = torch.cat([masked, torch.zeros_like(masked)], dim=1)
            outputs = model(**inputs, logits_to_keep=keep, return_dict=True, **extra)
            loss = block_diffusion_loss(outputs.logits, input_ids, masked)
        else:
            outputs = model(input_ids=noisy, attention_mask=attention_mask, logits_to_keep=masked, return_dict=True,
                            **extra)
            row_losses = weighted_token_losses(outputs.logits, input_ids, masked, p_mask)
            loss = pretraining_loss(row_losses, length) if answer_lengths is None else sft_loss(row_losses,
                                                                                                 answer_lengths)
        if coef > 0:
            aux_loss = getattr(outputs, "aux_loss", None)
            if aux_loss is None:
                raise ValueError(f"router_aux_loss_coef={coef}, but {type(unwrap(model)).__name__} returned no "
                                 "aux_loss with output_router_logits=True; set router_aux_loss_coef=0.")
            loss = loss + coef * aux_loss.to(loss.device)
            self._record_metric(model, "aux_loss", aux_loss.detach().float().item())
        return loss, masked

    def _record_metric(self, model, name: str, value: float) -> None:
        """Averaged over the logging interval and logged with the loss (TRL's `_metrics`, ours for `Trainer`)."""
        self._metrics["train" if model.training else "eval"][name].append(value)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if self.args.eval_likelihood_mc_num > 0 and not isinstance(dataset, dict):  # dicts recurse per dataset
            extra = self._likelihood_metrics(dataset, metric_key_prefix)
            metrics.update(extra)
            self.log(extra)
        return metrics

    def _likelihood_pairs(self, dataset) -> list[tuple[list[int], list[int]]]:
        """(prompt, answer) id pairs of an evaluation dataset: whole blocks for pre-training (empty prompt)."""
        return [([], list(example["input_ids"])) for example in dataset]

    @torch.no_grad()
    def _likelihood_metrics(self, dataset, prefix: str) -> dict[str, float]:
        """The likelihood bound of the evaluation examples, from the model's own estimator (one implementation)."""
        import math

        model = self.accelerator.unwrap_model(self.model)
        llada = model.get_base_model() if hasattr(model, "get_base_model") else model
        was_training = llada.training
        llada.eval()
        estimates = llada.log_likelihood(self._likelihood_pairs(dataset), mc_num=self.args.eval_likelihood_mc_num,
                                         batch_size=self.args.per_device_eval_batch_size * 4,
                                         seed=self.args.eval_noise_seed)
        llada.train(was_training)
        tokens = sum(e.answer_length for e in estimates)
        nll = -sum(e.log_likelihood for e in estimates) / tokens
        return {f"{prefix}_nll_bound": nll, f"{prefix}_perplexity": math.exp(nll)}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation computes the diffusion objective with the fixed evaluation noise."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


