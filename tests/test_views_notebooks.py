"""The curated notebooks run top to bottom on a small library, and are committed without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from lora_factory import write_kohya_lora
from nbclient import NotebookClient

import workbench

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def small_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("nb") / "lib"
    for i, base in enumerate(["SD1", "SDXL", "SD1", "SDXL", "SD1"]):
        write_kohya_lora(
            lib / ("styles" if i % 2 else "characters") / f"nb_{i}.safetensors",
            base=base,
            seed=i,
            metadata={
                "ss_output_name": f"Notebook {i}",
                "ss_tag_frequency": json.dumps({"img": {"style": 3, f"tag{i}": 1}}),
            },
        )
    return lib


def run(name: str, home: Path, library: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_LIBRARY", str(library))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


@pytest.mark.parametrize("name", ["dashboard.ipynb", "explore.ipynb"])
def test_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_dashboard_notebook_scans_an_empty_catalog_and_shows_the_library_tab(
    tmp_path: Path, small_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = run("dashboard.ipynb", tmp_path / "home", small_library, monkeypatch)
    assert workbench.open(tmp_path / "home").catalog.count() == 5
    last = notebook.cells[-1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last)


def test_explore_notebook_runs(tmp_path: Path, small_library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = run("explore.ipynb", tmp_path / "home", small_library, monkeypatch)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    plots = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert len(plots) >= 4
