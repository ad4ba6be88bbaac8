"""LoRA defaults for LLaDA."""

# Every linear layer of the blocks: attention (q, k, v, out) and MLP (gated, up, down) projections. A plain
# "ff_out" would also match the output head `transformer.ff_out` (it shares the name with the blocks' down
# projection), so the blocks are matched by their path.
LLADA_LORA_TARGET_MODULES = r".*\.blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)"


def with_llada_defaults(peft_config):
    """Fill in LLaDA's target modules when the LoRA config names none, and the CAUSAL_LM task type (LLaDA loads
    through AutoModelForCausalLM, so saved adapters load with AutoPeftModelForCausalLM)."""
    if getattr(peft_config, "target_modules", "unset") is None:
        peft_config.target_modules = LLADA_LORA_TARGET_MODULES
    if getattr(peft_config, "task_type", "unset") is None:
        peft_config.task_type = "CAUSAL_LM"
    return peft_config


def maybe_wrap_with_peft(model, peft_config):
    """Wrap `model` with `peft_config` (LLaDA default targets); return it unchanged without a config."""
    if peft_config is None:
        return model
    from peft import get_peft_model

    from .compat import quiet_upstream_deprecations

    with quiet_upstream_deprecations():
        return get_peft_model(model, with_llada_defaults(peft_config))
