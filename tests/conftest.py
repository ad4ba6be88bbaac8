"""Test-wide set-up: no network, a throw-away HF_HOME, small shared fixtures."""

import json
import os
import tempfile
from pathlib import Path

# Before transformers / huggingface_hub are imported anywhere: never touch the network, never write to ~/.cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="llada-hf-test-home-"))
os.environ.setdefault("LLADA_HF_CACHE", tempfile.mkdtemp(prefix="llada-hf-test-cache-"))  # e.g. the --help cache
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import modeling_llada  # noqa: E402,F401  (registers the Auto classes)
from modeling_llada import LLaDAModelLM  # noqa: E402

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "llada-tiny-official"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """The tiny checkpoint in the official Hub format (no code files, old auto_map)."""
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def reference() -> dict:
    """Outputs recorded from the official LLaDA implementation on the fixture checkpoint."""
    return json.loads((FIXTURE_DIR / "reference_outputs.json").read_text())


@pytest.fixture(scope="session")
def official_model(fixture_dir) -> LLaDAModelLM:
    from transformers import AutoModel

    return AutoModel.from_pretrained(fixture_dir).eval()
