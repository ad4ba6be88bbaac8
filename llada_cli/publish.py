"""`llada-hf publish`: the command line of `hub_cards.publish`."""

import argparse
import json
import sys

from hub_cards.publish import UnpublishableFolderError, publish


def _one_line(error: Exception) -> str:
    if isinstance(error, UnpublishableFolderError):
        return error.one_line()
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llada-hf publish", description="Publish a LLaDA model or adapter folder "
                                     "to the Hugging Face Hub with a generated card. Only the files a model or "
                                     "adapter repository needs are uploaded (never pickles, scripts or other files).")
    parser.add_argument("folder", help="a folder written by save_pretrained / trainer.save_model")
    parser.add_argument("repo_id", help="the Hub repository, namespace/name (e.g. your-name/llada-8b-sft)")
    parser.add_argument("--dry-run", action="store_true", help="check, stage and print what would be uploaded")
    parser.add_argument("--merge", action="store_true", help="merge an adapter into its base and publish the model")
    parser.add_argument("--base-model", help="Hub id of the base model (adapters trained from a local base)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--dataset", action="append", default=[], help="a dataset id for the card (repeatable)")
    parser.add_argument("--eval-results", help="JSON list of huggingface_hub EvalResult fields for model-index")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--staging-dir", help="stage here and keep the folder (empty or new; default: a temporary "
                        "folder, removed afterwards)")
    args = parser.parse_args(argv)
    try:
        eval_results = json.loads(args.eval_results) if args.eval_results else None
        result = publish(
            args.folder, args.repo_id, dry_run=args.dry_run, merge=args.merge, base_model=args.base_model,
            private=args.private, staging_dir=args.staging_dir, license=args.license, datasets=args.dataset,
            eval_results=eval_results,
        )
    except ValueError as error:  # the folder, the repo id or an option: the user can fix it
        print(f"llada-hf publish: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # the Hub, the network, the file system: one line, not a traceback
        print(f"llada-hf publish: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    source = f" from {result.staged}" if result.staged is not None else ""
    print(f"{'would upload' if args.dry_run else 'uploaded'} {result.kind} to {args.repo_id}{source}, "
          f"{len(result.files)} files:")
    for name in result.files:
        print(f"  {name}")
    if result.left_out:
        print(f"left out (not on the upload allow-list): {', '.join(result.left_out)}")
    if args.dry_run:
        print("\n" + result.card)
    else:
        print(result.url)
    return 0
