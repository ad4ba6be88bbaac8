"""Model cards for LLaDA checkpoints and adapters, built on huggingface_hub's `ModelCard` / `ModelCardData`.

Every value a card states is read from the checkpoint it describes (its `config.json`, `generation_config.json`,
`adapter_config.json`) and from the training record our trainers write next to the weights (`llada_training.json`).
"""

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES = Path(__file__).parent / "templates"
TRAINING_RECORD = "llada_training.json"
BASE_TAGS = ["llada", "diffusion", "masked-diffusion", "text-generation"]
CITATION_KEY = "arxiv:2502.09992"
# generation_config.json fields shown in the card's example, in this order (None -> the documented default).
GENERATION_FIELDS = ("max_new_tokens", "steps", "block_length", "temperature", "top_k", "top_p", "remasking",
                     "cfg_scale", "logits_eos_inf", "confidence_eos_eot_inf", "early_exit")
GENERATION_DEFAULTS = {"max_new_tokens": 128, "temperature": 0.0, "remasking": "low_confidence", "cfg_scale": 0.0,
                       "logits_eos_inf": False, "confidence_eos_eot_inf": False, "early_exit": False}


def count_parameters(config: dict[str, Any]) -> int:
    """Parameters of a LLaDA model from its official-format config dict (no weights needed)."""
    d, layers = config["d_model"], config["n_layers"]
    heads = config["n_heads"]
    kv_heads = 1 if config.get("multi_query_attention") else (config.get("n_kv_heads") or heads)
    head_dim = d // heads
    hidden = config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * d
    rows = config.get("embedding_size") or config["vocab_size"]
    bias = bool(config.get("include_bias"))
    qkv_bias = bias or bool(config.get("include_qkv_bias"))
    attention = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    attention += (heads + 2 * kv_heads) * head_dim * qkv_bias + d * bias
    mlp = 3 * d * hidden + (2 * hidden + d) * bias
    per_layer = attention + mlp + 2 * d
    embeddings = rows * d * (1 if config.get("weight_tying") else 2) + (0 if config.get("weight_tying") else rows * bias)
    return layers * per_layer + embeddings + d


def versions() -> dict[str, str]:
    found = {}
    for name in ("llada-hf", "transformers", "torch", "peft", "trl", "datasets", "huggingface-hub", "safetensors"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def training_record(trainer, dataset_names: list[str] | None = None) -> dict[str, Any]:
    """What a card says about training, read from a finished (or checkpointed) trainer."""
    args, state = trainer.args, trainer.state
    is_sft = hasattr(args, "train_on_padding")
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
        ("max_length" if is_sft else "block_size"): args.max_length if is_sft else args.block_size,
    }
    lora = None
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        adapter = next(iter(peft_config.values()))
        target = adapter.target_modules
        lora = {"r": adapter.r, "lora_alpha": adapter.lora_alpha, "lora_dropout": adapter.lora_dropout,
                "target_modules": target if isinstance(target, str) else sorted(target)}
    return {
        "objective": "sft" if is_sft else "pretraining",
        "mask_eps": args.mask_eps,
        "random_length_probability": args.random_length_probability,
        "low_discrepancy_sampling": args.low_discrepancy_sampling,
        "train_on_padding": getattr(args, "train_on_padding", None),
        "hyperparameters": hyperparameters,
        "global_step": state.global_step,
        "train_loss": train_loss,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "lora": lora,
        "datasets": list(dataset_names or []),
    }


def _describe_training(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    record = dict(record)
    if record["objective"] == "sft":
        record["objective_text"] = ("response-only masked-diffusion SFT (LLaDA): cross-entropy at masked answer "
                                    "positions / p_mask, divided by each row's answer length, averaged over rows")
        record["sft_policy"] = (
            "prompt tokens are never masked; answers are padded with EOS to the batch length and the padding is "
            "trained on (the reference)" if record.get("train_on_padding")
            else "prompt tokens are never masked; answer padding is excluded from the loss and from attention"
        )
    else:
        record["objective_text"] = ("masked-diffusion pre-training (LLaDA): cross-entropy at masked positions / "
                                    "p_mask, summed and divided by batch size x sequence length")
        record["sft_policy"] = None
    return record


def _generation_kwargs(generation_config: dict[str, Any] | None) -> list[tuple[str, str]]:
    values = {**GENERATION_DEFAULTS, **{k: v for k, v in (generation_config or {}).items() if v is not None}}
    for key in ("steps", "block_length"):  # None means "equal to max_new_tokens"
        values.setdefault(key, values["max_new_tokens"])
    return [(key, repr(values[key])) for key in GENERATION_FIELDS if values.get(key) is not None]


def _prompt_code(has_chat_template: bool) -> str:
    if has_chat_template:
        return ('messages = [{"role": "user", "content": "Explain diffusion language models in one sentence."}]\n'
                'input_ids = tokenizer.apply_chat_template(\n'
                '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
                ')["input_ids"].to(model.device)')
    return 'input_ids = tokenizer("Diffusion language models", return_tensors="pt").input_ids.to(model.device)'


def _render(
    template: str,
    repo_id: str,
    *,
    library_name: str,
    base_model: str | None,
    license: str,
    datasets: list[str],
    training: dict[str, Any] | None,
    eval_results: list[dict[str, Any]] | None,
    extra_tags: list[str],
    generation_config: dict[str, Any] | None,
    has_chat_template: bool,
    **template_values,
) -> ModelCard:
    """The metadata and the parts every card shares, then the template's own values."""
    datasets = list(datasets) or list((training or {}).get("datasets") or [])
    model_name = repo_id.split("/")[-1]
    results = [EvalResult(**result) for result in eval_results] if eval_results else None
    data = ModelCardData(
        license=license,
        library_name=library_name,
        pipeline_tag="text-generation",
        tags=[*BASE_TAGS, *extra_tags, *(["trl"] if training else []), CITATION_KEY],
        base_model=base_model,
        datasets=datasets or None,
        eval_results=results,
        model_name=model_name if results else None,
    )
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATES / template),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        generation_kwargs=_generation_kwargs(generation_config),
        prompt_code=_prompt_code(has_chat_template),
        training=_describe_training(training),
        datasets=datasets,
        versions=versions(),
        **template_values,
    )


def build_model_card(
    config: dict[str, Any],
    repo_id: str,
    *,
    generation_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: list[str] = (),
    eval_results: list[dict[str, Any]] | None = None,
    has_chat_template: bool = False,
    extra_tags: list[str] = (),
) -> ModelCard:
    """Card of a full LLaDA model (pre-trained or fine-tuned).

    eval_results: dicts of `huggingface_hub.EvalResult` fields (task_type, dataset_type, dataset_name, metric_type,
    metric_value, ...), written as `model-index`.
    """
    return _render(
        "model_card.md", repo_id, library_name="transformers", base_model=base_model, license=license,
        datasets=datasets, training=training, eval_results=eval_results, extra_tags=list(extra_tags),
        generation_config=generation_config, has_chat_template=has_chat_template,
        config=config,
        kv_heads=1 if config.get("multi_query_attention") else (config.get("n_kv_heads") or config["n_heads"]),
        mlp_hidden=config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * config["d_model"],
        embedding_rows=config.get("embedding_size") or config["vocab_size"],
        num_parameters=count_parameters(config),
    )


def build_adapter_card(
    adapter_config: dict[str, Any],
    repo_id: str,
    *,
    num_adapter_parameters: int,
    generation_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    datasets: list[str] = (),
    eval_results: list[dict[str, Any]] | None = None,
    has_chat_template: bool = False,
) -> ModelCard:
    """Card of a LoRA adapter; `adapter_config["base_model_name_or_path"]` names the base model."""
    target = adapter_config.get("target_modules")
    return _render(
        "adapter_card.md", repo_id, library_name="peft", base_model=adapter_config["base_model_name_or_path"],
        license=license, datasets=datasets, training=training, eval_results=eval_results,
        extra_tags=["lora", "peft"], generation_config=generation_config, has_chat_template=has_chat_template,
        adapter=adapter_config,
        target_modules=target if isinstance(target, str) else ", ".join(sorted(target or [])),
        num_adapter_parameters=num_adapter_parameters,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def has_chat_template(folder: Path) -> bool:
    tokenizer_config = _read_json(folder / "tokenizer_config.json") or {}
    return (folder / "chat_template.jinja").exists() or bool(tokenizer_config.get("chat_template"))


def card_for_folder(folder: str | Path, repo_id: str, **overrides) -> ModelCard:
    """Render the card of a saved model or adapter folder from the files in it."""
    folder = Path(folder)
    training = _read_json(folder / TRAINING_RECORD)
    generation_config = _read_json(folder / "generation_config.json")
    adapter_config = _read_json(folder / "adapter_config.json")
    if adapter_config is not None:
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
            count = sum(_numel(weights.get_slice(name).get_shape()) for name in weights.keys())
        return build_adapter_card(adapter_config, repo_id, num_adapter_parameters=count, training=training,
                                  generation_config=generation_config, has_chat_template=has_chat_template(folder),
                                  **overrides)
    config = _read_json(folder / "config.json")
    return build_model_card(config, repo_id, generation_config=generation_config, training=training,
                            has_chat_template=has_chat_template(folder), **overrides)


def _numel(shape) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
