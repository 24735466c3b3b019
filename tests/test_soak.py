"""Eight processes on one catalog for 20 s (a rescanning kernel, a bulk editor, six editing/reading kernels):
no write lost, no error surfaced to any caller. Latency figures are printed, never asserted (see benchmarks/soak.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_eight_processes_for_twenty_seconds_lose_nothing_and_surface_no_error() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "soak.py"),
            "--procs",
            "8",
            "--seconds",
            "20",
            "--entries",
            "2000",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print({k: v for k, v in figures.items() if not k.endswith("examples")})
    assert figures["surfaced_errors"] == 0, figures["error_examples"]
    assert figures["lost_writes"] == 0, figures["lost_examples"]
    assert figures["writes"] >= 8 and figures["reads"] >= 8, "the processes barely got to work"
    assert min(figures["writes_per_plain_process_min_max"]) >= 1, "a writer was starved"
