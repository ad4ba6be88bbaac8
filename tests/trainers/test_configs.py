"""The trainer configs are composed from small mixins, each field and method declared in exactly one of our classes
(as TRL's configs declare only their own fields)."""

import dataclasses
import inspect
from collections import defaultdict
from pathlib import Path

import pytest

from trainers import DiffuGRPOConfig, MaskedDiffusionConfig, MaskedDiffusionSFTConfig, VRPOConfig

CONFIGS = (MaskedDiffusionConfig, MaskedDiffusionSFTConfig, VRPOConfig, DiffuGRPOConfig)
OUR_PACKAGES = ("trainers", "modeling_llada", "hub_cards", "llada_cli")
ROOT = Path(__file__).resolve().parents[2]
# What each config declares for itself, on purpose: the dataclass hook that runs its own checks, and a setting whose
# default differs (the reference pre-trains with random lengths 1% of the time; SFT never cuts).
PER_CONFIG = {"__post_init__", "random_length_probability"}


def is_ours(cls) -> bool:
    return cls.__module__.split(".")[0] in OUR_PACKAGES


def own_declarations(cls) -> set[str]:
    """The dataclass fields and the methods written in the body of `cls` (not those `@dataclass` generates, whose
    code lives outside this repository)."""
    names = {name for name in inspect.get_annotations(cls) if name in getattr(cls, "__dataclass_fields__", {})}
    for name, value in vars(cls).items():
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        where = Path(function.__code__.co_filename) if inspect.isfunction(function) else None
        if where is not None and where.is_file() and where.resolve().is_relative_to(ROOT):
            names.add(name)
    return names


def declarations(config_classes) -> dict[str, list[str]]:
    """Every field and method name our classes in the MROs of `config_classes` declare: name -> those classes."""
    owners = defaultdict(list)
    ours = {cls for config_class in config_classes for cls in config_class.__mro__ if is_ours(cls)}
    for cls in sorted(ours, key=lambda cls: cls.__name__):
        for name in own_declarations(cls):
            owners[name].append(cls.__name__)
    return owners


def declared_twice(config_classes) -> dict[str, list[str]]:
    """The names that more than one of our classes declares (the per-config names aside), with those classes."""
    return {name: classes for name, classes in declarations(config_classes).items()
            if len(classes) > 1 and name not in PER_CONFIG}


def test_each_field_and_method_is_declared_in_one_of_our_classes():
    assert declared_twice(CONFIGS) == {}


def test_the_per_config_names_belong_to_the_configs_themselves():
    """No shared mixin declares them, and the setting two configs declare has a default of its own in each."""
    owners = declarations(CONFIGS)
    assert set(owners["__post_init__"]) | set(owners["random_length_probability"]) <= {c.__name__ for c in CONFIGS}
    declaring = [c for c in CONFIGS if "random_length_probability" in own_declarations(c)]
    defaults = {c.__dataclass_fields__["random_length_probability"].default for c in declaring}
    assert len(declaring) == 2 and len(defaults) == 2


def test_the_check_finds_a_field_or_method_declared_twice():
    @dataclasses.dataclass
    class Shared:
        seed: int = 1

        def check(self) -> None: ...

    @dataclasses.dataclass
    class First(Shared):
        seed: int = 2
        own: int = 3

        def __post_init__(self) -> None: ...

    @dataclasses.dataclass
    class Second:
        own: int = 4

        def check(self) -> None: ...

        def __post_init__(self) -> None: ...

    for cls in (Shared, First, Second):
        cls.__module__ = "trainers.example"
    assert declared_twice([First, Second]) == {"seed": ["First", "Shared"], "own": ["First", "Second"],
                                               "check": ["Second", "Shared"]}


@pytest.mark.parametrize("config_class, random_length", [(MaskedDiffusionConfig, 0.01),
                                                          (MaskedDiffusionSFTConfig, 0.0)])
def test_the_shared_settings_keep_their_defaults(config_class, random_length):
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    assert defaults["random_length_probability"] == random_length
    assert (defaults["mask_eps"], defaults["eval_noise_seed"]) == (1e-3, 1234)
    assert (defaults["activation_checkpointing"], defaults["dataloader_pin_memory"]) == (False, None)


def test_vrpo_and_grpo_share_the_cpu_safe_defaults_and_vrpo_the_noise_settings():
    for config_class in (VRPOConfig, DiffuGRPOConfig):
        defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
        assert (defaults["bf16"], defaults["activation_checkpointing"], defaults["gradient_checkpointing"],
                defaults["dataloader_pin_memory"]) == (None, False, None, None)
    defaults = {field.name: field.default for field in dataclasses.fields(VRPOConfig)}
    assert (defaults["mask_eps"], defaults["eval_noise_seed"]) == (1e-3, 1234)
    with pytest.raises(ValueError, match=r"mask_eps must be in \(0, 1\), got 1.0"):
        VRPOConfig(output_dir="unused", use_cpu=True, mask_eps=1.0)
