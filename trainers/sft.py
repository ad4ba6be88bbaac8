"""Response-only masked-diffusion SFT on TRL's `SFTTrainer` (REFERENCE.md section 4).

TRL prepares the data as usual (prompt/completion, conversational `messages` through the chat template); we keep
its prompt mask and replace the causal-LM parts: the collator pads answers with EOS (tokens the model learns to
emit, the reference behaviour), and `compute_loss` is the SFT diffusion objective with the prompt never masked.
"""

import copy
import math
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from modeling_llada.answers_llada import decode_answers, end_token_ids
from modeling_llada.mask_id import resolve_mask_token_id

from .base import (
    EXAMPLE_ID,
    LOSS_REPLACED_FIELDS,
    CPUSafeDefaults,
    DiffusionArguments,
    DiffusionTrainerMixin,
    check_no_null_fields,
    refuse_unsupported_fields,
    resolve_args,
    with_example_ids,
)
from .compat import logging, quiet_upstream_deprecations, sync_checkpointing_names
from .peft_utils import adapters_in_training_precision, with_llada_defaults, wrap_kbit_model

logger = logging.get_logger(__name__)
# a run that reads each training example this many times or more gets a warning (too little data for the steps)
SMALL_DATASET_PASSES = 25
_PACKING = "without a per-document attention mask the bidirectional model would attend across packed examples"
# The SFTConfig / TrainingArguments fields LLaDA SFT refuses unless left at their defaults: field -> (the values
# accepted, why another would do nothing). SFTConfig's other fields reach what they govern: TRL's own code reads them
# (data preparation, model loading, activation offloading), or ours does (eos_token and pad_to_multiple_of in the
# collator, router_aux_loss_coef in the loss); tests/test_flag_walk_trainers.py classifies every field.
SFT_REFUSED_FIELDS = {
    **LOSS_REPLACED_FIELDS,
    "packing": ((False,), _PACKING),
    "padding_free": ((False,), _PACKING),
    "packing_strategy": (("bfd",), "it is read only with packing, which LLaDA SFT does not support"),
    "eval_packing": ((None, False), "it packs the eval dataset; " + _PACKING),
    "completion_only_loss": ((None, True), "LLaDA SFT never masks the prompt"),
    "assistant_only_loss": ((False,), "LLaDA SFT learns the last assistant turn of a 'messages' conversation (the "
                                      "earlier turns are its prompt) and reads no assistant mask"),
    # TRL 1.14 resolves its default (None) to "chunked_nll", TRL 1.16 defaults to "nll": the same NLL, both replaced
    "loss_type": (("nll", "chunked_nll", None), "the masked-diffusion SFT loss replaces TRL's token losses (nll, "
                                               "dft)"),
    "pad_token": ((None,), "answers are padded with EOS, the token LLaDA learns to end its canvas with (the "
                           "reference); no pad token is used"),
}


@dataclass
class MaskedDiffusionSFTConfig(CPUSafeDefaults, DiffusionArguments, SFTConfig):
    """[`trl.SFTConfig`] plus the masked-diffusion settings, with defaults that are safe on a CPU.

    Differences from SFTConfig: `bf16` defaults to True only when CUDA is available (bf16 on a CPU is ~25x slower);
    activation (gradient) checkpointing defaults to False; `completion_only_loss` is always True (LLaDA never masks the prompt);
    packing and padding-free batches are rejected (a bidirectional model would attend across documents), as is
    every field of `SFT_REFUSED_FIELDS` set away from its default (one line naming the field and why). `eos_token`
    ends and pads the answers; `pad_to_multiple_of` rounds the batch length up (with EOS padding).
    """

    train_on_padding: bool = field(
        default=True,
        metadata={
            "help": "Pad answers with EOS to the batch length and train on that padding (the reference: the model "
            "learns to fill the tail of its canvas with EOS). False excludes the padding from loss and attention."
        },
    )
    random_length_probability: float = field(
        default=0.0,
        metadata={"help": "Probability of cutting a step's batches to a random length in [1, l]."},
    )

    def __post_init__(self):
        if self.packing or self.padding_free:
            raise ValueError(
                "packing/padding_free are not supported for LLaDA SFT: without a per-document attention mask the "
                "bidirectional model would attend across packed examples. Set packing=False and padding_free=False."
            )
        if self.completion_only_loss is False:
            raise ValueError("LLaDA SFT never masks the prompt; completion_only_loss=False is not supported.")
        self.completion_only_loss = True
        sync_checkpointing_names(self)
        self._resolve_device_defaults()
        super().__post_init__()
        refuse_unsupported_fields(self, SFT_REFUSED_FIELDS, "LLaDA SFT")
        self._check_diffusion_arguments()


@dataclass
class DiffusionSFTCollator:
    """Right-pads TRL's prepared examples with EOS and marks what the forward process may mask.

    Input examples carry `input_ids` and `labels` (-100 on the prompt, as TRL builds them). Output: `input_ids`,
    `attention_mask`, `maskable` (answer positions, padding EOS included when `train_on_padding`), `answer_lengths`
    (the maskable count per row) and `example_id`. `pad_to_multiple_of` rounds the batch length up to a multiple.
    """

    eos_token_id: int
    train_on_padding: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = [torch.as_tensor(example["input_ids"], dtype=torch.long) for example in examples]
        labels = [torch.as_tensor(example["labels"], dtype=torch.long) for example in examples]
        lengths = torch.tensor([len(x) for x in ids])
        width = int(lengths.max())
        if self.pad_to_multiple_of:  # the batch length rounded up (SFTConfig.pad_to_multiple_of)
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(ids), width), self.eos_token_id, dtype=torch.long)
        is_answer = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, (tokens, label) in enumerate(zip(ids, labels)):
            input_ids[row, : len(tokens)] = tokens
            is_answer[row, : len(label)] = label != -100
        real = torch.arange(input_ids.shape[1])[None] < lengths[:, None]
        maskable = is_answer | ~real if self.train_on_padding else is_answer
        return {
            "input_ids": input_ids,
            "attention_mask": (torch.ones_like(real) if self.train_on_padding else real).long(),
            "maskable": maskable,
            "answer_lengths": maskable.sum(-1),
            EXAMPLE_ID: torch.tensor([example[EXAMPLE_ID] for example in examples], dtype=torch.long),
        }


def _dataset_label(name: str) -> str:
    """How messages call a dataset TRL prepares under `name`: "train dataset", "eval dataset", "eval dataset 'x'"."""
    return f"{name} dataset" if name in ("train", "eval") else f"eval dataset {name!r}"


def check_sft_dataset(dataset, name: str = "train", text_field: str = "text") -> None:
    """Check, before anything is tokenized, that a dataset can be used for SFT; a `ValueError` naming the dataset,
    its columns and the accepted ones otherwise.

    Accepted (TRL's formats): `prompt` + `completion` (plain text or chat messages), `messages` (a conversation ending
    with the assistant's answer), `text_field` (plain text, `dataset_text_field`) or tokenized `input_ids`. A dict of
    datasets is checked entry by entry; an `IterableDataset` only for its columns (when its features are known).
    """
    if dataset is None:
        return
    if isinstance(dataset, dict):
        for key, entry in dataset.items():
            check_sft_dataset(entry, key, text_field)
        return
    label = _dataset_label(name)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The {label} is empty (0 rows); pass at least one example (prompt and completion).")
    columns = list(getattr(dataset, "column_names", None) or [])
    if not columns and not isinstance(dataset, Dataset):
        return  # an IterableDataset whose features are unknown until read
    if {"prompt", "completion"} <= set(columns) or {"messages", text_field, "input_ids"} & set(columns):
        check_no_null_fields(dataset, ("prompt", "completion", "messages", text_field), label)
        return
    hint = ""
    if "prompt" in columns:
        hint = " It has 'prompt' but no 'completion' (the answer the model learns)."
    elif "completion" in columns:
        hint = " It has 'completion' but no 'prompt'."
    elif "conversations" in columns:
        hint = (" 'conversations' (ShareGPT from/value turns) is not read as is: convert it to 'messages' with "
                "role/content turns (trl.data_utils.maybe_convert_to_chatml).")
    raise ValueError(
        f"The {label} has columns {columns}, none of the formats LLaDA SFT accepts: 'prompt' and 'completion' (plain "
        "text or chat messages), 'messages' (a conversation ending with the assistant's answer), "
        f"'{text_field}' (plain text; the column named by dataset_text_field) or tokenized 'input_ids'.{hint} Rename "
        "your columns (dataset.rename_columns) or set dataset_text_field."
    )


def split_last_assistant_turn(dataset: Dataset, name: str = "train") -> Dataset:
    """Conversational `messages` -> `prompt` (all earlier turns) + `completion` (the last assistant turn)."""
    if isinstance(dataset, Dataset):  # name the first row that has no answer, before anything is mapped
        for index, messages in enumerate(dataset["messages"]):
            if not messages or messages[-1]["role"] != "assistant":
                ending = repr(messages[-1]["role"]) if messages else "nothing (no messages)"
                raise ValueError(
                    f"Row {index} of the {_dataset_label(name)} has a conversation ending with {ending}; every "
                    "'messages' conversation must end with an assistant turn (the response LLaDA learns). Fix or "
                    "drop that row."
                )

    def split(example):
        messages = example["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(
                "Every conversation must end with an assistant turn (the response LLaDA learns); got one ending with "
                f"{messages[-1]['role'] if messages else 'nothing'!r}."
            )
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    return dataset.map(split, remove_columns=["messages"])


class MaskedDiffusionSFTTrainer(DiffusionTrainerMixin, SFTTrainer):
    """Fine-tunes a LLaDA model on responses: prompts stay clean, answers (plus EOS padding) are masked.

    Accepts TRL's dataset formats: `prompt`/`completion` (plain or conversational) and `messages` (the response is
    the last assistant turn; earlier turns are the prompt). `peft_config=LoraConfig(...)` trains adapters;
    `target_modules=None` picks the model's defaults (`trainers.peft_utils`: LLaDA's block projections; for LLaDA-MoE
    and LLaDA 2 attention, dense MLPs and shared experts; never the output head or a router).

    Every family member trains with its official objective unless `args.objective` says otherwise: masked diffusion
    for LLaDA and LLaDA-MoE (plus the routers' load-balancing loss, `args.router_aux_loss_coef`), block diffusion
    (dFactory's recipe) for LLaDA 2. The mask id is the model config's, else the tokenizer's mask token, written into
    the config (`resolve_mask_token_id`: the official LLaDA-MoE and LLaDA 2 configs store none).
    """

    def __init__(self, model, args: MaskedDiffusionSFTConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, peft_config=None, **kwargs):
        args = resolve_args(args, MaskedDiffusionSFTConfig, "llada-sft")
        if processing_class is None:
            raise ValueError("Pass the tokenizer as processing_class (it tokenizes the data and is saved with the model).")
        if train_dataset is None:
            raise ValueError("Pass a train_dataset: MaskedDiffusionSFTTrainer prepares (tokenizes) it when built.")
        check_sft_dataset(train_dataset, "train", args.dataset_text_field)
        check_sft_dataset(eval_dataset, "eval", args.dataset_text_field)

        def convert(ds, name):
            if isinstance(ds, dict):
                return {key: convert(entry, key) for key, entry in ds.items()}
            if ds is not None and "messages" in (ds.column_names or []):
                return split_last_assistant_turn(ds, name)
            return ds

        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        # SFTConfig.eos_token: TRL makes it the tokenizer's EOS (ending every answer); the answers are padded with it
        eos = tokenizer.convert_tokens_to_ids(args.eos_token) if args.eos_token else processing_class.eos_token_id
        if eos is None:
            raise ValueError("The tokenizer has no eos_token; LLaDA pads answers with EOS. Set tokenizer.eos_token.")
        loaded = not isinstance(model, str)  # SFTTrainer loads a model given by name
        if loaded:
            resolve_mask_token_id(model, processing_class)  # before the data is prepared
        # TRL (>= 1.16) switches the config's output_router_logits on for its own MoE loss; ours asks for the router
        # logits per forward, so the saved config keeps the official value
        config = getattr(model, "config", None)
        router_logits_setting = getattr(config, "output_router_logits", None)
        model, peft_config = wrap_kbit_model(model, peft_config, args)
        with quiet_upstream_deprecations():
            super().__init__(
                model=model,
                args=args,
                train_dataset=convert(train_dataset, "train"),
                eval_dataset=convert(eval_dataset, "eval"),
                processing_class=processing_class,
                data_collator=data_collator or DiffusionSFTCollator(eos, args.train_on_padding,
                                                                    args.pad_to_multiple_of),
                peft_config=(with_llada_defaults(peft_config, None if isinstance(model, str) else model)
                             if peft_config is not None else None),
                **kwargs,
            )
        if router_logits_setting is not None:
            config.output_router_logits = router_logits_setting
        adapters_in_training_precision(self.model, args)
        if not loaded:
            resolve_mask_token_id(self.model, processing_class)
        self.train_dataset = with_example_ids(self.train_dataset)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {name: with_example_ids(ds) for name, ds in self.eval_dataset.items()}
        else:
            self.eval_dataset = with_example_ids(self.eval_dataset)
        self.model_accepts_loss_kwargs = False
        self._warn_if_dataset_is_small()

    def _warn_if_dataset_is_small(self) -> None:
        """Warn when the run reads every training example many times over: on a few dozen examples LLaDA learns
        to fill its canvas with the EOS padding (empty answers) or memorises them."""
        dataset, args = self.train_dataset, self.args
        if not isinstance(dataset, Dataset) or len(dataset) == 0:
            return
        rows = len(dataset)
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        passes = args.max_steps * batch / rows if args.max_steps > 0 else args.num_train_epochs
        if passes < SMALL_DATASET_PASSES:
            return
        steps = max(1, math.ceil(3 * rows / batch))
        logger.warning(
            f"The train dataset is small for this run: {rows} rows, and {args.max_steps if args.max_steps > 0 else 'the'}"
            f" steps of {batch} examples read each row about {passes:.0f} times. On so little data LLaDA tends to "
            "answer with EOS padding alone (empty answers) or to memorise the examples. Use more examples (hundreds "
            f"or more) or fewer steps (e.g. max_steps={steps}, about 3 passes)."
        )

    @torch.no_grad()
    def sample_answers(self, count: int = 3, dataset=None, **generation) -> list[dict[str, str]]:
        """Generate answers for `count` prompts of `dataset` (default: the eval dataset, else the train dataset),
        spread evenly over it; each result is {"prompt", "answer", "reference"} as text, the answer cut at the first
        end token (EOS, end of turn). Greedy by default; `generation` overrides `model.generate`'s kwargs (the
        default canvas fits the longest reference answer, one token per step).

        Logs a warning when every answer is empty (the model produced an end token first), the typical outcome of
        fine-tuning on too little data or for too few steps.
        """
        dataset = dataset if dataset is not None else (self.eval_dataset if isinstance(self.eval_dataset, Dataset)
                                                       else self.train_dataset)
        if dataset is None or len(dataset) == 0 or count < 1:
            return []
        tokenizer = self.processing_class
        picks = sorted({round(i * (len(dataset) - 1) / max(1, count - 1)) for i in range(min(count, len(dataset)))})
        rows = dataset.select(picks)
        prompts, references = [], []
        for ids, labels in zip(rows["input_ids"], rows["labels"]):
            prompt_length = sum(label == -100 for label in labels)
            prompts.append(list(ids[:prompt_length]))
            references.append(list(ids[prompt_length:]))
        model = self.accelerator.unwrap_model(self.model)
        llada = model.get_base_model() if hasattr(model, "get_base_model") else model
        ends = end_token_ids(llada.generation_config.eos_token_id, tokenizer)
        longest_reference = max(len(reference) for reference in references)
        length = min(256, max(8, -(-longest_reference // 8) * 8))
        settings = {"max_new_tokens": length, "steps": length, "block_length": length, "temperature": 0.0,
                    **generation}
        width = max(len(prompt) for prompt in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        device = next(model.parameters()).device
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        was_training = model.training
        model.eval()
        try:
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)
        finally:
            model.train(was_training)
        answers = decode_answers(tokenizer, out[:, width:], ends, [])
        longest = max(len(r) for r in references)
        padded = torch.tensor([r + [tokenizer.eos_token_id] * (longest - len(r)) for r in references])
        results = [{"prompt": tokenizer.decode(prompt, skip_special_tokens=True).strip(), "answer": answer.strip(),
                    "reference": reference.strip()}
                   for prompt, answer, reference in zip(prompts, answers, decode_answers(tokenizer, padded, ends, []))]
        if all(not result["answer"].strip() for result in results):
            logger.warning(
                f"All {len(results)} sampled answers are empty: the model ends its answer (EOS / end of turn) right "
                "away. This is what LLaDA learns from too little data or too few steps (the EOS padding it is "
                "trained on dominates); train on more examples or for more steps, or set train_on_padding=False."
            )
        return results

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """TRL's preparation, then a check of what its truncation dropped: rows whose prompt alone fills
        `max_length` have no answer token left and are removed; when that removes every row, a `ValueError` says by
        how much the prompts are too long (instead of training on zero samples)."""
        prepared = super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        if not (isinstance(dataset, Dataset) and isinstance(prepared, Dataset)) or len(prepared) == len(dataset):
            return prepared
        label, dropped = _dataset_label(dataset_name), len(dataset) - len(prepared)
        if len(prepared) > 0:
            logger.warning(f"{dropped} of {len(dataset)} rows of the {label} were dropped: their prompt fills "
                           f"max_length={args.max_length} tokens, leaving no answer token to learn. Raise max_length "
                           "to keep them.")
            return prepared
        unlimited = copy.copy(args)  # the same preparation without truncation, to measure the prompts
        unlimited.max_length = None
        full = super()._prepare_dataset(dataset, processing_class, unlimited, packing, formatting_func, dataset_name)
        prompts = [sum(token == -100 for token in labels) for labels in full["labels"]]
        longest = max(len(ids) for ids in full["input_ids"])
        raise ValueError(
            f"All {len(dataset)} rows of the {label} were dropped: max_length={args.max_length} leaves no answer "
            f"token in any of them, because every prompt fills it (prompt lengths: shortest {min(prompts)}, longest "
            f"{max(prompts)} tokens). Set max_length to at least {max(prompts) + 1} to keep every row ({longest} keeps "
            "every answer whole), or shorten the prompts."
        )

    def _likelihood_pairs(self, dataset) -> list[tuple[list[int], list[int]]]:
        """SFT examples are scored on their answer given their prompt (TRL's labels mark the answer)."""
        pairs = []
        for example in dataset:
            prompt_length = sum(label == -100 for label in example["labels"])
            pairs.append((list(example["input_ids"][:prompt_length]), list(example["input_ids"][prompt_length:])))
        return pairs

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "labels", EXAMPLE_ID]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, masked = self.diffusion_loss(
            model, inputs["input_ids"], inputs[EXAMPLE_ID], maskable=inputs["maskable"],
            attention_mask=inputs["attention_mask"], answer_lengths=inputs["answer_lengths"],
        )
        mode = "train" if model.training else "eval"
        self._metrics[mode]["masked_fraction"].append(
            (masked.sum() / inputs["maskable"].sum().clamp_min(1)).item()
        )
        return (loss, {"masked": masked}) if return_outputs else loss
