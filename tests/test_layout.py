"""The four layers: modeling_llada (model) -> hub_cards (cards and publishing) -> trainers (training, which writes its
card through hub_cards) -> llada_cli (application). A layer imports only the layers before it, lazily inside a function
too, with no exception; no module forwards names to another with a module `__getattr__`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["modeling_llada", "hub_cards", "trainers", "llada_cli"]


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
    return sorted((ROOT / package).glob("*.py"))


@pytest.mark.parametrize("package", LAYERS)
def test_a_layer_imports_only_the_layers_before_it(package):
    later = set(LAYERS[LAYERS.index(package) + 1:])
    offenders = {}
    for path in library_files(package):
        found = imported_packages(path) & later
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert not offenders, f"imports from later layers: {offenders}"


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("import os\n\ndef f():\n    from llada_cli.main import main\n    import trainers.base\n")
    assert imported_packages(path) == {"os", "llada_cli", "trainers"}


@pytest.mark.parametrize("package", LAYERS)
def test_no_module_forwards_names_with_a_module_getattr(package):
    forwarding = [str(path.relative_to(ROOT)) for path in library_files(package)
                  if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                         for node in ast.parse(path.read_text()).body)]
    assert not forwarding, f"module-level __getattr__ in {forwarding}: import the name from where it is defined"


def test_the_model_files_import_only_torch_and_transformers():
    for path in library_files("modeling_llada"):
        outside = imported_packages(path) - set(sys.stdlib_module_names) - {"torch", "transformers"}
        assert not outside, f"{path.name} imports {sorted(outside)}: the files that travel to the Hub must not"


def test_importing_the_libraries_does_not_load_the_application():
    code = ("import sys, modeling_llada, hub_cards, hub_cards.publish, trainers, trainers.lm_eval_llada; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llada_cli'))")
    pytest.importorskip("lm_eval")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_hub_cards_loads_without_the_training_code():
    code = ("import sys, hub_cards, hub_cards.publish, hub_cards.compat; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'trainers', 'llada_cli'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
