"""Fast decoding against the exact sampler: accuracy, forward passes per token, tokens/s and agreement with exact.

    python benchmarks/bench_decoding.py                      # CPU: trains a small model once (cached), ~3 minutes
    python benchmarks/bench_decoding.py --device cuda --d-model 512 --layers 8 --examples 400
    python benchmarks/bench_decoding.py --task long-copy     # LLaDA and LLaDA 2, 513-token prompts, CPU minutes

The default task is copying a digit string (`Repeat: 3 1 4 1 5` -> `3 1 4 1 5`): its answers are checkable and a
small LLaDA learns it in a minute. The model is trained once with our SFT trainer and cached in a temporary folder.
Every setting generates the same held-out prompts in the same run; "speed-up" is tokens/s relative to the exact
sampler (one token per step), and "same as exact" is the share of generated tokens identical to the exact sampler's.

`--task long-copy` is where caching matters: the prompt is a long digit string (512 digits and a separator: 513
tokens) and the answer its last 32 digits and EOS (5 blocks of 8), so every step re-reads a long prefix unless it is
cached. One table, one run, for a small LLaDA and a small LLaDA 2 (MoE, block diffusion), each trained on the task
with a plain masked-diffusion loop in this file (LLaDA: the SFT objective on answer tokens, 1/t weighted; LLaDA 2:
the block-diffusion objective of `trainers.objectives`, noisy and clean copies under the block-diffusion mask):
exact (one token per step, no cache), cache, threshold 0.9, and both. For LLaDA 2 the cache is exact (block-causal
attention), for LLaDA it is approximate (`kv_cache="prefix"`; `"dual"` is shown too).
"""

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

import torch.nn.functional as F

from modeling_llada import LLaDA2MoeConfig, LLaDA2MoeModelLM, LLaDAConfig, LLaDAModelLM
from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
from trainers.objectives import block_diffusion_inputs, block_diffusion_loss
from llada_cli.local_data import digit_copy_task, python_docs_corpus, train_tokenizer

SETTINGS = [
    ("exact (1 token/step)", {}),
    ("threshold 0.9", {"threshold": 0.9}),
    ("prefix cache", {"kv_cache": "prefix"}),
    ("dual cache", {"kv_cache": "dual"}),
    ("threshold 0.9 + prefix cache", {"threshold": 0.9, "kv_cache": "prefix"}),
    ("threshold 0.9 + dual cache", {"threshold": 0.9, "kv_cache": "dual"}),
    ("factor 1.0 + dual cache", {"factor": 1.0, "kv_cache": "dual"}),
]


def train_or_load(args, tokenizer, train_pairs) -> LLaDAModelLM:
    key = hashlib.sha256(json.dumps(vars(args), sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "llada-hf-bench-decoding" / key
    if (folder / "model.safetensors").exists():
        print(f"using the cached model in {folder}")
        return LLaDAModelLM.from_pretrained(folder).to(args.device).eval()
    torch.manual_seed(0)
    vocab = len(tokenizer)
    config = LLaDAConfig(d_model=args.d_model, n_heads=max(1, args.d_model // 32), n_layers=args.layers,
                         mlp_hidden_size=3 * args.d_model, vocab_size=vocab, embedding_size=vocab,
                         max_sequence_length=256, mask_token_id=tokenizer.mask_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    model = LLaDAModelLM(config)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p, _ in train_pairs],
                                 "completion": [[{"role": "assistant", "content": a}] for _, a in train_pairs]})
    training = MaskedDiffusionSFTConfig(
        output_dir=str(folder / "run"), per_device_train_batch_size=32, max_steps=args.train_steps,
        learning_rate=2e-3, warmup_steps=30, lr_scheduler_type="cosine", logging_steps=50, save_strategy="no",
        report_to="none", use_cpu=args.device == "cpu", bf16=False, max_length=128, disable_tqdm=True,
    )
    started = time.perf_counter()
    MaskedDiffusionSFTTrainer(model, training, train_dataset=dataset, processing_class=tokenizer).train()
    print(f"trained {args.train_steps} steps in {time.perf_counter() - started:.0f} s")
    model.save_pretrained(folder)
    return model.to(args.device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--digits", type=int, default=12)
    parser.add_argument("--train-steps", type=int, default=None, help="default 400 (digits), 300 (long-copy)")
    parser.add_argument("--examples", type=int, default=100, help="held-out prompts generated per setting")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--block-length", type=int, default=8)
    parser.add_argument("--task", choices=("digits", "long-copy"), default="digits")
    parser.add_argument("--context", type=int, default=512, help="long-copy: digits in the prompt")
    parser.add_argument("--answer", type=int, default=32, help="long-copy: digits to copy")
    parser.add_argument("--lr", type=float, default=2e-3, help="long-copy: learning rate of the plain loop")
    parser.add_argument("--llada2-train-steps", type=int, default=600,
                        help="long-copy: LLaDA 2's training steps (it learns the task more slowly than LLaDA)")
    args = parser.parse_args()
    if args.train_steps is None:
        args.train_steps = 400 if args.task == "digits" else 300
    if args.task == "long-copy":
        return long_copy_benchmark(args)

    tokenizer = train_tokenizer(python_docs_corpus()["text"], vocab_size=1024)
    train_pairs = digit_copy_task(3000, args.digits, seed=0)
    seen = {p for p, _ in train_pairs}
    test_pairs = [pair for pair in digit_copy_task(4 * args.examples, args.digits, seed=1) if pair[0] not in seen]
    test_pairs = test_pairs[: args.examples]
    model = train_or_load(args, tokenizer, train_pairs)

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for p, _ in test_pairs]
    answer_tokens = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in test_pairs) + 1
    gen = -(-answer_tokens // args.block_length) * args.block_length  # whole blocks
    eot = "<|eot_id|>"
    print(f"device={args.device} d_model={args.d_model} layers={args.layers} prompts={len(test_pairs)} "
          f"max_new_tokens={gen} block_length={args.block_length} threads={torch.get_num_threads()}")
    print(f"{'setting':30s} {'accuracy':>8s} {'fwd/token':>9s} {'tokens/s':>9s} {'speed-up':>8s} {'same as exact':>13s}")
    baseline = None
    for name, kwargs in SETTINGS:
        outputs, forwards, seconds = [], 0.0, 0.0
        for start in range(0, len(prompts), args.batch):
            chunk = prompts[start : start + args.batch]
            longest = max(len(p) for p in chunk)
            ids = torch.tensor([[tokenizer.eos_token_id] * (longest - len(p)) + p for p in chunk], device=args.device)
            mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in chunk], device=args.device)
            if args.device == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=gen, block_length=args.block_length,
                                 return_dict_in_generate=True, **kwargs)
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - began
            forwards += float((gen / out.tokens_per_forward).mean()) * len(chunk)
            outputs.extend(out.sequences[:, longest:].cpu())
        texts = [tokenizer.decode(o).split(eot)[0].strip() for o in outputs]
        accuracy = sum(t == a for t, (_, a) in zip(texts, test_pairs)) / len(test_pairs)
        tokens = gen * len(test_pairs)
        if baseline is None:
            baseline = (tokens / seconds, outputs)
        same = sum(int((o == e).sum()) for o, e in zip(outputs, baseline[1])) / tokens
        print(f"{name:30s} {accuracy:8.1%} {forwards / tokens:9.3f} {tokens / seconds:9.1f} "
              f"{tokens / seconds / baseline[0]:7.2f}x {same:13.1%}")


# long-copy: a synthetic vocabulary (no tokenizer): the digits are ids 0-9.
SEP, EOS, MASK, VOCAB = 10, 11, 12, 16


def long_copy_batch(batch: int, context: int, answer: int, generator: torch.Generator):
    """(prompts (b, context + 1): digits then SEP, answers (b, answer): the last `answer` digits)."""
    digits = torch.randint(0, 10, (batch, context), generator=generator)
    return torch.cat([digits, torch.full((batch, 1), SEP)], dim=1), digits[:, -answer:]


def build_long_copy_model(kind: str, args):
    torch.manual_seed(0)
    if kind == "LLaDA":
        config = LLaDAConfig(d_model=args.d_model, n_heads=max(1, args.d_model // 32), n_layers=args.layers,
                             mlp_hidden_size=3 * args.d_model, vocab_size=VOCAB, embedding_size=VOCAB,
                             max_sequence_length=2048, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
        return LLaDAModelLM(config)
    heads = max(2, args.d_model // 32)
    config = LLaDA2MoeConfig(
        vocab_size=VOCAB, hidden_size=args.d_model, intermediate_size=3 * args.d_model,
        moe_intermediate_size=args.d_model, num_hidden_layers=args.layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), head_dim=args.d_model // heads, num_experts=8, num_experts_per_tok=2,
        n_group=4, topk_group=2, num_shared_experts=1, max_position_embeddings=2048,
        mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
        # LLaDA 2 rotates half of each head: with 16 rotated dims, the official theta (600000) leaves too few
        # fast-turning frequencies for a small model to point at one position 33 tokens back
        rope_theta=10000.0,
    )
    return LLaDA2MoeModelLM(config)


def train_long_copy(kind: str, args, gen_length: int):
    """A plain masked-diffusion loop on the long-copy task (prompt lengths drawn per step, half of them short so that
    training stays cheap on CPU), cached in a temporary folder keyed by the arguments."""
    settings = {**vars(args), "kind": kind}
    llada2_steps = settings.pop("llada2_train_steps")
    if kind == "LLaDA 2":
        settings["train_steps"] = llada2_steps
    steps = settings["train_steps"]
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "llada-hf-bench-decoding" / f"long-copy-{kind}-{key}"
    model_class = LLaDAModelLM if kind == "LLaDA" else LLaDA2MoeModelLM
    if (folder / "model.safetensors").exists():
        print(f"using the cached {kind} model in {folder}")
        return model_class.from_pretrained(folder).to(args.device).eval()
    model = build_long_copy_model(kind, args).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        optimizer, lambda step: min((step + 1) / warmup, (steps - step) / (steps - warmup + 1)))
    generator = torch.Generator().manual_seed(0)
    block = args.block_length
    started = time.perf_counter()
    for step in range(steps):
        short = step % 4 != 3  # three short prompts for one long one
        low, high = (args.answer, 128) if short else (128, args.context)
        context = int(torch.randint(low, high + 1, (1,), generator=generator))
        prompts, answers = long_copy_batch(16, context, args.answer, generator)
        prompt_length = prompts.shape[1]
        length = prompt_length + gen_length
        if kind == "LLaDA 2":  # whole blocks, counted from the first prompt token (as generate counts them)
            length = -(-length // block) * block
        target = torch.full((16, length), EOS)
        target[:, :prompt_length], target[:, prompt_length : prompt_length + args.answer] = prompts, answers
        target = target.to(args.device)
        t = (0.05 + 0.95 * torch.rand(16, 1, generator=generator)).to(args.device)
        answer_part = torch.arange(length, device=args.device)[None] >= prompt_length
        masked = (torch.rand(16, length, generator=generator).to(args.device) < t) & answer_part
        noisy = torch.where(masked, MASK, target)
        if kind == "LLaDA":
            logits = model(noisy).logits
            losses = F.cross_entropy(logits[masked], target[masked], reduction="none")
            loss = (losses / t.expand_as(masked)[masked]).sum() / (16 * gen_length)
        else:
            inputs = block_diffusion_inputs(noisy, target, block)
            logits = model(**inputs, logits_to_keep=slice(0, length)).logits
            loss = block_diffusion_loss(logits, target, masked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            print(f"  {kind} step {step + 1}: loss {loss.item():.3f}")
    print(f"trained {kind} for {steps} steps in {time.perf_counter() - started:.0f} s")
    model.save_pretrained(folder)
    return model.eval()


LONG_COPY_SETTINGS = {
    "LLaDA": [
        ("exact (1 token/step)", {}),
        ("prefix cache", {"kv_cache": "prefix"}),
        ("dual cache", {"kv_cache": "dual"}),
        ("threshold 0.9", {"threshold": 0.9}),
        ("threshold 0.9 + prefix cache", {"threshold": 0.9, "kv_cache": "prefix"}),
    ],
    "LLaDA 2": [
        ("exact (1 token/step)", {"kv_cache": None, "threshold": None}),
        ("block cache", {"kv_cache": "prefix", "threshold": None}),
        ("threshold 0.9", {"kv_cache": None, "threshold": 0.9}),
        ("threshold 0.9 + block cache", {"kv_cache": "prefix", "threshold": 0.9}),
    ],
}


def count_forwards(model) -> list[int]:
    """Counts the model's forward passes (until `del model.forward`)."""
    calls, original = [0], model.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    model.forward = counted
    return calls


def long_copy_benchmark(args) -> None:
    block = args.block_length
    gen_length = -(-(args.answer + 1) // block) * block  # the answer and its EOS, in whole blocks
    prompts, answers = long_copy_batch(args.examples, args.context, args.answer, torch.Generator().manual_seed(1))
    print(f"task=long-copy device={args.device} d_model={args.d_model} layers={args.layers} prompts={args.examples} "
          f"prompt_tokens={prompts.shape[1]} max_new_tokens={gen_length} block_length={block} "
          f"train_steps={args.train_steps} (LLaDA 2: {args.llada2_train_steps}) threads={torch.get_num_threads()}")
    rows = []
    for kind, settings in LONG_COPY_SETTINGS.items():
        model = train_long_copy(kind, args, gen_length)
        baseline = None
        for name, kwargs in settings:
            # LLaDA's steps count all blocks, LLaDA 2's count one block: one token per step either way
            steps = gen_length if kind == "LLaDA" else block
            outputs, forwards, seconds = [], 0, 0.0
            calls = count_forwards(model)
            for start in range(0, args.examples, args.batch):
                ids = prompts[start : start + args.batch].to(args.device)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                began = time.perf_counter()
                out = model.generate(ids, max_new_tokens=gen_length, block_length=block, steps=steps,
                                     mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
                                     return_dict_in_generate=True, **kwargs)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - began
                outputs.append(out.sequences[:, ids.shape[1] :].cpu())
            del model.forward
            forwards = calls[0] * args.batch  # row-forwards: every call runs a batch
            generated = torch.cat(outputs)
            correct = (generated[:, : args.answer] == answers).all(-1) & (generated[:, args.answer] == EOS)
            tokens = gen_length * args.examples
            if baseline is None:
                baseline = (tokens / seconds, generated)
            same = (generated == baseline[1]).float().mean().item()
            rows.append((kind, name, correct.float().mean().item(), forwards / tokens, tokens / seconds,
                         tokens / seconds / baseline[0], same))
    print(f"{'model':8s} {'setting':30s} {'accuracy':>8s} {'fwd/token':>9s} {'tokens/s':>9s} {'speed-up':>8s} "
          f"{'same as exact':>13s}")
    for kind, name, accuracy, per_token, rate, ratio, same in rows:
        print(f"{kind:8s} {name:30s} {accuracy:8.1%} {per_token:9.3f} {rate:9.1f} {ratio:7.2f}x {same:13.1%}")


if __name__ == "__main__":
    main()
