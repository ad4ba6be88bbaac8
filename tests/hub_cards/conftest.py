"""Fixtures shared by the publishing tests."""

import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """tempfile's folder, for this test alone: what publishing leaves there is this test's doing."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root
