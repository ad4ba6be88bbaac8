"""The LLaDA-MoE experts against the official loop over experts: one MoE layer and a whole model forward.

    python benchmarks/bench_moe.py [--hidden 256 --expert-width 128 --experts 64 --top-k 8 --layers 4]
        [--train-tokens 2048,8192 --backward-tokens 2048 --repeats 3]
    python benchmarks/bench_moe.py --device cuda --dtype bfloat16

The baseline is the official LLaDA-MoE / OLMoE pattern on the same fused weights: for every expert, find its tokens
(`torch.where` on a one-hot mask), run gate, up and down projections, `index_add_` the weighted result. It is
registered as one more `experts_implementation` ("official_loop"), so every row runs the same router and weights and
only the experts' forward differs. Rows: decode sizes (one 32-token block, batch 1 and 8) and training sizes
(thousands of tokens; forward, and for the layer forward + backward at `--backward-tokens`). Columns: milliseconds
per call and the speed-up over the baseline measured in the same run (implementations interleaved, the fastest of
`--repeats` calls, which is the least disturbed by other processes on a shared machine). `eager` is our default
(`LLaDAMoEExperts.forward`: grouped matmuls up to `grouped_mm_max_assignments` (token, expert) pairs on CPU, a
per-expert loop above); `grouped_mm` / `batched_mm` are transformers' implementations (`batched_mm` copies one weight
matrix per pair, so it is skipped at training sizes).
"""

import argparse
import time

import torch
import torch.nn.functional as F
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

from modeling_llada import LLaDAMoEConfig, LLaDAMoEModelLM
from modeling_llada.modeling_lladamoe import LLaDAMoEExperts, LLaDAMoESparseMoeBlock


def official_loop_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """The official code's experts loop (modeling_lladamoe.py of the Hub repos), on the fused weights."""
    final = torch.zeros_like(hidden_states)
    expert_mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)  # (E, k, T)
    inter = self.intermediate_dim
    # unbind: per-expert views whose gradients cost what separate modules' would (indexing the fused tensor would
    # add a full-size zero gradient per expert, an overhead the official per-module code does not have)
    for expert, gate_up, down in zip(range(self.num_experts), self.gate_up_proj.unbind(0), self.down_proj.unbind(0)):
        slot, token = torch.where(expert_mask[expert])
        current = hidden_states[token]
        h = F.silu(F.linear(current, gate_up[:inter])) * F.linear(current, gate_up[inter:])
        out = F.linear(h, down) * top_k_weights[token, slot, None]
        final.index_add_(0, token, out.to(hidden_states.dtype))
    return final


ALL_EXPERTS_FUNCTIONS.register("official_loop", official_loop_experts_forward)
BASELINE = "official_loop"


def make_config(args, layers: int) -> LLaDAMoEConfig:
    return LLaDAMoEConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, dense_intermediate_size=4 * args.hidden,
        expert_intermediate_size=args.expert_width, shared_expert_intermediate_size=args.expert_width,
        num_hidden_layers=layers, num_attention_heads=args.hidden // 64, num_experts=args.experts,
        num_experts_per_tok=args.top_k, max_position_embeddings=4096, moe_layer_freq=[0] + [1] * (layers - 1),
        pad_token_id=1, bos_token_id=0, eos_token_id=1, mask_token_id=2,
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def race(functions: dict, repeats: int, device: str) -> dict:
    """Fastest seconds per call of each function; the functions take turns so that load hits all alike."""
    best = {name: float("inf") for name in functions}
    for _ in range(1):  # warm-up
        for function in functions.values():
            function()
    for _ in range(repeats):
        for name, function in functions.items():
            sync(device)
            start = time.perf_counter()
            function()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def row(what: str, tokens: int, times: dict, names: list) -> str:
    base = times[BASELINE]
    cells = [f"{times[n] * 1e3:.2f} ms ({base / times[n]:.2f}x)" if n in times else "—" for n in names]
    return f"| {what} | {tokens} | {base * 1e3:.2f} ms | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--expert-width", type=int, default=128)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4, help="model layers (the first dense, the others MoE)")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--train-tokens", default="2048,8192", help="comma-separated training batch sizes (tokens)")
    parser.add_argument("--backward-tokens", default="2048", help="training sizes also timed forward + backward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    names = ["eager", "grouped_mm", "batched_mm"]
    decode = [("decode, batch 1", 1, 32), ("decode, batch 8", 8, 32)]
    train = [(f"training, {n} tokens", max(1, int(n) // 512), min(int(n), 512)) for n in args.train_tokens.split(",")]

    # One MoE layer (router + experts; the shared expert is not part of the comparison).
    config = make_config(args, layers=2)
    config._experts_implementation = "eager"
    block = LLaDAMoESparseMoeBlock(config).to(args.device, dtype)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.02)
    lines = [
        f"MoE layer: {args.experts} experts, top-{args.top_k}, hidden {args.hidden}, expert width {args.expert_width}, "
        f"{args.device} {args.dtype}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        "| layer | tokens | official loop | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    print("\n".join(lines), flush=True)
    for label, batch, length in decode + train:
        x = torch.randn(batch * length, args.hidden, device=args.device, dtype=dtype)
        small = batch * length * args.top_k <= 4 * 8 * 32 * 8
        impls = [BASELINE] + [n for n in names if n != "batched_mm" or small]

        def forward(impl, x=x):
            config._experts_implementation = impl
            with torch.no_grad():
                block(x)

        times = race({impl: (lambda impl=impl: forward(impl)) for impl in impls}, args.repeats, args.device)
        print(row(label + ", forward", x.shape[0], times, names), flush=True)
        if str(x.shape[0]) in args.backward_tokens.split(","):

            def forward_backward(impl, x=x):
                config._experts_implementation = impl
                block.zero_grad(set_to_none=True)
                x_grad = x.detach().requires_grad_()
                out, _ = block(x_grad)
                out.backward(torch.ones_like(out))

            times = race({impl: (lambda impl=impl: forward_backward(impl)) for impl in impls}, args.repeats,
                         args.device)
            print(row(label + ", forward + backward", x.shape[0], times, names), flush=True)

    # A whole LLaDA-MoE forward: the same model, only the experts' implementation switched.
    config = make_config(args, layers=args.layers)
    model = LLaDAMoEModelLM(config).to(args.device, dtype).eval()
    assert any(isinstance(m, LLaDAMoEExperts) for m in model.modules())
    print(
        f"\nWhole model: {args.layers} layers (first dense), hidden {args.hidden}, vocab {args.vocab}, "
        f"shared expert {args.expert_width}\n\n| model forward | tokens | official loop | eager |\n|---|---|---|---|",
        flush=True,
    )
    for label, batch, length in decode + train:
        ids = torch.randint(3, args.vocab, (batch, length), device=args.device)

        def model_forward(impl, ids=ids):
            model.set_experts_implementation(impl)
            with torch.no_grad():
                model(ids)

        times = race({impl: (lambda impl=impl: model_forward(impl)) for impl in (BASELINE, "eager")}, args.repeats,
                     args.device)
        print(row(label, ids.numel(), times, ["eager"]), flush=True)


if __name__ == "__main__":
    main()
