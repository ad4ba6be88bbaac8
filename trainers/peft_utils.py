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
    if model is not None and _architecture(model) != "llada":
        _refuse_router_targets(peft_config)
    return peft_config


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


def maybe_wrap_with_peft(model, peft_config):
    """Wrap `model` with `peft_config` (the defaults of its architecture); return it unchanged without a config."""
    if peft_config is None:
        return model
    from peft import get_peft_model

    from .compat import quiet_upstream_deprecations

    with quiet_upstream_deprecations():
        return get_peft_model(model, with_llada_defaults(peft_config, model))
