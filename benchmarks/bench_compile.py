"""Eager against `torch.compile(fullgraph=True)` for a tiny random LLaDA: forward passes and `model.generate`.

    python benchmarks/bench_compile.py [--layers 4 --d-model 256 --vocab 4096 --batch 4 --gen 64 --repeats 3]

Both are measured in the same run, on the same model and inputs; the "speed-up" column is compiled over eager
throughput, so numbers compare across machines only as ratios. The compile time (the first call) is reported apart.
`generate` uses the compiled forward as `model.forward = torch.compile(model.forward, fullgraph=True)`: every step of
every block reuses one graph.
"""

import argparse
import time

import torch

from bench_generate import random_llada  # the same random model as the generation benchmark


def timed(function, repeats: int, device: str) -> float:
    """Seconds per call, averaged over `repeats` calls."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    model = random_llada(args.layers, args.d_model, args.vocab, args.device, max_sequence_length=4096)
    model.to(getattr(torch, args.dtype))
    prompts = torch.randint(0, args.vocab - 8, (args.batch, args.prompt), device=args.device)
    canvas = torch.randint(0, args.vocab - 8, (args.batch, args.prompt + args.gen), device=args.device)
    settings = dict(max_new_tokens=args.gen, steps=args.gen, block_length=args.block)
    tokens_per_forward = canvas.numel()
    tokens_per_generate = args.batch * args.gen

    def forward():
        with torch.no_grad():
            model(canvas)

    def generate():
        return model.generate(prompts, **settings)

    rows = []
    forward(), generate()  # eager warm-up
    eager = (timed(forward, args.repeats, args.device), timed(generate, args.repeats, args.device))
    expected = generate()

    model.forward = torch.compile(model.forward, fullgraph=True)
    start = time.perf_counter()
    forward()  # compiles
    compile_seconds = time.perf_counter() - start
    same_tokens = torch.equal(generate(), expected)
    compiled = (timed(forward, args.repeats, args.device), timed(generate, args.repeats, args.device))

    for name, tokens, eager_s, compiled_s in (
        ("forward (canvas tokens/s)", tokens_per_forward, eager[0], compiled[0]),
        (f"generate, {args.gen // args.block} blocks (new tokens/s)", tokens_per_generate, eager[1], compiled[1]),
    ):
        rows.append((name, tokens / eager_s, tokens / compiled_s, eager_s / compiled_s))

    print(f"device={args.device} dtype={args.dtype} layers={args.layers} d_model={args.d_model} vocab={args.vocab} "
          f"batch={args.batch} prompt={args.prompt} gen={args.gen} block={args.block} "
          f"threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    print(f"| measure | eager | compiled | speed-up |\n| --- | ---: | ---: | ---: |")
    for name, eager_rate, compiled_rate, speedup in rows:
        print(f"| {name} | {eager_rate:,.0f} | {compiled_rate:,.0f} | {speedup:.2f}x |")
    print(f"compile time (first compiled forward): {compile_seconds:.1f} s; generate gives the same tokens compiled "
          f"and eager: {same_tokens}")


if __name__ == "__main__":
    main()
