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
