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


def test_report_reads_like_a_report(home: Path, tmp_path: Path) -> None:
    """Run date and period, summary sentences, integer counts, human labels, no prompts, no NaN, small HTML."""
    lib = tmp_path / "lib"
    for i in range(3):
        write_kohya_lora(lib / f"style_{i}.safetensors", seed=i)
    (lib / "odd.safetensors").write_bytes(b"\x01")  # unknown base model, an error
    out, html = tmp_path / "out" / "report.ipynb", tmp_path / "out" / "report.html"
    assert main(["report", "--home", str(home), "--library", str(lib), "--out", str(out), "--html", str(html)]) == 0
    page = html.read_text()
    assert "Run:" in page and "the last 30 days" in page
    assert "The library holds 4 LoRAs" in page and "1 cannot be read" in page
    assert "3 files are not hashed yet, so duplicates among them are not known" in page
    assert "Nothing was generated in the last 30 days." in page
    assert "LoRAs in the catalog" in page and "local_files" not in page and "4.000" not in page
    assert "Nothing yet: no LoRA has been used" in page
    assert "NaN" not in page and "Out[" not in page and "In&nbsp;[" not in page and "None" not in page
    assert "https://" not in page  # nothing fetched from a CDN
    assert len(page.encode()) < 100_000, len(page.encode())


def test_job_statistics(home: Path) -> None:
    wb = workbench.open(home)
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO jobs (id, state, created_at, started_at, finished_at) VALUES "
            "('a', 'succeeded', now(), now() - INTERVAL 3 SECOND, now()), "
            "('b', 'failed', now(), now(), now()), ('c', 'queued', now(), NULL, NULL)"
        )
    stats = analytics.job_stats(wb, 30)
    assert stats["total"] == 3 and stats["by_state"] == {"succeeded": 1, "failed": 1, "queued": 1}
    assert stats["success_rate"] == 0.5 and 2.5 < stats["median_seconds"] < 3.5
    assert "3 generation jobs ran, 50% of finished jobs succeeded" in " ".join(analytics.summary_sentences(wb))
