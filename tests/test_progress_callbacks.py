"""The progress callbacks the shared worker reports to pages: scan (both the in-process and the pool
path) and hashing report (done, total) ending at total, never going backwards."""

from __future__ import annotations

import shutil
from pathlib import Path

import workbench
from workbench.catalog import hash_catalog, scan
from workbench.generate import write_tiny_loras


def _steady(calls: list[tuple[int, int]], total: int) -> None:
    assert calls and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and {t for _, t in calls} == {total}


def test_scan_and_hash_report_progress(tmp_path: Path) -> None:
    source = tmp_path / "tiny"
    write_tiny_loras(source)
    library = tmp_path / "library"
    library.mkdir()
    for i in range(420):  # above the scanner's pool threshold: inspected in worker processes
        shutil.copy(source / "tiny_pixelart.safetensors", library / f"copy_{i:03d}.safetensors")
    wb = workbench.open(tmp_path / "home")
    calls: list[tuple[int, int]] = []
    report = scan(wb.db, [library], workers=2, progress=False, on_progress=lambda d, t: calls.append((d, t)))
    assert report.seen == 420
    _steady(calls, 420)

    small = workbench.open(tmp_path / "home-small")
    calls = []
    scan(small.db, [source], workers=1, progress=False, on_progress=lambda d, t: calls.append((d, t)))
    _steady(calls, len(list(source.glob("*.safetensors"))))

    sizes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    calls = []
    assert hash_catalog(small.db, progress=False, workers=1, on_progress=lambda d, t: calls.append((d, t))) == 4
    _steady(calls, sizes)
