"""Training-step throughput and peak memory: our MaskedDiffusionTrainer against a bare PyTorch loop with the same
model, data, objective and optimiser, each in a fresh process, measured in the same run.

    python benchmarks/bench_train.py [--layers 4 --d-model 192 --vocab 4096 --batch 16 --length 128 --steps 30]

Prints tokens/s (timed over the steps after the first five) and the peak resident memory of each process (on CUDA,
the peak allocated GPU memory), and the ratios trainer / bare.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP = 5


def build(args):
    from datasets import Dataset

    from modeling_llada import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    vocab = args.vocab
    config = LLaDAConfig(d_model=args.d_model, n_heads=max(1, args.d_model // 64), n_layers=args.layers,
                         mlp_hidden_size=3 * args.d_model, vocab_size=vocab, embedding_size=vocab,
                         max_sequence_length=args.length, mask_token_id=vocab - 3, eos_token_id=vocab - 2,
                         pad_token_id=vocab - 2, bos_token_id=vocab - 1)
    model = LLaDAModelLM(config).to(args.device)
    blocks = torch.randint(0, vocab - 4, (args.batch * (args.steps + 1), args.length)).tolist()
    return model, Dataset.from_dict({"input_ids": blocks})


def run_trainer(args) -> float:
    from transformers import TrainerCallback

    from trainers import MaskedDiffusionConfig, MaskedDiffusionTrainer

    model, dataset = build(args)
    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, *unused, **kwargs):
            if args.device == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    config = MaskedDiffusionConfig(
        output_dir=tempfile.mkdtemp(), block_size=args.length, per_device_train_batch_size=args.batch,
        max_steps=args.steps, learning_rate=1e-3, report_to="none", save_strategy="no", disable_tqdm=True,
        logging_strategy="no", use_cpu=args.device == "cpu", dataloader_num_workers=0, random_length_probability=0.0,
        optim="adamw_torch",
    )
    trainer = MaskedDiffusionTrainer(model, config, train_dataset=dataset, callbacks=[Clock()])
    trainer.train()
    return (marks[-1] - marks[WARMUP - 1]) / (len(marks) - WARMUP)


def run_bare(args) -> float:
    from trainers import forward_process, pretraining_loss, sample_p_mask, weighted_token_losses

    model, dataset = build(args)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.tensor(dataset["input_ids"], device=args.device)
    marks = []
    for step in range(args.steps):
        batch = ids[step * args.batch : (step + 1) * args.batch]
        p_mask = sample_p_mask(args.batch, device=args.device)
        noisy, masked = forward_process(batch, model.config.mask_token_id, p_mask)
        logits = model(noisy, logits_to_keep=masked).logits
        loss = pretraining_loss(weighted_token_losses(logits, batch, masked, p_mask), args.length)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # Trainer clips at 1.0 by default
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
    return (marks[-1] - marks[WARMUP - 1]) / (len(marks) - WARMUP)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=192)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=["trainer", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # child process: measure one variant, print JSON
        seconds = run_trainer(args) if args.variant == "trainer" else run_bare(args)
        print(json.dumps({"seconds_per_step": seconds, "peak_mb": peak_memory_mb(args.device)}))
        return

    results = {}
    for variant in ("bare", "trainer"):
        output = subprocess.run([sys.executable, __file__, "--variant", variant, *sys.argv[1:]],
                                capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    tokens = args.batch * args.length
    print(f"device={args.device} layers={args.layers} d_model={args.d_model} vocab={args.vocab} "
          f"batch={args.batch}x{args.length} steps={args.steps} threads={torch.get_num_threads()}")
    print(f"{'variant':10s} {'s/step':>8s} {'tokens/s':>10s} {'peak MB':>9s}")
    for variant, r in results.items():
        print(f"{variant:10s} {r['seconds_per_step']:8.3f} {tokens / r['seconds_per_step']:10.0f} {r['peak_mb']:9.0f}")
    bare, ours = results["bare"], results["trainer"]
    print(f"trainer/bare: tokens/s x{bare['seconds_per_step'] / ours['seconds_per_step']:.2f}, "
          f"peak memory x{ours['peak_mb'] / bare['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
