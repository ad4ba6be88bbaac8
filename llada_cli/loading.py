"""What the scripts load: a model (Hub id, local folder, or a preset for a fresh model), its tokenizer, a dataset.

Each loader checks what it was given before handing it to transformers / datasets (a folder holding the expected
files, a Hub id that is in the local cache when offline, an existing data file, a LLaDA config) and raises
`FileNotFoundError` or `ValueError` with a one-sentence message that names the setting, the value received and what
to pass instead. `setting` is the name the message uses: the command-line flag by default.
"""

import json
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from modeling_llada import LLaDAConfig, LLaDAModelLM
from modeling_llada.mask_id import resolve_mask_token_id

from .sampler_settings import DTYPES

# Fresh-model presets (architecture only; ids and vocabulary come from the tokenizer).
PRESETS = {
    "llada-tiny": dict(d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=384, max_sequence_length=512),
    "llada-small": dict(d_model=256, n_heads=4, n_layers=6, mlp_hidden_size=768, max_sequence_length=1024),
    "llada-8b": dict(),  # the LLaDA-8B architecture (the config defaults)
}
_PRESETS_HINT = f", a preset for a fresh model ({', '.join(PRESETS)})"
# Any one of these makes a folder (or a cached Hub repository) hold a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
LOCAL_DATA_FORMATS = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "txt": "text"}
LLADA_MODEL_TYPE = LLaDAConfig.model_type
# every family member's official model_type: LLaDA and LLaDA-MoE ("llada"), LLaDA 2.x ("llada2_moe")
LLADA_MODEL_TYPES = (LLADA_MODEL_TYPE, "llada2_moe")


def config_for_tokenizer(preset: str, tokenizer: PreTrainedTokenizerBase) -> LLaDAConfig:
    """A fresh LLaDA config of the named preset whose vocabulary and special ids are the tokenizer's."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)} or pass a model path/Hub id.")
    if tokenizer.mask_token_id is None:
        raise ValueError("The tokenizer has no mask_token; add one (LLaDA's is '<|mdm_mask|>').")
    vocab = len(tokenizer)
    return LLaDAConfig(
        **PRESETS[preset], vocab_size=vocab, embedding_size=vocab, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def resolve_dtype(dtype: str | torch.dtype | None, setting: str = "--dtype") -> torch.dtype | None:
    """`torch.float32` for "float32" (likewise bfloat16, float16); None for None or "auto" (the checkpoint's own)."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"{setting} {dtype!r} is not a dtype LLaDA loads in; choose one of {', '.join(DTYPES)} "
                         "(or auto: the checkpoint's own).")
    return getattr(torch, dtype)


def check_device(device: str, setting: str = "--device") -> torch.device:
    """The torch device named `device` (auto: cuda when available, else cpu); a `ValueError` naming it when torch does
    not know it or it is not there."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{setting} {device!r} is not a device name; use cpu, cuda, cuda:<index> or mps.") from None
    if resolved.type == "cpu":
        return resolved
    # torch.cuda, torch.xpu, ... (mps reports through torch.backends)
    backend = torch.backends.mps if resolved.type == "mps" else getattr(torch, resolved.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        name = {"cuda": "CUDA", "mps": "Apple MPS"}.get(resolved.type, repr(resolved.type))
        if resolved.type == "cuda" and not torch.version.cuda:
            name += f" device is available (this torch {torch.__version__} is built without CUDA)"
        else:
            name += " device is available"
        raise ValueError(f"{setting} {device!r}: no {name}; use --device cpu.")
    count = backend.device_count() if hasattr(backend, "device_count") else None
    if resolved.index is not None and count is not None and resolved.index >= count:
        raise ValueError(f"{setting} {device!r}: this machine has {count} {resolved.type} device(s), "
                         f"{resolved.type}:0 to {resolved.type}:{count - 1}.")
    return resolved


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _hub_id_problem(name: str) -> str | None:
    """Why `name` cannot be a Hub repository id (None when it can)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") > 1 or name.startswith(("/", ".", "~")):
        return "it looks like a path"
    try:
        validate_repo_id(name)
    except HFValidationError:
        return "a Hub id looks like namespace/name"
    return None


def _offline() -> bool:
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


def _in_hub_cache(repo_id: str, filenames) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def _check_source(name: str, setting: str, files: tuple[str, ...], noun: str, lacks: str, fix: str,
                  wanted: str) -> None:
    """A folder holding one of `files`, or a Hub id (with one of `files` in the local cache when offline); else a
    `FileNotFoundError` naming `setting` and `name`. `noun`: what is looked for ("model"); `lacks`: what a folder
    without `files` lacks; `fix`: what to do about such a folder; `wanted`: what to pass instead."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / file).is_file() for file in files):
            raise FileNotFoundError(f"{setting} {name!r}: {lacks}; {fix}.")
        return
    if path.exists():
        raise FileNotFoundError(f"{setting} {name!r} is a file, not a folder; pass {wanted}.")
    problem = _hub_id_problem(name)
    if problem is not None:
        raise FileNotFoundError(f"{setting} {name!r}: no such folder, and not a Hub id ({problem}); pass {wanted}.")
    if _offline() and not _in_hub_cache(name, files):
        raise FileNotFoundError(f"{setting} {name!r}: no such folder, and no {noun} of that Hub id in the local cache "
                                f"(offline: HF_HUB_OFFLINE is set); download it while online, or pass {wanted}.")


def check_model_source(name: str, setting: str = "--model_name_or_path", others: str = "") -> None:
    """Check that `name` is a model folder (config.json, or adapter_config.json for a LoRA adapter) or a Hub id that
    can be reached (in the local cache when offline); `others` adds accepted values to the message (the presets).
    Raises `FileNotFoundError` naming `setting` and `name` otherwise."""
    _check_source(name, setting, ("config.json", "adapter_config.json"), "model",
                  "the folder has no config.json, so it is not a saved model",
                  "pass the folder that save_pretrained / trainer.save_model wrote (config.json and weights)",
                  f"a model folder (config.json and weights){others} or a Hub id")


def check_adapter_source(name: str, setting: str = "--peft") -> None:
    """Check that `name` is a LoRA adapter folder (adapter_config.json) or a Hub id that can be reached."""
    _check_source(name, setting, ("adapter_config.json",), "adapter",
                  "the folder has no adapter_config.json, so it is not a saved adapter",
                  "pass the folder that the PEFT model's save_pretrained wrote", "an adapter folder or a Hub id")


def check_tokenizer_source(path: str, setting: str = "--tokenizer_name_or_path",
                           tokenizer_flag: str = "--tokenizer_name_or_path") -> None:
    """Check that `path` is a folder holding tokenizer files, or a Hub id with a tokenizer that can be reached.
    `tokenizer_flag` is the option the message suggests for passing a tokenizer from elsewhere."""
    _check_source(path, setting, TOKENIZER_FILES, "tokenizer",
                  "the folder has no tokenizer (no tokenizer.json or tokenizer_config.json)",
                  f"save one there (tokenizer.save_pretrained), or pass {tokenizer_flag} <tokenizer folder or Hub id>",
                  "a tokenizer folder or a Hub id")


def check_llada_checkpoint(name: str, setting: str = "--model_name_or_path", revision: str | None = None) -> None:
    """Check that the checkpoint `name` (a folder or Hub id that `check_model_source` accepted) is a LLaDA model:
    `model_type` "llada" (LLaDA, LLaDA-MoE) or "llada2_moe" (LLaDA 2.x) in its config.json. A LoRA adapter folder (no
    config.json) is left to its base's loading."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return
        file = path / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(name, "config.json", revision=revision))
        except OSError as error:  # not found on the Hub, no network, gated: the reason, after what was asked for
            raise OSError(f"{setting} {name!r}: could not fetch its config.json from the Hub: {_one_line(error)}") \
                from error
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{setting} {name!r}: its config.json is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{setting} {name!r}: its config.json holds a {type(config).__name__}, not a JSON object.")
    model_type = config.get("model_type")
    if model_type not in LLADA_MODEL_TYPES:
        architectures = ", ".join(config.get("architectures") or []) or "none given"
        raise ValueError(
            f"{setting} {name!r} is not a LLaDA checkpoint: its config.json has model_type {model_type!r} "
            f"(architectures: {architectures}); pass a LLaDA model (model_type "
            f"{' or '.join(map(repr, LLADA_MODEL_TYPES))}), e.g. "
            "GSAI-ML/LLaDA-8B-Instruct or a folder written by llada-hf pretrain / sft."
        )


def load_model(
    model_name_or_path: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    setting: str = "--model_name_or_path",
    *,
    revision: str | None = None,
    quantization_config=None,
) -> LLaDAModelLM:
    """A preset name builds a fresh model sized for `tokenizer`; anything else (a LLaDA folder or Hub id) loads with
    `AutoModel`, at `revision` (a Hub branch, tag or commit) and quantized by `quantization_config` (a transformers
    `BitsAndBytesConfig`) when given. `setting` names the source in error messages."""
    torch_dtype = resolve_dtype(dtype)
    if model_name_or_path in PRESETS:
        if quantization_config is not None:  # the CLI refuses this earlier, naming its flags
            raise ValueError(f"{setting} {model_name_or_path!r} is a fresh model: there are no trained weights to "
                             "quantize; pass a checkpoint folder or Hub id.")
        if tokenizer is None:
            raise ValueError(f"A fresh {model_name_or_path!r} model needs a tokenizer to size its vocabulary.")
        torch.manual_seed(seed)
        config = config_for_tokenizer(model_name_or_path, tokenizer)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return LLaDAModelLM(config)
    check_model_source(model_name_or_path, setting, others=_PRESETS_HINT)
    check_llada_checkpoint(model_name_or_path, setting, revision)
    kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        device_map = kbit_device_map()
        if device_map is not None:
            kwargs["device_map"] = device_map
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModel.from_pretrained(model_name_or_path, **kwargs)
    except OSError as error:  # missing or unreadable weights, a download that failed: what failed, then why
        raise OSError(f"{setting} {model_name_or_path!r}: could not load the model: {_one_line(error)}") from error
    if tokenizer is not None:  # the official LLaDA-MoE / LLaDA 2 configs store no mask id: the tokenizer's
        resolve_mask_token_id(model, tokenizer)
    return model


def load_model_and_tokenizer(
    model_name_or_path: str,
    tokenizer_name_or_path: str | None,
    texts_for_a_new_tokenizer,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    *,
    revision: str | None = None,
    quantization_config=None,
) -> tuple[LLaDAModelLM, PreTrainedTokenizerBase]:
    """The scripts' model and tokenizer: the named tokenizer, else the model's, else (for a preset) a new BPE
    trained on `texts_for_a_new_tokenizer()`. Errors name `--model_name_or_path` / `--tokenizer_name_or_path`."""
    from .local_data import train_tokenizer

    resolve_dtype(dtype)  # a bad dtype is reported before anything is loaded
    if model_name_or_path not in PRESETS:
        check_model_source(model_name_or_path, "--model_name_or_path", others=_PRESETS_HINT)
        check_llada_checkpoint(model_name_or_path, "--model_name_or_path", revision)
    if tokenizer_name_or_path:
        tokenizer = load_tokenizer(tokenizer_name_or_path, trust_remote_code)
    elif model_name_or_path in PRESETS:
        tokenizer = train_tokenizer(texts_for_a_new_tokenizer())
    else:
        tokenizer = load_tokenizer(model_name_or_path, trust_remote_code, setting="--model_name_or_path",
                                   revision=revision)
    model = load_model(model_name_or_path, tokenizer, dtype, attn_implementation, trust_remote_code, seed,
                       revision=revision, quantization_config=quantization_config)
    return model, tokenizer


def kbit_device_map() -> dict[str, int] | None:
    """Where a k-bit (bitsandbytes) model loads: this process's GPU when there is one (each process of a multi-GPU
    run keeps a whole copy on its own device, as TRL's scripts place quantized models), else None (the CPU)."""
    if not torch.cuda.is_available():
        return None
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def load_tokenizer(path: str, trust_remote_code: bool = False, setting: str = "--tokenizer_name_or_path",
                   tokenizer_flag: str = "--tokenizer_name_or_path",
                   revision: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer in `path` (a folder or Hub id), padding with EOS when it has no pad token (as LLaDA does)."""
    check_tokenizer_source(path, setting, tokenizer_flag)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                  **({"revision": revision} if revision is not None else {}))
    except (OSError, ValueError) as error:  # unreadable or incomplete tokenizer files: what failed, then why
        kind = OSError if isinstance(error, OSError) else ValueError
        raise kind(f"{setting} {path!r}: could not load the tokenizer: {_one_line(error)}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # LLaDA pads with EOS
    return tokenizer


def _looks_like_a_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_dataset_arg(name: str, config: str | None = None, split: str = "train",
                     setting: str = "--dataset_name") -> Dataset:
    """`--dataset_name`: local data files by extension (json/jsonl/csv/parquet/txt, glob patterns too), a local
    folder of such files, else a Hub dataset id. Raises `FileNotFoundError` / `ValueError` naming `setting` when the
    file is missing, of an unsupported type, unreadable or empty, or the Hub id cannot be loaded."""
    import glob

    from datasets.exceptions import DatasetGenerationError

    formats = ", ".join(f".{extension}" for extension in LOCAL_DATA_FORMATS)
    path = Path(name).expanduser()
    extension = path.suffix[1:].lower()
    if extension in LOCAL_DATA_FORMATS:
        if not (path.is_file() or (any(char in name for char in "*?[") and glob.glob(str(path)))):
            raise FileNotFoundError(f"{setting} {name!r}: no such file; pass an existing data file ({formats}) or a "
                                    "Hub dataset id.")
        if path.is_file() and not path.read_bytes().strip():
            raise ValueError(f"{setting} {name!r}: the file is empty; pass a file with at least one example.")
        try:
            dataset = load_dataset(LOCAL_DATA_FORMATS[extension], data_files=str(path), split="train")
        except (DatasetGenerationError, ValueError) as error:  # the file does not parse as its extension says
            cause = error.__cause__ if isinstance(error, DatasetGenerationError) and error.__cause__ else error
            raise ValueError(f"{setting} {name!r}: could not read it as .{extension} data ({_one_line(cause)}); fix "
                             "the file or give it the extension of its format.") from error
        if len(dataset) == 0:
            raise ValueError(f"{setting} {name!r}: the file holds no rows; pass a file with at least one example.")
        return dataset
    if path.is_file():
        raise ValueError(f"{setting} {name!r}: unsupported file type {path.suffix or '(no extension)'!r}; use one of "
                         f"{formats}.")
    if not path.is_dir() and (_looks_like_a_path(name) or _hub_id_problem(name) is not None):
        raise FileNotFoundError(f"{setting} {name!r}: no such file or folder; pass an existing data file "
                                f"({formats}), a folder of them, or a Hub dataset id.")
    try:
        return load_dataset(name, config, split=split)
    except (OSError, ConnectionError) as error:  # not on the Hub, not in the cache when offline, no network
        from datasets import config as datasets_config

        if path.is_dir():
            raise FileNotFoundError(f"{setting} {name!r}: could not load the folder's data files: "
                                    f"{_one_line(error)}") from error
        if datasets_config.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{setting} {name!r}: no such file or folder, and no Hub dataset of that id in the "
                                    "local cache (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set); download it "
                                    f"while online, or pass a data file ({formats}).") from error
        raise FileNotFoundError(f"{setting} {name!r}: no such file or folder, and the Hub dataset could not be "
                                f"loaded: {_one_line(error)}") from error
