"""Publish a saved LLaDA model or LoRA adapter folder to the Hugging Face Hub, with a generated model card.

    python examples/publish.py runs/sft org/my-llada --dry-run          # check, stage and print; no network
    python examples/publish.py runs/sft org/my-llada --dataset org/data --license apache-2.0
    python examples/publish.py runs/sft-lora org/my-llada-lora --base-model org/my-llada-base
    python examples/publish.py runs/sft-lora org/my-llada-merged --merge  # base + adapter as one model

Only safetensors weights, configs, the LLaDA code files and tokenizer files are uploaded; never pickles.
"""

import argparse
import json
import sys

from hub_cards import IncompleteFolderError, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by save_pretrained / trainer.save_model")
    parser.add_argument("repo_id", help="the Hub repository, e.g. org/name")
    parser.add_argument("--dry-run", action="store_true", help="check, stage and print what would be uploaded")
    parser.add_argument("--merge", action="store_true", help="merge an adapter into its base and publish the model")
    parser.add_argument("--base-model", help="Hub id of the base model (adapters trained from a local base)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dataset", action="append", default=[], help="a dataset id for the card (repeatable)")
    parser.add_argument("--eval-results", help="JSON list of huggingface_hub EvalResult fields for model-index")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--staging-dir", help="where to stage the upload (default: a temporary folder)")
    args = parser.parse_args(argv)
    try:
        result = publish(
            args.folder, args.repo_id, dry_run=args.dry_run, merge=args.merge, base_model=args.base_model,
            private=args.private, staging_dir=args.staging_dir, license=args.license, datasets=args.dataset,
            eval_results=json.loads(args.eval_results) if args.eval_results else None,
        )
    except IncompleteFolderError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{'would upload' if args.dry_run else 'uploaded'} {result.kind} to {args.repo_id} from {result.staged}:")
    for name in result.files:
        print(f"  {name}")
    if args.dry_run:
        print("\n" + result.card)
    else:
        print(result.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
