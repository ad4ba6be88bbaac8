"""Model cards for LLaDA checkpoints and adapters, built on huggingface_hub's `ModelCard` / `ModelCardData`.

Every value a card states is read from the checkpoint it describes (its `config.json`, `generation_config.json`,
`adapter_config.json`) and from the training record our trainers write next to the weights (`llada_training.json`).

The training record (format 2) lists every training stage that led to the weights, oldest first, under `stages`:
a trainer that starts from a folder (or a cached Hub repository) holding its own record carries that record's
stages and appends its own. A stage states its kind ("pre-training", "SFT", "VRPO", "diffu-GRPO", each also as
"LoRA ..."), the model it started from, steps, key hyper-parameters, final losses (and, for the alignment stages, the
last logged rewards), LoRA settings and its data (names, rows, tokens).
The top-level fields repeat the last stage, in the layout of format 1 (records without `stages`), which cards still
render. Names in a record are Hub ids, or the last part of a local path: never a path of the machine that trained.
"""

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES = Path(__file__).parent / "templates"
TRAINING_RECORD = "llada_training.json"
RECORD_FORMAT = 2
BASE_TAGS = ["llada", "diffusion", "masked-diffusion", "text-generation"]
CITATION_KEY = "arxiv:2502.09992"
# local data files (by extension) are named by their file name, never taken for a Hub dataset id
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow", ".tsv")
# the fields of a stage that format 1 kept at the top level of the record
TOP_LEVEL_FIELDS = ("objective", "mask_eps", "random_length_probability", "low_discrepancy_sampling",
                    "train_on_padding", "hyperparameters", "train_loss", "eval_loss", "lora")
OBJECTIVE_TEXT = {
    "sft": ("response-only masked-diffusion SFT (LLaDA): cross-entropy at masked answer positions / p_mask, divided "
            "by each row's answer length, averaged over rows"),
    "pretraining": ("masked-diffusion pre-training (LLaDA): cross-entropy at masked positions / p_mask, summed and "
                    "divided by batch size x sequence length"),
    "vrpo": ("VRPO (LLaDA 1.5, arXiv 2505.19223): DPO with each log-likelihood replaced by a Monte-Carlo ELBO of the "
             "response given the prompt (prompt never masked), the policy and the reference scored on the same "
             "timesteps and masks"),
    "diffu_grpo": ("diffu-GRPO (d1, arXiv 2504.12216): GRPO on completions sampled with the diffusion sampler, "
                   "per-token log-probabilities from one forward pass with the completion fully masked and the prompt "
                   "randomly masked"),
}
# what each objective's stage is called in the card, and the hyper-parameters of the alignment objectives
STAGE_KINDS = {"sft": "SFT", "pretraining": "pre-training", "vrpo": "VRPO", "diffu_grpo": "diffu-GRPO"}
OBJECTIVE_HYPERPARAMETERS = {
    "vrpo": ("beta", "elbo_samples", "optimal_allocation", "antithetic_sampling", "stratified_timesteps",
             "loss_type", "loss_weights", "precompute_ref_log_probs"),
    "diffu_grpo": ("beta", "num_generations", "num_iterations", "epsilon", "p_mask_prompt", "max_completion_length",
                   "steps", "block_length", "remasking", "temperature", "threshold", "kv_cache", "loss_type"),
}
# the metrics whose last logged value an alignment stage records
OBJECTIVE_METRICS = {
    "vrpo": ("rewards/accuracies", "rewards/margins"),
    "diffu_grpo": ("reward", "reward_std", "kl"),
}
ROW_UNITS = {"sft": "examples", "vrpo": "preference pairs", "diffu_grpo": "prompts"}


# The family members: what the card calls them, its paper, and the sentence that introduces the model.
FAMILY = {
    "llada": dict(name="LLaDA", paper="2502.09992", tag=None,
                  text="masked-diffusion language model"),
    "llada_moe": dict(name="LLaDA-MoE", paper="2509.24389", tag="llada-moe",
                      text="mixture-of-experts masked-diffusion language model"),
    "llada2": dict(name="LLaDA 2", paper=None, tag="llada2",
                   text="mixture-of-experts block-diffusion language model"),
}


def architecture(config: dict[str, Any]) -> str:
    """The family member of an official-format config dict: "llada" (dense), "llada_moe" or "llada2". LLaDA-MoE's
    config also says model_type "llada": its architectures name `LLaDAMoEModelLM`."""
    if config.get("model_type") == "llada2_moe":
        return "llada2"
    if "LLaDAMoEModelLM" in (config.get("architectures") or []) or "num_experts" in config:
        return "llada_moe"
    return "llada"


def count_parameters(folder: str | Path) -> int:
    """Parameters of a saved model, read from the headers of its `*.safetensors` files (no tensor is loaded): every
    tensor but the routers' `expert_bias`, a buffer the MoE members save with their weights."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), "pt") as weights:
            total += sum(_numel(weights.get_slice(name).get_shape()) for name in weights.keys()
                         if not name.endswith("expert_bias"))
    return total


def model_rows(config: dict[str, Any], num_parameters: int | None = None) -> list[tuple[str, str]]:
    """The card's "Model" table: (label, value) rows for the config's family member (`num_parameters`: shown when
    known)."""
    kind = architecture(config)
    total = f"{num_parameters:,}" if num_parameters is not None else "see the weights"
    class_name = (config.get("architectures") or ["LLaDAModelLM"])[0]
    if kind == "llada":
        kv_heads = 1 if config.get("multi_query_attention") else (config.get("n_kv_heads") or config["n_heads"])
        return [
            ("architecture", f"LLaDA, dense (`{class_name}`)"),
            ("parameters", total),
            ("layers / width / heads / kv heads",
             f"{config['n_layers']} / {config['d_model']} / {config['n_heads']} / {kv_heads}"),
            ("MLP hidden size", str(config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * config["d_model"])),
            ("vocabulary",
             f"{config['vocab_size']} (embedding rows {config.get('embedding_size') or config['vocab_size']})"),
            ("max sequence length", str(config.get("max_sequence_length"))),
            ("tied embeddings", str(config.get("weight_tying"))),
            ("mask / EOS token ids", f"{config.get('mask_token_id')} / {config.get('eos_token_id')}"),
        ]
    heads = config["num_attention_heads"]
    shape = (f"{config['num_hidden_layers']} / {config['hidden_size']} / {heads} / "
             f"{config.get('num_key_value_heads') or heads}")
    if kind == "llada_moe":
        frequencies = config.get("moe_layer_freq")
        dense_layers = ([i for i, f in enumerate(frequencies) if not f] if isinstance(frequencies, list) else [])
        shared = config.get("shared_expert_intermediate_size")
        experts = (f"{config['num_experts']} routed (top {config['num_experts_per_tok']}, softmax router), width "
                   f"{config['expert_intermediate_size']}" + (f"; a shared expert of width {shared}" if shared else "")
                   + (f"; dense MLP in layer(s) {', '.join(map(str, dense_layers))}" if dense_layers else ""))
        name = f"LLaDA-MoE, mixture of experts (`{class_name}`)"
    else:
        groups = config.get("n_group")
        score = config.get("score_function", "sigmoid")
        grouping = f", {groups} groups, top {config.get('topk_group')} groups" if groups else ""
        experts = (f"{config['num_experts']} routed (top {config['num_experts_per_tok']}, {score} router{grouping}), "
                   f"width {config['moe_intermediate_size']}; {config.get('num_shared_experts') or 0} shared; dense "
                   f"MLP in the first {config.get('first_k_dense_replace') or 0} layer(s)")
        name = f"LLaDA 2, mixture of experts with block diffusion (`{class_name}`)"
    return [
        ("architecture", name),
        ("parameters", total),
        ("layers / width / heads / kv heads", shape),
        ("experts", experts),
        ("vocabulary", str(config["vocab_size"])),
        ("max sequence length", str(config.get("max_position_embeddings"))),
        ("tied embeddings", str(bool(config.get("tie_word_embeddings")))),
        ("mask / EOS token ids", f"{config.get('mask_token_id')} / {config.get('eos_token_id')}"),
    ]


def versions() -> dict[str, str]:
    found = {}
    for name in ("llada-hf", "transformers", "torch", "peft", "trl", "datasets", "huggingface-hub", "safetensors"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


# --- names: Hub ids or local paths -------------------------------------------------------------------------------


def looks_like_a_path(name: str) -> bool:
    """True when `name` is (or reads as) a local path rather than a Hub id: it exists here, starts with / . ~, holds
    a backslash or more than one '/'."""
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or Path(name).expanduser().exists())


def _valid_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub model id, namespace/name, and is no local path; None otherwise."""
    if not isinstance(name, str) or name.count("/") != 1 or looks_like_a_path(name) or not _valid_repo_id(name):
        return None
    return name


def dataset_hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub dataset id (namespace/name, or a legacy single name) and is no local path or
    data file name; None otherwise."""
    if (not isinstance(name, str) or not name or looks_like_a_path(name)
            or Path(name).suffix.lower() in DATA_FILE_SUFFIXES or not _valid_repo_id(name)):
        return None
    return name


def local_label(name: str) -> str:
    """How a record names something local: the last part of a path (never the path of this machine), a data file's
    name, or a description as given ("addition task (local)")."""
    if looks_like_a_path(name) or Path(name).suffix.lower() in DATA_FILE_SUFFIXES:
        path = Path(name).expanduser()
        return (path.resolve().name if path.exists() else path.name) or name
    return name


def model_reference(name_or_path: str | None) -> dict[str, Any] | None:
    """{"name", "hub_id"} of the model a trainer started from: a Hub id names itself; a local folder is named by its
    last part and has no hub_id. None for a model built from a config (no name)."""
    if not name_or_path:
        return None
    hub_id = model_hub_id(name_or_path)
    return {"name": hub_id or local_label(name_or_path), "hub_id": hub_id}


# --- the training record -----------------------------------------------------------------------------------------


def read_record_of(name_or_path: str | None) -> dict[str, Any] | None:
    """The training record of a model folder, or of a Hub repository already in the local cache (never downloads)."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        file = path / TRAINING_RECORD
    elif model_hub_id(name_or_path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, TRAINING_RECORD)
        if not isinstance(cached, str):
            return None
        file = Path(cached)
    else:
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record_stages(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stages of a training record, oldest first; a format-1 record (no `stages`) is one stage."""
    if not record:
        return []
    if isinstance(record.get("stages"), list):
        return [dict(stage) for stage in record["stages"]]
    if "objective" not in record:
        return []
    names = list(record.get("datasets") or [])
    stage = {key: record.get(key) for key in TOP_LEVEL_FIELDS}
    stage.update(kind=_stage_kind(record["objective"], bool(record.get("lora"))), steps=record.get("global_step"),
                 dataset={"names": [local_label(n) if not dataset_hub_id(n) else n for n in names],
                          "hub_ids": [n for n in names if dataset_hub_id(n)]} if names else None)
    return [stage]


def _stage_kind(objective: str, lora: bool) -> str:
    kind = STAGE_KINDS.get(objective, objective)
    return f"LoRA {kind}" if lora else kind


def stage_objective(args) -> str:
    """The objective a trainer's arguments train with: "vrpo", "diffu_grpo", "sft" or "pretraining"."""
    if hasattr(args, "elbo_samples"):
        return "vrpo"
    if hasattr(args, "p_mask_prompt"):
        return "diffu_grpo"
    return "sft" if hasattr(args, "train_on_padding") else "pretraining"


def starting_model(model) -> str | None:
    """The name or path a (possibly PEFT-wrapped) model was loaded from; None for a model built from a config."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        name = getattr(next(iter(peft_config.values())), "base_model_name_or_path", None)
        if name:
            return name
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    config = getattr(model, "config", None)
    return getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None) or None


def base_quantization(model) -> dict[str, Any] | None:
    """How the base of a (possibly PEFT-wrapped) model was quantized by bitsandbytes, read from its
    `config.quantization_config`: {"bits": 4, "quant_type": "nf4" / "fp4", "nested": bool, "compute_dtype": ...} or
    {"bits": 8}; None for an unquantized model."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    summary = quantization_summary(values)
    if summary is None:  # another quantization method than bitsandbytes' 4 / 8 bits
        return {"method": str(values.get("quant_method"))}
    summary["method"] = "bitsandbytes"
    if summary["bits"] == 4:
        summary["compute_dtype"] = str(values.get("bnb_4bit_compute_dtype")).replace("torch.", "")
    return summary


def _quantization_text(quantization: dict[str, Any]) -> str:
    if quantization.get("bits") == 4:
        nested = ", nested (double) quantization" if quantization.get("nested") else ""
        return (f"4-bit {quantization.get('quant_type')} (bitsandbytes){nested}, compute dtype "
                f"{quantization.get('compute_dtype')}; the adapter trained on the frozen quantized base (QLoRA)")
    if quantization.get("bits") == 8:
        return "8-bit (bitsandbytes LLM.int8); the adapter trained on the frozen quantized base"
    return f"quantized ({quantization.get('method')})"


def quantization_summary(settings) -> dict | None:
    """{"bits": 4, "quant_type": "nf4" | "fp4", "nested": bool} or {"bits": 8} from a bitsandbytes quantization as a
    `BitsAndBytesConfig` (or its dict) or TRL's `ModelConfig` fields spell it; None for no quantization. A training
    record's `quantization` (the same keys, plus "method" and "compute_dtype"; {"method": ...} alone for another
    quantization method) is returned as it is."""
    if settings is None or settings is False:
        return None
    if hasattr(settings, "to_dict"):
        settings = settings.to_dict()
    if not isinstance(settings, dict):
        return None
    if settings.get("bits") in (4, 8) or (settings.get("method") and "load_in_4bit" not in settings):
        return dict(settings)  # the training record's form (`hub_cards.cards.base_quantization`)
    if settings.get("load_in_8bit") or settings.get("_load_in_8bit"):
        return {"bits": 8}
    if settings.get("load_in_4bit") or settings.get("_load_in_4bit"):
        nested = settings.get("bnb_4bit_use_double_quant", settings.get("use_bnb_nested_quant", False))
        return {"bits": 4, "quant_type": str(settings.get("bnb_4bit_quant_type") or "fp4"), "nested": bool(nested)}
    return None


def quantization_text(summary: dict | None) -> str:
    """How cards and messages name a quantization: "4-bit (nf4, nested)", "4-bit (fp4)", "8-bit (LLM.int8)",
    "gptq-quantized"."""
    if not summary:
        return "full precision"
    if summary.get("bits") == 8:
        return "8-bit (LLM.int8)"
    if summary.get("bits") != 4:
        return f"{summary.get('method') or 'an unrecognised'}-quantized"
    return f"4-bit ({summary.get('quant_type') or 'fp4'}{', nested' if summary.get('nested') else ''})"


def quantized_base_text(summary: dict) -> str:
    """"a 4-bit (nf4) quantized base", "an 8-bit (LLM.int8) quantized base", "a gptq-quantized base"."""
    if summary.get("bits") not in (4, 8):
        return f"a {quantization_text(summary)} base"
    return f"{'an' if summary.get('bits') == 8 else 'a'} {quantization_text(summary)} quantized base"


def quantized_adapter_note(summary: dict) -> str:
    """What an adapter's card says of a quantized training base."""
    if summary.get("bits") not in (4, 8):
        return (f"This adapter was trained on {quantized_base_text(summary)}. To reproduce its training, load the "
                "base quantized the same way; to use it, it loads on the base at any precision.")
    return (f"This adapter was trained on {quantized_base_text(summary)} (QLoRA, bitsandbytes). To "
            "reproduce its training, load the base quantized the same way (`llada-hf sft --use_peft "
            + ("--load_in_8bit" if summary.get("bits") == 8 else
               f"--load_in_4bit --bnb_4bit_quant_type {summary.get('quant_type') or 'fp4'}"
               + (" --use_bnb_nested_quant" if summary.get("nested") else ""))
            + "`); to use it, it loads on the base at any precision (bf16, fp32, or quantized), and "
            "`merge_and_unload()` on a full-precision base gives a model that needs no bitsandbytes.")


def merged_note(merge: dict) -> str:
    """What a merged model's card says of the base it was merged into (and the adapter's quantized training)."""
    trained = merge.get("adapter_quantization")
    dtype = merge.get("base_dtype")
    into = "the full-precision base" + (f" ({dtype})" if dtype else "")
    if trained:
        return (f"The adapter was trained on {quantized_base_text(trained)} (QLoRA); it was merged into {into}, "
                "never into quantized weights: this model loads without bitsandbytes.")
    return f"The adapter was merged into {into}."


def earlier_stages(model) -> list[dict[str, Any]]:
    """The stages recorded with the model a trainer starts from (its folder's, or its cached Hub repository's,
    `llada_training.json`); empty for a fresh model or one without a record."""
    return record_stages(read_record_of(starting_model(model)))


def _dataset_size(dataset, block_size: int | None) -> tuple[int | None, int | None]:
    """(rows, tokens) of a prepared training set, when they can be read without a pass over the data."""
    try:
        rows = len(dataset)
    except TypeError:  # an IterableDataset
        return None, None
    if block_size is not None:  # packed blocks, every one block_size tokens long
        return rows, rows * block_size
    tokens = None
    table = getattr(dataset, "data", None)
    if table is not None and getattr(dataset, "_indices", None) is None and "input_ids" in dataset.column_names:
        try:
            import pyarrow.compute as pc

            tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
        except Exception:  # an unexpected column type: the count is optional
            tokens = None
    return rows, tokens


def training_record(trainer, dataset_names: list[str] | None = None,
                    earlier: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a card says about training, read from a finished (or checkpointed) trainer.

    dataset_names: the names of the training data (Hub ids, local files: recorded by file name, or a description).
    earlier: the stages before this one (default: those recorded with the model the trainer started from).
    """
    args, state = trainer.args, trainer.state
    objective = stage_objective(args)
    is_sft = objective != "pretraining"  # every objective but pre-training trains on (prompt, response) examples
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
    train_loss = losses[-1] if losses else next((e["train_loss"] for e in state.log_history if "train_loss" in e), None)
    hyperparameters = {
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": args.world_size,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "optimizer": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32"),
        "seed": args.seed,
        ("max_length" if is_sft else "block_size"): getattr(args, "max_length", None) if is_sft else args.block_size,
    }
    for name in OBJECTIVE_HYPERPARAMETERS.get(objective, ()):
        value = getattr(args, name, None)
        hyperparameters[name] = list(value) if isinstance(value, (list, tuple)) else value
    lora = None
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        adapter = next(iter(peft_config.values()))
        target = adapter.target_modules
        lora = {"r": adapter.r, "lora_alpha": adapter.lora_alpha, "lora_dropout": adapter.lora_dropout,
                "target_modules": target if isinstance(target, str) else sorted(target or [])}
        if getattr(adapter, "target_parameters", None):
            lora["target_parameters"] = sorted(adapter.target_parameters)
    names = [name for name in (dataset_names or []) if name]
    rows, tokens = _dataset_size(trainer.train_dataset, None if is_sft else args.block_size) \
        if trainer.train_dataset is not None else (None, None)
    started_from = model_reference(starting_model(trainer.model))
    stage = {
        "kind": _stage_kind(objective, lora is not None),
        "objective": objective,
        "started_from": started_from,
        "steps": state.global_step,
        "epochs": round(state.epoch, 4) if state.epoch is not None else None,
        "mask_eps": getattr(args, "mask_eps", None),
        "random_length_probability": getattr(args, "random_length_probability", None),
        "low_discrepancy_sampling": getattr(args, "low_discrepancy_sampling", None),
        "train_on_padding": getattr(args, "train_on_padding", None),
        **_family_training(trainer),
        "hyperparameters": hyperparameters,
        "train_loss": train_loss,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "lora": lora,
        **({"quantization": quantization} if (quantization := base_quantization(trainer.model)) else {}),
        "dataset": {
            "names": [dataset_hub_id(name) or local_label(name) for name in names],
            "hub_ids": [name for name in names if dataset_hub_id(name)],
            "rows": rows,
            "row_unit": ROW_UNITS.get(objective) or f"packed blocks of {args.block_size} tokens",
            "tokens": tokens,
        },
    }
    metrics = {name: next((e[name] for e in reversed(state.log_history) if name in e), None)
               for name in OBJECTIVE_METRICS.get(objective, ())}
    if any(value is not None for value in metrics.values()):
        stage["final_metrics"] = metrics
    stages = [*(earlier_stages(trainer.model) if earlier is None else earlier), stage]
    return {
        "format": RECORD_FORMAT,
        **{key: stage[key] for key in TOP_LEVEL_FIELDS},
        "global_step": state.global_step,
        "datasets": stage["dataset"]["names"],
        "base_model": started_from,
        "stages": stages,
    }


def _family_training(trainer) -> dict[str, Any]:
    """The objective (masked or block diffusion, with its settings) and the load-balancing weight of a run."""
    if not hasattr(trainer, "training_objective"):
        return {}
    objective = trainer.training_objective(trainer.model)
    values: dict[str, Any] = {"diffusion_objective": objective}
    if objective == "block_diffusion":
        values.update(diffusion_block_size=trainer.args.diffusion_block_size,
                      noise_range=[trainer.args.noise_range_low, trainer.args.noise_range_high])
    coef = trainer.aux_loss_coef(trainer.model)
    if coef:
        values["router_aux_loss_coef"] = coef
    return values


# --- rendering ---------------------------------------------------------------------------------------------------


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _data_text(dataset: dict[str, Any] | None) -> str | None:
    if not dataset:
        return None
    names = ", ".join(dataset.get("names") or [])
    size = []
    if dataset.get("rows") is not None:
        unit = dataset.get("row_unit") or "rows"
        size.append(f"{_number(dataset['rows'])} rows" + (f" ({unit})" if unit != "rows" else ""))
    if dataset.get("tokens") is not None:
        size.append(f"{_number(dataset['tokens'])} tokens")
    if not names:
        return ", ".join(size) + " (no name recorded)" if size else None
    return names + (": " + ", ".join(size) if size else "")


def _model_text(reference: dict[str, Any] | None) -> str | None:
    if not reference:
        return None
    if reference.get("hub_id"):
        return f"[{reference['hub_id']}](https://huggingface.co/{reference['hub_id']})"
    return f"`{reference['name']}` (a local folder)"


def _stage_markdown(stage: dict[str, Any]) -> list[str]:
    objective = stage.get("objective")
    block_diffusion = stage.get("diffusion_objective") == "block_diffusion"
    lines = []
    if block_diffusion:
        lines.append("- objective: block diffusion (LLaDA 2, inclusionAI dFactory recipe): the noisy and the clean "
                     "copy of each sequence in one pass under the block-diffusion attention mask (blocks of "
                     f"{stage.get('diffusion_block_size')} tokens), cross-entropy at the masked positions averaged "
                     "over the masked tokens of the batch")
    elif objective in OBJECTIVE_TEXT:
        lines.append(f"- objective: {OBJECTIVE_TEXT[objective]}")
    if stage.get("router_aux_loss_coef"):
        lines.append(f"- plus the routers' load-balancing loss, weight {stage['router_aux_loss_coef']}")
    if objective in ("vrpo", "diffu_grpo"):
        beta = (stage.get("hyperparameters") or {}).get("beta")
        if not beta:
            lines.append("- no reference model (beta = 0: no KL term)")
        else:
            reference = "the starting model with the adapter disabled" if stage.get("lora") else \
                "a frozen copy of the starting model"
            lines.append(f"- reference: {reference}; beta = {beta}")
    started = _model_text(stage.get("started_from"))
    if started:
        lines.append(f"- started from: {started}")
    if block_diffusion and stage.get("noise_range"):
        low, high = stage["noise_range"]
        lines.append(f"- noise: each example's tokens are masked with one probability drawn from U({low}, {high})")
    elif stage.get("mask_eps") is not None:
        noise = f"- noise: t ~ U(0, 1), p_mask = (1 - eps) t + eps with eps = {stage['mask_eps']}"
        if stage.get("random_length_probability"):
            noise += f"; random-length batches with probability {stage['random_length_probability']}"
        if stage.get("low_discrepancy_sampling"):
            noise += "; low-discrepancy t within each batch"
        lines.append(noise)
    if objective == "sft":
        lines.append("- SFT masking: " + (
            "prompt tokens are never masked; answers are padded with EOS to the batch length and the padding is "
            "trained on (the reference)" if stage.get("train_on_padding")
            else "prompt tokens are never masked; answer padding is excluded from the loss and from attention"))
    data = _data_text(stage.get("dataset"))
    if data:
        lines.append(f"- data: {data}")
    steps = f"- steps: {stage.get('steps')}"
    if stage.get("epochs"):
        steps += f" ({stage['epochs']:g} epochs)"
    if stage.get("train_loss") is not None:
        steps += f"; final training loss {stage['train_loss']:.4f}"
    if stage.get("eval_loss") is not None:
        steps += f"; final eval loss {stage['eval_loss']:.4f}"
    lines.append(steps)
    metrics = {k: v for k, v in (stage.get("final_metrics") or {}).items() if v is not None}
    if metrics:
        lines.append("- last logged: " + ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
    if stage.get("hyperparameters"):
        lines.append("- hyper-parameters: " + ", ".join(f"{k} = {v}" for k, v in stage["hyperparameters"].items()))
    if stage.get("lora"):
        lines.append("- LoRA: " + ", ".join(f"{k} = {v}" for k, v in stage["lora"].items()))
    if stage.get("quantization"):
        lines.append(f"- base quantization: {_quantization_text(stage['quantization'])}")
    return lines


def sampler_settings(generation_config: dict[str, Any] | None, family: str = "llada") -> dict[str, Any]:
    """What `model.generate(input_ids)` uses with no keyword: the family member's generation config class
    (`LLaDAGenerationConfig`, or `LLaDA2GenerationConfig` for "llada2") built from `generation_config.json`, its
    settings with the defaults resolved. The class is the one source of the sampler's defaults."""
    if family == "llada2":
        from modeling_llada.generation_llada2 import LLaDA2GenerationConfig as config_class
    else:
        from modeling_llada.generation_llada import LLaDAGenerationConfig as config_class
    fields = config_class._diffusion_fields
    return config_class(**{k: v for k, v in (generation_config or {}).items() if k in fields}).sampler_settings()


def _sampler_markdown(generation_config: dict[str, Any] | None, family: str) -> list[str]:
    values = sampler_settings(generation_config, family)
    if not generation_config:
        return ["No generation_config.json: `model.generate` uses the sampler's defaults "
                f"({', '.join(f'{k}={v!r}' for k, v in values.items())})."]
    lines = ["What `model.generate(input_ids)` uses with no keyword: the sampler settings of `generation_config.json` "
             "(a field it leaves out takes the sampler's default).", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {key} | {value!r} |" for key, value in values.items()]
    if generation_config.get("eos_token_id") is not None:
        lines.append(f"| eos_token_id | {generation_config['eos_token_id']!r} |")
    return lines


def _eval_markdown(eval_results: list[dict[str, Any]] | None) -> list[str]:
    if not eval_results:
        return []
    lines = ["### Evaluation", "", "| task | dataset | metric | value |", "| --- | --- | --- | --- |"]
    for result in eval_results:
        lines.append(f"| {result.get('task_name') or result.get('task_type')} | "
                     f"{result.get('dataset_name') or result.get('dataset_type')} | "
                     f"{result.get('metric_name') or result.get('metric_type')} | {result.get('metric_value')} |")
    return lines + [""]


def training_markdown(record: dict[str, Any] | None, *, generation_config: dict[str, Any] | None = None,
                      eval_results: list[dict[str, Any]] | None = None, what: str = "these weights",
                      family: str = "llada", adapter: bool = False) -> str:
    """The card's Training section: every stage, the merge (if any; with the quantization the adapter trained on),
    the sampler settings and the evaluation. `adapter`: the card of an adapter, which says how to reproduce a
    training on a quantized base."""
    stages = record_stages(record)
    lines = []
    if not stages:
        lines += [f"No training record was found next to {what}.", ""]
    elif len(stages) == 1:
        lines += [f"One stage: {stages[0].get('kind', 'training')}.", "", *_stage_markdown(stages[0]), ""]
    else:
        lines += [f"{len(stages)} stages, in order: " + " -> ".join(s.get("kind", "training") for s in stages) + ".",
                  ""]
        for index, stage in enumerate(stages, 1):
            lines += [f"### Stage {index}: {stage.get('kind', 'training')}", "", *_stage_markdown(stage), ""]
    merge = (record or {}).get("merge")
    if merge:
        base = _model_text(merge.get("base_model")) or "its base model"
        lines += ["### Merge", "", f"After the last stage, its LoRA adapter was folded (`merge_and_unload`) into the "
                  f"weights of the base model, {base}: this repository is a complete model, loaded without PEFT. "
                  + merged_note(merge), ""]
    elif adapter and stages and stages[-1].get("quantization"):
        lines += [quantized_adapter_note(stages[-1]["quantization"]), ""]
    lines += ["### Sampler settings", "", *_sampler_markdown(generation_config, family), ""]
    lines += _eval_markdown(eval_results)
    return "\n".join(lines).rstrip() + "\n"


def _hub_datasets(record: dict[str, Any] | None) -> list[str]:
    found = []
    for stage in record_stages(record):
        for name in (stage.get("dataset") or {}).get("hub_ids") or []:
            if name not in found:
                found.append(name)
    return found


def _prompt_code(has_chat_template: bool) -> str:
    if has_chat_template:
        return ('messages = [{"role": "user", "content": "Explain diffusion language models in one sentence."}]\n'
                'input_ids = tokenizer.apply_chat_template(\n'
                '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
                ')["input_ids"].to(model.device)')
    return 'input_ids = tokenizer("Diffusion language models", return_tensors="pt").input_ids.to(model.device)'


def check_dataset_ids(datasets, setting: str = "datasets") -> list[str]:
    """The card's `datasets` as a list of Hub dataset ids; a ValueError naming `setting` for anything else."""
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    for name in datasets:
        if not dataset_hub_id(name):
            shown = f"{setting} {name!r}" if setting.startswith("-") else f"{setting}=[{name!r}]"
            raise ValueError(f"{shown} is not a Hub dataset id: card metadata lists Hub datasets only (e.g. "
                             "trl-lib/Capybara); local data is named in the card's Training section from the "
                             "training record.")
    return datasets


def _render(
    template: str,
    repo_id: str,
    *,
    library_name: str,
    base_model: str | None,
    base_model_relation: str | None,
    license: str,
    datasets: list[str],
    training: dict[str, Any] | None,
    eval_results: list[dict[str, Any]] | None,
    extra_tags: list[str],
    generation_config: dict[str, Any] | None,
    has_chat_template: bool,
    family: str,
    datasets_setting: str = "datasets",
    **template_values,
) -> ModelCard:
    """The metadata and the parts every card shares, then the template's own values.

    base_model: a Hub id (card metadata takes nothing else); base_model_relation: "adapter", "merge", "finetune".
    family: the family member ("llada", "llada_moe", "llada2"), whose sampler the example and table describe.
    """
    datasets = check_dataset_ids(datasets, datasets_setting) or _hub_datasets(training)
    model_name = repo_id.split("/")[-1]
    results = [EvalResult(**result) for result in eval_results] if eval_results else None
    relation = {"base_model_relation": base_model_relation} if base_model and base_model_relation else {}
    data = ModelCardData(
        license=license,
        library_name=library_name,
        pipeline_tag="text-generation",
        tags=[*BASE_TAGS, *extra_tags, *(["trl"] if training else []), CITATION_KEY],
        base_model=base_model,
        datasets=datasets or None,
        eval_results=results,
        model_name=model_name if results else None,
        **relation,
    )
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / template),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        generation_kwargs=[(key, repr(value)) for key, value in sampler_settings(generation_config, family).items()],
        prompt_code=_prompt_code(has_chat_template),
        training=training,
        training_section=training_markdown(
            training, generation_config=generation_config, eval_results=eval_results,
            what="this adapter" if template == "adapter_card.md" else "these weights", family=family,
            adapter=template == "adapter_card.md"),
        datasets=datasets,
        versions=versions(),
        **template_values,
    )


def _base_of_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The base a record names: the merge's base for a merged model, else the model the last stage started from."""
    if not record:
        return None
    if record.get("merge"):
        return record["merge"].get("base_model")
    return record.get("base_model")


def build_model_card(
    config: dict[str, Any],
    repo_id: str,
    *,
    generation_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    base_model: str | None = None,
    base_model_relation: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] = (),
    eval_results: list[dict[str, Any]] | None = None,
    has_chat_template: bool = False,
    extra_tags: list[str] = (),
    datasets_setting: str = "datasets",
    num_parameters: int | None = None,
) -> ModelCard:
    """Card of a full LLaDA model (pre-trained, fine-tuned, or an adapter merged into its base).

    base_model: the Hub id of the model it derives from (default: the one the training record names, when that is a
    Hub id; a local base is named in the text only). base_model_relation: "merge" or "finetune" (default: "merge"
    when the record holds a merge, else "finetune").
    eval_results: dicts of `huggingface_hub.EvalResult` fields (task_type, dataset_type, dataset_name, metric_type,
    metric_value, ...), written as `model-index` and as a table.
    datasets: Hub dataset ids for the card metadata (default: those of the record's stages).
    num_parameters: the count shown (`card_for_folder` reads it from the weights' headers; unknown without it).
    The card names the family member (LLaDA, LLaDA-MoE, LLaDA 2) and describes its architecture.
    """
    recorded = _base_of_record(training) or {}
    family_tag = FAMILY[architecture(config)]["tag"]
    extra_tags = [*extra_tags, *([family_tag, "moe"] if family_tag else [])]
    base_model = base_model or recorded.get("hub_id")
    local_base = None if base_model else (recorded.get("name") or ("an unnamed base" if recorded else None))
    relation = base_model_relation or ("merge" if (training or {}).get("merge") else "finetune")
    return _render(
        "model_card.md", repo_id, library_name="transformers", base_model=base_model,
        base_model_relation=relation, license=license, datasets=datasets, training=training,
        eval_results=eval_results, extra_tags=list(extra_tags), generation_config=generation_config,
        has_chat_template=has_chat_template, family=architecture(config), datasets_setting=datasets_setting,
        local_base=local_base, merged=bool((training or {}).get("merge")),
        config=config, model_rows=model_rows(config, num_parameters), **_family_values(config),
    )


def _family_values(config: dict[str, Any]) -> dict[str, Any]:
    """What the card's introduction says of the family member."""
    family = FAMILY[architecture(config)]
    return {"family_name": family["name"], "family_text": family["text"], "family_paper": family["paper"]}


def build_adapter_card(
    adapter_config: dict[str, Any],
    repo_id: str,
    *,
    num_adapter_parameters: int,
    generation_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] = (),
    eval_results: list[dict[str, Any]] | None = None,
    has_chat_template: bool = False,
    datasets_setting: str = "datasets",
) -> ModelCard:
    """Card of a LoRA adapter. Its base: `base_model` (a Hub id), else `adapter_config["base_model_name_or_path"]`
    when that is a Hub id the training record does not call a local folder; a local base is named in the text only
    (such an adapter is not publishable as it is: others cannot resolve a path of this machine)."""
    recorded = (training or {}).get("base_model")
    named = adapter_config.get("base_model_name_or_path")
    if base_model is None and not (recorded and not recorded.get("hub_id")):
        base_model = model_hub_id(named)
    local_base = None if base_model else ((recorded or {}).get("name") or (local_label(named) if named else None)
                                          or "an unnamed base")
    target = adapter_config.get("target_modules")
    return _render(
        "adapter_card.md", repo_id, library_name="peft", base_model=base_model, base_model_relation="adapter",
        license=license, datasets=datasets, training=training, eval_results=eval_results,
        extra_tags=["lora", "peft"], generation_config=generation_config, has_chat_template=has_chat_template,
        family=_adapter_family(training), datasets_setting=datasets_setting,
        base_source=base_model or "<the base model: its Hub id or folder>", local_base=local_base,
        adapter=adapter_config,
        target_modules=target if isinstance(target, str) else ", ".join(sorted(target or [])),
        target_parameters=", ".join(sorted(adapter_config.get("target_parameters") or [])),
        num_adapter_parameters=num_adapter_parameters,
    )


def _adapter_family(training: dict[str, Any] | None) -> str:
    """The family member an adapter was trained on, as far as its training record tells: block diffusion is LLaDA 2's
    objective; any other (or no record) has LLaDA's sampler."""
    objectives = {stage.get("diffusion_objective") for stage in record_stages(training)}
    return "llada2" if "block_diffusion" in objectives else "llada"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def has_chat_template(folder: Path) -> bool:
    tokenizer_config = _read_json(folder / "tokenizer_config.json") or {}
    return (folder / "chat_template.jinja").exists() or bool(tokenizer_config.get("chat_template"))


def card_for_folder(folder: str | Path, repo_id: str, **overrides) -> ModelCard:
    """Render the card of a saved model or adapter folder from the files in it (`overrides`: the keyword arguments
    of `build_model_card` / `build_adapter_card`)."""
    folder = Path(folder)
    training = _read_json(folder / TRAINING_RECORD)
    generation_config = _read_json(folder / "generation_config.json")
    adapter_config = _read_json(folder / "adapter_config.json")
    if adapter_config is not None:
        from safetensors import safe_open

        overrides.pop("base_model_relation", None)  # an adapter is always the "adapter" of its base
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
            count = sum(_numel(weights.get_slice(name).get_shape()) for name in weights.keys())
        return build_adapter_card(adapter_config, repo_id, num_adapter_parameters=count, training=training,
                                  generation_config=generation_config, has_chat_template=has_chat_template(folder),
                                  **overrides)
    config = _read_json(folder / "config.json")
    overrides.setdefault("num_parameters", count_parameters(folder))
    return build_model_card(config, repo_id, generation_config=generation_config, training=training,
                            has_chat_template=has_chat_template(folder), **overrides)


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
