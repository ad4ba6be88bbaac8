"""The one rule for a LLaDA model's mask id outside `generate`: the model config's `mask_token_id`, else the
tokenizer's mask token (written into the config), else a clear error. The trainers, the CLI, serve and the lm-eval
model all take the mask id through `resolve_mask_token_id`.

Library code only (no checkpoint carries it); it imports nothing.
"""


def unwrap(model):
    """The model inside DDP and PEFT wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_config(model):
    """The config of a (possibly PEFT- or DDP-wrapped) model."""
    return getattr(unwrap(model), "config", None)


def resolve_mask_token_id(model, tokenizer=None) -> int:
    """The mask id of a LLaDA family model (possibly PEFT- or DDP-wrapped): its config's `mask_token_id`, else the
    tokenizer's mask token, which is then written into the config (the base model's under PEFT), so that saving keeps
    it (the official LLaDA-MoE and LLaDA 2 configs store none). A `ValueError` naming both when neither has one.

    `tokenizer` is a trainer's `processing_class`: a tokenizer, or a processor that holds one (`.tokenizer`).
    """
    config = model_config(model)
    mask_id = getattr(config, "mask_token_id", None)
    if mask_id is not None:
        return mask_id
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if config is None or mask_id is None:
        where = ("the tokenizer (processing_class) has no mask_token" if tokenizer is not None
                 else "no tokenizer was given (processing_class)")
        raise ValueError(f"No mask id: the model config has no mask_token_id and {where}; set "
                         "model.config.mask_token_id to the id of the [MASK] token, or pass a processing_class whose "
                         "mask_token is that token.")
    base = unwrap(model)
    embeddings = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and not 0 <= mask_id < rows:
        raise ValueError(f"The tokenizer's mask_token {tokenizer.mask_token!r} has id {mask_id}, outside the model's "
                         f"{rows} embeddings; set model.config.mask_token_id to the id of the model's [MASK] token.")
    config.mask_token_id = mask_id
    return mask_id
