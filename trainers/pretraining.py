"""Masked-diffusion pre-training on transformers' `Trainer` (REFERENCE.md section 3).

Everything `Trainer` offers keeps working (arguments, callbacks, logging, checkpointing, `push_to_hub`, accelerate);
only the data preparation (packing text into fixed-length blocks) and `compute_loss` (the diffusion objective) change.
"""

from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from .objectives import (
    DEFAULT_EPS,
    forward_process,
    pretraining_loss,
    random_length_cut,
    sample_p_mask,
    weighted_token_losses,
)


@dataclass
class MaskedDiffusionConfig(TrainingArguments):
    """[`TrainingArguments`] plus the masked-diffusion pre-training settings. Defaults are the reference's."""

    block_size: int = field(
        default=512, metadata={"help": "Length of the packed training sequences (documents joined by EOS)."}
    )
    dataset_text_field: str = field(
        default="text", metadata={"help": "Column holding raw text when the dataset is not tokenized yet."}
    )
    mask_eps: float = field(
        default=DEFAULT_EPS, metadata={"help": "eps of p_mask = (1 - eps) * t + eps; the reference uses 1e-3."}
    )
    random_length_probability: float = field(
        default=0.01,
        metadata={"help": "Probability of cutting a batch to a random length in [1, l] (reference: 0.01)."},
    )
    low_discrepancy_sampling: bool = field(
        default=False,
        metadata={"help": "Spread t evenly over the batch (t_i = (u + i/b) mod 1) for lower-variance gradients."},
    )
    eval_noise_seed: int = field(
        default=1234,
        metadata={"help": "Seed of the fixed corruption used for eval_loss, so evaluations are comparable."},
    )


def pack_dataset(
    dataset: Dataset,
    block_size: int,
    eos_token_id: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_field: str = "text",
) -> Dataset:
    """Tokenize (if needed) and pack documents into `block_size` blocks, with EOS after every document.

    Accepts a dataset with `input_ids` (already tokenized) or a `text_field` column (needs `tokenizer`). The tail that
    does not fill a whole block is dropped. Returns a dataset with one column, `input_ids`.
    """
    if "input_ids" in dataset.column_names:
        tokenized = dataset.select_columns(["input_ids"])
    elif text_field in dataset.column_names:
        if tokenizer is None:
            raise ValueError(f"The dataset has raw text in '{text_field}'; pass processing_class=<your tokenizer>.")
        tokenized = dataset.map(
            lambda batch: {"input_ids": tokenizer(batch[text_field], add_special_tokens=False)["input_ids"]},
            batched=True,
            remove_columns=dataset.column_names,
        )
    else:
        raise ValueError(
            f"The dataset needs an 'input_ids' column or a '{text_field}' text column; it has {dataset.column_names}. "
            "Set dataset_text_field to the name of your text column."
        )

    def pack(batch):
        stream = [token for ids in batch["input_ids"] for token in (*ids, eos_token_id)]
        usable = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}

    packed = tokenized.map(pack, batched=True, batch_size=1000, remove_columns=tokenized.column_names)
    if len(packed) == 0:
        raise ValueError(f"The dataset holds fewer than block_size={block_size} tokens; lower block_size.")
    return packed


def collate_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([example["input_ids"] for example in examples], dtype=torch.long)}


class MaskedDiffusionTrainer(Trainer):
    """Pre-trains a LLaDA model with the masked-diffusion objective.

    The corruption is drawn from a generator seeded by (seed, optimizer step, micro-batch, process), so a run
    resumed from a checkpoint corrupts its batches exactly as the uninterrupted run would; evaluation uses a fixed
    seed per evaluation batch, so `eval_loss` is comparable across evaluations.
    """

    def __init__(self, model, args: MaskedDiffusionConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, **kwargs):
        args = args if args is not None else MaskedDiffusionConfig(output_dir="llada-pretrain")
        if not isinstance(args, MaskedDiffusionConfig):
            raise TypeError(f"args must be a MaskedDiffusionConfig, got {type(args).__name__}.")
        config = model.config
        self.mask_token_id = config.mask_token_id
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
        prepare = lambda ds: ds if ds is None else pack_dataset(  # noqa: E731
            ds, args.block_size, eos, processing_class, args.dataset_text_field
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=prepare(train_dataset),
            eval_dataset=prepare(eval_dataset),
            processing_class=processing_class,
            data_collator=data_collator or collate_blocks,
            **kwargs,
        )
        # Our loss is already a mean over its micro-batch; let Trainer average over accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._micro_step = (-1, 0)  # (global step, micro-batches seen at that step)
        self._eval_batch = 0

    def _noise_seed(self) -> int:
        """Seed of this micro-batch's corruption: (seed, optimizer step, micro-batch, process) when training,
        (eval seed, evaluation batch, process) when evaluating."""
        if self.model.training:
            step, micro = self._micro_step
            micro = micro + 1 if step == self.state.global_step else 0
            self._micro_step = (self.state.global_step, micro)
            key = (self.args.seed, self.state.global_step, micro, self.args.process_index)
        else:
            key = (self.args.eval_noise_seed, self._eval_batch, self.args.process_index)
            self._eval_batch += 1
        return hash(key) & 0x7FFF_FFFF_FFFF_FFFF  # hash of a tuple of ints is stable across processes

    def evaluate(self, *args, **kwargs):
        self._eval_batch = 0
        return super().evaluate(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation computes the diffusion objective (with the fixed evaluation noise); there are no labels."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        seed = self._noise_seed()
        if model.training:
            input_ids = random_length_cut(
                input_ids, self.args.random_length_probability, torch.Generator().manual_seed(seed)
            )
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        p_mask = sample_p_mask(input_ids.shape[0], self.args.mask_eps, low_discrepancy=self.args.low_discrepancy_sampling,
                               generator=generator, device=input_ids.device)
        noisy, masked = forward_process(input_ids, self.mask_token_id, p_mask, generator=generator)
        outputs = model(input_ids=noisy, logits_to_keep=masked)
        row_losses = weighted_token_losses(outputs.logits, input_ids, masked, p_mask)
        loss = pretraining_loss(row_losses, input_ids.shape[1])
        return (loss, outputs) if return_outputs else loss
