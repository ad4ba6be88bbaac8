"""`llada-hf grpo`: reinforcement learning of a LLaDA model with diffu-GRPO (d1) on verifiable rewards.

The flags are TRL's (GRPOConfig, ModelConfig) plus the diffusion settings of `DiffuGRPOConfig`, read by TRL's parser
(or from `--config file.yaml`), as `llada-hf dpo` does. Without --dataset_name the prompts are a local copy task
(no download) rewarded by exact match with its `answer` column.
"""

GRPO_DESCRIPTION = """\
Reinforcement learning of a LLaDA model with diffu-GRPO (d1): rollouts from the model's own diffusion sampler
(--steps, --block_length, --remasking, --temperature, ...), rewarded by your reward functions (or reward models),
TRL's group-relative advantages, clipping and KL to the reference (--beta), and d1's one-step per-token
log-probabilities (the completion masked, each prompt token masked with probability --p_mask_prompt, a new mask for
each of the --num_iterations inner updates). Full or LoRA (--use_peft; the reference is then the base with the
adapter disabled). The dataset has a `prompt` column (plain or chat) plus whatever columns the rewards read; the
default reward, exact_match, compares the answer with an `answer` column. Every flag of TRL's GRPOConfig and
ModelConfig applies; or put them in a YAML file (--config). The defaults below are a small CPU run."""
GRPO_EXAMPLES = """\
examples:
  # a fine-tuned model on the local copy task, exact-match reward (no download)
  llada-hf grpo --model_name_or_path runs/sft --output_dir runs/grpo
  # LoRA on LLaDA-8B-Instruct with a Hub dataset and your own reward function (module:function)
  llada-hf grpo --model_name_or_path GSAI-ML/LLaDA-8B-Instruct --dataset_name openai/gsm8k --dataset_config main \\
      --reward_funcs my_rewards:correctness --bf16 --use_peft --max_completion_length 256 --block_length 32 \\
      --steps 128 --temperature 0.9 --output_dir runs/llada-d1
  # the same flags from a YAML file of `setting: value` lines
  llada-hf grpo --config grpo.yaml"""


def build_parser():
    """The parser of `llada-hf grpo` (imports transformers and TRL: seconds; its help text is cached)."""
    from trainers.grpo import DiffuGRPOConfig

    from .train import training_parser
    from .training_arguments import GRPOScriptArguments

    return training_parser(
        "grpo", GRPOScriptArguments, DiffuGRPOConfig, GRPO_DESCRIPTION, GRPO_EXAMPLES,
        per_device_train_batch_size=32, num_generations=8, max_completion_length=16, max_steps=100,
        learning_rate=3e-4, beta=0.02, num_iterations=2, logging_steps=10, save_steps=50,
    )


def resolve_reward_funcs(names: list[str]) -> list:
    """The reward functions of --reward_funcs: ours by name, `module:function` imported, anything else left to TRL
    (a reward model's Hub id or folder)."""
    import importlib

    from trainers.grpo import exact_match_reward

    if not names:
        raise ValueError("--reward_funcs is empty; pass at least one (exact_match, module:function or a reward model).")
    funcs = []
    for name in names:
        if name == "exact_match":
            funcs.append(exact_match_reward)
        elif ":" in name:
            module, _, attribute = name.partition(":")
            try:
                function = getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError) as error:
                raise ValueError(f"--reward_funcs {name!r}: cannot import {attribute!r} from module {module!r} "
                                 f"({error}); pass module:function of an importable module.") from None
            if not callable(function):
                raise ValueError(f"--reward_funcs {name!r} is not a function.")
            funcs.append(function)
        else:
            funcs.append(name)
    return funcs


def copy_task_prompts(count: int, digits: int, seed: int):
    """The default dataset: chat prompts of the copy task with their `answer`."""
    from datasets import Dataset

    from .local_data import digit_copy_task

    pairs = digit_copy_task(count, digits, seed)
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q, _ in pairs],
                              "answer": [a for _, a in pairs]})


def check_prompt_dataset(dataset, dataset_name: str | None) -> None:
    from trainers.base import check_no_null_fields

    columns = list(getattr(dataset, "column_names", None) or [])
    where = f"--dataset_name {dataset_name!r}" if dataset_name else "the dataset"
    if columns and "prompt" not in columns:
        raise ValueError(f"{where} has columns {columns}; GRPO needs a `prompt` column (plain text or chat messages). "
                         "Rename yours (dataset.rename_column).")
    try:
        check_no_null_fields(dataset, ("prompt",), "train dataset")
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def grpo(argv: list[str] | None = None) -> None:
    """diffu-GRPO, full or LoRA (see examples/grpo.py for a run with before/after accuracies)."""
    from trainers.grpo import DiffuGRPOTrainer

    from .train import load_model, parse_training_args, peft_config, training_dataset

    script_args, training_args, model_args = parse_training_args("grpo", build_parser(), argv)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    dataset = training_dataset(
        script_args, lambda: copy_task_prompts(2000, script_args.copy_task_digits, training_args.seed))
    check_prompt_dataset(dataset, script_args.dataset_name)
    model, tokenizer = load_model(model_args, script_args, training_args.trust_remote_code, training_args.seed)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    if eot is not None and eot not in configured:  # a chat answer ends at <|eot_id|>
        model.generation_config.eos_token_id = [*configured, eot] if configured else [tokenizer.eos_token_id, eot]
    trainer = DiffuGRPOTrainer(model, reward_funcs=reward_funcs, args=training_args, train_dataset=dataset,
                               processing_class=tokenizer, peft_config=peft_config(model_args, script_args, model))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)

