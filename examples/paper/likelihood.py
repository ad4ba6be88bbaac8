"""Likelihood at toy scale: LLaDA's bound against the exact NLL of an autoregressive model of the same size.

The paper (arXiv 2502.09992, section 3 and Figure 3) trains LLaDA and autoregressive baselines with the same data and
compute and finds the masked-diffusion model competitive. Here both models train on the same text (Python's own
documentation, nothing downloaded): a small LLaDA with this project's `MaskedDiffusionTrainer`, and transformers'
`LlamaForCausalLM` of the same shape with the stock `Trainer`: same blocks in the same order, optimiser, schedule and
steps. At several points of training both are scored on the same held-out blocks:

- the autoregressive model: the exact -log p(x_2..x_n | x_1) per token;
- LLaDA: its upper bound on the same quantity (REFERENCE.md section 6, `model.log_likelihood`, Monte Carlo).

A bound is not an exact likelihood: LLaDA's number over-states its NLL by an unknown gap (the paper makes the same
caveat), so "LLaDA <= AR" would be strong evidence and "LLaDA a little above AR" is what parity looks like.

    python examples/paper/likelihood.py           # ~10 minutes on 2 CPU cores; prints a table, saves a plot
    python examples/paper/likelihood.py --quick   # seconds: the pipeline only (CI)
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_common import (
    ar_nll_per_token,
    describe_pair,
    llada_nll_bound_per_token,
    model_pair,
    optimiser_settings,
    pretrain_ar,
)

from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer, pack_dataset
from llada_cli.local_data import python_docs_corpus, train_tokenizer


class HeldOutNLL(TrainerCallback):
    """Scores the model on the held-out blocks at the given optimiser steps (step 0 = before training)."""

    def __init__(self, score, points: list[int]):
        self.score, self.points, self.curve = score, set(points), {}

    def _maybe_score(self, state, model):
        if state.global_step in self.points and state.global_step not in self.curve:
            self.curve[state.global_step] = self.score(model)
            print(f"  step {state.global_step}: held-out NLL {self.curve[state.global_step]:.4f} nats/token")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._maybe_score(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._maybe_score(state, model)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="paper_likelihood")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--evaluations", type=int, default=8, help="evaluation points after step 0")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--vocabulary", type=int, default=2048)
    parser.add_argument("--held_out_blocks", type=int, default=64)
    parser.add_argument("--mc_num", type=int, default=64, help="Monte-Carlo samples of LLaDA's bound per block")
    parser.add_argument("--d_model", type=int, default=128)
    parser.add_argument("--n_layers", type=int, default=4)
    parser.add_argument("--n_heads", type=int, default=4)
    parser.add_argument("--mlp_hidden_size", type=int, default=384)
    parser.add_argument("--quick", action="store_true", help="a seconds-long run that only exercises the pipeline")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.evaluations, args.held_out_blocks, args.mc_num, args.vocabulary = 4, 2, 4, 4, 512
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()

    # the same text for both: paragraphs of the docs split into training and held-out ones
    corpus = python_docs_corpus()
    order = list(range(len(corpus)))
    random.Random(args.seed).shuffle(order)
    cut = len(order) // 20
    train_text, held_text = corpus.select(sorted(order[cut:])), corpus.select(sorted(order[:cut]))
    tokenizer = train_tokenizer(train_text["text"], vocab_size=args.vocabulary)
    eos = tokenizer.eos_token_id
    blocks = pack_dataset(train_text, args.block_size, eos, tokenizer)
    held_out = pack_dataset(held_text, args.block_size, eos, tokenizer)["input_ids"][: args.held_out_blocks]
    llada, llama = model_pair(tokenizer, args.d_model, args.n_layers, args.n_heads, args.mlp_hidden_size,
                              args.block_size, args.seed)
    parameters = describe_pair(llada, llama)
    print(parameters)
    print(f"training blocks: {len(blocks)} x {args.block_size} tokens "
          f"({args.steps * args.batch_size / len(blocks):.1f} epochs); held-out blocks: {len(held_out)}")

    points = sorted({round(args.steps * i / args.evaluations) for i in range(args.evaluations + 1)})
    shared = optimiser_settings(args.steps, args.batch_size, args.learning_rate, args.seed,
                                warmup_steps=max(1, args.steps // 20))
    llada_curve = HeldOutNLL(lambda m: llada_nll_bound_per_token(m, held_out, args.mc_num, args.seed), points)
    print("LLaDA (masked diffusion):")
    MaskedDiffusionTrainer(
        llada, MaskedDiffusionConfig(output_dir=str(out / "llada"), block_size=args.block_size, **shared),
        train_dataset=train_text, processing_class=tokenizer, callbacks=[llada_curve],
    ).train()
    ar_curve = HeldOutNLL(lambda m: ar_nll_per_token(m, held_out), points)
    print("Llama (autoregressive):")
    pretrain_ar(llama, blocks, str(out / "ar"), callbacks=[ar_curve], **shared)

    rows = [{"step": s, "tokens": s * args.batch_size * args.block_size, "ar_nll": ar_curve.curve[s],
             "llada_nll_bound": llada_curve.curve[s]} for s in points]
    summary = {"seed": args.seed, "parameters": parameters, "arguments": vars(args),
               "training_blocks": len(blocks), "held_out_blocks": len(held_out), "curve": rows,
               "seconds": round(time.time() - began, 1)}
    print("| step | tokens seen | AR NLL (exact) | LLaDA NLL bound | bound / AR |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['tokens']:,} | {r['ar_nll']:.3f} | {r['llada_nll_bound']:.3f} | "
              f"{r['llada_nll_bound'] / r['ar_nll']:.2f} |")
    (out / "likelihood.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, out / "likelihood.png", args)
    print(f"saved {out / 'likelihood.json'} and {out / 'likelihood.png'} ({summary['seconds']} s, seed {args.seed})")
    return summary


def plot(rows: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["ar_nll"] for r in rows], "o-", label="Llama, autoregressive (exact NLL)")
    ax.plot(steps, [r["llada_nll_bound"] for r in rows], "s-", label="LLaDA, masked diffusion (NLL bound)")
    ax.set_xlabel(f"optimiser step (batch {args.batch_size} x {args.block_size} tokens)")
    ax.set_ylabel("held-out NLL (nats / token)")
    ax.set_title(f"Same size, data and steps (seed {args.seed})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
