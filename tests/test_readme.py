"""The README points only at things that exist, and CI runs every block it marks as runnable."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# file paths the README names in backticks or links: a folder prefix we ship, or a top-level file
REPO_PATH = re.compile(r"^(?:(?:modeling_llada|trainers|hub_cards|llada_cli|examples|benchmarks|tests|\.ci)/[\w./-]+"
                       r"|[\w-]+\.(?:md|toml))$")


def _markdown_targets(text: str) -> list[str]:
    """Targets of [text](target) links and ![alt](target) images, anchors and URLs left out."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]


def _code_paths(text: str) -> list[str]:
    """Repository paths named in inline code or in commands (`python examples/sft.py ...`)."""
    words = re.findall(r"`([^`\n]+)`", text) + re.findall(r"^(?:python|bash|accelerate launch|torchrun)[^\n]*",
                                                           text, flags=re.MULTILINE)
    found = []
    for chunk in words:
        for word in chunk.split():
            word = word.strip("'\",;:()")
            if REPO_PATH.match(word) and "<" not in word and "*" not in word:
                found.append(word)
    return found


def test_every_link_and_image_in_the_readme_exists():
    targets = _markdown_targets(README)
    assert "REFERENCE.md" in targets, "the README links to REFERENCE.md"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_repository_path_the_readme_names_exists():
    paths = _code_paths(README)
    assert "examples/pretrain.py" in paths and "benchmarks/bench_cli.py" in paths  # the scan sees commands and code
    missing = sorted({p for p in paths if not (ROOT / p).exists()})
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_the_link_checker_catches_a_missing_file():
    assert _markdown_targets("see [the page](docs/none.md) and ![x](a.png)") == ["docs/none.md", "a.png"]
    assert _markdown_targets("[web](https://example.com) [anchor](#set-up)") == []
    assert _code_paths("run `examples/none.py` and `pip install x`") == ["examples/none.py"]


def test_ci_runs_every_marked_block_and_the_marked_blocks_are_commands():
    markers = re.findall(r"<!-- ci:(\w+) -->\n```bash\n", README)
    assert {"setup", "main", "test", "path"} <= set(markers)
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in set(markers):
        assert f"readme_block {marker}" in ci, f"README block ci:{marker} is not run by .ci/run"


def test_ci_script_extracts_the_blocks_exactly(tmp_path):
    """.ci/run's extractor prints the block after a marker and nothing else."""
    script = (ROOT / ".ci" / "run").read_text()
    extractor = script[script.index("readme_block() {"):script.index("\n}\n", script.index("readme_block() {")) + 3]
    (tmp_path / "README.md").write_text("intro\n<!-- ci:demo -->\n```bash\necho one\necho two\n```\n```bash\nno\n```\n")
    out = subprocess.run(["bash", "-c", f"{extractor}\nreadme_block demo"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out == "echo one\necho two\n"
