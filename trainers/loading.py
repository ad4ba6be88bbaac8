"""What the scripts load: a model (Hub id, local folder, or a preset for a fresh model), its tokenizer, a dataset."""

import torch
from datasets import Dataset, load_dataset
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from modeling_llada import LLaDAConfig, LLaDAModelLM

# Fresh-model presets (architecture only; ids and vocabulary come from the tokenizer).
PRESETS = {
    "llada-tiny": dict(d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=384, max_sequence_length=512),
    "llada-small": dict(d_model=256, n_heads=4, n_layers=6, mlp_hidden_size=768, max_sequence_length=1024),
    "llada-8b": dict(),  # the LLaDA-8B architecture (the config defaults)
}


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


def load_model(
    model_name_or_path: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> LLaDAModelLM:
    """A preset name builds a fresh model sized for `tokenizer`; anything else loads with `AutoModel`."""
    if model_name_or_path in PRESETS:
        if tokenizer is None:
            raise ValueError(f"A fresh {model_name_or_path!r} model needs a tokenizer to size its vocabulary.")
        torch.manual_seed(seed)
        config = config_for_tokenizer(model_name_or_path, tokenizer)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        return LLaDAModelLM(config)
    kwargs = {"trust_remote_code": trust_remote_code}
    if dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModel.from_pretrained(model_name_or_path, **kwargs)


def load_model_and_tokenizer(
    model_name_or_path: str,
    tokenizer_name_or_path: str | None,
    texts_for_a_new_tokenizer,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> tuple[LLaDAModelLM, PreTrainedTokenizerBase]:
    """The scripts' model and tokenizer: the named tokenizer, else the model's, else (for a preset) a new BPE
    trained on `texts_for_a_new_tokenizer()`."""
    from .local_data import train_tokenizer

    if tokenizer_name_or_path:
        tokenizer = load_tokenizer(tokenizer_name_or_path, trust_remote_code)
    elif model_name_or_path in PRESETS:
        tokenizer = train_tokenizer(texts_for_a_new_tokenizer())
    else:
        tokenizer = load_tokenizer(model_name_or_path, trust_remote_code)
    model = load_model(model_name_or_path, tokenizer, dtype, attn_implementation, trust_remote_code, seed)
    return model, tokenizer


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # LLaDA pads with EOS
    return tokenizer


LOCAL_DATA_FORMATS = {"json": "json", "jsonl": "json", "csv": "csv", "parquet": "parquet", "txt": "text"}


def load_dataset_arg(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """`--dataset_name`: local data files by extension (json/jsonl/csv/parquet/txt), else a Hub dataset id."""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension in LOCAL_DATA_FORMATS:
        return load_dataset(LOCAL_DATA_FORMATS[extension], data_files=name, split="train")
    return load_dataset(name, config, split=split)
