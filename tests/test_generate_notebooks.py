"""The generate and compare notebooks run top to bottom on the tiny pipeline, and are committed without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import workbench

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["generate.ipynb", "compare.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def _run(name: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.delenv("WORKBENCH_LIBRARY", raising=False)
    monkeypatch.delenv("WORKBENCH_BACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch uses one thread (shared CI machines)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    return notebook


def _text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_generate_notebook_generates_on_the_tiny_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _run("generate.ipynb", tmp_path / "home", monkeypatch)
    text = _text(notebook)
    assert "random weights" in text and "succeeded" in text
    wb = workbench.open(tmp_path / "home")
    history = wb.history.list()
    assert len(history) == 2 and all(len(h) == 2 for h in history["loras"])
    assert wb.recipes.names() == ["watercolor + neon"]
    assert any("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
    last = notebook.cells[-1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last)


def test_compare_notebook_builds_a_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = _run("compare.ipynb", tmp_path / "home", monkeypatch)
    assert "[(1, True), (2, True)]" in _text(notebook)  # weight 0 == base image in every row
    grids = list((tmp_path / "home" / "compare").glob("*.png"))
    assert len(grids) == 1
    assert len(workbench.open(tmp_path / "home").history.list()) == 12
