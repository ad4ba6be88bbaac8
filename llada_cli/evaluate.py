"""`llada-hf eval`: lm-evaluation-harness on a LLaDA model or adapter, through the `llada` model of
`trainers.lm_eval_llada`."""

import argparse
import json

from trainers.lm_eval_llada import LLaDAEvalModel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="llada-hf eval", description="Evaluate a LLaDA model (or adapter) with "
                                     "lm-evaluation-harness; prints the table, tokens/s and forward passes per token.")
    parser.add_argument("--model", required=True, help="Hub id or folder of a LLaDA model")
    parser.add_argument("--peft", help="LoRA adapter (Hub id or folder) applied to --model")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include_path", help="folder with extra task YAML files")
    parser.add_argument("--limit", type=float, help="examples per task (int) or fraction")
    parser.add_argument("--num_fewshot", type=int)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--mc_num", type=int, default=128, help="Monte-Carlo samples of the likelihood bound")
    parser.add_argument("--cfg_scale", type=float, default=0.0)
    parser.add_argument("--max_new_tokens", type=int, help="canvas length when a task sets no max_gen_toks")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--block_length", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--remasking")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)

    generation = {k: getattr(args, k) for k in ("steps", "block_length", "temperature", "remasking")
                  if getattr(args, k) is not None}
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    model = LLaDAEvalModel(pretrained=args.model, peft=args.peft, batch_size=args.batch_size, mc_num=args.mc_num,
                           cfg_scale=args.cfg_scale, seed=args.seed, max_new_tokens=args.max_new_tokens, **generation)
    results = lm_eval.simple_evaluate(
        model=model, tasks=args.tasks.split(","), limit=args.limit, num_fewshot=args.num_fewshot,
        task_manager=TaskManager(include_path=args.include_path), apply_chat_template=args.apply_chat_template,
        log_samples=False,
    )
    print(make_table(results))
    speed = {"generated_tokens": model.generated_tokens, "forward_passes": model.forward_passes,
             "generation_seconds": round(model.generation_seconds, 3)}
    if model.generated_tokens:
        speed["tokens_per_second"] = round(model.generated_tokens / model.generation_seconds, 2)
        speed["forward_passes_per_token"] = round(model.forward_passes / model.generated_tokens, 4)
        print(f"generation: {speed['tokens_per_second']} tokens/s, {speed['forward_passes_per_token']} forward "
              f"passes per token ({model.generated_tokens} tokens in {speed['generation_seconds']} s)")
    summary = {"results": results["results"], "speed": speed}
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(summary, handle, indent=2, default=str)
    return summary

