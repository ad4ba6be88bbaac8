"""`llada-hf quickstart`: LLaDA end to end on a CPU in a few minutes, with nothing downloaded.

1. a byte-level BPE tokenizer (LLaDA's special tokens, mask token and chat template) from Python's own docs;
2. masked-diffusion pre-training of a small LLaDA on those docs;
3. LoRA fine-tuning on a checkable template task (copy a digit string) in chat format, with accuracy of
   `model.generate` on held-out prompts before and after;
4. a Hub-ready folder (merged weights, code files, tokenizer, generation config, card) that passes the publishing
   checks, reloaded with `AutoModel.from_pretrained(..., trust_remote_code=True)` to generate live;
5. pictures: the training-loss curves and one generation's unmasking order.
"""

import json
import math
import sys
import time
from pathlib import Path

from ._args import add_flag, check_output_dir, new_parser

EOT = "<|eot_id|>"
LOSS_EVERY = 2  # optimizer steps between logged losses (the loss plot smooths them)
# --quick: a short run that still has to learn (CI fails it when accuracy after SFT does not beat accuracy before)
QUICK = dict(pretrain_steps=10, sft_steps=120, eval_prompts=20, digits=3, train_pairs=1000)
# --model: the family member whose architecture the fresh model has
MODELS = ("llada", "llada-moe", "llada2")
# what LoRA trains in full beside the adapters (the embeddings and the output head, by each architecture's names)
FULLY_TRAINED = {"llada": ["wte", "transformer.ff_out"], "llada-moe": ["embed_tokens", "lm_head"],
                 "llada2": ["word_embeddings", "lm_head"]}


def fresh_config(model: str, tokenizer):
    """A small config of the chosen family member (about the size of the dense quickstart model: width 128, 4
    layers), with the tokenizer's vocabulary and special ids."""
    from modeling_llada import LLaDAConfig, LLaDAMoEConfig

    vocab, ids = len(tokenizer), dict(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.eos_token_id)
    if model == "llada":
        return LLaDAConfig(d_model=128, n_heads=4, n_layers=4, mlp_hidden_size=384, vocab_size=vocab,
                           embedding_size=vocab, max_sequence_length=256, bos_token_id=tokenizer.bos_token_id, **ids)
    if model == "llada-moe":
        return LLaDAMoEConfig(hidden_size=128, num_hidden_layers=4, moe_layer_freq=[0, 1, 1, 1],
                              num_attention_heads=4, vocab_size=vocab,
                              dense_intermediate_size=384, expert_intermediate_size=96,
                              shared_expert_intermediate_size=96, num_experts=8, num_experts_per_tok=2,
                              max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id, **ids)
    from modeling_llada import LLaDA2MoeConfig

    return LLaDA2MoeConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                           vocab_size=vocab, intermediate_size=384, moe_intermediate_size=96, num_experts=8,
                           num_experts_per_tok=2, n_group=2, topk_group=1, num_shared_experts=1,
                           first_k_dense_replace=1, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                           **ids)


class QuickstartDidNotLearn(RuntimeError):
    """The fine-tuned model is no better at the task than the model before fine-tuning."""


def _chat_ids(tokenizer, question: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)


def task_accuracy(model, tokenizer, pairs, generation: dict, batch_size: int = 25, desc: str = "") -> float:
    """Exact-match accuracy of `model.generate` on (question, answer) pairs, left-padded batches."""
    import torch
    from transformers.utils.logging import tqdm

    model.eval()
    correct = 0
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, leave=False):
        chunk = pairs[start : start + batch_size]
        prompts = [_chat_ids(tokenizer, q) for q, _ in chunk]
        longest = max(len(p) for p in prompts)
        ids = torch.tensor([[tokenizer.eos_token_id] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), **generation)
        for row, (_, answer) in zip(out[:, longest:], chunk):
            correct += tokenizer.decode(row).split(EOT)[0].strip() == answer
    return correct / len(pairs)


_FRESH_PROCESS = """
import sys
for name in ("modeling_llada", "trainers", "hub_cards", "llada_cli"):
    sys.modules[name] = None  # the published code files alone must serve the model
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
print(type(model).__module__ + "." + type(model).__name__)
"""


def _load_in_a_fresh_process(folder: Path) -> str:
    import subprocess

    result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, str(folder)], capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"The Hub-ready folder did not load in a fresh process:\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


def _quiet_progress(trainer) -> None:
    """Keep the trainer's progress bar but show the latest loss on it instead of printing every log as a line (the
    quickstart logs every other step for the loss plot)."""
    from transformers.trainer_callback import ProgressCallback

    class LossOnTheBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossOnTheBar())


def _losses(trainer) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def build_parser():
    parser = new_parser("llada-hf quickstart", __doc__)
    add_flag(parser, "model", choices=MODELS, default="llada",
             help="architecture of the fresh model: llada (dense, LLaDA 8B's), llada-moe (LLaDA-MoE's mixture of "
             "experts, plus the routers' load-balancing loss) or llada2 (LLaDA 2's mixture of experts, trained with "
             "block diffusion)")
    add_flag(parser, "output_dir", default="llada-quickstart",
             help="folder for everything the run writes (created; relative to the current folder)")
    add_flag(parser, "pretrain_steps", type=int, default=200, help="optimizer steps of masked-diffusion pre-training")
    add_flag(parser, "sft_steps", type=int, default=400, help="optimizer steps of LoRA fine-tuning on the task")
    add_flag(parser, "sft_learning_rate", type=float, default=1.5e-3, help="peak learning rate of the fine-tuning")
    add_flag(parser, "eval_prompts", type=int, default=100, help="held-out prompts scored before and after SFT")
    add_flag(parser, "digits", type=int, default=6, help="length of the digit strings the task copies")
    add_flag(parser, "seed", type=int, default=0, help="seed of the model, the data and training")
    add_flag(parser, "quick", action="store_true",
             help=f"a short run that still has to learn (CI): {QUICK['pretrain_steps']} pre-training and "
             f"{QUICK['sft_steps']} SFT steps, {QUICK['digits']} digits, {QUICK['eval_prompts']} prompts; overrides "
             "those flags")
    add_flag(parser, "repo_id", default="your-name/llada-quickstart", help="Hub repository id written into the card")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`llada-hf quickstart`: 0 when fine-tuning beat the untrained model, 1 (one line on stderr) when it did not."""
    try:
        quickstart(argv)
    except QuickstartDidNotLearn as error:
        print(f"llada-hf quickstart: {error}", file=sys.stderr)
        return 1
    return 0


def quickstart(argv: list[str] | None = None) -> dict:
    """Run the quickstart; the summary it also writes to summary.json. Raises `QuickstartDidNotLearn` when the
    accuracy after fine-tuning does not beat the accuracy before (everything is written first)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    train_pairs_count = 3000
    if args.quick:
        args.pretrain_steps, args.sft_steps = QUICK["pretrain_steps"], QUICK["sft_steps"]
        args.eval_prompts, args.digits, train_pairs_count = QUICK["eval_prompts"], QUICK["digits"], QUICK["train_pairs"]
    for name in ("pretrain_steps", "sft_steps", "eval_prompts", "digits"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.sft_learning_rate) and args.sft_learning_rate >= 0):  # 0: the untrained baseline
        parser.error(f"--sft_learning_rate must be a finite number >= 0, got {args.sft_learning_rate}")
    check_output_dir(args.output_dir)

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModel

    from hub_cards import check_folder, publish
    from modeling_llada import LLaDAGenerationConfig

    from trainers import MaskedDiffusionConfig, MaskedDiffusionSFTConfig, MaskedDiffusionSFTTrainer, MaskedDiffusionTrainer
    from .live_view import DenoisingView, plot_losses, plot_unmasking_order
    from .local_data import digit_copy_task, python_docs_corpus, train_tokenizer

    began = time.perf_counter()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    use_cpu = not torch.cuda.is_available()
    say = lambda message: print(f"[{time.perf_counter() - began:6.1f}s] {message}", flush=True)  # noqa: E731
    say(f"writing everything under {output.resolve()} (--output_dir moves it)")

    # 1. tokenizer and a fresh model
    corpus = python_docs_corpus()
    tokenizer = train_tokenizer(corpus["text"], vocab_size=1024)
    torch.manual_seed(args.seed)
    vocab = len(tokenizer)
    config = fresh_config(args.model, tokenizer)
    model = AutoModel.from_config(config)
    say(f"tokenizer: {vocab} tokens from Python's docs ({sum(map(len, corpus['text'])):,} characters); model: "
        f"{args.model} ({type(model).__name__}), {sum(p.numel() for p in model.parameters()):,} parameters")

    # 2. pre-training
    pretrainer = MaskedDiffusionTrainer(
        model,
        MaskedDiffusionConfig(output_dir=str(output / "pretrain"), block_size=128, per_device_train_batch_size=16,
                              max_steps=args.pretrain_steps, learning_rate=5e-4, warmup_steps=min(30, args.pretrain_steps),
                              lr_scheduler_type="cosine", logging_steps=LOSS_EVERY,
                              save_strategy="no", report_to="none", use_cpu=use_cpu, seed=args.seed),
        train_dataset=corpus, processing_class=tokenizer,
    )
    _quiet_progress(pretrainer)
    say(f"pre-training on {len(pretrainer.train_dataset)} blocks of 128 tokens for {args.pretrain_steps} steps")
    pretrainer.train()
    # saved and reloaded as a user's pre-trained folder would be: the fine-tuning record (and the card) then carries
    # the pre-training stage too
    pretrainer.save_model(str(output / "pretrained"), dataset_name="Python docs (local)")
    model = AutoModel.from_pretrained(output / "pretrained")

    # 3. the task, accuracy before, LoRA SFT, accuracy after
    train_pairs = digit_copy_task(train_pairs_count, args.digits, args.seed)
    seen = {q for q, _ in train_pairs}
    eval_pairs = [p for p in digit_copy_task(10 * args.eval_prompts, args.digits, args.seed + 1) if p[0] not in seen]
    eval_pairs = eval_pairs[: args.eval_prompts]
    answer_tokens = len(tokenizer(eval_pairs[0][1], add_special_tokens=False)["input_ids"]) + 1
    gen_length = -(-answer_tokens // 8) * 8
    generation = dict(max_new_tokens=gen_length, steps=gen_length, block_length=gen_length)
    before = task_accuracy(model, tokenizer, eval_pairs, generation, desc="accuracy before SFT")
    say(f"task: copy {args.digits} digits ('{train_pairs[0][0]}' -> '{train_pairs[0][1]}'); accuracy of generate on "
        f"{len(eval_pairs)} held-out prompts before fine-tuning: {before:.1%}")
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q, _ in train_pairs],
                                 "completion": [[{"role": "assistant", "content": a}] for _, a in train_pairs]})
    # LoRA on every block projection; the embeddings and the output head are trained in full (modules_to_save):
    # a minute-scale base has no useful digit embeddings for adapters alone to build on. (Measured here: adapters
    # alone stay at 0%, and a base pre-trained at lr 2e-3 instead of 5e-4 resists the adapters too.)
    lora = LoraConfig(r=32, lora_alpha=64, modules_to_save=FULLY_TRAINED[args.model])
    sft_trainer = MaskedDiffusionSFTTrainer(
        model,
        MaskedDiffusionSFTConfig(output_dir=str(output / "sft"), per_device_train_batch_size=32,
                                 max_steps=args.sft_steps, learning_rate=args.sft_learning_rate,
                                 warmup_steps=min(20, args.sft_steps),
                                 lr_scheduler_type="cosine", logging_steps=LOSS_EVERY,
                                 save_strategy="no", report_to="none", use_cpu=use_cpu, max_length=128,
                                 seed=args.seed),
        train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
    )
    _quiet_progress(sft_trainer)
    say(f"LoRA fine-tuning (r=32) for {args.sft_steps} steps")
    sft_trainer.train()
    sft_trainer.save_model(str(output / "adapter"), dataset_name=f"digit copy, {args.digits} digits (local)")
    tuned = sft_trainer.model
    after = task_accuracy(tuned, tokenizer, eval_pairs, generation, desc="accuracy after SFT")
    say(f"accuracy after fine-tuning: {after:.1%} (before: {before:.1%})")

    # 4. a Hub-ready folder, checked, reloaded with remote code
    merged = tuned.merge_and_unload()
    # a chat model ends its turn with <|eot_id|>: both ids end an answer, and early_exit stops there
    end_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(EOT)]
    generation_config_class = getattr(merged, "generation_config_class", None) or LLaDAGenerationConfig
    merged.generation_config = generation_config_class(**generation, eos_token_id=end_ids, early_exit=True,
                                                     pad_token_id=tokenizer.eos_token_id,
                                                     bos_token_id=tokenizer.bos_token_id)
    merged.save_pretrained(output / "model")
    tokenizer.save_pretrained(output / "model")
    record = json.loads((output / "adapter" / "llada_training.json").read_text())
    (output / "model" / "llada_training.json").write_text(json.dumps(record, indent=2) + "\n")
    eval_results = [dict(task_type="text-generation", dataset_type="digit-copy", dataset_name="digit copy (held out)",
                         metric_type="exact_match", metric_value=after)]
    staged = publish(output / "model", args.repo_id, dry_run=True, staging_dir=output / "hub",
                     eval_results=eval_results)
    problems = check_folder(output / "hub", require_card=True)
    say(f"Hub-ready folder {output / 'hub'} ({len(staged.files)} files, card included): "
        + ("passes the publishing checks" if not problems else f"PROBLEMS: {problems}"))
    remote_class = _load_in_a_fresh_process(output / "hub")
    say(f"the folder loads with trust_remote_code in a fresh process without llada-hf: {remote_class}")
    reloaded = AutoModel.from_pretrained(output / "hub", trust_remote_code=True).eval()

    # 5. a live generation from the reloaded model, and the pictures
    question = eval_pairs[0][0]
    print(f"\nuser: {question}\nassistant (denoising live): ", end="", flush=True)
    view = DenoisingView(tokenizer, config.mask_token_id, stop_token_ids=end_ids)
    prompt = torch.tensor([_chat_ids(tokenizer, question)])
    reloaded.generate(prompt, streamer=view)
    traced = reloaded.generate(prompt, output_history=True)
    plot_unmasking_order(tokenizer, traced.raw_sequences[0], traced.commit_step[0], prompt.shape[1],
                         output / "unmasking.png", title=f"Unmasking order for '{question}'",
                         block_length=generation["block_length"], stop_token_ids=end_ids)
    plot_losses({"pre-training": _losses(pretrainer), "LoRA SFT": _losses(sft_trainer)}, output / "loss.png")
    summary = {
        "accuracy_before": before, "accuracy_after": after, "eval_prompts": len(eval_pairs),
        "pretrain_steps": args.pretrain_steps, "sft_steps": args.sft_steps, "seconds": time.perf_counter() - began,
        "hub_folder": str(output / "hub"), "publishing_problems": problems, "remote_code_class": remote_class,
        "live_answer": view.text, "learned": after > before,
        "expected_answer": eval_pairs[0][1],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"done. loss curves: {output / 'loss.png'}; unmasking order: {output / 'unmasking.png'}; summary: "
        f"{output / 'summary.json'}")
    print(f"\nTask accuracy (copy {args.digits} digits, {len(eval_pairs)} held-out prompts): before SFT {before:.1%}, "
          f"after SFT {after:.1%}.\nTry: llada-hf chat {output / 'hub'} --trust_remote_code\n"
          f"     llada-hf publish {output / 'hub'} {args.repo_id} --dry-run", file=sys.stdout)
    if after <= before:
        raise QuickstartDidNotLearn(
            f"fine-tuning did not improve the task: accuracy {before:.1%} before SFT, {after:.1%} after, on "
            f"{len(eval_pairs)} held-out prompts (--sft_steps {args.sft_steps}, --sft_learning_rate "
            f"{args.sft_learning_rate}); with so few steps or prompts, run without --quick or raise --sft_steps.")
    return summary
