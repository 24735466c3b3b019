"""Archive import of N entries (default 5,000): wall time, write transactions and the longest exclusive hold.

Why: the probe saw 4,944 entries take 798 s, one transaction each, starving every other kernel. An import
now verifies the whole archive first and applies everything in one short transaction.

    PYTHONPATH=. python benchmarks/archive_import.py            # 5,000 entries
    PYTHONPATH=. python benchmarks/archive_import.py --n 20000

Raw baseline (same run, same machine): read and parse loras.jsonl from the zip and write the same user
rows into a fresh catalog copy in one DuckDB transaction by hand, with no verification, matching or undo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import zipfile
from pathlib import Path


def _catalog_only(wb, n: int) -> list[int]:
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO loras (path, origin, file_name, name, size_bytes) "
            "SELECT '', 'civitai', 'l' || i || '.safetensors', 'l' || i, 1000 + i FROM range(?) t(i)",
            [n],
        )
    return [int(i) for i in wb.db.read_df("SELECT id FROM loras ORDER BY id")["id"]]


def raw_import(wb, archive: Path) -> float:
    """The hand-written importer: parse, then one executemany-free INSERT from a DataFrame."""
    import pandas as pd

    started = time.perf_counter()
    with zipfile.ZipFile(archive) as zf:
        records = [json.loads(line) for line in zf.read("loras.jsonl").decode().splitlines() if line.strip()]
    ids = dict(zip(*[wb.db.read_df("SELECT file_name, id FROM loras")[c] for c in ("file_name", "id")]))
    frame = pd.DataFrame(
        {
            "lora_id": [int(ids[r["file_name"]]) for r in records],
            "rating": [r["user_fields"].get("rating") for r in records],
            "notes": [r["user_fields"].get("notes") for r in records],
        }
    )
    with wb.db.write() as con:
        con.register("_raw", frame)
        con.execute("INSERT INTO user_fields (lora_id, rating, notes) SELECT lora_id, rating, notes FROM _raw")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()

    import workbench
    from workbench.catalog import Database

    with tempfile.TemporaryDirectory(prefix="wb-archive-bench-") as tmp:
        base = Path(tmp)
        source = workbench.open(base / "source")
        ids = _catalog_only(source, args.n)
        source.catalog.bulk_update(ids, rating=4, tags=["bulk", "import"], notes="from the archive")
        archive = source.export(base / "big.zip")

        raw_wb = workbench.open(base / "raw")
        _catalog_only(raw_wb, args.n)
        raw_s = raw_import(raw_wb, archive)

        ours_wb = workbench.open(base / "ours")
        _catalog_only(ours_wb, args.n)
        holds: list[float] = []
        real_write = Database.write

        @contextlib.contextmanager
        def timed(self):
            t = time.perf_counter()
            with real_write(self) as con:
                yield con
            holds.append(time.perf_counter() - t)

        Database.write = timed  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            dry = ours_wb.import_archive(archive, dry_run=True)
            dry_s = time.perf_counter() - started
            started = time.perf_counter()
            report = ours_wb.import_archive(archive)
            ours_s = time.perf_counter() - started
        finally:
            Database.write = real_write  # type: ignore[method-assign]
    assert report.updated == args.n == dry.updated, report
    print(f"archive import of {args.n:,} entries (user fields, tags, notes)")
    print(
        f"  ours: dry run {dry_s:.2f} s, import {ours_s:.2f} s, {len(holds)} write transaction(s), "
        f"longest exclusive hold {max(holds) * 1000:.0f} ms (incl. open + commit)"
    )
    print(f"  raw baseline (parse + one INSERT, no checks): {raw_s:.2f} s; ratio ours/raw {ours_s / raw_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
