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

#: Set by CI (``.ci/run``), where every service and build the tests need is installed: a test that skips itself
#: there (no native kernels, no shared data, a missing package) hides a gap, so it fails instead.
NO_SKIPS = os.environ.get("WORKBENCH_NO_SKIPS") == "1"


def _refuse_skip(report: Any) -> None:
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under WORKBENCH_NO_SKIPS=1 (CI must run every test): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield
    _refuse_skip(outcome.get_result())


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
