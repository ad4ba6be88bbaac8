"""LLaDA 2 generate with the block cache against without it: same tokens, tokens/s ratio.

    python benchmarks/bench_llada2_cache.py                         # CPU, random model, about a minute
    python benchmarks/bench_llada2_cache.py --device cuda --hidden 1024 --layers 8 --prompt-length 2048

Under LLaDA 2's block-causal attention, finished blocks never change what they attend to, so their keys/values are
exact to reuse: with `kv_cache="prefix"` (the default) each step runs the current block against the cache; with
`kv_cache=None` each step runs the whole prefix, as the official code does. The model is random (the number of
steps per block is then fixed by the schedule: `--threshold` off), each setting generates the same prompts in the
same run, and the answers are checked token for token.
"""

import argparse
import time

import torch

from modeling_llada import LLaDA2MoeConfig, LLaDA2MoeModelLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="steps per block")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--batches", default="1,4", help="batch sizes to time")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (best kept)")
    args = parser.parse_args()

    torch.manual_seed(0)
    heads = max(2, args.hidden // 64)
    config = LLaDA2MoeConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        moe_intermediate_size=args.hidden // 2, num_hidden_layers=args.layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), head_dim=64, num_experts=args.experts, num_experts_per_tok=2,
        n_group=4, topk_group=2, num_shared_experts=1, max_position_embeddings=8192,
        mask_token_id=args.vocab - 1, eos_token_id=args.vocab - 2, pad_token_id=args.vocab - 2,
    )
    model = LLaDA2MoeModelLM(config).to(args.device).eval()
    settings = dict(max_new_tokens=args.max_new_tokens, block_length=args.block_length, steps=args.steps,
                    threshold=args.threshold, logits_eos_inf=True)  # no EOS: every row generates every block
    print(f"device={args.device} hidden={args.hidden} layers={args.layers} experts={args.experts} "
          f"prompt={args.prompt_length} new={args.max_new_tokens} block={args.block_length} steps/block={args.steps} "
          f"threshold={args.threshold} threads={torch.get_num_threads()}")
    print(f"{'batch':>5s} {'no cache tok/s':>14s} {'cache tok/s':>11s} {'speed-up':>8s} {'identical':>9s}")
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = torch.randint(0, args.vocab - 2, (batch, args.prompt_length), device=args.device)
        mask = torch.ones_like(prompts)
        mask[1:, : args.prompt_length // 3] = 0  # left padding in every row but the first
        timings, outputs = {}, {}
        for cache in (None, "prefix", None, "prefix")[: 2 * args.repeats]:
            if args.device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            out = model.generate(prompts, attention_mask=mask, kv_cache=cache, **settings)
            if args.device == "cuda":
                torch.cuda.synchronize()
            timings[cache] = min(timings.get(cache, float("inf")), time.perf_counter() - began)
            outputs[cache] = out
        tokens = batch * args.max_new_tokens
        identical = torch.equal(outputs[None], outputs["prefix"])
        print(f"{batch:5d} {tokens / timings[None]:14.1f} {tokens / timings['prefix']:11.1f} "
              f"{timings[None] / timings['prefix']:7.2f}x {str(identical):>9s}")
        if not identical:
            raise SystemExit("the cached and uncached answers differ")


if __name__ == "__main__":
    main()
