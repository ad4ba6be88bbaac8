"""The four layers: modeling_llada (model) -> trainers (training) -> hub_cards (publishing) -> llada_cli (application).
A layer imports only the layers before it; the application's old import paths under trainers/ keep working."""

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["modeling_llada", "trainers", "hub_cards", "llada_cli"]
# modules kept under trainers/ and hub_cards/ for code written for the old layout: each is an alias of the
# application module of the same name (they are never imported by the library itself)
MOVED = ["commands", "quickstart", "live_view", "local_data", "loading"]


def imported_packages(path: Path) -> set[str]:
    """Top-level package names a file imports, at module level or inside functions (relative imports excluded)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def library_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).glob("*.py"))
    return [f for f in files if not (package == "trainers" and f.stem in MOVED)]


@pytest.mark.parametrize("package", LAYERS)
def test_a_layer_imports_only_the_layers_before_it(package):
    later = set(LAYERS[LAYERS.index(package) + 1:])
    offenders = {}
    for path in library_files(package):
        found = imported_packages(path) & later
        # `hub_cards.publish.main` and `trainers.lm_eval_llada.main` resolve lazily to the application's commands
        if path.name in ("publish.py", "lm_eval_llada.py"):
            found -= {"llada_cli"}
        # the trainers write their model card through hub_cards when they save (lazily, inside save_model)
        if package == "trainers" and path.name == "base.py":
            found -= {"hub_cards"}
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert not offenders, f"imports from later layers: {offenders}"


def test_the_model_files_import_only_torch_and_transformers():
    for path in library_files("modeling_llada"):
        outside = imported_packages(path) - set(sys.stdlib_module_names) - {"torch", "transformers"}
        assert not outside, f"{path.name} imports {sorted(outside)}: the files that travel to the Hub must not"


def test_importing_the_libraries_does_not_load_the_application():
    code = ("import sys, modeling_llada, trainers, hub_cards, trainers.lm_eval_llada, hub_cards.publish; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llada_cli'))")
    pytest.importorskip("lm_eval")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", MOVED)
def test_old_import_paths_still_work_and_say_where_the_module_went(name):
    import importlib

    new = importlib.import_module(f"llada_cli.{name}")
    sys.modules.pop(f"trainers.{name}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module(f"trainers.{name}")
    assert old is new  # the same module object: attributes, patches and isinstance checks agree
    assert any(f"llada_cli.{name}" in str(w.message) and w.category is FutureWarning for w in caught)


def test_moved_entry_points_still_resolve():
    import importlib

    import llada_cli.evaluate
    import llada_cli.publish

    # (`hub_cards.publish` the attribute is the publish function; the module is reached by its full name)
    assert importlib.import_module("hub_cards.publish").main is llada_cli.publish.main
    pytest.importorskip("lm_eval")
    assert importlib.import_module("trainers.lm_eval_llada").main is llada_cli.evaluate.main
