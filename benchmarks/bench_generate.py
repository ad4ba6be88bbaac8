"""Time per generated token and forward passes per token of `model.generate` on a tiny random LLaDA.

    python benchmarks/bench_generate.py [--layers 4 --d-model 256 --vocab 4096 --batch 4 --gen 64 --repeats 3]

Every setting is measured in the same run; the "ratio" column is its time per token relative to the first
(exact, one token per step) setting, so numbers compare across machines only as ratios.
"""

import argparse
import time

import torch

from modeling_llada import LLaDAConfig, LLaDAModelLM


def random_llada(layers: int, d_model: int, vocab: int, device: str, max_sequence_length: int = 1024) -> LLaDAModelLM:
    """A random LLaDA of the given size (heads of 64, MLP 3 x d_model; the last ids of the vocabulary are special),
    in eval mode on `device`; seeded, so every benchmark builds the same model."""
    torch.manual_seed(0)
    config = LLaDAConfig(d_model=d_model, n_heads=max(1, d_model // 64), n_layers=layers, mlp_hidden_size=d_model * 3,
                         vocab_size=vocab, embedding_size=vocab, max_sequence_length=max_sequence_length,
                         mask_token_id=vocab - 4, eos_token_id=vocab - 3, pad_token_id=vocab - 3,
                         bos_token_id=vocab - 2)
    return LLaDAModelLM(config).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    model = random_llada(args.layers, args.d_model, args.vocab, args.device)
    prompts = torch.randint(0, args.vocab - 8, (args.batch, args.prompt), device=args.device)
    gen = args.gen
    settings = [
        ("exact, 1 token/step, 1 block", dict(steps=gen, block_length=gen)),
        ("semi-AR, block 16", dict(steps=gen, block_length=16)),
        ("2 tokens/step", dict(steps=gen // 2, block_length=gen)),
        ("4 tokens/step", dict(steps=gen // 4, block_length=gen)),
        ("cfg 1.0", dict(steps=gen, block_length=gen, cfg_scale=1.0)),
        ("temperature 0.8, top_p 0.9", dict(steps=gen, block_length=gen, temperature=0.8, top_p=0.9)),
        ("random remasking", dict(steps=gen, block_length=gen, remasking="random")),
    ]
    print(f"device={args.device} layers={args.layers} d_model={args.d_model} vocab={args.vocab} "
          f"batch={args.batch} prompt={args.prompt} gen={gen} threads={torch.get_num_threads()}")
    print(f"{'setting':34s} {'ms/token':>10s} {'fwd/token':>10s} {'ratio':>7s}")
    baseline = None
    for name, kwargs in settings:
        model.generate(prompts, max_new_tokens=gen, **kwargs)  # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.repeats):
            out = model.generate(prompts, max_new_tokens=gen, return_dict_in_generate=True, **kwargs)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.repeats
        ms_per_token = 1000 * seconds / (args.batch * gen)
        forwards_per_token = float((1 / out.tokens_per_forward).mean())
        baseline = baseline or ms_per_token
        print(f"{name:34s} {ms_per_token:10.3f} {forwards_per_token:10.3f} {ms_per_token / baseline:7.2f}")


if __name__ == "__main__":
    main()
