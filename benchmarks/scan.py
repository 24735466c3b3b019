"""Scan benchmark: our catalog scan against a raw single-thread header read, in one run.

    PYTHONPATH=. python benchmarks/scan.py [--n 50000] [--profile both] [--dir /tmp/wb-bench-lib] [--workers N]

For each header profile (``--profile``: ``sd15-kohya``, ``mixed`` or ``both``):

1. Builds (or reuses, cached under ``--dir``) a synthetic library of ``--n`` sparse LoRA files
   (benchmarks/synthetic_library.py): ``sd15-kohya`` is every file a kohya SD1.5 LoRA with text
   encoder (the real 792-tensor key set, ~111 KB headers); ``mixed`` is kohya SD1.5 / PEFT SDXL /
   FLUX / ... (~990 tensors, ~157 KB on average). The ratio depends on the header size, hence both.
2. Raw baseline: one thread, ``os.walk`` + open + read 8 bytes + read the header + ``json.loads``
   of every header. It runs before and after our scan; the faster run is the baseline (so the
   page cache never favours us).
3. Our cold scan (``workbench.open(tmp_home).scan([root])``) and a no-change rescan, in a child
   process whose whole process tree is sampled for memory.

CPU time is printed beside wall time (the machine is shared: wall time moves with the load, CPU
time much less): the raw loop's CPU per file beside our workers' CPU per file (inspection and
records) and the scanning process's (walk, catalog writes). Then, once: the command line's
no-change rescan of ``--rescan-n`` files, process start included, beside ``python -c pass``.

Prints seconds, ratios to the baseline, files/s and peak memory, each next to its target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

LIBRARY_VERSION = 1  # bump when synthetic_library changes what it writes
TARGET_COLD_RATIO = 0.5
TARGET_RESCAN_S = 3.0
TARGET_CLI_RESCAN_S = 1.0
TARGET_PEAK_MB = 500.0


def ensure_library(base: Path, n: int, seed: int, sidecar_fraction: float, profile: str = "mixed") -> Path:
    """The cached library for these parameters, written if absent or incomplete."""
    from benchmarks.synthetic_library import write_library

    tag = "" if profile == "mixed" else f"-{profile}"  # the mixed library keeps its old cache name
    root = base / f"lib{tag}-n{n}-seed{seed}-sc{sidecar_fraction:g}-v{LIBRARY_VERSION}"
    marker = root / ".complete"
    if marker.exists():
        info = json.loads(marker.read_text())
        print(
            f"library: reusing {root} ({info['files']} LoRAs, {info['apparent_gib']:.0f} GiB apparent, "
            f"{info['disk_mib']:.0f} MiB on disk, mean header {info.get('header_kib', 0):.0f} KiB)"
        )
        return root
    if root.exists():
        shutil.rmtree(root)
    print(f"library: writing {n} sparse LoRA files to {root} ...", flush=True)
    stats = write_library(
        root, n, seed=seed, sparse=True, sidecar_fraction=sidecar_fraction, progress=True, profile=profile
    )
    disk = sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())
    info = {
        "header_kib": stats.header_bytes / max(stats.files, 1) / 1024,
        "files": stats.files,
        "sidecars": stats.sidecars,
        "previews": stats.previews,
        "apparent_gib": stats.apparent_bytes / 2**30,
        "disk_mib": disk / 2**20,
        "by_family": stats.by_family,
        "seconds": stats.seconds,
    }
    marker.write_text(json.dumps(info))
    print(
        f"library: {stats.files} LoRAs ({stats.by_family}), {stats.sidecars} .civitai.info, "
        f"{stats.previews} previews, {info['apparent_gib']:.0f} GiB apparent / {info['disk_mib']:.0f} MiB on disk, "
        f"written in {stats.seconds:.0f} s"
    )
    return root


def raw_baseline(root: Path) -> tuple[float, int, float]:
    """The raw loop in a fresh interpreter (this process's heap, e.g. the library writer's, would slow its
    garbage collector and so inflate the baseline). Returns (seconds, files, CPU s)."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--_raw", str(root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seconds, files, cpu = out.split()[-3:]
    return float(seconds), int(files), float(cpu)


def _raw_loop(root: Path) -> tuple[float, int, float]:
    """Single thread: walk, open, read 8 bytes, read the header, json.loads it. Returns (seconds, files, CPU s)."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    files = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if not name.endswith(".safetensors"):
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            files += bool(header)
    return time.perf_counter() - t0, files, time.process_time() - c0


class TreeMemorySampler(threading.Thread):
    """High-water marks of summed RSS and PSS over a process and its descendants, sampled periodically.

    RSS counts pages shared between the forked workers once per process (an overestimate);
    PSS splits shared pages between the processes that map them (the real footprint).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        tick = 0
        while not self._halt.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            rss = pss = 0
            for p in procs:
                try:
                    if tick % 5 == 0:  # PSS reads smaps_rollup: sample it less often
                        pss += p.memory_full_info().pss
                    rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            tick += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _child(root: Path, home: Path, workers: int | None) -> None:
    """Runs in a separate process: cold scan, then a no-change rescan; prints one JSON line."""
    import resource

    t_import = time.perf_counter()
    import workbench

    import_s = time.perf_counter() - t_import
    wb = workbench.open(home)
    wb.catalog.count()  # loads the query stack (pandas) before the clock starts, as opening a workbench used to

    def cpu() -> tuple[float, float]:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime

    c0 = cpu()
    t0 = time.perf_counter()
    cold = wb.scan([root], workers=workers, progress=False)
    cold_s = time.perf_counter() - t0
    c1 = cpu()  # the pool's workers have exited and been waited for: their CPU is in RUSAGE_CHILDREN
    t0 = time.perf_counter()
    again = wb.scan([root], workers=workers, progress=False)
    rescan_s = time.perf_counter() - t0
    rescan_cpu = cpu()[0] - c1[0]
    rows = wb.catalog.count()
    errors = wb.catalog.count(errors=True)
    facets = wb.catalog.facets()
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        "RESULT "
        + json.dumps(
            {
                "import_s": import_s,
                "cold_s": cold_s,
                "cold_cpu_self_s": c1[0] - c0[0],
                "cold_cpu_workers_s": c1[1] - c0[1],
                "rescan_s": rescan_s,
                "rescan_cpu_s": rescan_cpu,
                "cold": str(cold),
                "rescan": str(again),
                "cold_new": cold.new,
                "rescan_unchanged": again.unchanged,
                "rescan_changed": again.changed + again.new,
                "rows": rows,
                "errors": errors,
                "base_models": _facet(facets, "base_model"),
                "self_maxrss_mb": self_kb / 1024,
                "children_maxrss_mb": child_kb / 1024,
            },
            default=str,
        ),
        flush=True,
    )


def _facet(facets: dict, key: str):
    value = facets.get(key) if isinstance(facets, dict) else None
    try:
        return {str(k): int(v) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        return str(value)[:200]


def _mark(ok: bool) -> str:
    return "OK  " if ok else "MISS"


def cli_rescan(base: Path, n: int, seed: int, sidecar_fraction: float, repeats: int = 5) -> dict[str, float]:
    """``workbench scan --home H ROOT`` with nothing to do, process start included (after a first scan).

    Returns the best and median wall seconds of ``repeats`` runs, the best CPU seconds (user + system
    of the child), and the same for ``python -c pass``.
    """
    root = ensure_library(base, n, seed, sidecar_fraction, profile="sd15-kohya")
    home = Path(tempfile.mkdtemp(prefix="wb-bench-cli-home-", dir=base))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
    scan_cmd = [sys.executable, "-m", "workbench.cli", "scan", "--home", str(home), "-q", str(root)]

    def timed(cmd: list[str]) -> tuple[float, float, str]:
        before = os.times()
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        after = os.times()
        return (
            wall,
            (after.children_user - before.children_user) + (after.children_system - before.children_system),
            out.stdout,
        )

    try:
        first, _, out = timed(scan_cmd)
        print(f"CLI first scan of {n} files: {first:.1f} s ({out.strip()})")
        runs = [timed(scan_cmd) for _ in range(repeats)]
        print(f"CLI rescan says: {runs[-1][2].strip()}")
        bare = [timed([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    walls = sorted(r[0] for r in runs)
    return {
        "best_s": walls[0],
        "median_s": walls[len(walls) // 2],
        "cpu_s": min(r[1] for r in runs),
        "pass_best_s": min(b[0] for b in bare),
        "pass_cpu_s": min(b[1] for b in bare),
    }


def run_profile(args: argparse.Namespace, profile: str) -> tuple[bool, dict[str, float]]:
    """Raw baseline, our scan in a child process, raw baseline again; prints the table. Returns (counts ok, figures)."""
    root = ensure_library(args.dir, args.n, args.seed, args.sidecar_fraction, profile=profile)
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        f"(shared machine: figures move with the load)"
    )

    base1, files, base1_cpu = raw_baseline(root)
    print(
        f"raw baseline (1 thread, walk+open+read header+json.loads): {base1:.2f} s for {files} files "
        f"(CPU {base1_cpu:.2f} s)"
    )

    home = Path(tempfile.mkdtemp(prefix="wb-bench-home-", dir=args.dir))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(root), str(home)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    sampler = TreeMemorySampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    sampler.stop()
    child_wall = time.perf_counter() - t0
    shutil.rmtree(home, ignore_errors=True)
    result_lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not result_lines:
        print(out)
        print(f"scan child failed with exit code {proc.returncode}")
        return False, {}
    r = json.loads(result_lines[-1][len("RESULT ") :])

    baseline, baseline_cpu = base1, base1_cpu
    if not args.one_baseline:
        base2, _, base2_cpu = raw_baseline(root)
        print(f"raw baseline, second run after the scan: {base2:.2f} s (CPU {base2_cpu:.2f} s)")
        baseline, baseline_cpu = min(base1, base2), min(base1_cpu, base2_cpu)

    peak_rss = sampler.peak_rss / 2**20
    peak_pss = sampler.peak_pss / 2**20
    cold_ratio = r["cold_s"] / baseline
    per_file = 1000.0 / max(files, 1)  # seconds -> ms per file
    raw_ms = baseline_cpu * per_file
    workers_ms = r["cold_cpu_workers_s"] * per_file
    self_ms = r["cold_cpu_self_s"] * per_file
    print()
    print(f"cold scan  : {r['cold']}")
    print(f"rescan     : {r['rescan']}")
    print(f"catalog    : {r['rows']} rows, {r['errors']} with errors, base models {r['base_models']}")
    print(f"(child process wall {child_wall:.1f} s incl. {r['import_s']:.1f} s to import workbench)")
    print()
    print(f"profile {profile}: {files} files")
    print(f"{'figure':<40}{'measured':>14}   {'target':<14}")
    print(f"{'raw baseline (s)':<40}{baseline:>14.2f}")
    print(f"{'cold scan (s)':<40}{r['cold_s']:>14.2f}")
    print(
        f"{'cold / baseline':<40}{cold_ratio:>14.3f}   <= {TARGET_COLD_RATIO:<11} {_mark(cold_ratio <= TARGET_COLD_RATIO)}"
    )
    print(f"{'files/s (cold)':<40}{files / r['cold_s']:>14.0f}")
    print(f"{'CPU per file: raw loop (ms)':<40}{raw_ms:>14.3f}")
    print(
        f"{'CPU per file: our workers, inspect (ms)':<40}{workers_ms:>14.3f}   ({workers_ms / raw_ms:.2f}x the raw loop's)"
    )
    print(f"{'CPU per file: scanning process (ms)':<40}{self_ms:>14.3f}   (walk, catalog writes)")
    total_ratio = (workers_ms + self_ms) / raw_ms
    print(
        f"{'CPU, all our processes / raw loop':<40}{total_ratio:>14.3f}   (/2 on 2 idle cores: {total_ratio / 2:.3f})"
    )
    print(
        f"{'no-change rescan (s)':<40}{r['rescan_s']:>14.2f}   <= {TARGET_RESCAN_S:<11} "
        f"{_mark(r['rescan_s'] <= TARGET_RESCAN_S)}   (CPU {r['rescan_cpu_s']:.2f} s)"
    )
    print(f"{'rescan / baseline':<40}{r['rescan_s'] / baseline:>14.3f}")
    print(
        f"{'peak RSS, process tree sum (MB)':<40}{peak_rss:>14.0f}   <= {TARGET_PEAK_MB:<11.0f} "
        f"{_mark(peak_rss <= TARGET_PEAK_MB)}"
    )
    print(
        f"{'peak PSS, process tree sum (MB)':<40}{peak_pss:>14.0f}   <= {TARGET_PEAK_MB:<11.0f} "
        f"{_mark(peak_pss <= TARGET_PEAK_MB)}"
    )
    print(f"{'maxrss scan process (MB)':<40}{r['self_maxrss_mb']:>14.0f}")
    print(f"{'maxrss largest worker (MB)':<40}{r['children_maxrss_mb']:>14.0f}")
    ok_counts = r["rows"] == files and r["cold_new"] == files and r["rescan_unchanged"] == files
    print(
        f"{'catalog rows == files':<40}{str(ok_counts):>14}   (rows {r['rows']}, new {r['cold_new']}, "
        f"unchanged on rescan {r['rescan_unchanged']})"
    )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs")
    print()
    return ok_counts, {"ratio": cold_ratio, "raw_ms": raw_ms, "workers_ms": workers_ms, "self_ms": self_ms}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.synthetic_library import PROFILES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="LoRA files in the synthetic library")
    ap.add_argument(
        "--profile", choices=(*PROFILES, "both"), default="both", help="header profile of the library (default: both)"
    )
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wb-bench-lib"), help="cache folder for the library")
    ap.add_argument("--workers", type=int, default=None, help="scanner worker processes (default: scanner's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sidecar-fraction",
        type=float,
        default=0.2,
        help="share of LoRAs that also get a .civitai.info (and, independently, a preview)",
    )
    ap.add_argument("--one-baseline", action="store_true", help="run the raw baseline once (before the scan)")
    ap.add_argument(
        "--rescan-n", type=int, default=10_000, help="files for the CLI no-change rescan figure (0: skip it)"
    )
    ap.add_argument("--_child", nargs=2, metavar=("ROOT", "HOME"), help=argparse.SUPPRESS)
    ap.add_argument("--_raw", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._raw:
        seconds, files, cpu = _raw_loop(Path(args._raw))
        print(seconds, files, cpu)
        return 0

    if args._child:
        _child(Path(args._child[0]), Path(args._child[1]), args.workers)
        return 0

    args.dir.mkdir(parents=True, exist_ok=True)
    profiles = PROFILES if args.profile == "both" else (args.profile,)
    ok = True
    summary = {}
    for profile in profiles:
        print(f"=== profile {profile} ===")
        counts_ok, figures = run_profile(args, profile)
        ok = ok and counts_ok
        summary[profile] = figures
    if args.rescan_n:
        print("=== command line: no-change rescan ===")
        c = cli_rescan(args.dir, args.rescan_n, args.seed, args.sidecar_fraction)
        print(
            f"{'CLI no-change rescan, start incl. (s)':<40}{c['best_s']:>14.2f}   <= {TARGET_CLI_RESCAN_S:<11} "
            f"{_mark(c['best_s'] <= TARGET_CLI_RESCAN_S)}   (median {c['median_s']:.2f} s, CPU {c['cpu_s']:.2f} s, "
            f"{args.rescan_n} files)"
        )
        print(f"{'python -c pass (s)':<40}{c['pass_best_s']:>14.2f}   (CPU {c['pass_cpu_s']:.2f} s)")
    print()
    for profile, f in summary.items():
        if f:
            print(
                f"summary {profile:<11} cold/raw {f['ratio']:.3f} {_mark(f['ratio'] <= TARGET_COLD_RATIO)}  "
                f"CPU ms/file: raw {f['raw_ms']:.3f}, our workers {f['workers_ms']:.3f}, scanning process {f['self_ms']:.3f}"
            )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
