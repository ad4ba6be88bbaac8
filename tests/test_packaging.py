"""The supported range CI tests is the one pyproject.toml declares."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declared_floors() -> dict[str, str]:
    """`name>=version` of every requirement in pyproject.toml (dependencies and every extra)."""
    text = (ROOT / "pyproject.toml").read_text()
    text = text.split("\n[project]", 1)[1].split("\n[tool.", 1)[0]  # not the build system's requirements
    floors = {}
    for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?>=([0-9][^,"]*)', text):
        floors[name.lower().replace("_", "-")] = version
    return floors


def pinned_floors() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "floor-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def same_release(a: str, b: str) -> bool:
    """2.6 == 2.6.0: compare release numbers padded with zeros."""
    parts_a, parts_b = [int(x) for x in a.split(".")], [int(x) for x in b.split(".")]
    width = max(len(parts_a), len(parts_b))
    return parts_a + [0] * (width - len(parts_a)) == parts_b + [0] * (width - len(parts_b))


def test_the_floor_constraints_pin_every_declared_lower_bound_exactly():
    declared, pinned = declared_floors(), pinned_floors()
    assert {"torch", "transformers", "trl", "peft", "datasets", "accelerate"} <= declared.keys()
    assert declared.keys() == pinned.keys()
    mismatched = {name: (declared[name], pinned[name]) for name in declared
                  if not same_release(declared[name], pinned[name])}
    assert not mismatched, f"pyproject floor vs .ci/floor-constraints.txt: {mismatched}"


# their internals are ours to track (tests/test_upstream_internals.py); .ci/run's `capped` names the same
CAPPED = ("transformers", "trl", "peft", "accelerate", "datasets", "lm-eval", "bitsandbytes")


def declared_caps() -> dict[str, str]:
    """`name<version` of every capped requirement in pyproject.toml (dependencies and extras)."""
    text = (ROOT / "pyproject.toml").read_text().split("\n[project]", 1)[1].split("\n[tool.", 1)[0]
    return {name.lower(): cap for name, cap in re.findall(r'"([A-Za-z0-9_.\-]+)>=[^,"]+,<([0-9][^,"]*)"', text)}


def test_ci_upgrades_and_checks_exactly_the_capped_packages():
    line = re.search(r'^capped="([^"]*)"', (ROOT / ".ci" / "run").read_text(), re.M)
    assert line is not None and tuple(line[1].split()) == CAPPED


def test_the_packages_whose_internals_we_use_are_capped_at_a_minor_above_the_floor():
    caps, floors = declared_caps(), declared_floors()
    missing = [name for name in CAPPED if name not in caps]
    assert not missing, f"pyproject.toml must cap {missing} at the next untested minor (`>=floor,<X.Y`)"
    for name in CAPPED:
        cap = [int(x) for x in caps[name].split(".")]
        assert len(cap) == 2, f"{name}: cap at a minor release (<X.Y), got <{caps[name]}"
        assert [int(x) for x in floors[name].split(".")[:2]] < cap, f"{name}: floor {floors[name]} >= cap {cap}"


def test_the_installed_releases_lie_in_the_declared_range():
    """What this suite runs on is what pyproject.toml declares (the upcoming CI run installs past the caps on purpose
    and says so: LLADA_HF_UPCOMING=1)."""
    import os
    from importlib.metadata import version

    from packaging.version import Version

    caps, floors = declared_caps(), declared_floors()
    for name in CAPPED:
        installed = Version(version(name))
        assert installed >= Version(floors[name]), f"{name} {installed} is below the declared floor {floors[name]}"
        if not os.environ.get("LLADA_HF_UPCOMING"):
            assert installed < Version(caps[name]), f"{name} {installed} is past the declared cap <{caps[name]}"
