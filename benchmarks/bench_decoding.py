"""Fast decoding against the exact sampler: accuracy, forward passes per token, tokens/s and agreement with exact.

    python benchmarks/bench_decoding.py                      # CPU: trains a small model once (cached), ~3 minutes
    python benchmarks/bench_decoding.py --device cuda --d-model 512 --layers 8 --examples 400

The task is copying a digit string (`Repeat: 3 1 4 1 5` -> `3 1 4 1 5`): its answers are checkable and a small LLaDA
learns it in a minute. The model is trained once with our SFT trainer and cached in a temporary folder. Every setting
generates the same held-out prompts in the same run; "speed-up" is tokens/s relative to the exact sampler (one token
per step), and "same as exact" is the share of generated tokens identical to the exact sampler's.
"""

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

from modeling_llada import LLaDAConfig, LLaDAModelLM
from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer
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
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--examples", type=int, default=100, help="held-out prompts generated per setting")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--block-length", type=int, default=8)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
