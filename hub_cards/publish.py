"""Publish a saved LLaDA model or LoRA adapter folder to the Hugging Face Hub.

`publish(folder, repo_id)` checks the repository id and that the folder is complete, stages the files on the upload
allow-list (`ALLOW_LIST`: what a model or adapter repository needs, nothing else) with a freshly rendered card, and
uploads exactly the staged files. Nothing leaves the machine by accident:

- only allow-listed names are staged; everything else in the folder (`secrets.json`, `.env`, pickles, scripts,
  sub-folders) is left out and named in `PublishResult.left_out`;
- a link that leads out of the folder is refused; a link to a file inside the folder is copied as a regular file;
- every weight file must parse as safetensors before anything is staged;
- staging happens in a fresh temporary folder (removed afterwards, on success and on failure) or in a caller's
  `staging_dir` that holds nothing else, and the commit lists the staged files one by one.

`dry_run=True` stops after staging and touches no network.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import TRAINING_RECORD, card_for_folder

CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "generation_llada.py", "likelihood_llada.py")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
WEIGHTS_INDEX = "model.safetensors.index.json"
# Exact names each kind of repository may carry, besides the README.md card; a model's weights are its top-level
# `*.safetensors` files (tensors only: no code, no pickles), an adapter's are adapter_model.safetensors.
ALLOW_LIST = {
    "model": frozenset({"config.json", "generation_config.json", WEIGHTS_INDEX, *CODE_FILES, *TOKENIZER_FILES,
                        TRAINING_RECORD}),
    "adapter": frozenset({"adapter_config.json", "adapter_model.safetensors", "generation_config.json",
                          *TOKENIZER_FILES, TRAINING_RECORD}),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModel")
STAGING_PREFIX = "llada-publish-"


class UnpublishableFolderError(ValueError):
    """The folder cannot be published as it is; `problems` names each reason, one sentence each."""

    def __init__(self, folder: Path, problems: list[str]):
        self.folder = folder
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{folder} cannot be published as it is:\n{lines}")

    def one_line(self) -> str:
        return f"{self.folder} cannot be published as it is: " + " ".join(self.problems)


class IncompleteFolderError(UnpublishableFolderError):
    """The folder lacks pieces a Hub repository needs."""


class UnsafeFolderError(UnpublishableFolderError):
    """A file that would be uploaded is a link out of the folder, not a regular file, or weights that do not parse."""


@dataclass
class PublishResult:
    kind: str  # "model" or "adapter"
    staged: Path | None  # the folder that is (or would be) uploaded; None once a temporary one has been removed
    files: list[str] = field(default_factory=list)  # exactly the names uploaded (or that would be), sorted
    card: str = ""
    url: str | None = None  # the commit URL, when uploaded
    left_out: list[str] = field(default_factory=list)  # names in the folder not on the allow-list ("name/": a folder)


def folder_kind(folder: Path) -> str:
    return "adapter" if (folder / "adapter_config.json").exists() else "model"


def check_repo_id(repo_id: str) -> str:
    """`repo_id` when it is a valid Hub model id of the form namespace/name; a ValueError naming it otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        reason = "it needs exactly one '/', between your user or organisation name and the repository name"
    else:
        try:
            validate_repo_id(repo_id)
            return repo_id
        except HFValidationError as error:
            reason = str(error)
    raise ValueError(f"invalid Hub repository id {repo_id!r}: expected the form namespace/name, e.g. "
                     f"your-name/llada-8b-sft ({reason}).")


def _is_allowed(name: str, kind: str) -> bool:
    if kind == "model" and name.endswith(".safetensors") and not name.startswith("."):
        return True
    return name in ALLOW_LIST[kind]


def check_folder(folder: str | Path, base_model: str | None = None, require_card: bool = False,
                 require_tokenizer: bool = True) -> list[str]:
    """Everything a published repository needs and the folder lacks, one sentence each (empty when complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder."]
    problems = []
    has_safetensors = any(not p.name.startswith(".") for p in folder.glob("*.safetensors"))
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
        if (folder / WEIGHTS_INDEX).exists():
            shards = set(json.loads((folder / WEIGHTS_INDEX).read_text()).get("weight_map", {}).values())
            absent = sorted(name for name in shards if "/" in name or not (folder / name).is_file())
            if absent:
                problems.append(f"{WEIGHTS_INDEX} names weight shards that are not in the folder: {', '.join(absent)}.")
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


def select_files(folder: str | Path, render_card: bool = True) -> tuple[list[str], list[str]]:
    """(names to upload, names left out) of a folder, reading nothing but the weight headers; staging nothing.

    The names to upload are those on `ALLOW_LIST` for the folder's kind (plus README.md when `render_card` is False:
    the folder's own card). A link to a file inside the folder counts as that file (it is copied, never uploaded as
    a link); an allow-listed name that is a link out of the folder, or not a regular file, raises UnsafeFolderError,
    and so does a weight file (`*.safetensors`) whose safetensors header does not parse. The folder's README.md is
    in neither list when the card is rendered: the rendered card replaces it.
    """
    folder = Path(folder)
    root = folder.resolve()
    if not root.is_dir():
        raise IncompleteFolderError(folder, [f"{folder} is not a folder."])
    kind = folder_kind(root)
    chosen, left_out, problems = [], [], []
    for path in sorted(root.iterdir()):
        name = path.name
        if name == "README.md" and render_card:
            continue
        if not (_is_allowed(name, kind) or name == "README.md"):
            left_out.append(name + "/" if path.is_dir() and not path.is_symlink() else name)
            continue
        target = path.resolve()
        if not target.is_relative_to(root):
            problems.append(f"{name} is a link to {target}, outside the folder: links out of the folder are never "
                            "followed; copy the file into the folder (or remove the link).")
        elif not target.is_file():
            problems.append(f"{name} is not a regular file.")
        else:
            chosen.append(name)
    if not problems:
        from safetensors import safe_open

        for name in chosen:
            if name.endswith(".safetensors"):
                try:
                    with safe_open(str(root / name), "pt"):
                        pass
                except Exception as error:  # safetensors raises its own error type, or OSError
                    problems.append(f"weight file {name} is not valid safetensors ({error}); re-save the weights "
                                    "with save_pretrained(...) or remove the file.")
    if problems:
        raise UnsafeFolderError(folder, problems)
    return chosen, left_out


def stage(folder: str | Path, repo_id: str, staging: str | Path, base_model: str | None = None,
          render_card: bool = True, **card_options) -> PublishResult:
    """Copy the allow-listed files into `staging` and write the card; nothing else is written there.

    Raises ValueError for an invalid `repo_id`, UnsafeFolderError / IncompleteFolderError when the folder cannot be
    published, and ValueError when `staging` already holds files this upload would not write (leftovers would be
    mistaken for part of it): all before anything is copied.
    """
    check_repo_id(repo_id)
    folder, staging = Path(folder), Path(staging)
    names, left_out = select_files(folder, render_card=render_card)
    problems = check_folder(folder, base_model, require_card=not render_card)
    if problems:
        raise IncompleteFolderError(folder, problems)
    files = sorted({*names, "README.md"})
    # files of an earlier staging of the same upload may be overwritten; anything else (or a link, which a copy
    # would write through) would pass for part of this upload
    leftovers = sorted(p.name for p in staging.iterdir() if p.name not in files or p.is_symlink() or not p.is_file()
                       ) if staging.is_dir() else []
    if leftovers:
        raise ValueError(f"the staging folder {staging} already holds files that are not part of this upload "
                         f"({', '.join(leftovers)}); pass an empty or new staging folder.")
    staging.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    for name in names:
        # copyfile follows links inside the folder (checked above) and writes a regular file
        shutil.copyfile((root / name).resolve(), staging / name)
    kind = folder_kind(root)
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
    return PublishResult(kind=kind, staged=staging, files=files, card=(staging / "README.md").read_text(),
                         left_out=left_out)


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
    """Check, stage and (unless `dry_run`) upload a model or adapter folder to `repo_id` ("namespace/name").

    merge: for an adapter, publish base + adapter merged into one model instead (card names the base).
    base_model: the Hub id of the base model, for an adapter (or merged adapter) trained from a local base.
    staging_dir: stage here and keep it (to inspect a dry run); it must hold nothing but files this upload writes.
        Without it the files are staged in a fresh temporary folder `llada-publish-*`, removed before returning
        (on success and on failure), and `result.staged` is None.
    card_options: `license`, `datasets`, `eval_results` (see `hub_cards.build_model_card`).

    The commit adds exactly `result.files`, one by one, from the staged folder; `result.left_out` names what the
    folder held besides (not on `ALLOW_LIST`).
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX) as scratch:
        staging = Path(staging_dir) if staging_dir is not None else Path(scratch) / "staged"
        if merge:
            if folder_kind(folder) != "adapter":
                raise ValueError(f"--merge applies to adapter folders; {folder} has no adapter_config.json.")
            select_files(folder)  # links and weights are checked before the adapter is read
            # the merged folder takes the base's tokenizer when the adapter has none; it is checked again after merging
            problems = check_folder(folder, base_model, require_tokenizer=False)
            if problems:
                raise IncompleteFolderError(folder, problems)
            adapter = json.loads((folder / "adapter_config.json").read_text())
            base_model = base_model or adapter["base_model_name_or_path"]
            folder = merge_adapter(folder, Path(scratch) / "merged")
        result = stage(folder, repo_id, staging, base_model=base_model, **card_options)
        if not dry_run:
            result.url = _upload(result, repo_id, private=private, token=token, commit_message=commit_message)
    if staging_dir is None:
        result.staged = None
    return result


def _upload(result: PublishResult, repo_id: str, *, private: bool, token: str | None, commit_message: str) -> str:
    """Commit exactly `result.files` from `result.staged`; the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    present = sorted(p.name for p in result.staged.iterdir())
    if present != result.files:
        raise RuntimeError(f"the staging folder {result.staged} changed while publishing (holds {present}, staged "
                           f"{result.files}); nothing was uploaded.")
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(result.staged / name))
                  for name in result.files]
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    return getattr(commit, "commit_url", str(commit))


def __getattr__(name: str):
    if name == "main":  # `llada-hf publish` lives in the application package, llada_cli.publish
        from llada_cli.publish import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
