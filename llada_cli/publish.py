"""`llada-hf publish`: the command line of `hub_cards.publish`.

Importing this module is cheap (argparse only): `hub_cards.publish` (huggingface_hub, and torch for a merge) is
imported after the arguments are parsed, so `--help` answers at once. Errors are one line on stderr, `llada-hf
publish: <message>`, naming the flags as typed here (`--base-model`): exit status 2 for what the user can fix (the
folder, the repo id, the base model, an option), 1 for the Hub, the network or the file system, 130 when
interrupted. A SIGTERM or SIGHUP ends the command like Ctrl-C, so its temporary folders are removed.
"""

import json
import os
import signal
import sys
import threading

from . import help_cache
from ._args import add_flag, new_parser

PROG = "llada-hf publish"
# How hub_cards.publish's messages name its settings: the flags of this command.
SETTING_NAMES = {"base_model": "--base-model", "merge": "--merge", "staging_dir": "--staging-dir",
                 "datasets": "--dataset"}


def build_parser():
    parser = new_parser(PROG, "Publish a LLaDA model or LoRA adapter folder to the Hugging Face Hub with a generated "
                        "model card\n(training stages, data, base model, sampler settings). Only the files a model or "
                        "adapter repository\nneeds are uploaded (never pickles, scripts or other files).\n\n"
                        "  llada-hf publish runs/sft your-name/llada-sft --dry-run\n"
                        "  llada-hf publish runs/sft-lora your-name/llada-merged --merge --base-model runs/pretrain\n"
                        "  llada-hf publish runs/sft-lora your-name/llada-lora --base-model your-name/llada-base")
    parser.add_argument("folder", help="a folder written by save_pretrained / trainer.save_model (llada-hf pretrain "
                        "or sft --output_dir)")
    parser.add_argument("repo_id", help="the Hub repository, namespace/name (e.g. your-name/llada-8b-sft)")
    add_flag(parser, "dry_run", action="store_true", help="check, stage and print what would be uploaded and the card; "
             "nothing is sent")
    add_flag(parser, "merge", action="store_true", help="merge a LoRA adapter into its base model and publish the "
             "merged model")
    add_flag(parser, "base_model", metavar="HUB_ID_OR_FOLDER", help="an adapter's base model. With --merge: the base "
             "to merge into, a Hub id or a local model folder (default: the adapter's base_model_name_or_path). "
             "Without: the Hub id the base is published under (a local path cannot be resolved by others)")
    add_flag(parser, "license", default="apache-2.0", help="the license in the card metadata")
    add_flag(parser, "dataset", action="append", metavar="HUB_DATASET_ID", help="a Hub dataset id for the card "
             "metadata (repeatable; default: the Hub datasets of the training record)")
    add_flag(parser, "eval_results", metavar="JSON", help="a JSON list of huggingface_hub EvalResult fields "
             "(task_type, dataset_type, dataset_name, metric_type, metric_value) for the card's model-index; "
             "default: none (the card has no model-index)")
    add_flag(parser, "private", action="store_true", help="create the repository as private")
    add_flag(parser, "staging_dir", metavar="FOLDER", help="stage here and keep the folder (empty or new; default: a "
             "temporary folder, removed afterwards)")
    return parser


def _one_line(error: BaseException) -> str:
    from hub_cards.publish import UnpublishableFolderError

    if isinstance(error, UnpublishableFolderError):
        return error.one_line()
    return " ".join(str(error).split()) or type(error).__name__


def _eval_results(text: str | None):
    if not text:
        return None
    try:
        results = json.loads(text)
    except ValueError as error:
        shown = text if len(text) <= 200 else text[:197] + "..."
        hint = (" It names a file: the option takes the JSON text itself (--eval-results \"$(cat FILE)\")."
                if os.path.isfile(text) else "")
        raise ValueError(f"--eval-results {shown!r} is not valid JSON ({error}); pass a JSON list of objects with "
                         f"task_type, dataset_type, dataset_name, metric_type, metric_value.{hint}") from None
    if isinstance(results, dict):
        results = [results]
    if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
        raise ValueError("--eval-results must be a JSON list of objects with task_type, dataset_type, dataset_name, "
                         "metric_type, metric_value.")
    return results


class _Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised where the program is so that `finally` blocks (temporary folders) run."""


def _on_signal(signum, frame):
    raise _Terminated(signum)


def _handle_termination():
    """Turn SIGTERM / SIGHUP into an exception for the duration of the command; returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, _on_signal)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    help_cache.warm("publish", parser)  # the next `llada-hf publish --help` is then fast
    args = parser.parse_args(argv)
    previous = _handle_termination()
    try:
        return _run(args)
    except KeyboardInterrupt as interrupt:
        reason = "terminated" if isinstance(interrupt, _Terminated) else "interrupted"
        print(f"{PROG}: {reason}; nothing was uploaded unless a commit URL was printed", file=sys.stderr)
        return 130
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run(args) -> int:
    try:
        from hub_cards.publish import publish

        result = publish(
            args.folder, args.repo_id, dry_run=args.dry_run, merge=args.merge, base_model=args.base_model,
            private=args.private, staging_dir=args.staging_dir, setting_names=SETTING_NAMES, license=args.license,
            datasets=args.dataset or [], eval_results=_eval_results(args.eval_results),
        )
    except ValueError as error:  # the folder, the repo id, the base model or an option: the user can fix it
        print(f"{PROG}: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # the Hub, the network, the file system: one line, not a traceback
        print(f"{PROG}: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    source = f" from {result.staged}" if result.staged is not None else ""
    print(f"{'would upload' if args.dry_run else 'uploaded'} {result.kind} to {args.repo_id}{source}, "
          f"{len(result.files)} files:")
    for name in result.files:
        print(f"  {name}")
    if result.merge:
        from hub_cards.cards import quantized_base_text

        trained_on = result.merge.get("adapter_quantization")
        print(f"merged into the full-precision base ({result.merge.get('base_dtype')})"
              + (f"; the adapter was trained on {quantized_base_text(trained_on)}" if trained_on else "")
              + ": the model loads without PEFT or bitsandbytes")
    if result.left_out:
        print(f"left out (not on the upload allow-list): {', '.join(result.left_out)}")
    if args.dry_run:
        print("\n" + result.card)
    else:
        print(result.url)
    return 0
