"""The reversal curse at toy scale: LLaDA against an autoregressive model of the same size, data and steps.

The paper (arXiv 2502.09992, Table 4, reversal poem completion) reports LLaDA 8B at 42.4 forward / 36.4 reversed
against GPT-4o at 82.7 / 34.3: the autoregressive model completes the *next* line of a poem far better than the
*previous* one, while the masked-diffusion model, which learned to fill masks on both sides, barely cares.

Here, on a CPU:
1. a corpus of synthetic "poems" (lines of three words from a word list, every line unique);
2. pre-training, in reading order only, of a small LLaDA (masked diffusion, this project's trainer) and of
   transformers' `LlamaForCausalLM` of the same shape (stock `Trainer`), same batches, optimiser and steps;
3. SFT of both on *other* poems in both directions ("next : <line>" -> following line, "previous : <line>" ->
   preceding line), LLaDA with `MaskedDiffusionSFTTrainer`, the Llama with TRL's `SFTTrainer`;
4. exact-match accuracy on held-out pairs of the pre-training poems (never seen in SFT), forward and reversed,
   LLaDA generating through `model.generate`, the Llama through its greedy `generate`;
5. before SFT, the same held-out pairs asked in the pre-training format (`recitation`): what each model stored,
   without the task format in the way.

    python examples/paper/reversal.py                 # ~13 minutes on 2 CPU cores; prints tables, saves a plot
    python examples/paper/reversal.py --layout crops  # the same with poems cut at random positions (~15 minutes)
    python examples/paper/reversal.py --quick         # seconds: the pipeline only (CI)
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import describe_pair, model_pair, optimiser_settings, pretrain_ar

from trainers import (
    MaskedDiffusionConfig,
    MaskedDiffusionSFTConfig,
    MaskedDiffusionSFTTrainer,
    MaskedDiffusionTrainer,
    pack_dataset,
)
from trainers.compat import checkpointing_settings

BOS, EOS, MASK = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"
DIRECTIONS = {"forward": "next", "reversed": "previous"}


def word_list(size: int, seed: int) -> list[str]:
    """`size` distinct common English words (3-7 letters) from the standard library's documentation, shuffled; the
    task words ("next", "previous") are left out."""
    from collections import Counter
    from pydoc_data.topics import topics

    counts = Counter(word for text in topics.values() for word in text.lower().split()
                     if word.isalpha() and word.isascii() and 3 <= len(word) <= 7 and word not in DIRECTIONS.values())
    words = sorted(word for word, _ in counts.most_common(size))
    if len(words) < size:
        raise ValueError(f"only {len(words)} distinct words are available, asked for {size}")
    random.Random(seed).shuffle(words)
    return words


def make_poems(count: int, lines: int, words_per_line: int, words: list[str], seed: int) -> list[list[str]]:
    """`count` poems of `lines` lines; a line is `words_per_line` distinct words; no line occurs twice in the corpus
    (so a line names its poem and position, and the next/previous line is well defined)."""
    rng = random.Random(seed)
    seen, poems = set(), []
    for _ in range(count):
        poem = []
        while len(poem) < lines:
            line = " ".join(rng.sample(words, words_per_line))
            if line not in seen:
                seen.add(line)
                poem.append(line)
        poems.append(poem)
    return poems


def poem_text(poem: list[str]) -> str:
    return " ".join(line + " ." for line in poem)


def line_pairs(poems: list[list[str]], direction: str) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: "next : <line i> ." -> " <line i+1> ." (forward) or
    "previous : <line i+1> ." -> " <line i> ." (reversed)."""
    pairs = []
    for poem in poems:
        for before, after in zip(poem, poem[1:]):
            if direction == "forward":
                pairs.append((f"{DIRECTIONS[direction]} : {before} .", f" {after} ."))
            else:
                pairs.append((f"{DIRECTIONS[direction]} : {after} .", f" {before} ."))
    return pairs


def poem_tokenizer(words: list[str]):
    """A word-level tokenizer: the poem words, the task words, LLaDA's BOS/EOS/mask; BOS is prepended to every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = [BOS, EOS, MASK, ".", ":", *DIRECTIONS.values(), *words]
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=MASK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   mask_token=MASK, padding_side="left")


def pretraining_rows(poems, tokenizer, layout: str, passes: int, seed: int) -> tuple[Dataset, int]:
    """The pre-training rows (reading order only) and the block length the trainers cut them into; the trainer
    appends EOS to every row, then cuts the stream into blocks. Both models train on the same blocks."""
    ids = [tokenizer(poem_text(p))["input_ids"] for p in poems]
    block = len(ids[0]) + 1
    if layout == "rows":
        return Dataset.from_dict({"input_ids": ids}), block
    rng = random.Random(seed)
    streams = []
    for _ in range(passes):
        order = rng.sample(range(len(ids)), len(ids))
        stream = [token for i in order for token in (*ids[i], tokenizer.eos_token_id)]
        streams.append(stream[rng.randrange(block) : -1])  # a random phase; the trainer re-appends the last EOS
    return Dataset.from_dict({"input_ids": streams}), block


@torch.no_grad()
def accuracy(model, tokenizer, pairs, is_llada: bool, batch_size: int = 100) -> float:
    """Exact match of the generated line (its words and the final '.') with the true one."""
    model.eval()
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = tokenizer([prompt for prompt, _ in chunk], return_tensors="pt", padding=True)
        targets = [tokenizer(answer, add_special_tokens=False)["input_ids"] for _, answer in chunk]
        new = len(targets[0]) + 1  # the line, '.', and EOS
        if is_llada:  # low-confidence remasking, one token per step, the whole answer as one block
            out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=new,
                                 steps=new, block_length=new)
        else:
            out = model.generate(**batch, max_new_tokens=new, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = out[:, batch["input_ids"].shape[1]:]
        correct += sum(row[: len(t)].tolist() == t for row, t in zip(generated, targets))
    return correct / len(pairs)


@torch.no_grad()
def recitation(model, tokenizer, poems, words_per_line: int, is_llada: bool) -> dict[str, float | None]:
    """Recall of held-out pairs in the pre-training format (before SFT, no task words): forward = line i from the
    lines before it, reversed = line i-1 from the lines after it, for every i >= 1 of every poem.

    LLaDA gets the whole row (BOS, poem, EOS) with the unknown part masked and fills it in one forward pass (argmax);
    the autoregressive model continues the beginning greedily. It cannot be asked the reversed question at all (it
    conditions on the left only), which is the reversal curse in its plainest form: None.

    "forward, moved" asks for line i + 1 from line i alone (i >= 1) written where a poem's first line goes
    ("BOS line_i ." then the unknown line, the rest masked for LLaDA): whether what follows a line is known wherever
    the line appears, or only at the position where it was learned. Task prompts put lines at new positions.
    """
    model.eval()
    rows = torch.tensor([tokenizer(poem_text(p))["input_ids"] + [tokenizer.eos_token_id] for p in poems])
    stride = words_per_line + 1
    found = {"forward": [], "reversed": [], "forward, moved": []}
    for i in range(1, len(poems[0])):
        start = 1 + i * stride  # first word of line i (after BOS and i lines with their '.')
        line_i = slice(start, start + words_per_line)
        line_before = slice(start - stride, start - 1)
        if is_llada:
            forward = rows.clone()
            forward[:, start:-1] = tokenizer.mask_token_id
            found["forward"].append(model(forward).logits[:, line_i].argmax(-1) == rows[:, line_i])
            backward = rows.clone()
            backward[:, 1:start] = tokenizer.mask_token_id
            found["reversed"].append(model(backward).logits[:, line_before].argmax(-1) == rows[:, line_before])
        else:
            out = model.generate(rows[:, :start], attention_mask=torch.ones_like(rows[:, :start]),
                                 max_new_tokens=words_per_line, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            found["forward"].append(out[:, line_i] == rows[:, line_i])
        # line i as if it opened the poem, asked for line i + 1
        if i + 1 < len(poems[0]):
            moved = torch.full_like(rows, tokenizer.mask_token_id)
            moved[:, 0], moved[:, -1] = rows[:, 0], rows[:, -1]
            moved[:, 1 : stride + 1] = rows[:, start : start + stride]  # line i and its '.'
            target = rows[:, start + stride : start + stride + words_per_line]
            slot = slice(1 + stride, 1 + stride + words_per_line)
            if is_llada:
                found["forward, moved"].append(model(moved).logits[:, slot].argmax(-1) == target)
            else:
                out = model.generate(moved[:, : 1 + stride], attention_mask=torch.ones_like(moved[:, : 1 + stride]),
                                     max_new_tokens=words_per_line, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
                found["forward, moved"].append(out[:, slot] == target)
    return {direction: torch.cat(hits).all(-1).float().mean().item() if hits else None
            for direction, hits in found.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="paper_reversal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poems", type=int, default=200, help="poems in the pre-training corpus")
    parser.add_argument("--sft_poems", type=int, default=100, help="of those, poems whose line pairs teach the task")
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--words_per_line", type=int, default=3)
    parser.add_argument("--vocabulary", type=int, default=200, help="distinct words")
    parser.add_argument("--pretrain_steps", type=int, default=6000)
    parser.add_argument("--sft_steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--sft_learning_rate", type=float, default=5e-4)
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--n_heads", type=int, default=4)
    parser.add_argument("--mlp_hidden_size", type=int, default=384)
    parser.add_argument("--layout", choices=["rows", "crops"], default="rows",
                        help="rows: one poem per training row (BOS poem EOS), always at the same positions; crops: "
                        "every pass over the poems (reshuffled) is one text stream cut into rows of the same length "
                        "at a random phase, so lines occur at every position, as in packed LLM pre-training")
    parser.add_argument("--passes", type=int, default=40, help="shuffled passes over the poems with --layout crops")
    parser.add_argument("--quick", action="store_true", help="a seconds-long run that only exercises the pipeline")
    args = parser.parse_args(argv)
    if args.quick:
        args.poems, args.sft_poems, args.pretrain_steps, args.sft_steps, args.vocabulary = 12, 6, 4, 4, 40
    if not 0 < args.sft_poems < args.poems:
        parser.error(f"--sft_poems must be between 1 and --poems - 1, got {args.sft_poems} (of {args.poems})")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()

    words = word_list(args.vocabulary, args.seed)
    poems = make_poems(args.poems, args.lines, args.words_per_line, words, args.seed)
    tokenizer = poem_tokenizer(words)
    llada, llama = model_pair(tokenizer, args.d_model, args.n_layers, args.n_heads, args.mlp_hidden_size, 64,
                              args.seed)
    parameters = describe_pair(llada, llama)
    print(parameters)

    # 1. pre-training on the poems in reading order only (see --layout); the same blocks for both models
    rows, block = pretraining_rows(poems, tokenizer, args.layout, args.passes, args.seed)
    shared = optimiser_settings(args.pretrain_steps, args.batch_size, args.learning_rate, args.seed,
                                warmup_steps=max(1, args.pretrain_steps // 20))
    steps = {}
    trainer = MaskedDiffusionTrainer(
        llada, MaskedDiffusionConfig(output_dir=str(out / "llada-pretrain"), block_size=block,
                                     random_length_probability=0.0, **shared),
        train_dataset=rows, processing_class=tokenizer,
    )
    trainer.train()
    steps["pre-training"] = [trainer.state.global_step]
    blocks = pack_dataset(rows, block, tokenizer.eos_token_id)  # what the LLaDA trainer made of the same rows
    steps["pre-training"].append(pretrain_ar(llama, blocks, str(out / "ar-pretrain"), **shared).state.global_step)

    sft_poems, held_out = poems[: args.sft_poems], poems[args.sft_poems :]
    models = (("LLaDA (masked diffusion)", llada, True), ("Llama (autoregressive)", llama, False))
    recited = {name: recitation(model, tokenizer, held_out, args.words_per_line, is_llada)
               for name, model, is_llada in models}

    # 2. SFT on the first `sft_poems` poems, both directions, same examples in the same order for both models
    sft_pairs = line_pairs(sft_poems, "forward") + line_pairs(sft_poems, "reversed")
    sft_data = Dataset.from_dict({"prompt": [p for p, _ in sft_pairs], "completion": [c for _, c in sft_pairs]})
    sft_shared = optimiser_settings(args.sft_steps, args.batch_size, args.sft_learning_rate, args.seed,
                                    warmup_steps=max(1, args.sft_steps // 20))
    sft_shared.update(max_length=64, completion_only_loss=True, **checkpointing_settings(False))
    from trl import SFTConfig, SFTTrainer

    steps["SFT"] = []
    for trainer in (
        MaskedDiffusionSFTTrainer(llada, MaskedDiffusionSFTConfig(output_dir=str(out / "llada-sft"), **sft_shared),
                                  train_dataset=sft_data, processing_class=tokenizer),
        SFTTrainer(llama, SFTConfig(output_dir=str(out / "ar-sft"), **sft_shared), train_dataset=sft_data,
                   processing_class=tokenizer),
    ):
        trainer.train()
        steps["SFT"].append(trainer.state.global_step)

    # 3. exact match on held-out pairs (in pre-training, never in SFT), and on the SFT pairs as a sanity check
    results = {}
    for name, model, is_llada in models:
        results[name] = {
            f"{direction} ({split})": accuracy(model, tokenizer, line_pairs(split_poems, direction), is_llada)
            for split, split_poems in (("held-out", held_out), ("SFT poems", sft_poems))
            for direction in DIRECTIONS
        }
    summary = {
        "seed": args.seed, "layout": args.layout, "parameters": parameters, "arguments": vars(args),
        "pairs per direction": {"held-out": len(line_pairs(held_out, "forward")),
                                "SFT poems": len(line_pairs(sft_poems, "forward"))},
        "optimiser steps (LLaDA, Llama)": steps,
        "accuracy after SFT": results, "recitation before SFT (held-out)": recited,
        "seconds": round(time.time() - began, 1),
    }
    print(f"optimiser steps (LLaDA, Llama): {steps}")
    print("After SFT, exact match of the generated line:")
    print_table(results)
    print("Before SFT, recitation of the held-out pairs in the pre-training format:")
    print_table(recited)
    (out / "reversal.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, recited, out / "reversal.png", args.seed, args.layout)
    print(f"saved {out / 'reversal.json'} and {out / 'reversal.png'} ({summary['seconds']} s, seed {args.seed})")
    return summary


def print_table(results: dict) -> None:
    columns = list(next(iter(results.values())))
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join("cannot be asked" if row[c] is None else f"{100 * row[c]:.1f}%"
                                          for c in columns) + " |")


def plot(results: dict, recited: dict, path: Path, seed: int, layout: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    panels = ((axes[0], "after SFT: task prompts on held-out pairs", results, " (held-out)"),
              (axes[1], "before SFT: recitation in the pre-training format", recited, ""))
    width = 0.38
    for ax, title, table, suffix in panels:
        for i, (name, row) in enumerate(table.items()):
            values = [100 * (row[d + suffix] or 0.0) for d in DIRECTIONS]
            bars = ax.bar([x + (i - 0.5) * width for x in range(len(values))], values, width, label=name)
            labels = ["n/a" if row[d + suffix] is None else f"{v:.0f}%" for d, v in zip(DIRECTIONS, values)]
            ax.bar_label(bars, labels=labels)
        ax.set_xticks(range(len(DIRECTIONS)), [f"{d}\n({w} line)" for d, w in DIRECTIONS.items()])
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 115)
    axes[0].set_ylabel("exact match (%)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Reversal curse at toy scale: same size, data and steps (layout {layout}, seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
