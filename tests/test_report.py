"""The papermill report runs on a real library and reports what is in it."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from lora_factory import write_kohya_lora

import workbench
from workbench import analytics
from workbench.cli import main


def test_analytics_on_a_small_library(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(4):
        write_kohya_lora(lib / f"l{i}.safetensors", seed=i, base="SD1" if i < 3 else "SDXL")
    (lib / "broken.safetensors").write_bytes(b"\x01")
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    facts = analytics.summary(wb)
    assert facts["loras"] == 5 and facts["with_errors"] == 1 and facts["unhashed"] == 4
    by_base = analytics.composition(wb, "base_model").set_index("base_model")["count"].to_dict()
    assert by_base == {"SD1": 3, "SDXL": 1, "unknown": 1}
    assert set(analytics.figures(wb)) == {"base_models", "network_types", "ranks", "top_tags"}


def test_report_cli_runs_the_notebook_with_papermill(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(3):
        write_kohya_lora(lib / f"style_{i}.safetensors", seed=i)
    out = tmp_path / "out" / "report.ipynb"
    html = tmp_path / "out" / "report.html"
    assert main(["report", "--home", str(home), "--library", str(lib), "--out", str(out), "--html", str(html)]) == 0
    nb = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "scanned 3 files" in text and "SD1" in text
    assert html.read_text().count("<html") == 1
