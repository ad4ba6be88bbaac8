"""Masked-diffusion pre-training on transformers' `Trainer` (REFERENCE.md section 3).

Everything `Trainer` offers keeps working (arguments, callbacks, logging, checkpointing, `push_to_hub`, accelerate);
only the data preparation (packing text into fixed-length blocks) and `compute_loss` (the diffusion objective) change.
"""

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from modeling_llada.mask_id import resolve_mask_token_id

from .base import (
    EXAMPLE_ID,
    LOSS_REPLACED_FIELDS,
    ActivationCheckpointingOff,
    DeviceDefaults,
    DiffusionArguments,
    DiffusionTrainerMixin,
    check_no_null_fields,
    refuse_unsupported_fields,
    resolve_args,
    with_example_ids,
)
from .compat import sync_checkpointing_names
from .peft_utils import maybe_wrap_with_peft

# The TrainingArguments fields pre-training refuses unless left at their defaults: field -> (the values accepted, why
# another would do nothing); the Trainer reads every other field itself (tests/test_flag_walk_trainers.py).
PRETRAINING_REFUSED_FIELDS = dict(LOSS_REPLACED_FIELDS)


@dataclass
class MaskedDiffusionConfig(DiffusionArguments, ActivationCheckpointingOff, DeviceDefaults, TrainingArguments):
    """[`TrainingArguments`] plus the masked-diffusion pre-training settings. Defaults follow the reference."""

    block_size: int = field(
        default=512, metadata={"help": "Length of the packed training sequences (documents joined by EOS)."}
    )
    dataset_text_field: str = field(
        default="text", metadata={"help": "Column holding raw text when the dataset is not tokenized yet."}
    )
    random_length_probability: float = field(
        default=0.01,
        metadata={"help": "Probability of cutting a step's batches to a random length in [1, l] (reference: 0.01)."},
    )

    def __post_init__(self):
        sync_checkpointing_names(self)
        self._resolve_device_defaults()
        super().__post_init__()
        refuse_unsupported_fields(self, PRETRAINING_REFUSED_FIELDS, "masked-diffusion pre-training")
        self._check_diffusion_arguments()
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}.")


def check_pretraining_dataset(dataset, text_field: str = "text", name: str = "train") -> None:
    """Check, before anything is tokenized, that `dataset` has rows and a column to pre-train on (`text_field` or
    tokenized `input_ids`); a `ValueError` naming the dataset, its columns and the setting to change otherwise."""
    if dataset is None:
        return
    if isinstance(dataset, dict):
        for key, entry in dataset.items():
            check_pretraining_dataset(entry, text_field, f"eval {key!r}")
        return
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty (0 rows); pre-training needs text to pack into blocks.")
    columns = list(dataset.column_names or [])
    if columns and "input_ids" not in columns and text_field not in columns:
        raise ValueError(
            f"The {name} dataset has columns {columns}, but neither the text column '{text_field}' "
            "(dataset_text_field) nor tokenized 'input_ids'; set dataset_text_field to the column holding your text "
            f"(e.g. dataset_text_field='{columns[0]}')."
        )
    check_no_null_fields(dataset, (text_field, "input_ids"), f"{name} dataset")


def pack_dataset(
    dataset: Dataset,
    block_size: int,
    eos_token_id: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_field: str = "text",
    name: str = "train",
) -> Dataset:
    """Tokenize (if needed) and pack documents into `block_size` blocks, with EOS after every document.

    Accepts a dataset with `input_ids` (already tokenized) or a `text_field` column (needs `tokenizer`). The tail that
    does not fill a whole block is dropped. Returns a dataset with one column, `input_ids`. `name` ("train", "eval")
    names the dataset in error messages.
    """
    check_pretraining_dataset(dataset, text_field, name)
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

    def pack(batch):
        stream = [token for ids in batch["input_ids"] for token in (*ids, eos_token_id)]
        usable = len(stream) // block_size * block_size
        return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}

    packed = tokenized.map(pack, batched=True, batch_size=1000, remove_columns=tokenized.column_names)
    if len(packed) == 0:
        tokens = sum(len(ids) for ids in tokenized["input_ids"]) + len(tokenized)
        raise ValueError(
            f"The {name} dataset holds {tokens} tokens ({len(tokenized)} document(s), each followed by EOS), fewer "
            f"than block_size={block_size}, so not one block can be filled; lower block_size to at most {tokens} or "
            "add text."
        )
    return packed


def collate_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack packed blocks (all of length block_size) and their example ids."""
    return {
        "input_ids": torch.tensor([example["input_ids"] for example in examples], dtype=torch.long),
        EXAMPLE_ID: torch.tensor([example[EXAMPLE_ID] for example in examples], dtype=torch.long),
    }


class MaskedDiffusionTrainer(DiffusionTrainerMixin, Trainer):
    """Pre-trains a LLaDA model with the masked-diffusion objective (loss = sum of CE / p_mask over b * l); LLaDA-MoE
    adds the routers' load-balancing loss, LLaDA 2 trains with block diffusion (`args.objective`, see
    [`DiffusionArguments`]).

    Args:
        model: a LLaDA family model (`LLaDAModelLM`, `LLaDAMoEModelLM`, `LLaDA2MoeModelLM`), or a PEFT-wrapped one.
        args: [`MaskedDiffusionConfig`].
        train_dataset / eval_dataset: `datasets.Dataset` of raw text (`dataset_text_field`) or of `input_ids`; packed
            into `block_size` blocks with EOS between documents.
        processing_class: the tokenizer (needed for raw text; saved with checkpoints). Its mask token gives the mask
            id when the model config has none (`resolve_mask_token_id`).
        peft_config: a `peft.LoraConfig` to train adapters only; `target_modules=None` picks the model's defaults
            (`trainers.peft_utils`; never the output head or a router).
    """

    def __init__(self, model, args: MaskedDiffusionConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, peft_config=None, **kwargs):
        args = resolve_args(args, MaskedDiffusionConfig, "llada-pretrain")
        resolve_mask_token_id(model, processing_class)  # before any data is prepared
        model = maybe_wrap_with_peft(model, peft_config, args)  # a 4/8-bit base: k-bit preparation first
        eos = model.config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos

        def prepare(dataset, name):
            if dataset is None:
                return None
            if isinstance(dataset, dict):
                return {key: prepare(entry, f"eval {key!r}") for key, entry in dataset.items()}
            return with_example_ids(pack_dataset(dataset, args.block_size, eos, processing_class,
                                                 args.dataset_text_field, name))

        check_pretraining_dataset(train_dataset, args.dataset_text_field, "train")  # both, before any tokenizing
        check_pretraining_dataset(eval_dataset, args.dataset_text_field, "eval")
        super().__init__(
            model=model,
            args=args,
            train_dataset=prepare(train_dataset, "train"),
            eval_dataset=prepare(eval_dataset, "eval"),
            processing_class=processing_class,
            data_collator=data_collator or collate_blocks,
            **kwargs,
        )
        # The loss is a mean over its micro-batch; Trainer averages it over accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}  # e.g. aux_loss, as TRL keeps them

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log with the averages of the extra metrics (`aux_loss`) since the last log."""
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        logs.update({f"eval_{key}" if mode == "eval" else key: value for key, value in metrics.items()})
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, masked = self.diffusion_loss(model, inputs["input_ids"], inputs[EXAMPLE_ID])
        return (loss, {"masked": masked}) if return_outputs else loss
