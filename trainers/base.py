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

from modeling_llada.generation_llada import counter_uniform, mix32

from .checkpoints import AtomicCheckpointsMixin
from .objectives import DEFAULT_EPS, forward_process, random_length_cut, weighted_token_losses

EXAMPLE_ID = "example_id"
_U32 = 0xFFFFFFFF


@dataclass
class DiffusionArguments:
    """Masked-diffusion settings shared by [`MaskedDiffusionConfig`] and [`MaskedDiffusionSFTConfig`]."""

    mask_eps: float = field(
        default=DEFAULT_EPS, metadata={"help": "eps of p_mask = (1 - eps) * t + eps; the reference uses 1e-3."}
    )
    low_discrepancy_sampling: bool = field(
        default=False,
        metadata={
            "help": "Spread t evenly over each micro-batch (t_i = (u + i/b) mod 1) for lower-variance gradients. "
            "The noise then depends on how the batch is split across accumulation steps and processes."
        },
    )
    random_length_probability: float = field(
        default=0.0,
        metadata={"help": "Probability of cutting a step's batches to a random length in [1, l]."},
    )
    eval_noise_seed: int = field(
        default=1234, metadata={"help": "Seed of the fixed corruption used for eval_loss (comparable evaluations)."}
    )
    eval_likelihood_mc_num: int = field(
        default=0,
        metadata={
            "help": "When > 0, evaluation also reports eval_nll_bound (per token) and eval_perplexity from the "
            "model's likelihood estimator (model.log_likelihood) with this many Monte-Carlo samples per example; "
            "SFT examples are scored on their answer given the prompt."
        },
    )

    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={"help": "Pin data-loader memory for faster copies to the GPU; default: on only when training runs on "
                  "a CUDA GPU (pinning without one only prints warnings)."},
    )

    def _resolve_device_defaults(self) -> None:
        """Settings whose best value depends on the device; call before TrainingArguments.__post_init__."""
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = bool(torch.cuda.is_available() and not getattr(self, "use_cpu", False))

    def _check_diffusion_arguments(self) -> None:
        if not 0.0 < self.mask_eps < 1.0:
            raise ValueError(f"mask_eps must be in (0, 1), got {self.mask_eps}; the reference uses 1e-3.")
        if self.eval_likelihood_mc_num < 0:
            raise ValueError(f"eval_likelihood_mc_num must be >= 0, got {self.eval_likelihood_mc_num}.")
        if not 0.0 <= self.random_length_probability <= 1.0:
            raise ValueError(f"random_length_probability must be in [0, 1], got {self.random_length_probability}.")


def resolve_args(args, config_class, default_output_dir: str):
    """The trainer's config: the one given (it must be a `config_class`), else the defaults."""
    if args is None:
        return config_class(output_dir=default_output_dir)
    if not isinstance(args, config_class):
        raise TypeError(f"args must be a {config_class.__name__}, got {type(args).__name__}.")
    return args


def with_example_ids(dataset: Dataset | None) -> Dataset | None:
    """Number the examples: their corruption is keyed on this id."""
    if dataset is None or EXAMPLE_ID in dataset.column_names:
        return dataset
    return dataset.add_column(EXAMPLE_ID, list(range(len(dataset))))


def _seed32(*parts: int) -> int:
    return hash(tuple(parts)) & _U32  # the hash of a tuple of ints is the same in every process


class DiffusionTrainerMixin(AtomicCheckpointsMixin):
    """Loss step of the masked-diffusion trainers; mixed into `transformers.Trainer` / `trl.SFTTrainer`.

    Checkpoints are atomic and resuming skips incomplete ones (`AtomicCheckpointsMixin`, trainers/checkpoints.py).
    """

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if EXAMPLE_ID not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, EXAMPLE_ID]

    def _row_seeds(self, example_ids: torch.Tensor, training: bool) -> torch.Tensor:
        base = _seed32(self.args.seed, self.state.global_step) if training else _seed32(self.args.eval_noise_seed)
        return mix32((mix32(example_ids.long() & _U32) ^ base) & _U32)

    def diffusion_row_losses(
        self,
        model,
        input_ids: torch.Tensor,
        example_ids: torch.Tensor,
        maskable: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Corrupt the batch, run one forward pass, return (per-row sum of CE / p_mask, masked, the ids used).

        The head is computed only at masked positions (`logits_to_keep=masked`).
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
        p_mask = ((1 - self.args.mask_eps) * u + self.args.mask_eps).float()
        positions = torch.arange(length, device=seeds.device)[None].expand(batch, -1)
        draws = counter_uniform(seeds, 1, positions)
        noisy, masked = forward_process(input_ids, model_mask_id(model), p_mask, maskable=maskable, draws=draws)
        outputs = model(input_ids=noisy, attention_mask=attention_mask, logits_to_keep=masked, return_dict=True)
        return weighted_token_losses(outputs.logits, input_ids, masked, p_mask), masked, input_ids

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


def model_mask_id(model) -> int:
    """The mask id of a (possibly PEFT- or DDP-wrapped) LLaDA model."""
    config = getattr(model, "config", None)
    while config is None or getattr(config, "mask_token_id", None) is None:
        model = getattr(model, "module", None) or getattr(model, "base_model", None) or getattr(model, "model", None)
        if model is None:
            raise ValueError("The model config has no mask_token_id; set it to the id of the [MASK] token.")
        config = getattr(model, "config", None)
    return config.mask_token_id
