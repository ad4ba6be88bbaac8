"""Cost of the alignment trainers' steps on random LLaDA models (nothing is downloaded).

    python benchmarks/bench_alignment.py                                  # tiny model, CPU
    python benchmarks/bench_alignment.py --shape 1b --device cuda --lora  # bf16 on a GPU (the trainers' CUDA default)

VRPO: seconds per optimizer step with the paper's budget n = `--elbo-samples` against n = 1 measured in the same run
(the ratio is what the variance reduction costs in compute). diffu-GRPO: seconds per optimizer step (rollouts with
the diffusion sampler included) without a key/value cache and with the prefix cache, the ratio against the first.
Both print the peak accelerator memory, and every row checks that the loss is finite and that the step changed the
trainable weights.
"""

import argparse
import gc
import time

import torch
from datasets import Dataset

SHAPES = {  # LLaDA-8B's shape and smaller ones with its proportions
    "tiny": dict(d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=384, vocab_size=1024),
    "1b": dict(d_model=2048, n_heads=16, n_layers=16, mlp_hidden_size=5632, vocab_size=126464),
    "8b": dict(d_model=4096, n_heads=32, n_layers=32, mlp_hidden_size=12288, vocab_size=126464),
}


def random_model(shape: str, device: str, dtype: torch.dtype):
    from modeling_llada import LLaDAConfig, LLaDAModelLM

    sizes = SHAPES[shape]
    config = LLaDAConfig(**sizes, embedding_size=sizes["vocab_size"], max_sequence_length=4096,
                         mask_token_id=sizes["vocab_size"] - 2, eos_token_id=sizes["vocab_size"] - 3,
                         pad_token_id=sizes["vocab_size"] - 3, bos_token_id=sizes["vocab_size"] - 4)
    with torch.device(device):
        model = LLaDAModelLM(config).to(dtype)
    return model


WORDS = [f"w{i}" for i in range(50)]


def preference_rows(count: int, prompt: int, response: int, seed: int) -> Dataset:
    """Random text pairs of about `prompt` and `response` tokens (each word is one token of the bench tokenizer)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(length):
        return [" ".join(WORDS[i] for i in row) for row in torch.randint(0, len(WORDS), (count, length),
                                                                        generator=generator).tolist()]

    return Dataset.from_dict({"prompt": draw(prompt), "chosen": draw(response), "rejected": draw(response)})


def prompt_rows(count: int, prompt: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(WORDS), (count, prompt), generator=generator).tolist()
    return Dataset.from_dict({"prompt": [" ".join(WORDS[i] for i in row) for row in rows]})


def length_reward(completions, **kwargs):
    return [float(len(text.split())) for text in completions]


def vrpo_trainer(model, tokenizer, args, elbo_samples: int):
    from peft import LoraConfig

    from trainers import VRPOConfig, VRPOTrainer

    rows = preference_rows(args.pairs * (args.steps + 1), args.prompt, args.response, 0)
    config = VRPOConfig(output_dir="/tmp/bench-alignment", per_device_train_batch_size=args.pairs,
                        max_steps=args.steps + 1, learning_rate=1e-4, elbo_samples=elbo_samples, report_to="none",
                        save_strategy="no", disable_tqdm=True, logging_steps=1, max_length=None,
                        use_cpu=args.device == "cpu", activation_checkpointing=args.activation_checkpointing)
    return VRPOTrainer(model, args=config, train_dataset=rows, processing_class=tokenizer,
                       peft_config=LoraConfig(r=16, lora_alpha=32) if args.lora else None)


def grpo_trainer(model, tokenizer, args, kv_cache: str | None):
    from peft import LoraConfig

    from trainers.grpo import DiffuGRPOConfig, DiffuGRPOTrainer

    config = DiffuGRPOConfig(
        output_dir="/tmp/bench-alignment", per_device_train_batch_size=args.generations,
        num_generations=args.generations, max_completion_length=args.response, block_length=args.block_length,
        steps=args.response // 2, kv_cache=kv_cache, max_steps=args.steps + 1, learning_rate=1e-4,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1, use_cpu=args.device == "cpu",
        activation_checkpointing=args.activation_checkpointing)
    return DiffuGRPOTrainer(model, reward_funcs=length_reward, args=config,
                            train_dataset=prompt_rows(args.steps + 1, args.prompt, 0), processing_class=tokenizer,
                            peft_config=LoraConfig(r=16, lora_alpha=32) if args.lora else None)


def step_seconds(trainer) -> tuple[float, float, float]:
    """(fastest step after the first, peak GiB, last loss) of a short run, checked to have trained."""
    from transformers import PrinterCallback

    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    times = []

    class Timer:  # a transformers callback without the import cost at module level
        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_step_begin(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(-time.perf_counter())

        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[-1] += time.perf_counter()

    trainer.add_callback(Timer())
    trainer.remove_callback(PrinterCallback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    changed = any(not torch.equal(p.detach(), trainable[n])
                  for n, p in trainer.model.named_parameters() if n in trainable)
    assert changed, "the step changed no trainable weight"
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    if hasattr(trainer.model, "unload"):
        trainer.model.unload()  # the base model back, without adapters, for the next row
    del trainer
    gc.collect()
    return min(times[1:]), peak, losses[-1]


def table(title: str, label: str, rows) -> None:
    print(f"\n# {title}")
    print(f"| {label} | s/step | ratio to the first row | peak GiB | last loss |")
    print("|---|---:|---:|---:|---:|")
    base = None
    for name, build in rows:
        seconds, peak, loss = step_seconds(build())
        base = base or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f}x | {peak:.1f} | {loss:.4f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="recompute activations in the backward pass (what LLaDA-8B with n = 8 needs on one GPU)")
    parser.add_argument("--elbo-samples", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=2, help="preference pairs per step")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--response", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--generations", type=int, default=4,
                        help="diffu-GRPO: completions per prompt (one prompt a step)")
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--only", choices=["vrpo", "grpo"], default=None)
    args = parser.parse_args()

    import datasets

    from llada_cli.local_data import train_tokenizer

    datasets.disable_progress_bars()

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = random_model(args.shape, args.device, dtype)
    tokenizer = train_tokenizer([" ".join(WORDS)] * 20, vocab_size=256)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    setting = (f"{args.shape} LLaDA ({params:.2f}B parameters, {dtype}), {args.device}, "
               f"{'LoRA r=16' if args.lora else 'full'}"
               f"{', activation checkpointing' if args.activation_checkpointing else ''}, "
               f"min over {args.steps} steps after one warm-up")
    if args.only != "grpo":
        table(f"VRPO, {setting}; {args.pairs} pairs/step, prompt {args.prompt} + response {args.response} tokens",
              "ELBO samples n", [(str(n), lambda n=n: vrpo_trainer(model, tokenizer, args, n))
                                 for n in (1, args.elbo_samples)])
    if args.only != "vrpo":
        table(f"diffu-GRPO, {setting}; 1 prompt of {args.prompt} tokens x {args.generations} completions of "
              f"{args.response} tokens/step ({args.response // 2} denoising steps, blocks of {args.block_length})",
              "rollout cache", [(str(mode), lambda mode=mode: grpo_trainer(model, tokenizer, args, mode))
                                for mode in (None, "prefix")])


if __name__ == "__main__":
    main()
