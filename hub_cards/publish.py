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

The base model of an adapter (`base_model`, or the adapter's own `base_model_name_or_path`) is checked before
anything is loaded: merged (`merge=True`), it may be a model folder or a Hub id (in the local cache when offline); a
local folder is never looked up on the Hub. Published as an adapter, it must be a Hub id, since others cannot
resolve a path of this machine. Messages name the settings as the caller spells them: the Python arguments
(`base_model=`) by default, the command line's flags (`--base-model`) through `setting_names`.

A QLoRA adapter (trained on a 4-bit or 8-bit bitsandbytes base) merges into the full-precision base, never into
quantized weights: a base saved quantized (`quantization_config` in its config.json) is refused, and the merged
folder loads without bitsandbytes. The quantization the adapter was trained on (`adapter_quantization`) is stated in
the merged record (`record["merge"]`) and in the card; an adapter published as it is says in its card that training
is reproduced on the base quantized the same way, and that it loads on the base at any precision.

Temporary folders (`llada-publish-<pid>-*` in `tempfile.gettempdir()`: the staging folder, the merged model) are
removed before `publish` returns or raises. One left by a process that was killed outright (SIGKILL, out of memory)
is removed by the next `publish` on the machine, once that process is gone.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cards import (TRAINING_RECORD, card_for_folder, check_dataset_ids, local_label, looks_like_a_path, model_hub_id,
                    quantization_summary)

CODE_FILES = ("configuration_llada.py", "modeling_llada.py", "generation_llada.py", "likelihood_llada.py",
              "answers_llada.py", "draws_llada.py")
# Saved next to them by LLaDA-MoE and LLaDA 2 models (not required: dense folders do not have them).
MOE_CODE_FILES = ("configuration_lladamoe.py", "modeling_lladamoe.py")
LLADA2_CODE_FILES = ("configuration_llada2_moe.py", "modeling_llada2_moe.py", "generation_llada2.py")
# The official model_type of each family member: LLaDA and LLaDA-MoE "llada", LLaDA 2.x "llada2_moe".
LLADA_MODEL_TYPES = ("llada", "llada2_moe")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
WEIGHTS_INDEX = "model.safetensors.index.json"
# Exact names each kind of repository may carry, besides the README.md card; a model's weights are its top-level
# `*.safetensors` files (tensors only: no code, no pickles), an adapter's are adapter_model.safetensors.
ALLOW_LIST = {
    "model": frozenset({"config.json", "generation_config.json", WEIGHTS_INDEX, *CODE_FILES, *MOE_CODE_FILES,
                        *LLADA2_CODE_FILES, *TOKENIZER_FILES, TRAINING_RECORD}),
    "adapter": frozenset({"adapter_config.json", "adapter_model.safetensors", "generation_config.json",
                          *TOKENIZER_FILES, TRAINING_RECORD}),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModel")
STAGING_PREFIX = "llada-publish-"
# How messages name publish()'s settings by default (the Python arguments); the command line passes its flags.
PYTHON_SETTING_NAMES = {"base_model": "base_model", "merge": "merge", "staging_dir": "staging_dir",
                        "datasets": "datasets"}


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


class BaseModelError(ValueError):
    """The adapter's base model cannot be used as given: none named, a missing folder, a path where a Hub id is
    needed, a Hub id that is not in the local cache when offline. The message names the setting to pass."""


@dataclass(frozen=True)
class BaseModel:
    """An adapter's base model, checked: what loads it, its Hub id (None for a local folder), and how records and
    cards name it (the Hub id, or the folder's last part: never a path of this machine)."""

    source: str
    hub_id: str | None
    name: str

    def reference(self) -> dict:
        return {"name": self.name, "hub_id": self.hub_id}


def _setting_names(setting_names: dict | None) -> dict:
    return {**PYTHON_SETTING_NAMES, **(setting_names or {})}


def _shown(names: dict, key: str, value) -> str:
    """A setting with the value received, as the caller spells it: `--base-model 'A'` or `base_model='A'`; a switch
    turned on: `--merge` or `merge=True`."""
    name = names[key]
    if name.startswith("-"):
        return name if value is True else f"{name} {value!r}"
    return f"{name}={value!r}"


def _flag(names: dict, key: str) -> str:
    """A setting as the caller spells it, to be followed by a value: `--base-model` or `base_model=`."""
    name = names[key]
    return name if name.startswith("-") else f"{name}="


def _suggest(names: dict, key: str, example: str) -> str:
    """What to pass, as the caller spells it: `--base-model org/name` or `base_model='org/name'`."""
    name = names[key]
    return f"{name} {example}" if name.startswith("-") else f"{name}={example!r}"


def _read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _base_config(source: str | None) -> dict:
    """The config.json of a base model (a local folder, or a Hub id in the local cache); {} when it cannot be read
    without a download."""
    if not source:
        return {}
    path = Path(source).expanduser() / "config.json"
    if not path.is_file():
        hub_id = model_hub_id(source)
        if hub_id is None:
            return {}
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "config.json")
        if not isinstance(cached, str):
            return {}
        path = Path(cached)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def adapter_quantization(folder: str | Path, base_source: str | None = None) -> dict | None:
    """The quantization of the base the adapter in `folder` was trained on (`quantization_summary`), None when it was
    trained on an unquantized base or nothing says.

    Read from the last stage of the adapter's training record (its `quantization` field, written by training with
    `--load_in_4bit` / `--load_in_8bit`), else from `quantization_config` in the adapter_config.json, else from
    `quantization_config` in the config.json of the base (`base_source`, default the adapter's
    base_model_name_or_path) when that base was saved quantized."""
    folder = Path(folder)
    stages = _read_record(folder).get("stages")
    if isinstance(stages, list) and stages and isinstance(stages[-1], dict) and "quantization" in stages[-1]:
        return quantization_summary(stages[-1]["quantization"])
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError):
        adapter = {}
    adapter = adapter if isinstance(adapter, dict) else {}
    if adapter.get("quantization_config"):
        return quantization_summary(adapter["quantization_config"])
    return quantization_summary(_base_config(base_source or adapter.get("base_model_name_or_path"))
                                .get("quantization_config"))


def resolve_base_model(folder: str | Path, base_model: str | None = None, *, merge: bool = False,
                       setting_names: dict | None = None) -> BaseModel:
    """The base model of the adapter in `folder`, checked without loading or downloading anything.

    The base is `base_model` when given, else the adapter's `base_model_name_or_path` (adapter_config.json).
    merge=True (it is loaded to fold the adapter in): a model folder (config.json; never looked up on the Hub) or a
    Hub id, namespace/name, which must be in the local cache when offline (HF_HUB_OFFLINE).
    merge=False (the adapter is published as it is and names its base for everyone): a Hub id; a local path is
    refused, and so is a recorded name the training record says was a local folder.
    Raises `BaseModelError` (a ValueError) whose one-sentence message names the setting (`setting_names`) and what
    to pass.
    """
    folder = Path(folder)
    names = _setting_names(setting_names)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    recorded = adapter.get("base_model_name_or_path") or None
    trained_from = _read_record(folder).get("base_model")
    recorded_local = isinstance(trained_from, dict) and not trained_from.get("hub_id")
    flag = _flag(names, "base_model")
    if merge:
        fix = f"pass {flag} with the base's Hub id (namespace/name) or its model folder"
    else:
        fix = (f"pass {flag} with the Hub id the base is published under (namespace/name; others cannot resolve a "
               f"path of this machine), or {_shown(names, 'merge', True)} to publish the base and the adapter merged "
               "into one model")
    if base_model is not None:
        name = str(base_model)
        origin = _shown(names, "base_model", name)
        if not name.strip():
            raise BaseModelError(f"{origin} is empty; {fix}.")
        local_name = False
    else:
        if not recorded:
            raise BaseModelError(f"the adapter in {folder} names no base model (base_model_name_or_path in "
                                 f"adapter_config.json is {recorded!r}); {fix}.")
        name = recorded
        origin = f"the adapter's base model {recorded!r} (base_model_name_or_path in adapter_config.json)"
        local_name = recorded_local
    path = Path(name).expanduser()
    if not merge:
        hub_id = None if local_name else model_hub_id(name)
        if hub_id is None:
            what = ("a local path" if local_name or looks_like_a_path(name)
                    else "not a Hub id of the form namespace/name")
            raise BaseModelError(f"{origin} is {what}: an adapter published without "
                                 f"{_shown(names, 'merge', True)} must name its base by Hub id; {fix}.")
        return BaseModel(hub_id, hub_id, hub_id)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise BaseModelError(f"{origin}: the folder has no config.json, so it is not a saved model; {fix}.")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (ValueError, AttributeError):
            raise BaseModelError(f"{origin}: its config.json is not a JSON object of settings; {fix}.") from None
        if model_type not in LLADA_MODEL_TYPES:
            raise BaseModelError(f"{origin} is not a LLaDA checkpoint (config.json has model_type {model_type!r}); "
                                 f"{fix}.")
        return BaseModel(str(path), None, local_label(str(path)))
    if path.exists():
        raise BaseModelError(f"{origin} is a file, not a model folder; {fix}.")
    hub_id = None if local_name else model_hub_id(name)
    if hub_id is None:
        where = (" (the adapter was trained from a local folder of that name, relative to the directory training "
                 "ran in)" if local_name else "")
        raise BaseModelError(f"{origin}: no such folder{where}, and not a Hub id of the form namespace/name; {fix}.")
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    if is_offline_mode() and not isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        raise BaseModelError(f"{origin}: no such folder, and no model of that Hub id in the local cache (offline: "
                             f"HF_HUB_OFFLINE is set); download it while online, or {fix}.")
    return BaseModel(hub_id, hub_id, hub_id)


@dataclass
class PublishResult:
    kind: str  # "model" or "adapter"
    staged: Path | None  # the folder that is (or would be) uploaded; None once a temporary one has been removed
    files: list[str] = field(default_factory=list)  # exactly the names uploaded (or that would be), sorted
    card: str = ""
    url: str | None = None  # the commit URL, when uploaded
    left_out: list[str] = field(default_factory=list)  # names in the folder not on the allow-list ("name/": a folder)
    merge: dict | None = None  # merge=True: the merge record (base, its dtype, the quantization the adapter trained on)


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
                 require_tokenizer: bool = True, *, merge: bool = False, setting_names: dict | None = None
                 ) -> list[str]:
    """Everything a published repository needs and the folder lacks, one sentence each (empty when complete).

    For an adapter published as it is, that includes a base model named by Hub id (`resolve_base_model`); with
    `merge=True` the base is checked by `resolve_base_model(..., merge=True)` instead.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder."]
    problems = []
    has_safetensors = any(not p.name.startswith(".") for p in folder.glob("*.safetensors"))
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if folder_kind(folder) == "adapter":
        if not merge:
            try:
                resolve_base_model(folder, base_model, setting_names=setting_names)
            except BaseModelError as error:
                problems.append(str(error))
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
            if config.get("model_type") not in LLADA_MODEL_TYPES:
                problems.append(f"config.json has model_type {config.get('model_type')!r}, not 'llada' (LLaDA, "
                                "LLaDA-MoE) or 'llada2_moe' (LLaDA 2).")
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
        for name in _required_code_files(folder, config if config_path.exists() else {}):
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


def _required_code_files(folder: Path, config: dict) -> list[str]:
    """The code files trust_remote_code loading reads: the modules `auto_map` names and, file by file, the sibling
    modules they import (`from .name import ...`); a dense LLaDA folder always needs `CODE_FILES`."""
    import re

    auto_map = config.get("auto_map") or {}
    pending = [f"{str(target).split('.')[0]}.py" for target in auto_map.values() if isinstance(target, str)
               and "--" not in target]
    if config.get("model_type") == "llada" and "num_experts" not in config:
        pending += list(CODE_FILES)
    required: list[str] = []
    while pending:
        name = pending.pop(0)
        if name in required:
            continue
        required.append(name)
        path = folder / name
        if path.is_file() and not path.is_symlink():
            pending += [f"{module}.py" for module in re.findall(r"^\s*from \.(\w+) import", path.read_text(),
                                                                 flags=re.MULTILINE)]
    ordered = [name for name in CODE_FILES if name in required]
    return ordered + [name for name in required if name not in ordered]


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
          render_card: bool = True, *, setting_names: dict | None = None, **card_options) -> PublishResult:
    """Copy the allow-listed files into `staging` and write the card; nothing else is written there.

    base_model: the Hub id of the base (an adapter's, replacing the one adapter_config.json names; or the model a
    full model was trained from), for the card metadata.
    Raises ValueError for an invalid `repo_id` or `base_model`, UnsafeFolderError / IncompleteFolderError when the
    folder cannot be published, and ValueError when `staging` already holds files this upload would not write
    (leftovers would be mistaken for part of it): all before anything is copied.
    """
    check_repo_id(repo_id)
    names_of = _setting_names(setting_names)
    folder, staging = Path(folder), Path(staging)
    names, left_out = select_files(folder, render_card=render_card)
    problems = check_folder(folder, base_model, require_card=not render_card, setting_names=setting_names)
    if problems:
        raise IncompleteFolderError(folder, problems)
    kind = folder_kind(folder.resolve())
    if kind == "model" and base_model is not None and model_hub_id(base_model) is None:
        raise BaseModelError(f"{_shown(names_of, 'base_model', base_model)} is not a Hub id of the form "
                             "namespace/name: a model card names its base model by Hub id; pass "
                             f"{_suggest(names_of, 'base_model', 'org/name')}, or leave it out.")
    card_options["datasets"] = check_dataset_ids(card_options.get("datasets"), names_of["datasets"])
    files = sorted({*names, "README.md"})
    # files of an earlier staging of the same upload may be overwritten; anything else (or a link, which a copy
    # would write through) would pass for part of this upload
    blocking = next((part for part in (staging, *staging.parents) if part.exists()), None)
    if blocking is not None and not blocking.is_dir():
        where = "is a file" if blocking == staging else f"is inside {str(blocking)!r}, which is a file"
        raise ValueError(f"the staging folder {names_of['staging_dir']}={str(staging)!r} {where}; pass an empty or "
                         "new folder.")
    leftovers = sorted(p.name for p in staging.iterdir() if p.name not in files or p.is_symlink() or not p.is_file()
                       ) if staging.is_dir() else []
    if leftovers:
        raise ValueError(f"the staging folder {staging} already holds files that are not part of this upload "
                         f"({', '.join(leftovers)}); pass an empty or new folder as {names_of['staging_dir']}.")
    staging.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    for name in names:
        # copyfile follows links inside the folder (checked above) and writes a regular file
        shutil.copyfile((root / name).resolve(), staging / name)
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
        if base_model is not None:
            card_options.setdefault("base_model", base_model)
        card_options.setdefault("datasets_setting", names_of["datasets"])
        card = card_for_folder(staging, repo_id, **card_options)
        card.save(staging / "README.md")
    return PublishResult(kind=kind, staged=staging, files=files, card=(staging / "README.md").read_text(),
                         left_out=left_out)


def merge_adapter(folder: str | Path, output: str | Path, base_model: str | BaseModel | None = None,
                  trust_remote_code: bool = False, *, setting_names: dict | None = None) -> Path:
    """Fold the LoRA adapter in `folder` into its base model and save a complete model folder in `output` (weights,
    code files, tokenizer, generation config, and the training record with the merge added).

    base_model: the base to load (a model folder or a Hub id), default the adapter's `base_model_name_or_path`;
    it is checked (`resolve_base_model`) before anything is loaded, and a folder is never looked up on the Hub.
    The base loads with this package's LLaDA classes (`trust_remote_code=False`: no downloaded code runs), so the
    merged folder carries this package's code files.

    The base always loads unquantized, in the dtype it was saved in, whatever the adapter was trained on (a QLoRA
    adapter of a 4-bit or 8-bit base included): a base saved quantized (`quantization_config` in its config.json)
    raises `BaseModelError`, since folding into quantized weights would round the adapter away; the merged
    config.json carries no `quantization_config`, so the folder loads without bitsandbytes. `record["merge"]` names
    the base, its dtype, and the quantization the adapter was trained on (`adapter_quantization`).
    """
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    import modeling_llada  # noqa: F401  (registers LLaDA)

    folder, output = Path(folder), Path(output)
    names = _setting_names(setting_names)
    base = base_model if isinstance(base_model, BaseModel) else resolve_base_model(
        folder, base_model, merge=True, setting_names=setting_names)
    shown = _shown(names, "base_model", base.source)
    trained_on = adapter_quantization(folder)
    saved_quantized = _base_config(base.source).get("quantization_config")
    if saved_quantized:
        method = saved_quantized.get("quant_method", "a quantization") if isinstance(saved_quantized, dict) else \
            "a quantization"
        raise BaseModelError(f"{shown} is saved quantized ({method}: quantization_config in its config.json), and an "
                             "adapter merges into full-precision weights only (folding it into quantized ones would "
                             f"round it away); pass {_flag(names, 'base_model')} with the unquantized base the "
                             "adapter was trained from (a model folder or Hub id).")
    try:
        model = AutoModel.from_pretrained(base.source, trust_remote_code=trust_remote_code)
    except OSError as error:  # unreadable weights, a download that failed: what failed, then why
        raise OSError(f"{shown}: could not load the base model: {' '.join(str(error).split())}") from error
    quantized = sorted({type(module).__name__ for module in model.modules()
                        if type(module).__module__.startswith("bitsandbytes")})
    if quantized or getattr(model, "hf_quantizer", None) is not None:  # never merge into quantized weights
        raise BaseModelError(f"{shown} loaded quantized ({', '.join(quantized) or 'a quantizer'}); an adapter "
                             f"merges into full-precision weights only: pass {_flag(names, 'base_model')} with the "
                             "unquantized base.")
    from .compat import quiet_upstream_deprecations

    with quiet_upstream_deprecations():
        merged = PeftModel.from_pretrained(model, folder).merge_and_unload()
    if hasattr(merged.config, "quantization_config"):  # a merged model is full precision, whatever trained it
        del merged.config.quantization_config
    merged.save_pretrained(output)
    if (folder / "generation_config.json").is_file():  # the adapter's sampler settings win over the base's
        shutil.copyfile(folder / "generation_config.json", output / "generation_config.json")
    tokenizer_source = folder if any((folder / n).exists() for n in TOKENIZER_FILES) else base.source
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(output)
    record = _read_record(folder) or {"format": 2, "stages": []}
    dtype = str(next(merged.parameters()).dtype).removeprefix("torch.")
    record["merge"] = {"base_model": base.reference(), "adapter": local_label(str(folder)),
                       "merged_into": "merged into the full-precision base", "base_dtype": dtype,
                       "adapter_quantization": trained_on}
    (output / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return output


def _remove_stale_scratch() -> None:
    """Remove `llada-publish-<pid>-*` folders of this user whose process is gone (killed before it could clean up).
    POSIX only; a folder whose process may still run is left alone."""
    if os.name != "posix":
        return
    for path in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) in (0, os.getpid()):
            continue
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:  # that process is gone: nobody else will remove its folder
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (under another user), or unknown: leave it
            continue


def _scratch() -> tempfile.TemporaryDirectory:
    _remove_stale_scratch()
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-")


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
    setting_names: dict | None = None,
    **card_options,
) -> PublishResult:
    """Check, stage and (unless `dry_run`) upload a model or adapter folder to `repo_id` ("namespace/name").

    merge: for an adapter, publish base + adapter merged into one model instead (the card names the base and every
        training stage).
    base_model: an adapter's base. Merged: the base to load, a Hub id or a local model folder (default: the
        adapter's `base_model_name_or_path`). Published as an adapter: the Hub id the base is published under
        (written into the published adapter_config.json). For a full model: the Hub id it was trained from (card
        metadata). Checked before anything is loaded (`resolve_base_model`).
    staging_dir: stage here and keep it (to inspect a dry run); it must hold nothing but files this upload writes.
        Without it the files are staged in a fresh temporary folder `llada-publish-<pid>-*`, removed before
        returning (on success and on failure), and `result.staged` is None. A merge is written to such a folder too.
    setting_names: how messages name the settings, e.g. {"base_model": "--base-model", "merge": "--merge"} for a
        command line; default the argument names (`base_model=`).
    card_options: `license`, `datasets` (Hub dataset ids), `eval_results` (see `hub_cards.build_model_card`).

    The commit adds exactly `result.files`, one by one, from the staged folder; `result.left_out` names what the
    folder held besides (not on `ALLOW_LIST`).
    """
    check_repo_id(repo_id)
    names = _setting_names(setting_names)
    folder = Path(folder)
    card_options["datasets"] = check_dataset_ids(card_options.get("datasets"), names["datasets"])
    base = None
    if merge:
        if not (folder / "adapter_config.json").is_file():
            raise ValueError(f"{_shown(names, 'merge', True)} applies to adapter folders; {folder} has no "
                             "adapter_config.json.")
        select_files(folder)  # links and weights are checked before the adapter is read
        # the merged folder takes the base's tokenizer when the adapter has none; it is checked again after merging
        problems = check_folder(folder, require_tokenizer=False, merge=True, setting_names=setting_names)
        try:
            base = resolve_base_model(folder, base_model, merge=True, setting_names=setting_names)
        except BaseModelError as error:
            if not problems:
                raise
            problems.append(str(error))
        if problems:
            raise IncompleteFolderError(folder, problems)
    scratch = _scratch() if merge or staging_dir is None else None
    try:
        staging = Path(staging_dir) if staging_dir is not None else Path(scratch.name) / "staged"
        if merge:
            folder = merge_adapter(folder, Path(scratch.name) / "merged", base, setting_names=setting_names)
        result = stage(folder, repo_id, staging, base_model=base.hub_id if merge else base_model,
                       setting_names=setting_names, **card_options)
        if merge:
            result.merge = _read_record(folder).get("merge")
        if not dry_run:
            result.url = _upload(result, repo_id, private=private, token=token, commit_message=commit_message)
    finally:
        if scratch is not None:
            scratch.cleanup()
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
