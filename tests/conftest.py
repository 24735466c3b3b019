"""Shared fixtures: paths to the real public data beside the repo, and fresh workbench homes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real LoRA files, metadata dumps, Civitai data and recorded API responses."""
    assert SHARED_DATA.is_dir(), f"expected the shared data folder at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty workbench home."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def wb(tmp_path: Path, library: Path) -> Any:
    """A fresh home with the module's ``library`` fixture scanned into it (modules define ``library``;
    a module that needs another workbench defines its own ``wb``)."""
    import workbench

    bench = workbench.open(tmp_path / "home")
    bench.scan([library], progress=False)
    return bench
