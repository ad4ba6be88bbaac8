"""The family's checkpoints and configs: loading folders with broken configs, weights and generation configs, router
settings, trust_remote_code, dtypes, and save / reload round trips, for dense LLaDA, LLaDA-MoE and LLaDA 2."""

import json
import shutil
import tempfile
from pathlib import Path

import torch

from bad_inputs.harness import Case

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MEMBERS = {"dense": "llada-tiny-official", "moe": "lladamoe-tiny-official", "llada2": "llada2-tiny-official"}
IDS = torch.tensor([[1, 2, 3, 4, 5, 6]])
_CACHE = {}


def fixture(member: str) -> Path:
    return FIXTURES / MEMBERS[member]


def load(path, **kwargs):
    from transformers import AutoModel

    import modeling_llada  # noqa: F401  (registers the family with the Auto classes, as the README says)

    return AutoModel.from_pretrained(path, **kwargs).eval()


def reference(member: str):
    if member not in _CACHE:
        _CACHE[member] = load(fixture(member))
    return _CACHE[member]


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits.float()


def copy_of(member: str, config=None, drop=(), generation=None, files=None) -> Path:
    """A copy of the member's fixture with `config` keys changed (None deletes), files dropped or written."""
    folder = Path(tempfile.mkdtemp(prefix=f"family-{member}-"))
    for path in fixture(member).iterdir():
        if path.name not in drop and path.is_file():
            shutil.copy(path, folder / path.name)
    if config:
        values = json.loads((folder / "config.json").read_text())
        for key, value in config.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        (folder / "config.json").write_text(json.dumps(values))
    if generation is not None:
        (folder / "generation_config.json").write_text(
            generation if isinstance(generation, str) else json.dumps(generation))
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


def load_changed(member, **changes):
    return load(copy_of(member, **changes))


def with_weights(member: str, edit) -> Path:
    """A copy whose safetensors are `edit(state_dict)`."""
    from safetensors.torch import load_file, save_file

    folder = copy_of(member)
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def first_key(member, contains):
    from safetensors.torch import load_file

    return next(k for k in load_file(fixture(member) / "model.safetensors") if contains in k)


def drop_key(contains):
    def edit(state, member=None):
        key = next(k for k in state if contains in k)
        del state[key]

    return edit


def extra_key(state):
    state["model.extra_tensor.weight"] = torch.zeros(3)


def reshape_key(contains):
    def edit(state):
        key = next(k for k in state if contains in k)
        state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])

    return edit


def with_transformers_log(call):
    """Run `call` with transformers' log records reaching the root logger (where the sweep reads warnings)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        return call()
    finally:
        hf_logging.disable_propagation()


def round_trip(member):
    model = reference(member)
    folder = Path(tempfile.mkdtemp(prefix=f"family-save-{member}-"))
    model.save_pretrained(folder)
    again = load(folder)
    return model, again


def round_trip_equal(pair):
    model, again = pair
    return (type(model) is type(again) and torch.equal(logits(model), logits(again))
            and model.generation_config.to_diff_dict() == again.generation_config.to_diff_dict()
            and model.config.to_diff_dict() == again.config.to_diff_dict())


def same_logits_as_reference(member):
    return lambda model: torch.equal(logits(model), logits(reference(member)))


def dense_config(**overrides):
    from tests.utils import tiny_config

    return tiny_config(**overrides)


def moe_config(**overrides):
    from modeling_llada import LLaDAMoEConfig

    values = json.loads((fixture("moe") / "config.json").read_text())
    values.update(overrides)
    return LLaDAMoEConfig(**{k: v for k, v in values.items() if k not in ("architectures", "auto_map", "model_type")})


def llada2_config(**overrides):
    from modeling_llada import LLaDA2MoeConfig

    values = json.loads((fixture("llada2") / "config.json").read_text())
    values.update(overrides)
    return LLaDA2MoeConfig(**{k: v for k, v in values.items() if k not in ("architectures", "auto_map", "model_type")})


def cases() -> list[Case]:
    F = "family"
    c = []
    add = c.append
    # --- folders that are not checkpoints
    for member in MEMBERS:
        add(Case(F, f"{member}: no config.json", lambda m=member: load(copy_of(m, drop=("config.json",))),
                 error=(OSError, ValueError), says=r"config\.json"))
    add(Case(F, "dense: config.json not JSON", lambda: load(copy_of("dense", files={"config.json": "{not json"})),
             error=(OSError, ValueError), says=r"config\.json|JSON"))
    # (without auto_map: with it, transformers first asks for trust_remote_code, before any model_type is read)
    add(Case(F, "dense: model_type misspelt", lambda: load_changed("dense", config={"model_type": "lada",
                                                                                    "auto_map": None}),
             error=(ValueError, KeyError, OSError), says=r"lada"))
    add(Case(F, "llada2: model_type missing", lambda: load_changed("llada2", config={"model_type": None,
                                                                                      "auto_map": None}),
             error=(ValueError, KeyError, OSError), says=r"model_type"))
    for member in MEMBERS:
        add(Case(F, f"{member}: no weights file", lambda m=member: load(copy_of(m, drop=("model.safetensors",))),
                 error=(OSError, ValueError), says=r"model\.safetensors|pytorch_model\.bin|weights"))
    # --- a member's class on another member's checkpoint: refused naming what the file is, never half-loaded
    for cls_name, member, says in [("LLaDAModelLM", "llada2", r"model_type 'llada2_moe'.*AutoModel"),
                                   ("LLaDAModelLM", "moe", r"LLaDAMoEConfig.*AutoModel"),
                                   ("LLaDAMoEModelLM", "dense", r"dense LLaDA config.*AutoModel"),
                                   ("LLaDA2MoeModelLM", "moe", r"model_type 'llada'.*AutoModel")]:
        add(Case(F, f"{cls_name} on a {member} checkpoint", lambda c=cls_name, m=member: getattr(
            __import__("modeling_llada"), c).from_pretrained(fixture(m)), says=says))
    add(Case(F, "AutoModelForCausalLM = AutoModel", lambda: __import__("transformers").AutoModelForCausalLM
             .from_pretrained(fixture("moe")).eval(), expect="ok", check=same_logits_as_reference("moe")))
    # --- broken config fields
    add(Case(F, "dense: mask_token_id outside vocab", lambda: load_changed("dense", config={"mask_token_id": 320}),
             says=r"mask_token_id.*320"))
    add(Case(F, "dense: pad == mask", lambda: load_changed("dense", config={"pad_token_id": 300}),
             says=r"mask_token_id.*pad_token_id|pad_token_id.*mask_token_id"))
    add(Case(F, "dense: mask id a string", lambda: load_changed("dense", config={"mask_token_id": "300"}),
             says=r"mask_token_id.*'300'"))
    add(Case(F, "dense: n_heads missing divides d_model", lambda: load_changed("dense", config={"n_heads": 5}),
             says=r"n_heads|d_model"))
    add(Case(F, "dense: n_layers 0", lambda: load_changed("dense", config={"n_layers": 0}), says=r"n_layers.*0"))
    add(Case(F, "dense: vocab_size string", lambda: load_changed("dense", config={"vocab_size": "320"}),
             says=r"vocab_size.*'320'"))
    add(Case(F, "dense: rope_theta negative", lambda: load_changed("dense", config={"rope_theta": -1.0}),
             says=r"rope_theta.*-1"))
    add(Case(F, "moe: mask id outside vocab", lambda: load_changed("moe", config={"mask_token_id": 160}),
             says=r"mask_token_id.*160"))
    add(Case(F, "moe: num_experts_per_tok > num_experts",
             lambda: load_changed("moe", config={"num_experts_per_tok": 5}), says=r"num_experts_per_tok.*5"))
    add(Case(F, "moe: num_experts 0", lambda: load_changed("moe", config={"num_experts": 0}),
             says=r"num_experts.*0"))
    add(Case(F, "moe: score function unknown", lambda: load_changed("moe", config={
        "moe_router_score_function": "softplus"}), says=r"moe_router_score_function.*softplus"))
    add(Case(F, "moe: moe_layer_freq wrong length", lambda: load_changed("moe", config={"moe_layer_freq": [0, 1]}),
             says=r"moe_layer_freq"))
    add(Case(F, "llada2: experts per token > experts", lambda: load_changed("llada2", config={
        "num_experts_per_tok": 9}), says=r"num_experts_per_tok.*9"))
    add(Case(F, "llada2: topk_group > n_group", lambda: load_changed("llada2", config={"topk_group": 5}),
             says=r"topk_group.*5"))
    add(Case(F, "llada2: experts not divisible by groups", lambda: load_changed("llada2", config={"n_group": 3}),
             says=r"n_group.*3|num_experts.*8"))
    add(Case(F, "llada2: routed_scaling_factor nan", lambda: load_changed("llada2", config={
        "routed_scaling_factor": float("nan")}), says=r"routed_scaling_factor.*nan"))
    add(Case(F, "llada2: partial_rotary_factor 1.5", lambda: load_changed("llada2", config={
        "partial_rotary_factor": 1.5}), says=r"partial_rotary_factor.*1\.5"))
    add(Case(F, "llada2: score_function unknown", lambda: load_changed("llada2", config={"score_function": "relu"}),
             says=r"score_function.*relu"))
    add(Case(F, "llada2: mask id = pad", lambda: llada2_config(mask_token_id=128), says=r"mask_token_id.*128"))
    add(Case(F, "dense config: eos == mask", lambda: dense_config(eos_token_id=60), says=r"mask_token_id.*eos"))
    add(Case(F, "moe config: num_key_value_heads 3", lambda: moe_config(num_key_value_heads=3),
             says=r"num_key_value_heads.*3|num_attention_heads.*4"))
    # --- weights
    add(Case(F, "dense: a missing weight", lambda: with_transformers_log(
        lambda: load(with_weights("dense", drop_key("ff_out")))), expect="warn",
             says=r"ff_out\.weight.*MISSING"))
    add(Case(F, "llada2: an extra weight", lambda: with_transformers_log(
        lambda: load(with_weights("llada2", extra_key))), expect="warn",
             says=r"extra_tensor\.weight.*UNEXPECTED"))
    add(Case(F, "moe: a mis-shaped weight", lambda: load(with_weights("moe", reshape_key("embed_tokens"))),
             error=(RuntimeError, ValueError), says=r"embed_tokens.*(shape|size)|(shape|size).*embed_tokens"))
    # --- trust_remote_code, dtypes, round trips
    for member in MEMBERS:
        add(Case(F, f"{member}: trust_remote_code=True without code files", lambda m=member: load(
            fixture(m), trust_remote_code=True), expect="ok", check=same_logits_as_reference(member)))
        add(Case(F, f"{member}: save and reload", lambda m=member: round_trip(m), expect="ok", check=round_trip_equal))
    add(Case(F, "dense: dtype bfloat16", lambda: load(fixture("dense"), dtype=torch.bfloat16), expect="ok",
             check=lambda m: all(p.dtype == torch.bfloat16 for p in m.parameters())))
    add(Case(F, "llada2: dtype 'float16' string", lambda: load(fixture("llada2"), dtype="float16"), expect="ok",
             check=lambda m: all(p.dtype == torch.float16 for p in m.parameters())))
    add(Case(F, "moe: dtype misspelt", lambda: load(fixture("moe"), dtype="float17"),
             error=(ValueError, TypeError, AttributeError), says=r"float17"))
    # --- generation_config.json
    add(Case(F, "dense: generation config steps 0", lambda: load_changed("dense", generation={"steps": 0}),
             says=r"generation_config\.json.*steps.*0"))
    add(Case(F, "moe: generation config typo", lambda: load_changed("moe", generation={"stepz": 4}),
             says=r"stepz"))
    add(Case(F, "llada2: generation config temperature string", lambda: load_changed(
        "llada2", generation={"temperature": "hot"}), says=r"temperature.*hot"))
    add(Case(F, "dense: generation config not JSON", lambda: load_changed("dense", generation="{oops"),
             error=(OSError, ValueError), says=r"generation_config\.json"))
    add(Case(F, "dense: generation config num_beams 4", lambda: load_changed("dense", generation={"num_beams": 4}),
             says=r"num_beams=4"))
    add(Case(F, "llada2: generation config drives generate", lambda: load_changed("llada2", generation={
        "max_new_tokens": 4, "block_length": 4, "mask_token_id": 155}).generate(IDS), expect="ok",
        check=lambda out: out.shape == (1, 10) and torch.equal(out, reference("llada2").generate(
            IDS, max_new_tokens=4, block_length=4, mask_token_id=155))))
    return c
