"""VRPO (LLaDA 1.5's preference optimisation) on a toy task the script builds itself; nothing is downloaded.

A small LLaDA learns to copy digit strings with masked-diffusion SFT, then VRPO trains it to prefer the correct copy
over a corrupted one (one digit changed). Before and after VRPO it reports the preference accuracy on held-out pairs
(the chosen answer has the higher likelihood bound, from `model.log_likelihood`) and the exact-match accuracy of
`model.generate`.

    python examples/vrpo.py --output_dir runs/vrpo                  # ~15 minutes on 2 CPU cores
    python examples/vrpo.py --output_dir runs/vrpo-lora --use_peft  # LoRA: the reference is the adapter-free base

Measured (2 CPU cores): the defaults take the held-out preference accuracy from 0.90 (SFT) to 0.97. The exact-match
accuracy of generation is not improved by these settings: the SFT model of the defaults barely generates the copy
(0.03), and with a longer SFT (`--sft_steps 150`) it is already perfect; at `--vrpo_learning_rate 2e-4` VRPO then
lowers both ELBOs (the usual DPO drift) and the generate accuracy (0.98 -> 0.78 on 3 digits).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def preference_accuracy(model, tokenizer, rows, seed: int = 0) -> float:
    """Share of held-out pairs whose correct answer has the higher likelihood bound."""
    import torch

    pairs = []
    for question, chosen, rejected in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        for answer in (chosen, rejected):
            pairs.append((prompt, tokenizer(answer + "<|eot_id|>", add_special_tokens=False)["input_ids"]))
    model.eval()
    estimates = model.log_likelihood(pairs, mc_num=32, batch_size=512, seed=seed)
    values = torch.tensor([e.log_likelihood for e in estimates]).view(-1, 2)
    return (values[:, 0] > values[:, 1]).float().mean().item()


def score_variances(trainer, rows: int = 8, repetitions: int = 30) -> dict:
    """Variance of the estimated preference score over fresh noise draws, per estimator, on `rows` training pairs with
    the trained policy and its reference: the naive estimator (one timestep per ELBO, independent reference noise),
    optimal allocation alone, and VRPO (optimal allocation + antithetic sampling), all with the same budget n."""
    import torch

    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(rows)]))
    settings = {"naive": (False, False), "optimal_allocation": (True, False), "vrpo": (True, True)}
    saved = (trainer.args.optimal_allocation, trainer.args.antithetic_sampling, trainer.state.global_step)
    trainer.model.train()
    variances = {}
    with torch.no_grad():
        for name, (optimal, antithetic) in settings.items():
            trainer.args.optimal_allocation, trainer.args.antithetic_sampling = optimal, antithetic
            scores = []
            for step in range(repetitions):
                trainer.state.global_step = 10_000 + step
                scores.append(trainer.compute_loss(trainer.model, batch, return_outputs=True)[1]["scores"])
            variances[name] = torch.stack(scores).var(dim=0).mean().item()
    trainer.args.optimal_allocation, trainer.args.antithetic_sampling, trainer.state.global_step = saved
    for values in trainer._metrics.values():
        values.clear()
    return variances


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="runs/vrpo")
    parser.add_argument("--sft_steps", type=int, default=100)
    parser.add_argument("--vrpo_steps", type=int, default=60)
    parser.add_argument("--elbo_samples", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--vrpo_learning_rate", type=float, default=5e-4)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--eval_prompts", type=int, default=100)
    parser.add_argument("--use_peft", action="store_true", help="LoRA for the VRPO stage (reference: the base).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report_to", default="none")
    parser.add_argument("--disable_tqdm", default="true")
    args = parser.parse_args(argv)

    import torch
    from datasets import Dataset

    from llada_cli.local_data import copy_preference_task, python_docs_corpus, train_tokenizer
    from llada_cli.quickstart import task_accuracy
    from modeling_llada import LLaDAConfig, LLaDAModelLM
    from trainers import MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer, VRPOConfig, VRPOTrainer

    began = time.perf_counter()
    say = lambda message: print(f"[{time.perf_counter() - began:6.1f}s] {message}", flush=True)  # noqa: E731
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    common = dict(report_to=args.report_to, disable_tqdm=args.disable_tqdm.lower() == "true", save_strategy="no",
                  use_cpu=not torch.cuda.is_available(), seed=args.seed, logging_steps=10)

    tokenizer = train_tokenizer(python_docs_corpus()["text"], vocab_size=1024)
    torch.manual_seed(args.seed)
    vocab = len(tokenizer)
    model = LLaDAModelLM(LLaDAConfig(d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=384, vocab_size=vocab,
                                     embedding_size=vocab, max_sequence_length=128,
                                     mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))

    preference = copy_preference_task(2000, args.digits, args.seed)
    train = [(p[0]["content"], c[0]["content"]) for p, c in zip(preference["prompt"], preference["chosen"])]
    seen = {q for q, _ in train}
    held_out = [(p[0]["content"], c[0]["content"], r[0]["content"])
                for p, c, r in zip(*copy_preference_task(4 * args.eval_prompts, args.digits, args.seed + 1)[:].values())
                if p[0]["content"] not in seen][: args.eval_prompts]
    answer_tokens = len(tokenizer(held_out[0][1], add_special_tokens=False)["input_ids"]) + 1
    length = -(-answer_tokens // 8) * 8
    generation = dict(max_new_tokens=length, steps=length, block_length=length)

    # 1. the SFT model: masked-diffusion SFT on the copy task
    sft = MaskedDiffusionSFTTrainer(
        model, MaskedDiffusionSFTConfig(output_dir=str(output / "sft"), per_device_train_batch_size=32,
                                        max_steps=args.sft_steps, learning_rate=1e-3, warmup_steps=10,
                                        lr_scheduler_type="cosine", max_length=128, **common),
        train_dataset=Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q, _ in train],
                                         "completion": [[{"role": "assistant", "content": a}] for _, a in train]}),
        processing_class=tokenizer)
    say(f"SFT on copying {args.digits} digits for {args.sft_steps} steps")
    sft.train()
    model = sft.model
    before = {"preference_accuracy": preference_accuracy(model, tokenizer, held_out),
              "generate_accuracy": task_accuracy(model, tokenizer, [(q, a) for q, a, _ in held_out], generation)}
    say(f"SFT model on {len(held_out)} held-out prompts: {before}")

    # 2. VRPO: prefer the correct copy over a corrupted one
    peft_config = None
    if args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32)
    vrpo = VRPOTrainer(
        model, args=VRPOConfig(output_dir=str(output / "vrpo"), per_device_train_batch_size=16,
                               max_steps=args.vrpo_steps, learning_rate=args.vrpo_learning_rate, beta=args.beta,
                               elbo_samples=args.elbo_samples, max_length=128, **common),
        train_dataset=preference, processing_class=tokenizer, peft_config=peft_config)
    say(f"VRPO for {args.vrpo_steps} steps (n={args.elbo_samples} ELBO samples, optimal allocation, antithetic)")
    vrpo.train()
    variances = score_variances(vrpo)
    say("variance of the preference score (trained policy vs reference, same budget): "
        + ", ".join(f"{name} {value:.3g}" for name, value in variances.items())
        + f"; naive / VRPO = {variances['naive'] / max(variances['vrpo'], 1e-30):.0f}x")
    tuned = vrpo.model.merge_and_unload() if args.use_peft else vrpo.model
    after = {"preference_accuracy": preference_accuracy(tuned, tokenizer, held_out),
             "generate_accuracy": task_accuracy(tuned, tokenizer, [(q, a) for q, a, _ in held_out], generation)}
    say(f"after VRPO: {after} (SFT model: {before})")
    logs = [e for e in vrpo.state.log_history if "loss" in e]
    summary = {"before": before, "after": after, "score_variances": variances, "vrpo_logs": logs,
               "seconds": time.perf_counter() - began,
               "settings": vars(args)}
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
