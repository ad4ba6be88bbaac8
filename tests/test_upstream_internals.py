"""One inventory of the upstream internals we rely on, each checked against the installed releases.

An upstream internal is a name we import from inside transformers, TRL, PEFT, accelerate, lm-eval, datasets or
huggingface_hub rather than from its top-level namespace (`transformers.masking_utils.create_bidirectional_mask`), a
private method or attribute of an upstream class that we override, call through `super()` or read
(`Trainer._save_checkpoint`, `GRPOTrainer._step`), and a few public names whose exact shape we depend on beyond
their documentation (`DynamicCache.crop(-n)`, `GRPOTrainer.beta` read after `__init__`).

`INTERNALS` is the one source of truth. Each entry names the symbol, the files that use it and what we rely on, and
its check tests exactly that, so that an upstream change fails here with one line that names the release, the symbol,
what changed and who uses it:

    transformers 5.26.0: transformers.masking_utils.create_bidirectional_mask no longer takes `inputs_embeds`
    (used by modeling_llada/modeling_llada.py, ...)

A scan of the package source fails on an upstream internal that has no entry, and README.md ("Upstream internals we
rely on") lists the same symbols: `python tests/test_upstream_internals.py` prints the table to paste there.
"""

import ast
import builtins
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_llada", "trainers", "hub_cards", "llada_cli")
# being rewritten to depend on no transformers serving internals at all (its tests: tests/test_serve.py)
NOT_SCANNED: set[str] = set()
UPSTREAM = ("transformers", "trl", "peft", "accelerate", "lm_eval", "datasets", "huggingface_hub")
PRIVATE = re.compile(r"^_[a-z][a-z0-9_]*$")
# Private names the scan finds in upstream sources that are not an upstream internal we rely on, and why.
NOT_UPSTREAM = {
    "_get_help_string": "argparse.HelpFormatter's (standard library): llada_cli's help formatters override it",
    "_actions": "argparse.ArgumentParser's (standard library; TRL's TrlParser is one): llada_cli reads the flags",
    "_grouped_mm": "torch's (`torch._grouped_mm`, used only when present): torch is outside this inventory",
    "_encode_pair": "ours (LLaDAEvalModel); lm-eval's TemplateLM, which is not our base class, has one too",
    "_generate": "ours (LLaDAEvalModel._generate); TRL's GRPOTrainer has an unrelated one",
}

# What upstream code raises when it no longer works the way a check calls it (our own mistakes, such as a NameError
# in a check, are not caught: they fail as errors).
UPSTREAM_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, ImportError, OSError, RuntimeError)

MODELING = "modeling_llada/modeling_llada.py"
MOE = "modeling_llada/modeling_lladamoe.py"
LLADA2 = "modeling_llada/modeling_llada2_moe.py"
MODELS = (MODELING, MOE, LLADA2)
GENERATION = "modeling_llada/generation_llada.py"
GENERATION2 = "modeling_llada/generation_llada2.py"
CONFIGS = ("modeling_llada/configuration_llada.py", "modeling_llada/configuration_lladamoe.py",
           "modeling_llada/configuration_llada2_moe.py")
COMPAT = "trainers/compat.py"


# ------------------------------------------------------------------------------------------------------ checks
class Drift(Exception):
    """What changed upstream, worded to follow the symbol: "no longer takes `inputs_embeds`"."""


def release(package: str) -> str:
    return importlib.metadata.version(package.replace("_", "-"))


def resolve(path: str):
    """The object a dotted path names: the longest importable module, then attributes (Drift when one is gone)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    else:
        raise Drift(f"no longer imports (no module `{parts[0]}`)")
    for index in range(cut, len(parts)):
        try:
            obj = getattr(obj, parts[index])
        except (AttributeError, ImportError):
            raise Drift(f"no longer exists (`{'.'.join(parts[:index])}` has no `{parts[index]}`)") from None
    return obj


def ours(path: str):
    """An object of this package (a missing one is our own mistake, not upstream drift)."""
    module, _, rest = path.partition(":")
    obj = importlib.import_module(module)
    for name in rest.split("."):
        obj = inspect.getattr_static(obj, name) if inspect.isclass(obj) else getattr(obj, name)
    return obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj


@functools.cache
def source(obj) -> str:
    return inspect.getsource(obj.fget if isinstance(obj, property) else obj)


def parameters(obj) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(obj).parameters)
    first = next(iter(params), None)
    if first in ("self", "cls"):
        del params[first]
    return params


def shown(params: dict[str, inspect.Parameter]) -> str:
    return "(" + ", ".join(str(p).split(":")[0].split("=")[0].strip() for p in params.values()) + ")"


def takes(*names: str, of: str | None = None):
    """The callable (the symbol, or `of`) still has these parameters, by name."""

    def check(symbol: str) -> None:
        params = parameters(resolve(of or symbol))
        missing = [name for name in names if name not in params]
        if missing:
            where = f" ({of} now takes {shown(params)})" if of else f" (it now takes {shown(params)})"
            raise Drift(f"no longer takes {', '.join(f'`{name}`' for name in missing)}{where}")

    return check


def accepts_upstream_call(theirs: dict, mine: dict, ours_path: str) -> None:
    """Our override still lines up with the upstream method: our positional parameters are upstream's in the same
    order (extra ones have defaults), and every upstream parameter reaches ours (by name, or *args / **kwargs)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    their_order = [p.name for p in theirs.values() if p.kind in positional]
    my_order = [p.name for p in mine.values() if p.kind in positional]
    kinds = {p.kind for p in mine.values()}
    problem = None
    for index, name in enumerate(my_order):
        if index < len(their_order) and their_order[index] != name:
            problem = f"passes `{their_order[index]}` where our override takes `{name}`"
        elif index >= len(their_order) and mine[name].default is inspect.Parameter.empty:
            problem = f"never passes `{name}`"
        if problem:
            break
    unmatched = [p.name for p in theirs.values()
                 if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                 and p.name not in mine and not kinds & {inspect.Parameter.VAR_POSITIONAL,
                                                         inspect.Parameter.VAR_KEYWORD}]
    if unmatched and not problem:
        problem = f"takes {', '.join(f'`{name}`' for name in unmatched)}, which our override does not"
    if problem:
        raise Drift(f"{problem}: it takes {shown(theirs)}, our {ours_path.replace(':', '.')} takes {shown(mine)}")


def overridden_by(*our_paths: str, upstream: str | None = None):
    """The upstream method (the symbol, or `upstream`) still exists and fits each of our overrides."""

    def check(symbol: str) -> None:
        theirs = parameters(resolve(upstream or symbol))
        for path in our_paths:
            accepts_upstream_call(theirs, parameters(ours(path)), path)

    return check


def sets(path: str | None = None):
    """An instance attribute: the upstream class (or an upstream base) still assigns `self.<name>`."""

    def check(symbol: str) -> None:
        owner_path, _, name = (path or symbol).rpartition(".")
        owner = resolve(owner_path)
        assignment = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]+)?=(?!=)")
        package = owner_path.split(".")[0]
        if not any(assignment.search(source(cls)) for cls in owner.__mro__ if cls.__module__.startswith(package)):
            raise Drift(f"is no longer set by {owner_path} (no `self.{name} = ...` in its source)")

    return check


def source_has(pattern: str, drift: str, of: str | None = None):
    """The source of the symbol (or of `of`) still does what we rely on, spelled as `pattern`."""

    def check(symbol: str) -> None:
        if not re.search(pattern, source(resolve(of or symbol))):
            raise Drift(drift)

    return check


def class_attribute(kind: type | tuple | None = None):
    """A class attribute we set: the upstream class still declares it (with a default of `kind`)."""

    def check(symbol: str) -> None:
        owner_path, _, name = symbol.rpartition(".")
        owner = resolve(owner_path)
        if not any(name in vars(cls) or name in getattr(cls, "__annotations__", {}) for cls in owner.__mro__):
            raise Drift(f"is no longer declared by {owner_path}")
        value = getattr(owner, name, None)
        if kind is not None and not isinstance(value, kind):
            raise Drift(f"now defaults to {value!r}, not a {getattr(kind, '__name__', kind)}")

    return check


def exists():
    return resolve


def equals(expected):
    def check(symbol: str) -> None:
        if (value := resolve(symbol)) != expected:
            raise Drift(f"is now {value!r}, not {expected!r}")

    return check


def takes_any_number_of_names():
    def check(symbol: str) -> None:
        if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters(resolve(symbol)).values()):
            raise Drift(f"no longer takes the names as *names (it takes {shown(parameters(resolve(symbol)))})")

    return check


def behaves(probe: Callable[[], None]):
    """A behavioural check: `probe` runs the upstream code the way we do and raises Drift when it differs."""
    return lambda symbol: probe()


def all_of(*checks):
    def check(symbol: str) -> None:
        for one in checks:
            one(symbol)

    return check


# ------------------------------------------------------------------------------------------ behavioural probes
def probe_attention_interface() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sentinel = object()
    if ALL_ATTENTION_FUNCTIONS.get_interface("eager", sentinel) is not sentinel:
        raise Drift("no longer returns our default (eager_attention) for attn_implementation='eager'")
    attention = ALL_ATTENTION_FUNCTIONS.get_interface("sdpa", sentinel)
    module = SimpleNamespace(num_key_value_groups=2, is_causal=False, training=False, config=SimpleNamespace())
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 3, 8, generator=generator)  # (b, heads, L, d)
    k, v = torch.randn(2, 1, 2, 3, 8, generator=generator)  # two key/value heads: grouped-query attention
    out, _ = attention(module, q, k, v, None, dropout=0.0, scaling=8**-0.5, is_causal=False)
    weights = (q @ k.repeat_interleave(2, 1).transpose(-1, -2) * 8**-0.5).softmax(-1)
    expected = (weights @ v.repeat_interleave(2, 1)).transpose(1, 2)  # (b, L, heads, d)
    if out.shape != expected.shape or not torch.allclose(out, expected, atol=1e-5):
        raise Drift(f"['sdpa'] no longer returns the attention output as (batch, length, heads, head_dim) for "
                    f"grouped-query inputs (got shape {tuple(out.shape)})")


def probe_attn_implementation() -> None:
    from transformers import PreTrainedConfig

    config = PreTrainedConfig()
    config._attn_implementation = "eager"
    if config._attn_implementation != "eager":
        raise Drift("no longer reads back what was set on the config")


def probe_checkpointing_layer() -> None:
    from transformers import PreTrainedConfig, PreTrainedModel
    from transformers.modeling_layers import GradientCheckpointingLayer

    calls = []

    class Layer(GradientCheckpointingLayer):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x, scale):
            calls.append(scale)
            return self.linear(x) * scale

    class Model(PreTrainedModel):
        config_class = PreTrainedConfig
        supports_gradient_checkpointing = True

        def __init__(self, config):
            super().__init__(config)
            self.layer = Layer()
            self.post_init()

    model = Model(PreTrainedConfig())
    if model.layer.gradient_checkpointing:
        raise Drift("is now on by default")
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enable()
    if not model.layer.gradient_checkpointing:
        raise Drift(f"is no longer switched on by the model's {enable.__name__}()")
    model.train()
    model.layer(torch.ones(1, 2, requires_grad=True), 2.0).sum().backward()
    if calls != [2.0, 2.0]:
        raise Drift("no longer recomputes the forward (positional arguments passed through) in the backward pass "
                    f"when checkpointing is on (forward calls: {calls})")


def probe_forward_kwargs(name: str, key: str):
    def probe() -> None:
        keys = getattr(resolve(name), "__required_keys__", set()) | getattr(resolve(name), "__optional_keys__", set())
        if key not in keys:
            raise Drift(f"is no longer a TypedDict with the key `{key}` (keys: {sorted(keys)})")

    return probe


def probe_unpack() -> None:
    from transformers.processing_utils import Unpack
    from transformers.utils import TransformersKwargs

    Unpack[TransformersKwargs]  # noqa: B018  (what `**kwargs: Unpack[TransformersKwargs]` evaluates)


def tiny_output_class():
    from dataclasses import dataclass as plain_dataclass

    from transformers.utils import ModelOutput

    @plain_dataclass
    class Output(ModelOutput):
        logits: torch.Tensor | None = None
        cache: object | None = None

    return Output


def probe_model_output() -> None:
    logits = torch.zeros(1)
    output = tiny_output_class()(logits=logits)
    if output.logits is not logits or output["logits"] is not logits or output.to_tuple() != (logits,):
        raise Drift("no longer gives attribute and key access, and `to_tuple()` without the None fields")


def probe_can_return_tuple() -> None:
    from transformers.utils import can_return_tuple

    logits = torch.zeros(1)
    output_class = tiny_output_class()

    class Model:
        config = SimpleNamespace(return_dict=True)

        @can_return_tuple
        def forward(self, **kwargs):
            return output_class(logits=logits)

    if not isinstance(Model().forward(), output_class) or Model().forward(return_dict=False) != (logits,):
        raise Drift("no longer returns `output.to_tuple()` for return_dict=False (and the output otherwise)")


def probe_logging() -> None:
    from transformers.utils import logging

    if not callable(getattr(logging.get_logger("llada-hf.inventory"), "warning_once", None)):
        raise Drift("get_logger(name) no longer gives a logger with `warning_once`")


def probe_tqdm() -> None:
    from transformers.utils.logging import tqdm

    if list(tqdm(range(3), desc="probe", leave=False, disable=True)) != [0, 1, 2]:
        raise Drift("no longer wraps an iterable (tqdm(iterable, desc=, leave=, disable=))")
    bar = tqdm(total=2, desc="probe", disable=True, leave=False)
    bar.update(1)
    bar.set_postfix(loss="1.0", refresh=False)
    bar.close()


def probe_initialization() -> None:
    from transformers import initialization as init

    fresh, loaded = torch.nn.Parameter(torch.full((4,), 7.0)), torch.nn.Parameter(torch.full((4,), 7.0))
    loaded._is_hf_initialized = True
    init.zeros_(fresh)
    init.ones_(loaded)
    init.normal_(loaded, mean=0.0, std=0.02)
    if fresh.abs().sum() != 0:
        raise Drift("zeros_ no longer fills a fresh tensor")
    if not torch.equal(loaded.detach(), torch.full((4,), 7.0)):
        raise Drift("ones_ / normal_(mean=, std=) no longer leave a tensor marked `_is_hf_initialized` (loaded) alone")


def probe_act2fn() -> None:
    from transformers.activations import ACT2FN

    x = torch.linspace(-3, 3, 7)
    if not torch.allclose(ACT2FN["silu"](x), torch.nn.functional.silu(x)):
        raise Drift("['silu'] is no longer SiLU")


def probe_experts_decorator() -> None:
    from transformers.integrations.moe import use_experts_implementation

    class Experts(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.act_fn = torch.nn.functional.silu

        def forward(self, x):
            return self._apply_gate(x)

    decorated = use_experts_implementation(Experts)  # bare decorator, as `@use_experts_implementation`
    config = SimpleNamespace(_experts_implementation="eager")
    experts = decorated(config)
    if getattr(experts, "config", None) is not config:
        raise Drift("no longer keeps the config on the decorated experts (`self.config`)")
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.silu(x[:, :3]) * x[:, 3:]
    out = experts(x)
    if out.shape != expected.shape or not torch.allclose(out, expected):
        raise Drift("no longer runs our forward for 'eager' with an `_apply_gate` that computes act(gate) * up "
                    "(gate first)")


def probe_can_generate() -> None:
    from transformers import PreTrainedConfig, PreTrainedModel

    class ProbeGenerationMixin:
        pass

    class Model(ProbeGenerationMixin, PreTrainedModel):
        config_class = PreTrainedConfig

    if not Model.can_generate():
        raise Drift("is no longer True for a model whose base class is named *GenerationMixin (not transformers' "
                    "own); LLaDA's from_pretrained would skip its generation_config.json")


@functools.cache
def saved_files() -> frozenset[str]:
    import tempfile

    from tests.utils import tiny_model

    with tempfile.TemporaryDirectory() as folder:
        tiny_model().save_pretrained(folder)
        return frozenset(path.name for path in Path(folder).iterdir())


def probe_code_files_saved(name: str):
    def probe() -> None:
        if name not in saved_files():
            raise Drift(f"no longer makes save_pretrained copy the code file ({name} missing from "
                        f"{sorted(saved_files())})")

    return probe


def probe_config_post_init() -> None:
    from transformers import PreTrainedConfig

    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters(PreTrainedConfig.__post_init__).values()):
        raise Drift("no longer takes **kwargs")
    if getattr(PreTrainedConfig(official_only_field=3), "official_only_field", None) != 3:
        raise Drift("no longer stores an unknown field as an attribute")


def probe_name_or_path() -> None:
    from transformers import PreTrainedConfig

    if not isinstance(getattr(PreTrainedConfig(), "_name_or_path", None), str):
        raise Drift("is no longer a string attribute of every config")


def probe_default_generation_params() -> None:
    defaults = resolve("transformers.GenerationConfig._get_default_generation_params")()
    if not isinstance(defaults, dict) or "temperature" not in defaults:
        raise Drift(f"no longer returns a dict of generate's defaults (got {type(defaults).__name__})")


def probe_generation_metadata() -> None:
    from transformers import GenerationConfig

    missing = [name for name in ("_from_model_config", "transformers_version") if not hasattr(GenerationConfig(), name)]
    if missing:
        raise Drift(f"is no longer one of GenerationConfig's metadata fields (missing: {missing})")


def probe_generation_config_without_init() -> None:
    import tempfile

    from modeling_llada.generation_llada import LLaDAGenerationConfig

    config = LLaDAGenerationConfig(steps=4, block_length=4, max_new_tokens=8)
    try:
        config.to_json_string()
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            loaded = LLaDAGenerationConfig.from_pretrained(folder)
    except UPSTREAM_ERRORS as error:
        raise Drift(f"is now needed by GenerationConfig's to_dict / save_pretrained / from_pretrained, which "
                    f"LLaDAGenerationConfig (it skips GenerationConfig.__init__) uses: {type(error).__name__}: "
                    f"{error}") from error
    if (loaded.steps, loaded.block_length, loaded.max_new_tokens) != (4, 4, 8):
        raise Drift("is now needed to round-trip a subclass's fields through save_pretrained / from_pretrained")


def probe_generation_config_json_hooks() -> None:
    """save_pretrained writes through `to_json_string(use_diff=True)` and from_pretrained reads through `from_dict`:
    our overrides keep an unset `do_sample` out of the file and read an old file's lone `do_sample: false` as unset."""
    import json
    import tempfile
    from pathlib import Path

    from modeling_llada.generation_llada import LLaDAGenerationConfig

    with tempfile.TemporaryDirectory() as folder:
        LLaDAGenerationConfig(steps=4).save_pretrained(folder)
        saved = json.loads((Path(folder) / "generation_config.json").read_text())
        if "do_sample" in saved or saved.get("steps") != 4:
            raise Drift("save_pretrained no longer writes through to_json_string(use_diff=True), which our override "
                        f"relies on to leave an unset do_sample out of the file (saved: {saved})")
        (Path(folder) / "generation_config.json").write_text(json.dumps({**saved, "do_sample": False}))
        if LLaDAGenerationConfig.from_pretrained(folder).do_sample is not None:
            raise Drift("from_pretrained no longer reads through from_dict(config_dict, **kwargs), which our override "
                        "relies on to load an old file's lone `do_sample: false` as unset")


def probe_logits_processor_list() -> None:
    from transformers.generation import LogitsProcessorList

    scores = torch.zeros(1, 5)
    if not torch.equal(LogitsProcessorList()(torch.zeros(1, 2, dtype=torch.long), scores), scores):
        raise Drift("is no longer called as processors(input_ids, scores) -> scores")


def probe_streamer() -> None:
    from transformers.generation.streamers import BaseStreamer

    missing = [name for name in ("put", "end") if not callable(getattr(BaseStreamer, name, None))]
    if missing:
        raise Drift(f"no longer defines {missing}")


def probe_dynamic_cache() -> None:
    from transformers.cache_utils import Cache, DynamicCache

    cache = DynamicCache()
    keys, values = cache.update(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), 0)
    if keys.shape[2] != 3 or cache.get_seq_length() != 3:
        raise Drift("update(k, v, layer_idx) no longer returns the cached keys / get_seq_length() the length")
    keys, _ = cache.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), 0)
    if keys.shape[2] != 5 or cache.get_seq_length() != 5:
        raise Drift("update(k, v, layer_idx) no longer appends to what is cached")
    cache.crop(-2)
    if cache.get_seq_length() != 3:
        raise Drift(f"crop(-2) no longer drops the last 2 positions (length {cache.get_seq_length()}, expected 3)")
    if not isinstance(cache, Cache):
        raise Drift("is no longer a Cache")


def probe_preference_collator() -> None:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collator = DataCollatorForPreference(pad_token_id=0, max_length=None, truncation_mode="keep_start",
                                         pad_to_multiple_of=None)
    batch = collator.torch_call([{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]},
                                 {"prompt_ids": [1], "chosen_ids": [6], "rejected_ids": [7, 8]}])
    missing = {"input_ids", "attention_mask", "completion_mask"} - set(batch)
    if missing:
        raise Drift(f"torch_call no longer returns {sorted(missing)}")
    expected = [[1, 2, 3, 4], [1, 6, 0, 0], [1, 2, 5, 0], [1, 7, 8, 0]]  # [chosen..., rejected...], right-padded
    if batch["input_ids"].tolist() != expected or batch["completion_mask"].tolist() != [
            [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]]:
        raise Drift(f"torch_call no longer gives rows [chosen..., rejected...] (prompt + completion, right-padded, "
                    f"completion_mask on the completion): {batch['input_ids'].tolist()}")


def probe_grpo_scoring_hook() -> None:
    """TRL 1.16: the method takes the parameters itself; TRL 1.14: a (model, *args, **kwargs) dispatcher whose
    full-logits path `_full_logits_logps` has them. Every parameter besides ours must default to None: the override
    refuses any extra input that is not None (multimodal inputs)."""
    from trl import GRPOTrainer

    implementation = "trl.GRPOTrainer._get_per_token_logps_and_entropies"
    theirs = parameters(GRPOTrainer._get_per_token_logps_and_entropies)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in theirs.values()):
        implementation = "trl.GRPOTrainer._full_logits_logps"
        theirs = parameters(resolve(implementation))
    ours_path = "trainers.grpo:DiffuGRPOTrainer._get_per_token_logps_and_entropies"
    mine = parameters(ours(ours_path))
    named = [name for name, p in mine.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    via = "" if implementation.endswith("_and_entropies") else f" (through {implementation})"
    if list(theirs)[:len(named)] != named:
        raise Drift(f"now takes {shown(theirs)}{via}; our override takes {shown(mine)}")
    extra = [name for name, p in theirs.items() if name not in mine and p.default is not None]
    if extra:
        raise Drift(f"now takes {extra}{via} with a default other than None, which our override would refuse as an "
                    "unsupported input")
    calls = re.findall(r"(\w+), (\w+), (\w+) = self\._get_per_token_logps_and_entropies\(", source(GRPOTrainer))
    if not calls:
        raise Drift("is no longer unpacked by TRL as (logps, entropies, aux_loss)")


def probe_lm_base_class() -> None:
    from lm_eval.api.model import LM

    from trainers.lm_eval_llada import LLaDAEvalModel

    if LLaDAEvalModel.__abstractmethods__:
        raise Drift(f"now also requires {sorted(LLaDAEvalModel.__abstractmethods__)}, which LLaDAEvalModel lacks")
    if not isinstance(inspect.getattr_static(LM, "tokenizer_name", None), property):
        raise Drift("`tokenizer_name` is no longer a property")
    for name in ("chat_template", "apply_chat_template"):
        accepts_upstream_call(parameters(resolve(f"lm_eval.api.model.LM.{name}")),
                              parameters(ours(f"trainers.lm_eval_llada:LLaDAEvalModel.{name}")),
                              f"trainers.lm_eval_llada:LLaDAEvalModel.{name}")


def probe_dataset_indices() -> None:
    from datasets import Dataset

    dataset = Dataset.from_dict({"input_ids": [[1], [2, 3], [4]]})
    if dataset._indices is not None:
        raise Drift("is no longer None for a dataset whose rows are its Arrow table's")
    if dataset.shuffle(seed=0)._indices is None:
        raise Drift("is no longer set when an indices mapping (shuffle / select) sits over the table")


def probe_validate_repo_id() -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id("GSAI-ML/LLaDA-8B-Instruct")
    try:
        validate_repo_id("not//a repo id")
    except HFValidationError:
        return
    raise Drift("no longer raises HFValidationError for a malformed repo id")


def probe_activation_checkpointing_absent() -> None:
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    if "activation_checkpointing" in names or "gradient_checkpointing" not in names:
        raise Drift("differs from what trainers/compat.py assumes before 5.23 (only `gradient_checkpointing`)")


def field_of(name: str):
    def probe_field(symbol: str) -> None:
        from dataclasses import fields

        owner_path = symbol.rpartition(".")[0]
        if name not in {f.name for f in fields(resolve(owner_path))}:
            raise Drift(f"is no longer a field of {owner_path}")

    return probe_field


# --------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Internal:
    symbol: str  # the dotted path of the upstream name
    where: tuple[str, ...]  # the files that use it
    relies_on: str  # what exactly we rely on (the check tests this)
    check: Callable[[str], None]
    aliases: tuple[str, ...] = ()  # other upstream names the entry covers (`_apply_gate`, a marker file name)
    since: tuple[str, str] | None = None  # (package, first release with it): older releases run `before` instead
    before: Callable[[str], None] | None = None

    @property
    def package(self) -> str:
        return self.symbol.split(".")[0]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.symbol.rsplit(".", 1)[-1], *self.aliases)


_TRAINER_METRICS = r'self\._metrics = \{"train": defaultdict\(list\), "eval": defaultdict\(list\)\}'
_ATOMIC = "trainers.checkpoints:AtomicCheckpointsMixin"

INTERNALS = [
    # -- modeling: attention, layers, outputs ------------------------------------------------------------------------
    Internal("transformers.masking_utils.create_bidirectional_mask", (MODELING, LLADA2),
             "called as (config=, inputs_embeds=, attention_mask=): a 2-D padding mask -> the attention "
             "functions' mask",
             takes("config", "inputs_embeds", "attention_mask")),
    Internal("transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS", (MODELING,),
             "`get_interface(config._attn_implementation, eager_attention)`; the function takes (module, q, k, v, "
             "mask, dropout=, scaling=, is_causal=), reads `module.num_key_value_groups` and returns (output as "
             "(batch, length, heads, head_dim), weights)",
             behaves(probe_attention_interface)),
    Internal("transformers.PreTrainedConfig._attn_implementation", (MODELING, "llada_cli/loading.py"),
             "the attention implementation a model was loaded with: read to pick the attention function, set for "
             "models built from a config",
             behaves(probe_attn_implementation)),
    Internal("transformers.modeling_layers.GradientCheckpointingLayer", MODELS,
             "base class of the blocks: off by default, switched on by the model's checkpointing switch, then the "
             "forward (positional arguments) is recomputed in the backward pass",
             behaves(probe_checkpointing_layer)),
    Internal("transformers.modeling_flash_attention_utils.FlashAttentionKwargs", (MODELING,),
             "a TypedDict whose keys (`cu_seq_lens_q`, ...) are forward keywords we accept",
             behaves(probe_forward_kwargs("transformers.modeling_flash_attention_utils.FlashAttentionKwargs",
                                          "cu_seq_lens_q"))),
    Internal("transformers.utils.TransformersKwargs", MODELS,
             "a TypedDict of the keywords transformers passes to forward (`num_items_in_batch`, ...)",
             behaves(probe_forward_kwargs("transformers.utils.TransformersKwargs", "num_items_in_batch"))),
    Internal("transformers.processing_utils.Unpack", MODELS,
             "`**kwargs: Unpack[TransformersKwargs]`",
             behaves(probe_unpack)),
    Internal("transformers.utils.ModelOutput", (MODELING, MOE, GENERATION),
             "dataclass outputs with attribute and key access and `to_tuple()` without the None fields",
             behaves(probe_model_output)),
    Internal("transformers.utils.can_return_tuple", MODELS,
             "the decorated forward returns `to_tuple()` when called with `return_dict=False`",
             behaves(probe_can_return_tuple)),
    Internal("transformers.utils.logging", (MODELING, GENERATION, COMPAT, "trainers/checkpoints.py", "trainers/sft.py"),
             "`get_logger(name)`, whose loggers have `warning_once`",
             behaves(probe_logging)),
    Internal("transformers.utils.logging.tqdm", (GENERATION, GENERATION2, "llada_cli/quickstart.py"),
             "tqdm under transformers' progress-bar switch: tqdm(iterable, desc=, leave=), tqdm(total=, disable=)",
             behaves(probe_tqdm)),
    Internal("transformers.initialization", MODELS,
             "`normal_(t, mean=, std=)`, `zeros_`, `ones_` in `_init_weights`; they leave tensors marked "
             "`_is_hf_initialized` (loaded weights) alone",
             behaves(probe_initialization), aliases=("_is_hf_initialized",)),
    Internal("transformers.activations.ACT2FN", (MOE,),
             "`ACT2FN[config.hidden_act]` for 'silu'",
             behaves(probe_act2fn)),
    # -- modeling: mixture of experts --------------------------------------------------------------------------------
    Internal("transformers.conversion_mapping.register_checkpoint_conversion_mapping", (MOE,),
             "(model type or class name, [WeightConverter], overwrite=True); a mapping registered under a class name "
             "applies to that class loaded as remote code",
             all_of(takes("model_type_or_class_name", "mapping", "overwrite"),
                    source_has(r"USER_REGISTERED_MAPPINGS", "no longer applies user-registered mappings to classes "
                               "outside transformers (get_model_conversion_mapping)",
                               of="transformers.conversion_mapping.get_model_conversion_mapping"))),
    Internal("transformers.core_model_loading.WeightConverter", (MOE,),
             "WeightConverter(source_patterns=, target_patterns=, operations=): the official per-expert weights <-> "
             "the fused expert tensors",
             takes("source_patterns", "target_patterns", "operations")),
    Internal("transformers.core_model_loading.MergeModulelist", (MOE,),
             "MergeModulelist(dim=0) stacks the experts' weights",
             takes("dim")),
    Internal("transformers.core_model_loading.Concatenate", (MOE,),
             "Concatenate(dim=1) joins the gate and up projections",
             takes("dim")),
    Internal("transformers.integrations.moe.use_experts_implementation", (MOE,),
             "bare class decorator: keeps `self.config`, runs our forward for 'eager' (else transformers' "
             "implementation of `config._experts_implementation`) and adds the `_apply_gate` (act(gate) * up, gate "
             "first) our forward calls",
             behaves(probe_experts_decorator), aliases=("_apply_gate",)),
    Internal("transformers.utils.output_capturing.OutputRecorder", (MOE, LLADA2),
             "OutputRecorder(sparse MoE block class, index=1) in `_can_record_outputs`",
             takes("target_class", "index")),
    Internal("transformers.PreTrainedModel._can_record_outputs", (MOE, LLADA2),
             "class attribute {output name: OutputRecorder} (router_logits)",
             class_attribute((dict, type(None)))),
    Internal("transformers.PreTrainedModel._can_set_experts_implementation_cached_value", (LLADA2,),
             "set True: `_can_set_experts_implementation` reads this cache before looking for "
             "`@use_experts_implementation` in the model's own file (ours is in its sibling)",
             source_has(r'getattr\(cls, "_can_set_experts_implementation_cached_value"',
                        "is no longer the cache `_can_set_experts_implementation` reads",
                        of="transformers.PreTrainedModel._can_set_experts_implementation")),
    Internal("transformers.PreTrainedModel.get_correct_experts_implementation", (MOE,),
             "overridden (requested_experts) to default to 'eager', then called through super()",
             overridden_by("modeling_llada.modeling_lladamoe:ExpertsPreTrainedMixin."
                           "get_correct_experts_implementation")),
    # -- modeling: PreTrainedModel class attributes and hooks --------------------------------------------------------
    Internal("transformers.PreTrainedModel._no_split_modules", MODELS,
             "class attribute: the layer classes device_map never splits",
             class_attribute()),
    *[Internal(f"transformers.PreTrainedModel.{name}", (MODELING,),
               f"class attribute (bool): {what} is accepted for the model",
               class_attribute(bool))
      for name, what in (("_supports_sdpa", "attn_implementation='sdpa'"),
                         ("_supports_flash_attn", "flash attention"),
                         ("_supports_flex_attn", "flex attention"),
                         ("_supports_attention_backend", "a registered attention backend"))],
    Internal("transformers.PreTrainedModel._tied_weights_keys", MODELS,
             "class attribute in transformers 5's form {target: source} ({'lm_head.weight': ...}), tied when the "
             "config says so",
             all_of(class_attribute(),
                    source_has(r"_tied_weights_keys:\s*dict", "is no longer declared a {target: source} dict",
                               of="transformers.modeling_utils"))),
    Internal("transformers.PreTrainedModel._init_weights", MODELS,
             "overridden as `_init_weights(module)`, which post_init calls for every module",
             overridden_by("modeling_llada.modeling_llada:LLaDAPreTrainedModel._init_weights",
                           "modeling_llada.modeling_lladamoe:LLaDAMoEPreTrainedModel._init_weights",
                           "modeling_llada.modeling_llada2_moe:LLaDA2MoePreTrainedModel._init_weights")),
    Internal("transformers.PreTrainedModel._auto_class", (MODELING,),
             "set to 'AutoModel': save_pretrained then copies the code files next to the weights",
             all_of(class_attribute(), behaves(probe_code_files_saved("modeling_llada.py")))),
    Internal("transformers.PreTrainedConfig._auto_class", (MODELING,),
             "set to 'AutoConfig' when saving: save_pretrained then copies the config's code file too",
             all_of(class_attribute(), behaves(probe_code_files_saved("configuration_llada.py")))),
    Internal("transformers.PreTrainedConfig.__post_init__", CONFIGS,
             "configs are dataclasses: annotations are the fields, `__post_init__(**kwargs)` (called through "
             "super()) stores the official files' other fields as attributes",
             behaves(probe_config_post_init)),
    Internal("transformers.PreTrainedConfig._name_or_path", ("hub_cards/cards.py",),
             "the path or id a config was loaded from (the card's base model)",
             behaves(probe_name_or_path)),
    # -- generation ---------------------------------------------------------------------------------------------------
    Internal("transformers.PreTrainedModel.generation_config_class", (GENERATION, GENERATION2),
             "the GenerationConfig class the model's default generation_config is built from",
             all_of(class_attribute(),
                    source_has(r"self\.generation_config_class\b", "no longer builds generation_config from it",
                               of="transformers.PreTrainedModel.__init__"))),
    Internal("transformers.PreTrainedModel.can_generate", (GENERATION,),
             "True for a model whose base class is named *GenerationMixin (ours: LLaDAGenerationMixin), so that "
             "from_pretrained loads generation_config.json",
             behaves(probe_can_generate)),
    Internal("transformers.generation.utils.GenerationMixin.adjust_generation_fn", (GENERATION,),
             "the hook from_pretrained calls with (generation_config, from_auto_class, from_pipeline, path, download "
             "kwargs, trust_remote_code); ours loads a LLaDAGenerationConfig",
             all_of(overridden_by("modeling_llada.generation_llada:LLaDAGenerationMixin.adjust_generation_fn"),
                    source_has(r"\.adjust_generation_fn\(", "is no longer called by from_pretrained",
                               of="transformers.PreTrainedModel.from_pretrained"))),
    Internal("transformers.GenerationConfig.__init__", (GENERATION, GENERATION2),
             "skipped on purpose: to_dict, to_json_string, save_pretrained and from_pretrained work on a subclass "
             "that never ran it",
             behaves(probe_generation_config_without_init)),
    Internal("transformers.GenerationConfig.to_json_string", (GENERATION,),
             "save_pretrained writes the file through to_json_string(use_diff=True, ...); overridden as "
             "to_json_string(use_diff, ignore_metadata, keys_to_pop)",
             behaves(probe_generation_config_json_hooks)),
    Internal("transformers.GenerationConfig.from_dict", (GENERATION,),
             "from_pretrained builds the config through from_dict(config_dict, **kwargs); overridden with that "
             "signature",
             overridden_by("modeling_llada.generation_llada:LLaDAGenerationConfig.from_dict")),
    Internal("transformers.GenerationConfig.validate", (GENERATION, GENERATION2),
             "overridden as validate(strict=False, **unused); transformers calls it with keywords",
             overridden_by("modeling_llada.generation_llada:LLaDAGenerationConfig.validate",
                           "modeling_llada.generation_llada2:LLaDA2GenerationConfig.validate")),
    Internal("transformers.GenerationConfig._get_default_generation_params", (GENERATION,),
             "(read when present) the global defaults of generate, neutral values for diffusion",
             behaves(probe_default_generation_params)),
    Internal("transformers.GenerationConfig._from_model_config", (GENERATION,),
             "metadata fields our config sets itself (it skips GenerationConfig.__init__): `_from_model_config`, "
             "`transformers_version`, and `_commit_hash` (older files carry it)",
             behaves(probe_generation_metadata), aliases=("_commit_hash",)),
    Internal("transformers.GenerationConfig.from_pretrained", (GENERATION,),
             "takes `_from_auto=` and `_from_pipeline=` (passed on from the model's from_pretrained)",
             all_of(source_has(r"_from_auto", "no longer takes `_from_auto=`"),
                    source_has(r"_from_pipeline", "no longer takes `_from_pipeline=`")),
             aliases=("_from_auto", "_from_pipeline")),
    Internal("transformers.generation.LogitsProcessorList", (GENERATION, GENERATION2),
             "processors called as processors(input_ids, scores) -> scores",
             behaves(probe_logits_processor_list)),
    Internal("transformers.generation.TopKLogitsWarper", (GENERATION,),
             "TopKLogitsWarper(top_k=)",
             takes("top_k")),
    Internal("transformers.generation.TopPLogitsWarper", (GENERATION,),
             "TopPLogitsWarper(top_p=)",
             takes("top_p")),
    Internal("transformers.generation.streamers.BaseStreamer", (GENERATION,),
             "streamers implement put(value) and end()",
             behaves(probe_streamer)),
    Internal("transformers.cache_utils.DynamicCache", (LLADA2, GENERATION2),
             "DynamicCache(); update(k, v, layer_idx) appends and returns all cached keys/values; get_seq_length(); "
             "crop(-n) drops the last n positions",
             behaves(probe_dynamic_cache)),
    Internal("transformers.cache_utils.Cache", (LLADA2,),
             "the class a forward's `cache` is checked against (DynamicCache is one)",
             exists()),
    # -- training: transformers' Trainer ------------------------------------------------------------------------------
    Internal("transformers.trainer_utils.PREFIX_CHECKPOINT_DIR", (COMPAT, "trainers/checkpoints.py"),
             "'checkpoint', the prefix of the Trainer's checkpoint-N folders",
             equals("checkpoint")),
    Internal("transformers.trainer_utils.rotate_checkpoints", (COMPAT, "trainers/checkpoints.py"),
             "rotate_checkpoints(output_dir=, save_total_limit=, best_model_checkpoint=, use_mtime=)",
             takes("output_dir", "save_total_limit", "best_model_checkpoint", "use_mtime")),
    Internal("transformers.Trainer._save_checkpoint", ("trainers/checkpoints.py",),
             "overridden (model, trial); it names its folder through `self._get_output_dir(trial=trial)` and "
             "uploads through `self._push_from_checkpoint(...)`",
             all_of(overridden_by(f"{_ATOMIC}._save_checkpoint"),
                    source_has(r"self\._get_output_dir\(trial=trial\)",
                               "no longer names its folder through `self._get_output_dir(trial=trial)`"),
                    source_has(r"self\._push_from_checkpoint\(", "no longer uploads through `_push_from_checkpoint`"))),
    Internal("transformers.Trainer._get_output_dir", ("trainers/checkpoints.py",),
             "overridden (trial): the staging folder while a checkpoint is written",
             overridden_by(f"{_ATOMIC}._get_output_dir")),
    Internal("transformers.Trainer._push_from_checkpoint", ("trainers/checkpoints.py",),
             "overridden (checkpoint_folder), deferred until the rename; its uploads skip names starting with '_' "
             "(our staging folder)",
             all_of(overridden_by(f"{_ATOMIC}._push_from_checkpoint"),
                    source_has(r'ignore_patterns=\["_\*"', "no longer skips names starting with '_' in uploads"))),
    Internal("transformers.Trainer._set_signature_columns_if_needed", ("trainers/base.py", "trainers/sft.py",
                                                                      "trainers/vrpo.py"),
             "overridden (): sets `_signature_columns` before the Trainer drops the other dataset columns",
             all_of(overridden_by("trainers.base:DiffusionTrainerMixin._set_signature_columns_if_needed",
                                  "trainers.sft:MaskedDiffusionSFTTrainer._set_signature_columns_if_needed",
                                  "trainers.vrpo:VRPOTrainer._set_signature_columns_if_needed"),
                    source_has(r"self\._set_signature_columns_if_needed\(\)", "is no longer called by the Trainer",
                               of="transformers.Trainer"))),
    Internal("transformers.Trainer._signature_columns", ("trainers/base.py", "trainers/sft.py", "trainers/vrpo.py"),
             "the dataset columns kept: None until `_set_signature_columns_if_needed` sets a list",
             sets()),
    Internal("transformers.Trainer._prepare_inputs", ("trainers/base.py", "trainers/vrpo.py"),
             "`_prepare_inputs(inputs)` moves a batch to the device",
             takes("inputs")),
    Internal("transformers.Trainer.save_model", ("trainers/base.py",),
             "overridden and called through super() as save_model(output_dir, _internal_call)",
             overridden_by("trainers.base:LLaDARecordMixin.save_model"), aliases=("_internal_call",)),
    Internal("transformers.Trainer.accelerator", ("trainers/base.py", "trainers/checkpoints.py", "trainers/sft.py",
                                                  "trainers/vrpo.py", "trainers/grpo.py"),
             "the Trainer's Accelerator (unwrap_model, wait_for_everyone, gather_for_metrics, prepare_model, "
             "autocast, device, process_index)",
             sets()),
    Internal("transformers.Trainer.model_accepts_loss_kwargs", ("trainers/pretraining.py", "trainers/sft.py",
                                                                "trainers/vrpo.py"),
             "set False after __init__: our losses are means, not sums to divide by num_items_in_batch",
             sets()),
    Internal("transformers.trainer_jit_checkpoint", ("trainers/checkpoints.py",),
             "its just-in-time save marks an unfinished checkpoint-N with `checkpoint-is-incomplete.txt`",
             source_has(r"checkpoint-is-incomplete\.txt", "no longer marks an unfinished save with "
                        "checkpoint-is-incomplete.txt"),
             aliases=("checkpoint-is-incomplete.txt",)),
    Internal("transformers.TrainingArguments.__post_init__", ("trainers/pretraining.py", "trainers/sft.py",
                                                              "trainers/vrpo.py", "trainers/grpo.py"),
             "our configs run their checks around super().__post_init__(), which takes no arguments",
             overridden_by("trainers.pretraining:MaskedDiffusionConfig.__post_init__")),
    Internal("transformers.TrainingArguments.activation_checkpointing", (COMPAT, "trainers/base.py"),
             "the checkpointing switch from transformers 5.23; before it only `gradient_checkpointing`",
             field_of("activation_checkpointing"), since=("transformers", "5.23"),
             before=behaves(probe_activation_checkpointing_absent)),
    Internal("transformers.trainer_callback.ProgressCallback", ("llada_cli/quickstart.py",),
             "subclassed with on_log(args, state, control, logs=None, **kwargs), which reads its `training_bar`",
             all_of(takes("args", "state", "control", "logs",
                          of="transformers.trainer_callback.ProgressCallback.on_log"),
                    sets("transformers.trainer_callback.ProgressCallback.training_bar"))),
    # -- training: TRL's SFTTrainer and DPOTrainer (VRPO) -------------------------------------------------------------
    Internal("trl.SFTTrainer._prepare_dataset", ("trainers/sft.py",),
             "overridden and called (dataset, processing_class, args, packing, formatting_func, dataset_name); it "
             "truncates to args.max_length and builds the `labels` column (-100 on the prompt)",
             all_of(overridden_by("trainers.sft:MaskedDiffusionSFTTrainer._prepare_dataset"),
                    source_has(r'"labels"', "no longer builds the `labels` column"),
                    source_has(r"max_length", "no longer truncates to args.max_length"))),
    Internal("trl.SFTTrainer._metrics", ("trainers/base.py", "trainers/sft.py", "trainers/pretraining.py"),
             "{'train': defaultdict(list), 'eval': defaultdict(list)} of values log() averages (pre-training keeps "
             "one of the same shape)",
             source_has(_TRAINER_METRICS, "is no longer {'train': defaultdict(list), 'eval': defaultdict(list)}",
                        of="trl.SFTTrainer")),
    Internal("trl.DPOTrainer._prepare_dataset", ("trainers/vrpo.py",),
             "overridden and called (dataset, processing_class, args, dataset_name)",
             overridden_by("trainers.vrpo:VRPOTrainer._prepare_dataset")),
    Internal("trl.DPOTrainer._metrics", ("trainers/vrpo.py",),
             "{'train': defaultdict(list), 'eval': defaultdict(list)} of values log() averages",
             source_has(_TRAINER_METRICS, "is no longer {'train': defaultdict(list), 'eval': defaultdict(list)}",
                        of="trl.DPOTrainer")),
    Internal("trl.DPOTrainer._total_train_tokens", ("trainers/vrpo.py",),
             "the running token count behind `num_tokens`, which our compute_loss keeps counting",
             sets()),
    Internal("trl.DPOTrainer.loss_types", ("trainers/vrpo.py",),
             "the loss names of the config's loss_type, as a list",
             sets()),
    Internal("trl.DPOTrainer.loss_weights", ("trainers/vrpo.py",),
             "one weight per loss type",
             sets()),
    Internal("trl.DPOTrainer.compute_ref_log_probs", ("trainers/vrpo.py",),
             "overridden (model, inputs) -> (chosen, rejected), which precompute_ref_log_probs stores per example",
             all_of(overridden_by("trainers.vrpo:VRPOTrainer.compute_ref_log_probs"),
                    source_has(r"\w+, \w+ = self\.compute_ref_log_probs\(", "is no longer unpacked as (chosen, "
                               "rejected)", of="trl.DPOTrainer"))),
    Internal("trl.DPOTrainer._tag_names", ("trainers/vrpo.py",),
             "class attribute: the tags TRL adds to the model (`add_model_tags`)",
             all_of(class_attribute(list),
                    source_has(r"add_model_tags\(self\._tag_names\)", "is no longer added to the model's tags",
                               of="trl.DPOTrainer"))),
    Internal("trl.DPOTrainer._name", ("trainers/vrpo.py",),
             "class attribute: the method name TRL's card helper writes (ours writes LLaDA's card instead)",
             all_of(class_attribute(str),
                    source_has(r"self\._name\b", "is no longer read by TRL's create_model_card",
                               of="trl.trainer.base_trainer._BaseTrainer.create_model_card"))),
    Internal("trl.DPOTrainer._paper", ("trainers/vrpo.py",),
             "class attribute {title, id, citation} that TRL's card helper reads",
             all_of(class_attribute(dict),
                    source_has(r'self\._paper\.get\("citation"\)', "is no longer read as {title, id, citation} by "
                               "TRL's create_model_card",
                               of="trl.trainer.base_trainer._BaseTrainer.create_model_card"))),
    Internal("trl.trainer.dpo_trainer.DataCollatorForPreference", (COMPAT, "trainers/vrpo.py"),
             "(pad_token_id=, max_length=, truncation_mode=, pad_to_multiple_of=); torch_call(examples) gives rows "
             "[chosen..., rejected...] with input_ids, attention_mask, completion_mask",
             all_of(takes("pad_token_id", "max_length", "truncation_mode", "pad_to_multiple_of"),
                    overridden_by("trainers.vrpo:VRPOCollator.torch_call",
                                  upstream="trl.trainer.dpo_trainer.DataCollatorForPreference.torch_call"),
                    behaves(probe_preference_collator))),
    Internal("trl.trainer.utils.use_adapter", (COMPAT, "trainers/vrpo.py"),
             "use_adapter(model, adapter_name=): a context that runs the PeftModel with that adapter (None: off)",
             takes("model", "adapter_name")),
    # -- training: TRL's GRPOTrainer (diffu-GRPO) ---------------------------------------------------------------------
    Internal("trl.GRPOTrainer._generate_single_turn", ("trainers/grpo.py",),
             "overridden as (prompt_ids, images, multimodal_fields, *args, **kwargs) -> (completion ids, None); TRL "
             "passes the repeated prompts' ids positionally (1.16 adds num_generations) and unpacks two values",
             all_of(overridden_by("trainers.grpo:DiffuGRPOTrainer._generate_single_turn"),
                    source_has(r"\w+, \w+ = self\._generate_single_turn\(\s*prompt_ids, images, multimodal_fields",
                               "is no longer called as (prompt_ids, images, multimodal_fields, ...) -> 2 values",
                               of="trl.GRPOTrainer"))),
    Internal("trl.GRPOTrainer._get_per_token_logps_and_entropies", ("trainers/grpo.py",),
             "overridden (model, input_ids, attention_mask, logits_to_keep, batch_size=, compute_entropy=, "
             "compute_aux_loss=, other inputs defaulting to None) -> (logps, entropies, aux_loss); in TRL 1.14 a "
             "(model, *args, **kwargs) dispatcher over `_full_logits_logps`, whose parameters are checked",
             behaves(probe_grpo_scoring_hook)),
    Internal("trl.GRPOTrainer._generate_and_score_completions", ("trainers/grpo.py",),
             "overridden and called (inputs) -> a dict with `old_per_token_logps` / `ref_per_token_logps`, buffered "
             "and passed to compute_loss (with our extra key)",
             all_of(overridden_by("trainers.grpo:DiffuGRPOTrainer._generate_and_score_completions"),
                    source_has(r'output\["old_per_token_logps"\]', "no longer returns `old_per_token_logps`",
                               of="trl.GRPOTrainer"),
                    source_has(r'output\["ref_per_token_logps"\]', "no longer returns `ref_per_token_logps`",
                               of="trl.GRPOTrainer"))),
    Internal("trl.GRPOTrainer._step", ("trainers/grpo.py",),
             "the micro-step counter; a batch is generated every steps_per_generation * num_iterations steps",
             all_of(sets(), source_has(r"generate_every = self\.args\.steps_per_generation \* self\.num_iterations",
                                       "no longer generates every steps_per_generation * num_iterations steps",
                                       of="trl.GRPOTrainer"))),
    Internal("trl.GRPOTrainer._tokenizer", ("trainers/grpo.py",),
             "the tokenizer of processing_class (pad and EOS ids)",
             sets()),
    Internal("trl.GRPOTrainer._entropy_bonus_enabled", ("trainers/grpo.py",),
             "(read when present) whether entropies need gradients",
             sets()),
    Internal("trl.GRPOTrainer.eos_token_ids", ("trainers/grpo.py",),
             "the ids that end a completion (TRL 1.15+); before, we build them from `_tokenizer` and the model's "
             "generation config",
             sets(), since=("trl", "1.15"), before=sets("trl.GRPOTrainer._tokenizer")),
    Internal("trl.GRPOTrainer.num_iterations", ("trainers/grpo.py",),
             "μ, the inner iterations per generated batch",
             sets()),
    Internal("trl.GRPOTrainer.beta", ("trainers/grpo.py",),
             "read at loss time, so it can be set after __init__ (built with beta=0 so that TRL loads no reference)",
             all_of(sets(), source_has(r"if self\.beta != 0\.0", "is no longer read at loss time",
                                       of="trl.GRPOTrainer"))),
    Internal("trl.GRPOTrainer.ref_model", ("trainers/grpo.py",),
             "the reference TRL scores with when not None (our frozen copy, set after __init__)",
             all_of(sets(), source_has(r"self\.ref_model is not None", "is no longer what TRL scores with",
                                       of="trl.GRPOTrainer"))),
    Internal("trl.GRPOTrainer._tag_names", ("trainers/grpo.py",),
             "class attribute: the tags TRL adds to the model (`add_model_tags`)",
             all_of(class_attribute(list),
                    source_has(r"add_model_tags\(self\._tag_names\)", "is no longer added to the model's tags",
                               of="trl.GRPOTrainer"))),
    # -- accelerate, PEFT ---------------------------------------------------------------------------------------------
    Internal("accelerate.utils.is_peft_model", (COMPAT, "trainers/vrpo.py", "trainers/grpo.py"),
             "is_peft_model(model)",
             takes("model")),
    Internal("accelerate.Accelerator.prepare_model", ("trainers/grpo.py",),
             "prepare_model(model, evaluation_mode=True) for our frozen reference, as TRL prepares its own",
             takes("model", "evaluation_mode")),
    Internal("peft.LoraConfig.target_parameters", ("trainers/peft_utils.py",),
             "LoRA on the routed experts' fused parameters (PEFT >= 0.20)",
             field_of("target_parameters")),
    # -- lm-eval ------------------------------------------------------------------------------------------------------
    Internal("lm_eval.api.model.LM", (COMPAT, "trainers/lm_eval_llada.py"),
             "subclassed: abstract loglikelihood, loglikelihood_rolling, generate_until; we override the property "
             "tokenizer_name, chat_template(chat_template=False), apply_chat_template(chat_history, "
             "add_generation_prompt=True)",
             behaves(probe_lm_base_class)),
    Internal("lm_eval.api.model.LM._device", (COMPAT, "trainers/lm_eval_llada.py"),
             "set by LM.__init__ and returned by its `device` property; we set the model's device",
             all_of(sets(), source_has(r"return self\._device", "is no longer what the `device` property returns",
                                       of="lm_eval.api.model.LM.device"))),
    Internal("lm_eval.api.model.LM.cache_hook", (COMPAT, "trainers/lm_eval_llada.py"),
             "`cache_hook.add_partial('generate_until', args, text)`",
             all_of(sets(), takes("attr", "req", "res", of="lm_eval.api.model.CacheHook.add_partial"))),
    Internal("lm_eval.api.registry.register_model", (COMPAT, "trainers/lm_eval_llada.py"),
             "@register_model('llada')",
             takes_any_number_of_names()),
    Internal("lm_eval.tasks.TaskManager", ("llada_cli/evaluate.py",),
             "TaskManager(include_path=) and match_tasks([names]); passed to simple_evaluate(task_manager=)",
             all_of(takes("include_path"), takes("task_list", of="lm_eval.tasks.TaskManager.match_tasks"))),
    Internal("lm_eval.utils.make_table", ("llada_cli/evaluate.py",),
             "make_table(results) -> the printed table",
             exists()),
    Internal("lm_eval.utils.handle_non_serializable", ("llada_cli/evaluate.py",),
             "json.dump(default=handle_non_serializable)",
             exists()),
    # -- datasets, huggingface_hub ------------------------------------------------------------------------------------
    Internal("datasets.exceptions.DatasetGenerationError", ("llada_cli/loading.py",),
             "what load_dataset raises when a local file does not parse",
             exists()),
    Internal("datasets.config", ("llada_cli/loading.py",),
             "`HF_HUB_OFFLINE`: whether datasets runs offline",
             behaves(lambda: resolve("datasets.config.HF_HUB_OFFLINE"))),
    Internal("datasets.Dataset._indices", ("hub_cards/cards.py", "trainers/base.py"),
             "None unless an indices mapping (select, shuffle) sits over the Arrow table, whose rows are then not "
             "the dataset's",
             behaves(probe_dataset_indices)),
    Internal("huggingface_hub.errors.HFValidationError", ("hub_cards/cards.py", "hub_cards/publish.py",
                                                          "llada_cli/loading.py"),
             "what validate_repo_id raises",
             exists()),
    Internal("huggingface_hub.utils.validate_repo_id", ("hub_cards/cards.py", "hub_cards/publish.py",
                                                        "llada_cli/loading.py"),
             "validate_repo_id(name) raises HFValidationError for a malformed repo id",
             behaves(probe_validate_repo_id)),
]
BY_SYMBOL = {entry.symbol: entry for entry in INTERNALS}


# --------------------------------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("entry", INTERNALS, ids=lambda entry: entry.symbol)
def test_the_upstream_internal_still_has_the_shape_we_rely_on(entry):
    if importlib.util.find_spec(entry.package) is None:
        pytest.skip(f"{entry.package} is not installed (an optional extra)")
    check = entry.check
    if entry.since is not None:
        package, first = entry.since
        if Version(release(package)) < Version(first):
            if entry.before is None:
                pytest.skip(f"{package} {release(package)} predates {entry.symbol} ({first})")
            check = entry.before
    try:
        check(entry.symbol)
        return
    except Drift as error:
        drift = error
    except UPSTREAM_ERRORS as error:  # upstream code that now fails the way we call it
        drift = f"now fails the way we use it: {type(error).__name__}: {error}"
    pytest.fail(f"{entry.package} {release(entry.package)}: {entry.symbol} {drift} (used by {', '.join(entry.where)})",
                pytrace=False)


def test_a_changed_upstream_shape_fails_naming_the_release_the_symbol_and_its_users():
    """The failure message of a drifted entry: release, symbol, what changed, where it is used."""
    entry = Internal("transformers.masking_utils.create_bidirectional_mask", (MODELING,), "",
                     takes("config", "input_embeds"))
    with pytest.raises(pytest.fail.Exception) as failure:
        test_the_upstream_internal_still_has_the_shape_we_rely_on(entry)
    message = str(failure.value)
    assert message.startswith(f"transformers {release('transformers')}: transformers.masking_utils."
                              "create_bidirectional_mask no longer takes `input_embeds`")
    assert message.endswith(f"(used by {MODELING})")


# ----------------------------------------------------------------------------------- the scan of our own code
def scanned_files() -> list[Path]:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).glob("*.py"))]
    return [path for path in files if str(path.relative_to(ROOT)) not in NOT_SCANNED]


def is_submodule(module: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{module}.{name}") is not None
    except (ImportError, ValueError):
        return False


def upstream_import(node: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) pairs an import statement takes from an upstream package."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module.split(".")[0] in UPSTREAM:
            return [(node.module, alias.name) for alias in node.names]
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names if alias.name.split(".")[0] in UPSTREAM]
    return []


def non_public(module: str, name: str | None) -> str | None:
    """The dotted name when an import reaches inside an upstream package, None for its top-level namespace."""
    if name is None:
        return module if "." in module else None
    if "." in module or is_submodule(module, name):
        return f"{module}.{name}"
    return None


@functools.cache
def code_scan() -> dict[str, dict[str, set[str]]]:
    """What our code uses: `imports` (non-public upstream imports), `super` (private names called through super())
    and `private` (private names it reads, sets, overrides or passes as keywords), each name -> the files."""
    found = {"imports": defaultdict(set), "super": defaultdict(set), "private": defaultdict(set)}
    for path in scanned_files():
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for module, name in upstream_import(node):
                if (dotted := non_public(module, name)) is not None:
                    found["imports"][dotted].add(where)
            names = []
            if isinstance(node, ast.Attribute):
                value = node.value
                is_super = (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                            and value.func.id == "super")
                if is_super and node.attr.startswith("_") and node.attr != "__init__":
                    found["super"][node.attr].add(where)
                names.append(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                names.append(node.arg)
            elif isinstance(node, ast.arg):
                names.append(node.arg)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "getattr", "hasattr", "setattr") and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                names.append(node.args[1].value)
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.append(statement.name)
                    targets = statement.targets if isinstance(statement, ast.Assign) else (
                        [statement.target] if isinstance(statement, ast.AnnAssign) else [])
                    names += [target.id for target in targets if isinstance(target, ast.Name)]
            for name in names:
                if isinstance(name, str) and PRIVATE.match(name):
                    found["private"][name].add(where)
    return found


@functools.cache
def our_own_private_names() -> set[str]:
    """Private names our code defines for itself: module-level functions and names, and the methods and `self._x`
    attributes of classes none of whose bases comes from upstream (a base is ours, or a builtin). Such a name is
    ours even where an upstream source happens to use the same word (serve's `_chunk`, say); the methods of a class
    with an upstream base stay in the scan, since they may override upstream's."""
    trees = [ast.parse(path.read_text()) for path in scanned_files()]
    ours = {node.name for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    ours |= {name for name in dir(builtins) if isinstance(getattr(builtins, name), type)}
    names = set()
    for tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            if not all(isinstance(base, ast.Name) and base.id in ours for base in node.bases):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(inner.name)
                elif isinstance(inner, (ast.Assign, ast.AnnAssign)):
                    targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
                    names.update(target.attr for target in targets if isinstance(target, ast.Attribute)
                                 and isinstance(target.value, ast.Name) and target.value.id == "self")
                    names.update(target.id for target in targets if isinstance(target, ast.Name))
    return {name for name in names if PRIVATE.match(name)}


@functools.cache
def upstream_private_names() -> dict[str, set[str]]:
    """Private names in the sources of the upstream modules our code draws on (those of the objects it imports and
    of the upstream base classes of the classes it imports): name -> the modules."""
    modules = {}
    for path in scanned_files():
        for node in ast.walk(ast.parse(path.read_text())):
            for module, name in upstream_import(node):
                if name is None:
                    continue
                try:
                    obj = importlib.import_module(f"{module}.{name}") if is_submodule(module, name) else getattr(
                        importlib.import_module(module), name)
                except (ImportError, AttributeError):  # an optional extra not installed, or a name gone (its
                    continue  # entry's check reports that)
                owners = [obj] + (list(obj.__mro__) if inspect.isclass(obj) else [])
                for owner in owners:
                    home = owner if inspect.ismodule(owner) else inspect.getmodule(owner)
                    if home is not None and home.__name__.split(".")[0] in UPSTREAM:
                        modules[home.__name__] = home
    names = defaultdict(set)
    for module_name, module in modules.items():
        try:
            text = inspect.getsource(module)
        except (OSError, TypeError):
            continue
        for name in set(re.findall(r"\b(_[a-z][a-z0-9_]*)\b", text)):
            names[name].add(module_name)
    return names


def test_every_upstream_internal_the_code_uses_has_an_entry():
    """A new non-public import, super() call or private upstream name cannot land without an inventory entry (or,
    for a name that only looks upstream, a reason in NOT_UPSTREAM)."""
    scan = code_scan()
    covered = defaultdict(set)
    for entry in INTERNALS:
        for name in entry.names:
            covered[name].update(entry.where)
    missing = [f"{name} ({', '.join(sorted(files))})" for name, files in sorted(scan["imports"].items())
               if name not in BY_SYMBOL]
    missing += [f"super().{name} ({', '.join(sorted(files))})" for name, files in sorted(scan["super"].items())
                if name not in covered and name not in NOT_UPSTREAM and name not in our_own_private_names()]
    upstream = upstream_private_names()
    missing += [f"{name} ({', '.join(sorted(files))}; also in {', '.join(sorted(upstream[name])[:3])})"
                for name, files in sorted(scan["private"].items())
                if name in upstream and name not in covered and name not in NOT_UPSTREAM
                and name not in our_own_private_names()]
    assert not missing, ("the code uses upstream internals that tests/test_upstream_internals.py does not list; add "
                         "an entry (symbol, where, what we rely on, a check) for each: " + "; ".join(missing))


def test_each_entry_lists_every_file_that_uses_it():
    """`where` stays true: every listed file exists and names the symbol, and every file the scan finds using a
    non-public import or a private upstream name is listed."""
    scan = code_scan()
    wrong = []
    for entry in INTERNALS:
        for where in entry.where:
            path = ROOT / where
            if not path.is_file() or not any(name in path.read_text() for name in entry.names):
                wrong.append(f"{entry.symbol}: {where} does not use it")
    for name, files in scan["imports"].items():
        if name in BY_SYMBOL and files - set(BY_SYMBOL[name].where):
            wrong.append(f"{name}: also used by {sorted(files - set(BY_SYMBOL[name].where))}")
    listed = defaultdict(set)
    for entry in INTERNALS:
        for name in entry.names:
            listed[name].update(entry.where)
    for kind in ("super", "private"):
        for name, files in scan[kind].items():
            if name in listed and files - listed[name]:
                wrong.append(f"{name}: also used by {sorted(files - listed[name])}")
    assert not wrong, "; ".join(wrong)


def test_the_training_code_reaches_upstream_internals_only_through_compat():
    """trainers/compat.py is the one place the training code imports from inside an upstream package."""
    offenders = []
    for path in sorted((ROOT / "trainers").glob("*.py")):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for module, name in upstream_import(node):
                if (dotted := non_public(module, name)) is not None:
                    offenders.append(f"{path.name}: {dotted}")
    assert not offenders, f"import these through trainers/compat.py: {offenders}"


def test_the_scan_sees_imports_super_calls_and_private_names():
    scan = code_scan()
    assert "transformers.masking_utils.create_bidirectional_mask" in scan["imports"]
    assert "transformers.initialization" in scan["imports"]  # `from transformers import initialization as init`
    assert "transformers.Trainer" not in scan["imports"]  # the top-level namespace is public
    assert {"_save_checkpoint", "_prepare_dataset", "__post_init__"} <= set(scan["super"])
    assert {"_step", "_attn_implementation", "_no_split_modules", "_internal_call", "_entropy_bonus_enabled",
            "_from_pipeline"} <= set(scan["private"])


# ---------------------------------------------------------------------------------------------------- README
README_HEADING = "### Upstream internals we rely on"


def markdown_table() -> str:
    """The README's table, generated from INTERNALS."""
    rows = ["| symbol | where | what we rely on |", "| --- | --- | --- |"]
    for entry in INTERNALS:
        where = ", ".join(path.split("/")[-1] if path.startswith(("modeling_llada/", "trainers/")) else path
                          for path in entry.where)
        since = f" (from {entry.since[0]} {entry.since[1]})" if entry.since else ""
        rows.append(f"| `{entry.symbol}` | {where} | {entry.relies_on.replace('|', '/')}{since} |")
    return "\n".join(rows)


def test_the_readme_lists_the_same_symbols():
    text = (ROOT / "README.md").read_text()
    assert README_HEADING in text, f"README.md has no '{README_HEADING}' section"
    section = text.split(README_HEADING, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    missing = [entry.symbol for entry in INTERNALS if entry.symbol not in listed]
    extra = [symbol for symbol in listed if symbol not in BY_SYMBOL]
    assert not missing and not extra, (f"README.md's inventory differs from INTERNALS (missing {missing}, not in "
                                       f"the inventory {extra}); paste `python tests/test_upstream_internals.py`")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(markdown_table())
