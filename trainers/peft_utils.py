"""LoRA defaults for the LLaDA family.

Dense LLaDA: every linear layer of the blocks. LLaDA-MoE and LLaDA 2: the attention projections and the MLPs every
token runs through (the dense first layers' MLP and the shared experts); the routed experts on request (their fused
`gate_up_proj` / `down_proj` tensors, through PEFT's `target_parameters`); never the router (`mlp.gate`), whose
choices LoRA would shift for every token, nor the output head.
"""

# Every linear layer of the blocks: attention (q, k, v, out) and MLP (gated, up, down) projections. A plain
# "ff_out" would also match the output head `transformer.ff_out` (it shares the name with the blocks' down
# projection), so the blocks are matched by their path.
LLADA_LORA_TARGET_MODULES = r".*\.blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)"
# LLaDA-MoE (official names): attention q/k/v/o, the dense layers' MLP (`mlp.*_proj`, absent from MoE layers, whose
# `mlp` holds the router `gate` and the fused experts) and the shared expert.
LLADA_MOE_LORA_TARGET_MODULES = (
    r".*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj)"
    r"|shared_expert\.(gate_proj|up_proj|down_proj))"
)
# LLaDA 2 (official names): the fused query/key/value projection and the output projection `dense`, the dense
# layers' MLP and the shared experts.
LLADA2_LORA_TARGET_MODULES = (
    r".*\.layers\.\d+\.(attention\.(query_key_value|dense)|mlp\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj))"
)
# The routed experts' fused weights (both MoE families use transformers 5's layout), for `target_parameters`.
MOE_EXPERT_TARGET_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def _architecture(model) -> str:
    """"llada2" / "llada_moe" / "llada" for a (possibly wrapped) model or its config; "llada" when unknown."""
    config = getattr(model, "config", model)
    if getattr(config, "model_type", None) == "llada2_moe":
        return "llada2"
    if getattr(config, "num_experts", None) is not None:
        return "llada_moe"
    return "llada"


def default_lora_target_modules(model=None) -> str:
    """The default `target_modules` (a regex PEFT matches against full module names) of `model`'s architecture."""
    return {"llada": LLADA_LORA_TARGET_MODULES, "llada_moe": LLADA_MOE_LORA_TARGET_MODULES,
            "llada2": LLADA2_LORA_TARGET_MODULES}[_architecture(model)]


def lora_target_parameters(model, experts: bool = True) -> list[str]:
    """`target_parameters` that put LoRA on the routed experts of a MoE model (empty for dense LLaDA or when
    `experts` is False): `LoraConfig(target_parameters=lora_target_parameters(model))`. Needs PEFT >= 0.20, and
    `lora_dropout=0` (PEFT's LoRA on parameters has no dropout)."""
    if not experts or _architecture(model) == "llada":
        return []
    return list(MOE_EXPERT_TARGET_PARAMETERS)


def with_llada_defaults(peft_config, model=None):
    """Fill in the target modules of `model`'s architecture (dense LLaDA when no model is given) when the LoRA config
    names none, and the CAUSAL_LM task type (LLaDA loads through AutoModelForCausalLM, so saved adapters load with
    AutoPeftModelForCausalLM). A config that targets the router of a MoE model (`mlp.gate`) is refused."""
    if getattr(peft_config, "target_modules", "unset") is None:
        peft_config.target_modules = default_lora_target_modules(model)
    if getattr(peft_config, "task_type", "unset") is None:
        peft_config.task_type = "CAUSAL_LM"
    task_type = getattr(peft_config, "task_type", "CAUSAL_LM")
    if str(task_type) not in ("CAUSAL_LM", "TaskType.CAUSAL_LM"):
        raise ValueError(f"LoRA task_type {str(task_type)!r}: LLaDA's adapters wrap its masked-diffusion LM as PEFT's "
                         "CAUSAL_LM (the only task type they train and reload as); leave it unset or pass CAUSAL_LM.")
    if model is not None and _architecture(model) != "llada":
        _refuse_router_targets(peft_config)
    if model is not None:
        for field, names in unmatched_lora_targets(peft_config, model).items():
            raise ValueError(f"LoRA {field} {names}: nothing in {type(model).__name__} has that name, so PEFT would "
                             "ignore it; name modules (parameters, for target_parameters) of the model, or drop it.")
    return peft_config


def unmatched_lora_targets(peft_config, model) -> dict[str, list[str]]:
    """The names in `peft_config`'s `modules_to_save` and `target_parameters` that match nothing in `model` (PEFT
    matches a full name or a dotted suffix, and skips the others silently), by field; empty when all match."""
    found = {}
    for field, names in (("modules_to_save", [name for name, _ in model.named_modules()]),
                         ("target_parameters", [name for name, _ in model.named_parameters()])):
        targets = getattr(peft_config, field, None) or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        missing = [target for target in targets
                   if not any(name == target or name.endswith("." + target) for name in names)]
        if missing:
            found[field] = missing
    return found


def _refuse_router_targets(peft_config) -> None:
    import re

    targets = getattr(peft_config, "target_modules", None)
    names = [targets] if isinstance(targets, str) else list(targets or [])
    parameters = list(getattr(peft_config, "target_parameters", None) or [])
    routers = [name for name in names + parameters
               if name == "all-linear" or re.search(r"(^|\.)gate(\.weight)?$", str(name))]
    if routers:
        raise ValueError(
            f"LoRA target(s) {routers} include the MoE router (`mlp.gate`); adapting it changes which experts every "
            "token uses. Leave target_modules unset (attention, dense MLP and shared experts), and add the routed "
            "experts with target_parameters=['mlp.experts.gate_up_proj', 'mlp.experts.down_proj'] if wanted."
        )


def is_kbit_model(model) -> bool:
    """Whether `model` (or the base of a PEFT model) was loaded in 4 or 8 bits by bitsandbytes."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def _fused_expert_weights(model) -> list:
    """The routed experts' fused 3-D weights (`mlp.experts.gate_up_proj` / `down_proj`), which bitsandbytes leaves
    unquantized (they are parameters, not nn.Linear)."""
    names = {name.rsplit(".", 1)[-1] for name in MOE_EXPERT_TARGET_PARAMETERS}
    return [parameter for module in model.modules() for name, parameter in module.named_parameters(recurse=False)
            if name in names and parameter.dim() == 3]


def prepare_kbit_model(model, gradient_checkpointing: bool = False, gradient_checkpointing_kwargs=None):
    """The k-bit preparation PEFT prescribes (`peft.prepare_model_for_kbit_training`) for a bitsandbytes 4/8-bit model
    before LoRA: every base weight frozen, the 16-bit ones (norms, embeddings, head) cast to fp32 for stable training,
    and with `gradient_checkpointing` (the TrainingArguments' setting) activation checkpointing with gradients on the
    inputs (so that the checkpointed blocks see a tensor that requires grad). Unlike PEFT's function, the fused routed
    experts of LLaDA-MoE / LLaDA 2, which stay unquantized and are most of the model, keep their dtype (PEFT would
    cast them to fp32: 2x their memory)."""
    import torch

    experts = {id(parameter) for parameter in _fused_expert_weights(model)}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
        # 4-bit and 8-bit weights are stored as integers: only the 16-bit ones are cast
        if parameter.dtype in (torch.float16, torch.bfloat16) and id(parameter) not in experts:
            parameter.data = parameter.data.float()
    if gradient_checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(gradient_checkpointing_kwargs or {}))
    return model


def _checkpointing(args) -> tuple[bool, dict | None]:
    """(enabled, kwargs) of activation checkpointing in TrainingArguments (either name, by transformers release)."""
    enabled = bool(getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False))
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs",
                                                                                None)
    return enabled, dict(kwargs) if kwargs else None


def wrap_kbit_model(model, peft_config, args):
    """For a trainer given `model` and `peft_config`: a bitsandbytes 4/8-bit model is wrapped here, after our k-bit
    preparation (`maybe_wrap_with_peft`), and the trainer gets no config (TRL's own wrapping would cast the fused
    experts to fp32); anything else is returned as it came. Returns (model, peft_config)."""
    if peft_config is None or isinstance(model, str) or not is_kbit_model(model):
        return model, peft_config
    return maybe_wrap_with_peft(model, peft_config, args), None


def adapters_in_training_precision(model, args) -> None:
    """TRL's trainers cast the trainable adapter weights of a quantized model to bf16 (the QLoRA paper's choice),
    whatever the run's precision. In an fp32 run (neither `bf16` nor `fp16`, the CPU default) they go back to fp32,
    so that the run trains in the precision it asked for (bf16 matmuls are also ~25x slower on a CPU)."""
    if not is_kbit_model(model) or getattr(args, "bf16", False) or getattr(args, "fp16", False):
        return
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype == torch.bfloat16:
            parameter.data = parameter.data.float()


def maybe_wrap_with_peft(model, peft_config, args=None):
    """Wrap `model` with `peft_config` (the defaults of its architecture); return it unchanged without a config. A
    bitsandbytes 4/8-bit model gets PEFT's k-bit preparation first (`prepare_kbit_model`), with activation
    checkpointing as the TrainingArguments `args` say (off without them)."""
    if peft_config is None:
        return model
    from peft import get_peft_model

    from .compat import quiet_upstream_deprecations

    peft_config = with_llada_defaults(peft_config, model)
    if is_kbit_model(model):  # LoRA on the routed experts works too: they stay unquantized
        prepare_kbit_model(model, *_checkpointing(args))
    with quiet_upstream_deprecations():
        return get_peft_model(model, peft_config)
