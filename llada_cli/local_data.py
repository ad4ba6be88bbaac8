"""Data that needs no download: an English corpus that ships with Python, a byte-level BPE tokenizer with LLaDA's
special tokens and chat template, and an instruction task whose answers can be checked.

The examples, the tests and the quickstart use these so that nothing is fetched from the Hub at run time; real
users pass Hub ids or local files instead. `StopAtAccuracy` stops a fine-tuning run on such a task at a chosen
accuracy (the alignment examples start from a middling model).
"""

import random

from datasets import Dataset
from transformers import PreTrainedTokenizerFast, TrainerCallback

# LLaDA-8B-Instruct's special tokens (REFERENCE.md section 2), so that chat data looks like the real model's.
BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, MASK, START_HEADER, END_HEADER, EOT]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def python_docs_corpus(min_chars: int = 200) -> Dataset:
    """About 465k characters of English from the standard library's `pydoc_data.topics`, one paragraph per row."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for paragraph in topics[name].split("\n\n"):
            text = " ".join(paragraph.split())
            if len(text) >= min_chars:
                paragraphs.append(text)
    return Dataset.from_dict({"text": paragraphs})


def train_tokenizer(texts, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (under a second for the docs corpus), with LLaDA's special
    tokens (BOS, EOS = pad, `<|mdm_mask|>` as `mask_token`, chat headers), its chat template, and one token per
    digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    # digits are single tokens (as in Llama), so numbers tokenize the same wherever they appear
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS, mask_token=MASK,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT], padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def addition_task(size: int, seed: int = 0, low: int = 0, high: int = 99, conversational: bool = False) -> Dataset:
    """Instruction pairs "What is a + b?" -> "c": a template task whose answers can be checked exactly.

    Returns `prompt`/`completion` columns (plain strings, or chat messages with `conversational=True`) plus the
    integer `answer`.
    """
    rng = random.Random(seed)
    rows = {"prompt": [], "completion": [], "answer": []}
    for _ in range(size):
        a, b = rng.randint(low, high), rng.randint(low, high)
        question, answer = f"What is {a} + {b}?", str(a + b)
        if conversational:
            rows["prompt"].append([{"role": "user", "content": question}])
            rows["completion"].append([{"role": "assistant", "content": answer}])
        else:
            rows["prompt"].append(question + " Answer:")
            rows["completion"].append(" " + answer)
        rows["answer"].append(a + b)
    return Dataset.from_dict(rows)


def digit_copy_task(count: int, digits: int, seed: int) -> list[tuple[str, str]]:
    """("Repeat: 3 1 4 1 5", "3 1 4 1 5") pairs: answers that can be checked exactly."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        text = " ".join(rng.choice("0123456789") for _ in range(digits))
        pairs.append((f"Repeat: {text}", text))
    return pairs


def copy_preference_task(count: int, digits: int, seed: int) -> Dataset:
    """Preference pairs for the copy task, in chat format: `chosen` copies the digits of the prompt, `rejected` is the
    same answer with one digit changed (TRL's `prompt`/`chosen`/`rejected` columns)."""
    rng = random.Random(seed)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for question, answer in digit_copy_task(count, digits, seed):
        wrong = answer.split()
        position = rng.randrange(len(wrong))
        wrong[position] = rng.choice([d for d in "0123456789" if d != wrong[position]])
        rows["prompt"].append([{"role": "user", "content": question}])
        rows["chosen"].append([{"role": "assistant", "content": answer}])
        rows["rejected"].append([{"role": "assistant", "content": " ".join(wrong)}])
    return Dataset.from_dict(rows)


def on_policy_preference_pairs(model, tokenizer, pairs, generation: dict, samples: int = 4, temperature: float = 1.0,
                               seed: int = 0, batch_size: int = 64) -> Dataset:
    """Preference pairs from a model's own mistakes on (question, answer) pairs, in chat format.

    `model.generate` samples `samples` answers per question at `temperature` (independent draws, reproducible from
    `seed`); each distinct wrong one becomes a `rejected` answer with the correct answer as `chosen`. Questions the
    model always answers right give no pair. Preference optimisation on such pairs pushes down the answers the model
    actually generates, which is what moves its generate accuracy (corrupted answers it would never write do not).
    """
    import torch

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}; it is the number of answers drawn per question.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; greedy decoding draws one answer per question.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    rows = {"prompt": [], "chosen": [], "rejected": []}
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            prompts = [tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                     add_generation_prompt=True, tokenize=True, return_dict=False)
                       for question, _ in chunk]
            longest = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=model.device)
            mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=model.device)
            with torch.no_grad():
                out = model.generate(ids, attention_mask=mask, temperature=temperature, num_return_sequences=samples,
                                     seed=seed + start, **generation)
            texts = [tokenizer.decode(row).split(EOT)[0].strip() for row in out[:, longest:]]
            for index, (question, answer) in enumerate(chunk):
                for wrong in sorted(set(texts[index * samples : (index + 1) * samples]) - {answer}):
                    rows["prompt"].append([{"role": "user", "content": question}])
                    rows["chosen"].append([{"role": "assistant", "content": answer}])
                    rows["rejected"].append([{"role": "assistant", "content": wrong}])
    finally:
        model.train(was_training)
    return Dataset.from_dict(rows)


class StopAtAccuracy(TrainerCallback):
    """Stop training once `measure(model)`, an accuracy in [0, 1], reaches `target`; measured every `every` steps from
    step `first` (the model is put back in training mode after each measurement; `report(step, accuracy)` sees each).

    How many SFT steps reach a given accuracy on the toy tasks differs from machine to machine (the accuracy rises
    steeply with the steps), so the alignment examples and tests pin their starting model by accuracy instead."""

    def __init__(self, measure, target: float, every: int = 5, first: int = 40, report=None):
        self.measure, self.target, self.every, self.first, self.report = measure, target, every, first, report

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step >= self.first and step % self.every == 0:
            accuracy = self.measure(model)
            model.train()
            if self.report is not None:
                self.report(step, accuracy)
            if accuracy >= self.target:
                control.should_training_stop = True
        return control
