"""`llada-hf eval`: lm-evaluation-harness on a LLaDA model or adapter, through the `llada` model of
`trainers.lm_eval_llada`.

Importing this module is cheap (argparse only): `llada-hf eval --help` answers at once. torch, lm-eval and the model
are imported by `main` after the arguments are parsed, and the task names are checked before the model is loaded.
"""

import argparse
import json
import math
from pathlib import Path

from . import help_cache
from ._args import add_flag, new_parser
from .sampler_settings import DEFAULTS, DTYPES, FIELDS, REMASKING_STRATEGIES

# Sampler settings that are arguments of the lm-eval model of their own (the others are passed as generation kwargs).
_OWN_ARGUMENTS = ("max_new_tokens", "cfg_scale", "seed")
LIST_TASKS_HINT = "`lm-eval ls tasks` lists the available tasks (add `--include_path DIR` for your own task folders)"

DESCRIPTION = """\
Evaluate a LLaDA model (or a LoRA adapter on its base) with lm-evaluation-harness; prints lm-eval's table, then the
generation speed: tokens/s and forward passes per generated token.

  llada-hf eval --model GSAI-ML/LLaDA-8B-Instruct --tasks gsm8k --apply_chat_template --limit 50 \\
      --max_new_tokens 256 --block_length 32 --steps 256
  llada-hf eval --model runs/base --peft runs/sft-lora --tasks my_task --include_path my_tasks/ \\
      --output results.json --log_samples
"""


def count_or_fraction(value: str) -> int | float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a count >= 1 or a fraction in (0, 1), got {value!r}")
    return int(number) if number.is_integer() and number >= 1 else number


def build_parser():
    """The argument parser of `llada-hf eval` (both spellings of every flag, help text, defaults shown)."""
    parser = new_parser("llada-hf eval", DESCRIPTION)
    add_flag(parser, "model", required=True, metavar="NAME_OR_PATH",
             help="Hub id or folder of a LLaDA model (the base, with --peft)")
    add_flag(parser, "peft", default=None, metavar="NAME_OR_PATH",
             help="LoRA adapter (Hub id or folder) evaluated on --model; default: none (the model alone)")
    add_flag(parser, "tokenizer", default=None, metavar="NAME_OR_PATH",
             help="Hub id or folder of the tokenizer; default: the model's")
    add_flag(parser, "tasks", required=True, help="comma-separated lm-eval task names (or glob patterns); "
             + LIST_TASKS_HINT)
    add_flag(parser, "include_path", default=None,
             help="folder with extra task YAML files; default: none (lm-eval's own tasks)")
    add_flag(parser, "limit", type=count_or_fraction, default=None,
             help="examples per task: a count, or a fraction of each task when below 1; default: every example")
    add_flag(parser, "num_fewshot", type=int, default=None, help="few-shot examples per prompt; default: the task's")
    add_flag(parser, "apply_chat_template", action="store_true",
             help="render prompts with the tokenizer's chat template (instruct models)")
    add_flag(parser, "fewshot_as_multiturn", action=argparse.BooleanOptionalAction, default=True,
             help="with --apply_chat_template, few-shot examples are earlier chat turns (off: one user turn)")
    add_flag(parser, "system_instruction", default=None,
             help="system message put before every prompt; default: none")
    add_flag(parser, "batch_size", type=int, default=8, help="prompts per generation batch")
    add_flag(parser, "mc_num", type=int, default=128,
             help="Monte-Carlo samples of the likelihood bound (loglikelihood tasks)")
    add_flag(parser, "cfg_scale", type=float, default=0.0, help="classifier-free guidance scale (0: off)")
    add_flag(parser, "max_new_tokens", type=int, default=None,
             help="generation canvas when a task sets no max_gen_toks; default: 128")
    add_flag(parser, "steps", type=int, default=None, help="denoising steps; default: one per generated token")
    add_flag(parser, "block_length", type=int, default=None, help="semi-autoregressive block length; default: the "
             "whole canvas")
    add_flag(parser, "temperature", type=float, default=None,
             help=f"sampling temperature; default: {DEFAULTS['temperature']:g} (greedy)")
    add_flag(parser, "top_k", type=int, default=None,
             help="sample among the k most likely tokens; default: no limit")
    add_flag(parser, "top_p", type=float, default=None,
             help="nucleus sampling threshold; default: 1 (no limit)")
    add_flag(parser, "remasking", choices=REMASKING_STRATEGIES, default=None,
             help=f"which proposals to commit first; default: {DEFAULTS['remasking']}")
    add_flag(parser, "logits_eos_inf", action="store_true", default=None,
             help="never propose an EOS id; default: the checkpoint's generation_config, else off")
    add_flag(parser, "confidence_eos_eot_inf", action="store_true", default=None,
             help="commit EOS proposals last; default: the checkpoint's generation_config, else off")
    add_flag(parser, "early_exit", action="store_true", default=None,
             help="stop denoising a row once its answer has ended with EOS; default: the checkpoint's "
                  "generation_config, else off")
    add_flag(parser, "seed", type=int, default=0, help="seed of the likelihood samples and of sampling")
    add_flag(parser, "device", default="auto",
             help="where the model runs: cpu, cuda, cuda:1, mps, ...; auto: cuda when available, else cpu")
    add_flag(parser, "dtype", choices=DTYPES, default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    add_flag(parser, "trust_remote_code", action="store_true", help="allow code files shipped with the model")
    add_flag(parser, "output", default=None, help="write the results (and the samples, with --log_samples) as JSON "
             "to this file; default: none (the table is printed only)")
    add_flag(parser, "log_samples", action="store_true",
             help="keep every example's prompt, outputs, target and score (in --output, which it needs)")
    return parser


def check_tasks(tasks: str, include_path: str | None):
    """The task names of `--tasks` (glob patterns expanded, YAML files kept) and lm-eval's TaskManager; a
    `ValueError` naming the unknown ones, before any model is loaded."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(f"--include_path {include_path!r}: no such folder; pass the folder that holds your "
                                "task YAML files.")
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--tasks {tasks!r} names no task; {LIST_TASKS_HINT}.")
    manager = TaskManager(include_path=include_path)
    resolved, unknown = [], []
    for name in names:
        if name.endswith((".yaml", ".yml")):
            matches = [str(Path(name).absolute())] if Path(name).is_file() else []
        else:
            matches = manager.match_tasks([name])
        if not matches:
            unknown.append(name)
        resolved += [match for match in matches if match not in resolved]
    if unknown:
        where = f" (nor in --include_path {include_path!r})" if include_path else ""
        raise ValueError(f"--tasks: unknown task{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                         f"lm-eval has no task of that name{where}; {LIST_TASKS_HINT}.")
    return resolved, manager


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"llada-hf eval needs lm-evaluation-harness: pip install 'llada-hf[eval]' ({error}).")


def _check_chat_template(args) -> None:
    from transformers import AutoTokenizer

    setting, source = ("--tokenizer", args.tokenizer) if args.tokenizer else ("--model", args.model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=args.trust_remote_code)
    if not tokenizer.chat_template:
        raise ValueError(f"{setting} {source!r}: its tokenizer has no chat template, which --apply_chat_template "
                         "needs; drop the flag or pass --tokenizer with a tokenizer that has one.")


def main(argv: list[str] | None = None) -> dict:
    """Run `llada-hf eval` with `argv`; returns {"results", "speed"} (and "samples" with --log_samples)."""
    parser = build_parser()
    help_cache.warm("eval", parser)  # the next `llada-hf eval --help` is then fast
    args = parser.parse_args(argv)
    if args.log_samples and not args.output:
        raise ValueError("--log_samples writes every example's outputs into --output; pass --output FILE.json too.")
    _require_lm_eval()
    from trainers.lm_eval_llada import check_eval_settings

    check_eval_settings(args.batch_size, args.mc_num, {"batch_size": "--batch_size", "mc_num": "--mc_num"})
    from .loading import check_adapter_source, check_device, check_llada_checkpoint, check_model_source

    device = str(check_device(args.device))
    tasks, task_manager = check_tasks(args.tasks, args.include_path)
    # then the model and the adapter, still before anything is loaded
    check_model_source(args.model, "--model")
    check_llada_checkpoint(args.model, "--model")
    if args.peft:
        check_adapter_source(args.peft, "--peft")
    if args.apply_chat_template:
        _check_chat_template(args)

    import lm_eval
    from lm_eval.utils import handle_non_serializable, make_table

    from trainers.lm_eval_llada import LLaDAEvalModel

    generation = {name: getattr(args, name) for name in FIELDS
                  if name not in _OWN_ARGUMENTS and getattr(args, name, None) is not None}
    model = LLaDAEvalModel(pretrained=args.model, peft=args.peft, tokenizer=args.tokenizer, dtype=args.dtype,
                           device=device, batch_size=args.batch_size, mc_num=args.mc_num,
                           cfg_scale=args.cfg_scale, seed=args.seed, max_new_tokens=args.max_new_tokens,
                           trust_remote_code=args.trust_remote_code, **generation)
    results = lm_eval.simple_evaluate(
        model=model, tasks=tasks, limit=args.limit, num_fewshot=args.num_fewshot, task_manager=task_manager,
        apply_chat_template=args.apply_chat_template, fewshot_as_multiturn=args.fewshot_as_multiturn,
        system_instruction=args.system_instruction, log_samples=args.log_samples,
    )
    print(make_table(results))
    speed = {"generated_tokens": model.generated_tokens, "forward_passes": model.forward_passes,
             "generation_seconds": round(model.generation_seconds, 3)}
    if model.generated_tokens:
        speed["tokens_per_second"] = round(model.generated_tokens / max(model.generation_seconds, 1e-9), 2)
        speed["forward_passes_per_token"] = round(model.forward_passes / model.generated_tokens, 4)
        print(f"generation: {speed['tokens_per_second']} tokens/s, {speed['forward_passes_per_token']} forward "
              f"passes per token ({model.generated_tokens} tokens in {speed['generation_seconds']} s)")
    summary = {"results": results["results"], "speed": speed}
    if args.log_samples:
        summary["samples"] = results["samples"]
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(summary, handle, indent=2, default=handle_non_serializable)
        print(f"results written to {args.output}")
    return summary


if __name__ == "__main__":
    main()
