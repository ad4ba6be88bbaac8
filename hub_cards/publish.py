"""Publish a saved LLaDA model or LoRA adapter folder to the Hugging Face Hub.

`publish(folder, repo_id)` checks that the folder is complete, stages the files that may be uploaded (safetensors
only: pickled weights never leave the machine) with a freshly rendered card, and uploads the staged folder.
`dry_run=True` stops after staging and touches no network.
"""

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import TRAINING_RECORD, card_for_folder

CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "generation_llada.py", "likelihood_llada.py")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "added_tokens.json")
MODEL_FILES = ("config.json", "generation_config.json", *CODE_FILES)
ADAPTER_FILES = ("adapter_config.json",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModel")


class IncompleteFolderError(ValueError):
    """The folder lacks pieces a Hub repository needs; `problems` names each one."""

    def __init__(self, folder: Path, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{folder} cannot be published as it is:\n{lines}")


@dataclass
class PublishResult:
    kind: str  # "model" or "adapter"
    staged: Path  # the folder that is (or would be) uploaded
    files: list[str] = field(default_factory=list)
    card: str = ""
    url: str | None = None  # the commit URL, when uploaded


def folder_kind(folder: Path) -> str:
    return "adapter" if (folder / "adapter_config.json").exists() else "model"


def check_folder(folder: str | Path, base_model: str | None = None, require_card: bool = False,
                 require_tokenizer: bool = True) -> list[str]:
    """Everything a published repository needs and the folder lacks, one sentence each (empty when complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder."]
    problems = []
    has_safetensors = any(folder.glob("*.safetensors"))
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if folder_kind(folder) == "adapter":
        adapter = json.loads((folder / "adapter_config.json").read_text())
        base = base_model or adapter.get("base_model_name_or_path")
        if not base:
            problems.append("adapter_config.json names no base_model_name_or_path; pass base_model='org/name'.")
        elif Path(base).exists() and base_model is None:
            problems.append(f"the adapter's base model is a local path ({base}); pass base_model='org/name' with "
                            "the Hub id the base is published under.")
        if not (folder / "adapter_model.safetensors").exists():
            problems.append("adapter weights adapter_model.safetensors are missing"
                            + (f" (found only pickled {pickled}; save with safe_serialization=True)" if pickled else
                               "") + ".")
    else:
        config_path = folder / "config.json"
        if not config_path.exists():
            problems.append("config.json is missing.")
        else:
            config = json.loads(config_path.read_text())
            if config.get("model_type") != "llada":
                problems.append(f"config.json has model_type {config.get('model_type')!r}, not 'llada'.")
            auto_map = config.get("auto_map") or {}
            missing = [name for name in REQUIRED_AUTO_CLASSES if name not in auto_map]
            if missing:
                problems.append(f"config.json has no auto_map entry for {', '.join(missing)}; save the model with "
                                "model.save_pretrained(...) from llada-hf, which writes it.")
        if not has_safetensors:
            problems.append("no safetensors weights (model.safetensors or shards)"
                            + (f"; found only pickled {pickled}, which are never uploaded: re-save with "
                               "safe_serialization=True" if pickled else "") + ".")
        for name in CODE_FILES:
            if not (folder / name).exists():
                problems.append(f"code file {name} is missing (needed by trust_remote_code loading); "
                                "save with model.save_pretrained(...) from llada-hf.")
        if not (folder / "generation_config.json").exists():
            problems.append("generation_config.json is missing: it carries the diffusion settings (steps, "
                            "block_length, remasking, ...) that model.generate uses by default.")
    has_tokenizer = any((folder / name).exists() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    if require_tokenizer and not has_tokenizer:
        problems.append("the tokenizer is missing (tokenizer.json or equivalent): tokenizer.save_pretrained(folder).")
    if require_card and not (folder / "README.md").exists():
        problems.append("the model card README.md is missing.")
    return problems


def _uploadable(path: Path) -> bool:
    """Weights as safetensors, configs, the LLaDA code files, tokenizer files; never pickles or other scripts."""
    if path.suffix in PICKLE_SUFFIXES or path.name == "README.md":
        return False
    return path.suffix in (".safetensors", ".json") or path.name in CODE_FILES or path.name in TOKENIZER_FILES


def stage(folder: str | Path, repo_id: str, staging: str | Path, base_model: str | None = None,
          render_card: bool = True, **card_options) -> PublishResult:
    """Copy what may be uploaded into `staging` and write the card; raise IncompleteFolderError when incomplete."""
    folder, staging = Path(folder), Path(staging)
    problems = check_folder(folder, base_model, require_card=not render_card)
    if problems:
        raise IncompleteFolderError(folder, problems)
    staging.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and _uploadable(path):
            shutil.copy2(path, staging / path.name)
            files.append(path.name)
    kind = folder_kind(folder)
    if kind == "adapter":
        adapter_path = staging / "adapter_config.json"
        adapter = json.loads(adapter_path.read_text())
        if base_model is not None:
            adapter["base_model_name_or_path"] = base_model
        if adapter.get("task_type") is None:
            # Without a task type PEFT records the base class's import path (our package, or a remote-code module),
            # which AutoPeftModel refuses to import; LLaDA loads through AutoModelForCausalLM, so say so.
            adapter["task_type"] = "CAUSAL_LM"
            adapter.pop("auto_mapping", None)
        adapter_path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    if render_card:
        if kind == "model" and base_model is not None:
            card_options.setdefault("base_model", base_model)
        card = card_for_folder(staging, repo_id, **card_options)
        card.save(staging / "README.md")
    else:
        shutil.copy2(folder / "README.md", staging / "README.md")
    files.append("README.md")
    return PublishResult(kind=kind, staged=staging, files=sorted(files), card=(staging / "README.md").read_text())


def merge_adapter(folder: str | Path, output: str | Path, trust_remote_code: bool = True) -> Path:
    """Fold a LoRA adapter into its base model and save a complete model folder (weights, code, tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    import modeling_llada  # noqa: F401  (registers LLaDA)

    folder, output = Path(folder), Path(output)
    base_id = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModel.from_pretrained(base_id, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, folder).merge_and_unload()
    merged.save_pretrained(output)
    tokenizer_source = folder if any((folder / n).exists() for n in TOKENIZER_FILES) else base_id
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(output)
    if (folder / TRAINING_RECORD).exists():
        shutil.copy2(folder / TRAINING_RECORD, output / TRAINING_RECORD)
    return output


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    merge: bool = False,
    base_model: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload LLaDA model with llada-hf",
    staging_dir: str | Path | None = None,
    **card_options,
) -> PublishResult:
    """Check, stage and (unless `dry_run`) upload a model or adapter folder to `repo_id`.

    merge: for an adapter, publish base + adapter merged into one model instead (card names the base).
    base_model: the Hub id of the base model, for an adapter (or merged adapter) trained from a local base.
    card_options: `license`, `datasets`, `eval_results` (see `hub_cards.build_model_card`).
    """
    folder = Path(folder)
    staging = Path(staging_dir) if staging_dir is not None else Path(tempfile.mkdtemp(prefix="llada-publish-"))
    if merge:
        if folder_kind(folder) != "adapter":
            raise ValueError(f"--merge applies to adapter folders; {folder} has no adapter_config.json.")
        # the merged folder takes the base's tokenizer when the adapter has none; it is checked again after merging
        problems = check_folder(folder, base_model, require_tokenizer=False)
        if problems:
            raise IncompleteFolderError(folder, problems)
        base_model = base_model or json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        folder = merge_adapter(folder, Path(tempfile.mkdtemp(prefix="llada-merged-")))
    result = stage(folder, repo_id, staging, base_model=base_model, **card_options)
    if dry_run:
        return result
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(result.staged), repo_id=repo_id, commit_message=commit_message)
    result.url = getattr(commit, "commit_url", str(commit))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llada-hf publish", description="Publish a LLaDA model or adapter folder "
                                     "to the Hugging Face Hub with a generated card (never pickled weights).")
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

