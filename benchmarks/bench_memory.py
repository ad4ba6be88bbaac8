"""Peak memory and tokens/s of one LoRA SFT step (forward + backward + optimizer step) in four modes, measured in one
run: LoRA on the full-precision base (fp32 on CPU, bf16 on CUDA) and QLoRA on a 4-bit nf4 base (bitsandbytes, compute
in the same dtype), each without and with activation (gradient) checkpointing.

    python benchmarks/bench_memory.py                                   # CPU, a scaled-down LLaDA-8B shape
    python benchmarks/bench_memory.py --device cuda --shape llada-8b    # or llada-moe-7b, llada2-mini

The base has random weights, saved once to a temporary folder in the compute dtype and loaded by `from_pretrained`
(with a `BitsAndBytesConfig` for QLoRA: the path a user's `--load_in_4bit` takes; on CPU with `disable_mmap`, so
the weights are the process's own memory, not pages of the file). LoRA (r 16, alpha 32) targets
every linear layer but the output head. A step is masked-diffusion SFT's: random ids, a random fraction t ~ U(0, 1)
of the positions replaced by the mask id, cross-entropy at the masked positions, AdamW on the LoRA weights.
Checkpointing: `gradient_checkpointing_enable(use_reentrant=False)`.

Each mode runs in a fresh process. Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the steps; on CPU the
process's peak resident set over the steps (VmHWM, reset after loading through /proc/self/clear_refs; `ru_maxrss`
where that is missing) less its peak after the imports, so the libraries do not count and the model, its
activations, gradients and optimizer state do, but not the transient fp32 copy a 4-bit load reads and quantizes.
"model + LoRA, loaded": the same measure (CUDA: allocated) before the first step. tokens/s: batch x length / mean
time of the steps after one warm-up step. The table gives each mode's ratio to plain LoRA.
"""

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {  # name: (4-bit base, activation checkpointing)
    "LoRA": (False, False),
    "LoRA + checkpointing": (False, True),
    "QLoRA nf4": (True, False),
    "QLoRA nf4 + checkpointing": (True, True),
}
# The released shapes (REFERENCE.md; the config classes' defaults are LLaDA-8B's and LLaDA-MoE-7B-A1B's), and the CPU
# shape: LLaDA-8B's proportions (MLP 3 d, heads of 64) at 8 layers of d 768, vocab 8192.
SHAPES = {
    "cpu-small": ("llada", dict(d_model=768, n_heads=12, n_kv_heads=12, n_layers=8, mlp_hidden_size=2304,
                                vocab_size=8192, embedding_size=8192, mask_token_id=8000, eos_token_id=8001,
                                pad_token_id=8001, bos_token_id=8002)),
    "llada-8b": ("llada", {}),
    "llada-moe-7b": ("llada_moe", {}),
    "llada2-mini": ("llada2", dict(num_key_value_heads=4, head_dim=128)),
}


def build_config(shape: str, length: int):
    family, overrides = SHAPES[shape]
    if family == "llada":
        from modeling_llada import LLaDAConfig

        return LLaDAConfig(**{"max_sequence_length": max(length, 4096), **overrides})
    if family == "llada_moe":
        from modeling_llada.configuration_lladamoe import LLaDAMoEConfig

        return LLaDAMoEConfig(mask_token_id=156895, **overrides)
    from modeling_llada.configuration_llada2_moe import LLaDA2MoeConfig

    return LLaDA2MoeConfig(mask_token_id=156895, **overrides)


def save_random_base(shape: str, length: int, dtype, folder: Path) -> None:
    import torch
    from transformers import AutoModel

    config = build_config(shape, length)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModel.from_config(config, dtype=dtype)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.02)
        for name, buffer in model.named_buffers():  # the saved ones: the routers' expert_bias (MoE members)
            if name.endswith("expert_bias"):
                buffer.zero_()
    model.save_pretrained(folder)


def peak_rss() -> int:
    """Peak resident set of this process in bytes: VmHWM (Linux, resettable), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def current_rss() -> int:
    """Resident set of this process now, in bytes (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def reset_peak_rss() -> None:
    """Hand freed heap back to the system (glibc `malloc_trim`: a 4-bit load frees the fp32 copy it quantized, which
    the allocator would otherwise keep resident), then reset the peak to the current resident set (Linux: 5 into
    /proc/self/clear_refs); elsewhere the peak stays the process's whole-life peak, which then includes loading."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker(args) -> None:
    import torch

    import bitsandbytes  # noqa: F401  (imported in every mode, so the baseline is the same)
    import peft
    from transformers import AutoModel, BitsAndBytesConfig

    import modeling_llada  # noqa: F401

    baseline = peak_rss()
    quantized, checkpointing = MODES[args.worker]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    options = {"dtype": dtype, "device_map": {"": 0} if args.device == "cuda" else None}
    if args.device == "cpu":  # read the file into memory: mmapped weights would count as file pages, or not at all
        options["disable_mmap"] = True
    if quantized:
        options["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                             bnb_4bit_compute_dtype=dtype)
    model = AutoModel.from_pretrained(args.base, **options)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    config = model.get_base_model().config
    mask_id, vocab = config.mask_token_id, config.vocab_size
    generator = torch.Generator().manual_seed(0)
    if args.device == "cpu":
        reset_peak_rss()  # loading (fp32 weights read, then quantized) is not the training step's memory
        loaded = current_rss() - baseline
    else:
        loaded = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.steps + 1):
        ids = torch.randint(0, vocab - 1000, (args.batch, args.length), generator=generator)
        masked = torch.rand(ids.shape, generator=generator) < torch.rand((args.batch, 1), generator=generator)
        masked[:, 0] = True
        inputs = torch.where(masked, mask_id, ids).to(args.device)
        start = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits[masked.to(args.device)].float(),
                                                 ids.to(args.device)[masked.to(args.device)])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last_loss = loss.item()
        del logits, loss
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss() - baseline
    timed = times[1:]
    tokens_per_s = args.batch * args.length * len(timed) / sum(timed)
    print(json.dumps({"peak": peak, "loaded": loaded, "tokens_per_s": tokens_per_s, "loss": last_loss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default=None, choices=list(SHAPES),
                        help="default: cpu-small on CPU, llada-8b on CUDA")
    parser.add_argument("--length", type=int, default=None, help="tokens per sequence (default 256 CPU, 1024 CUDA)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shape = args.shape or ("llada-8b" if args.device == "cuda" else "cpu-small")
    args.length = args.length or (1024 if args.device == "cuda" else 256)
    if args.worker:
        return worker(args)
    import torch

    folder = Path(tempfile.mkdtemp(prefix="llada-bench-memory-"))
    try:
        save_random_base(args.shape, args.length, torch.bfloat16 if args.device == "cuda" else torch.float32,
                         folder)
        results = {}
        for mode in MODES:
            command = [sys.executable, __file__, "--worker", mode, "--base", str(folder), "--device", args.device,
                       "--shape", args.shape, "--length", str(args.length), "--batch", str(args.batch),
                       "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
            if done.returncode != 0:
                sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            if not math.isfinite(results[mode]["loss"]):
                sys.exit(f"{mode}: the loss is {results[mode]['loss']}; the step did not compute a real loss")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    where = "GPU, peak allocated" if args.device == "cuda" else "CPU, peak RSS above the imports"
    print(f"shape {args.shape}, {args.batch} x {args.length} tokens, {args.device} "
          f"({torch.cuda.get_device_name() if args.device == 'cuda' else f'{torch.get_num_threads()} threads'})\n")
    print(f"| mode | model + LoRA, loaded | peak memory of the step ({where}) | vs LoRA | tokens/s | vs LoRA |")
    print("| --- | --- | --- | --- | --- | --- |")
    plain = results["LoRA"]
    for mode, result in results.items():
        print(f"| {mode} | {result['loaded'] / 2**30:.2f} GiB | {result['peak'] / 2**30:.2f} GiB | "
              f"{result['peak'] / plain['peak']:.2f} | "
              f"{result['tokens_per_s']:.0f} | {result['tokens_per_s'] / plain['tokens_per_s']:.2f} |")


if __name__ == "__main__":
    main()
