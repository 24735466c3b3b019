"""Soak: N processes read and write one catalog at once (kernels, a rescanning kernel, a bulk editor).

Why: the catalog is one DuckDB file shared by every kernel; the design promises that nobody sees a
lock error, no write is lost, readers never wait behind a whole scan and writers are not starved.
This drives exactly that and prints read p99 / write p99 (goals: <= 500 ms / <= 1 s), lost writes,
surfaced errors and the spread of writes per process (fairness), next to a raw baseline: the same
single-row read and write by one process alone, measured in the same run.

    PYTHONPATH=. python benchmarks/soak.py                    # 8 processes, 60 s
    PYTHONPATH=. python benchmarks/soak.py --procs 8 --seconds 20 --json

Roles: process 0 rescans a small library every few operations; process 1 is a bulk editor
(``bulk_update`` of 1,000 ids, ``add_tags`` on 500); the others add one unique tag per write and
read it back through the catalog (snapshot refresh included). Every tag written is checked at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    import workbench
    home, index, seconds, lib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    wb = workbench.open(home)
    ids = [int(i) for i in wb.db.read_df("SELECT id FROM loras ORDER BY id")["id"]]
    rng = random.Random(index)
    reads, writes, written, errors, n = [], [], [], [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        try:
            if index == 0 and n % 8 == 0:
                wb.scan([lib], progress=False, workers=1)
                continue
            if index == 1 and n % 4 == 0:
                sample = rng.sample(ids, min(1000, len(ids)))
                t = time.perf_counter()
                wb.catalog.bulk_update(sample, rating=n % 6, notes=f"bulk {n}")
                writes.append(time.perf_counter() - t)
                tag = f"b{index}-{n}"
                t = time.perf_counter()
                wb.catalog.add_tags(sample[:500], [tag])
                writes.append(time.perf_counter() - t)
                written.extend([i, tag] for i in sample[:500])
                continue
            target = rng.choice(ids)
            tag = f"p{index}-{n}"
            t = time.perf_counter()
            wb.catalog.add_tags([target], [tag])
            writes.append(time.perf_counter() - t)
            written.append([target, tag])
            t = time.perf_counter()
            found = wb.catalog.query(tags_any=[tag])
            reads.append(time.perf_counter() - t)
            if target not in set(int(i) for i in found["id"]):
                errors.append(f"read-back of {tag} missed it")
            t = time.perf_counter()
            wb.db.read_df("SELECT rating, notes FROM user_fields WHERE lora_id = ?", [rng.choice(ids)])
            reads.append(time.perf_counter() - t)
        except Exception as exc:  # a surfaced error: what a user would have seen
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    print(json.dumps({"index": index, "reads": reads, "writes": writes, "written": written, "errors": errors}))
    """
)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def prepare(home: Path, lib: Path, entries: int) -> None:
    """A catalog with ``entries`` catalog-only LoRAs plus a small scanned library."""
    sys.path.insert(0, str(REPO / "tests"))
    from lora_factory import write_kohya_lora

    import workbench

    for i in range(6):
        write_kohya_lora(lib / f"lora_{i}.safetensors", seed=i)
    wb = workbench.open(home)
    wb.scan([lib], progress=False, workers=1)
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO loras (path, origin, file_name, name, size_bytes) "
            "SELECT '', 'civitai', 'soak' || i || '.safetensors', 'soak' || i, i FROM range(?) t(i)",
            [entries],
        )


def baseline(home: Path, rounds: int = 30) -> dict[str, float]:
    """One process alone: the same single-row write and read, median seconds."""
    import workbench

    wb = workbench.open(home)
    target = int(wb.db.read_df("SELECT min(id) AS i FROM loras")["i"][0])
    w, r = [], []
    for n in range(rounds):
        t = time.perf_counter()
        wb.catalog.add_tags([target], [f"base-{n}"])
        w.append(time.perf_counter() - t)
        t = time.perf_counter()
        wb.catalog.query(tags_any=[f"base-{n}"])
        r.append(time.perf_counter() - t)
    return {"write_p50": _percentile(w, 50), "read_p50": _percentile(r, 50)}


def edit_holds(home: Path) -> dict[str, float]:
    """Longest exclusive hold (open + work + commit) of bulk_update / add_tags / undo over every entry, alone,
    next to the raw floor: an empty write transaction on the same catalog."""
    import contextlib

    import workbench
    from workbench.catalog import Database

    wb = workbench.open(home)
    ids = [int(i) for i in wb.db.read_df("SELECT id FROM loras")["id"]]
    holds: list[float] = []
    real_write = Database.write

    @contextlib.contextmanager
    def timed(self):
        t = time.perf_counter()
        with real_write(self) as con:
            yield con
        holds.append(time.perf_counter() - t)

    out: dict[str, float] = {}
    Database.write = timed  # type: ignore[method-assign]
    try:
        for name, edit in (
            ("empty_write", None),
            ("bulk_update", lambda: wb.catalog.bulk_update(ids, rating=3, notes="held")),
            ("add_tags", lambda: wb.catalog.add_tags(ids, ["held"])),
            ("undo", lambda: wb.catalog.undo()),
        ):
            holds.clear()
            if name == "empty_write":
                with wb.db.write():
                    pass
            else:
                edit()
            out[f"hold_{name}_s"] = max(holds)
    finally:
        Database.write = real_write  # type: ignore[method-assign]
    wb.catalog.undo()
    return out


def run(procs: int, seconds: float, entries: int, workdir: Path) -> dict:
    import workbench

    home, lib = workdir / "home", workdir / "lib"
    prepare(home, lib, entries)
    raw = baseline(home)
    held = edit_holds(home)
    script = workdir / "soak_worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(home), str(i), str(seconds), str(lib)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(procs)
    ]
    results, crashed = [], []
    for child in children:
        out, err = child.communicate(timeout=seconds + 600)
        if child.returncode != 0 or not out.strip():
            crashed.append(err[-2000:])
            continue
        results.append(json.loads(out.strip().splitlines()[-1]))
    wb = workbench.open(home)
    frame = wb.catalog.query()
    tags_by_id = {int(i): set(t) for i, t in zip(frame["id"], frame["tags"])}
    written = [(int(i), t) for r in results for i, t in r["written"]]
    lost = [(i, t) for i, t in written if t not in tags_by_id.get(i, set())]
    reads = [x for r in results for x in r["reads"]]
    writes = [x for r in results for x in r["writes"]]
    per_process = sorted(len(r["writes"]) for r in results if r["index"] > 1)
    return {
        "procs": procs,
        "seconds": seconds,
        "entries": entries,
        "reads": len(reads),
        "writes": len(writes),
        "read_p50_s": _percentile(reads, 50),
        "read_p99_s": _percentile(reads, 99),
        "write_p50_s": _percentile(writes, 50),
        "write_p99_s": _percentile(writes, 99),
        "write_max_s": max(writes) if writes else float("nan"),
        "lost_writes": len(lost),
        "lost_examples": lost[:5],
        "surfaced_errors": sum(len(r["errors"]) for r in results) + len(crashed),
        "error_examples": [e for r in results for e in r["errors"]][:5] + crashed[:2],
        "writes_per_plain_process_min_max": [per_process[0], per_process[-1]] if per_process else [],
        "baseline_alone_read_p50_s": raw["read_p50"],
        "baseline_alone_write_p50_s": raw["write_p50"],
        **held,
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--entries", type=int, default=5000, help="catalog-only entries besides the scanned files")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--holds-only", action="store_true", help="only the exclusive holds of 5,000-id edits")
    args = parser.parse_args()
    random.seed(0)
    if args.holds_only:
        with tempfile.TemporaryDirectory(prefix="wb-soak-") as tmp:
            prepare(Path(tmp) / "home", Path(tmp) / "lib", args.entries)
            held = edit_holds(Path(tmp) / "home")
        print(
            f"longest exclusive hold over {args.entries} ids: "
            + ", ".join(f"{k[5:-2]} {v * 1000:.0f} ms" for k, v in held.items())
            + f"  (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)"
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="wb-soak-") as tmp:
        figures = run(args.procs, args.seconds, args.entries, Path(tmp))
    if args.json:
        print(json.dumps(figures))
        return 0
    f = figures
    print(f"soak: {f['procs']} processes, {f['seconds']:.0f} s, {f['entries']} catalog entries + 6 scanned files")
    print(
        f"  reads  {f['reads']:6d}  p50 {f['read_p50_s'] * 1000:7.1f} ms  p99 {f['read_p99_s'] * 1000:7.1f} ms (goal <= 500 ms)"
    )
    print(
        f"  writes {f['writes']:6d}  p50 {f['write_p50_s'] * 1000:7.1f} ms  p99 {f['write_p99_s'] * 1000:7.1f} ms (goal <= 1000 ms)"
        f"  max {f['write_max_s'] * 1000:.0f} ms"
    )
    print(
        f"  alone (raw baseline, same run): read p50 {f['baseline_alone_read_p50_s'] * 1000:.1f} ms, "
        f"write p50 {f['baseline_alone_write_p50_s'] * 1000:.1f} ms; "
        f"ratio soak p99 / alone p50: read {f['read_p99_s'] / f['baseline_alone_read_p50_s']:.1f}x, "
        f"write {f['write_p99_s'] / f['baseline_alone_write_p50_s']:.1f}x"
    )
    print(f"  lost writes {f['lost_writes']}, surfaced errors {f['surfaced_errors']} {f['error_examples'][:2]}")
    print(f"  writes per plain process (min, max): {f['writes_per_plain_process_min_max']}")
    print(
        f"  longest exclusive hold over {f['entries']} ids, alone: bulk_update {f['hold_bulk_update_s'] * 1000:.0f} ms, "
        f"add_tags {f['hold_add_tags_s'] * 1000:.0f} ms, undo {f['hold_undo_s'] * 1000:.0f} ms "
        f"(raw floor, an empty write transaction: {f['hold_empty_write_s'] * 1000:.0f} ms; goal ~200 ms)"
    )
    print(f"  machine: {f['cpus']} CPUs, load average {f['load_average_1m']:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
