"""Several processes (kernels, a worker, a rescan) read and write one catalog for 20+ s at once.

No caller may see a lock error and no write may be lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from lora_factory import write_kohya_lora

import workbench

_WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    import workbench
    home, index, seconds, lib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    wb = workbench.open(home)
    ids = [int(i) for i in wb.catalog.query()["id"]]
    written, reads, scans = [], 0, 0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        target = ids[n % len(ids)]
        tag = f"p{index}-{n}"
        wb.catalog.add_tags([target], [tag])
        written.append([target, tag])
        wb.catalog.update(target, rating=n % 6, notes=f"process {index} wrote {n}")
        reads += len(wb.catalog.query(tags_any=[tag]))
        if index == 0 and n % 10 == 0:
            wb.scan([lib], progress=False)
            scans += 1
        n += 1
    print(json.dumps({"written": written, "reads": reads, "scans": scans}))
    """
)


def test_four_processes_read_and_write_for_twenty_seconds(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for i in range(6):
        write_kohya_lora(lib / f"lora_{i}.safetensors", seed=i)
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(home), str(i), "20", str(lib)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"a process failed:\n{err[-3000:]}"
        assert "lock" not in err.lower(), err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert time.monotonic() - started >= 20
    written = [(lora_id, tag) for r in results for lora_id, tag in r["written"]]
    assert len(written) >= 16, "the processes barely got to write"
    assert results[0]["scans"] >= 1
    # every tag any process wrote is still there: no lost update
    frame = wb.catalog.query()
    tags_by_id = {int(i): set(t) for i, t in zip(frame["id"], frame["tags"])}
    lost = [(i, t) for i, t in written if t not in tags_by_id[i]]
    assert not lost, f"{len(lost)} writes lost, e.g. {lost[:5]}"
    assert all(r["reads"] >= len(r["written"]) for r in results)  # each process saw its own writes
