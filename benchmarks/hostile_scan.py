"""Peak memory and time of scanning the hostile library of issue 14 (and thumbnailing its previews).

    PYTHONPATH=. python benchmarks/hostile_scan.py [--dir /tmp/wb-bench-hostile] [--workers N]

The library: the test suite's hostile and malformed corpora (``tests/malformed_corpus.py``, ~210
files: huge tag counts, non-UTF-8 names, links to outside and /proc, FIFOs, long lists, big
sidecars) plus the probe's largest inputs: a 50 MB ``ss_tag_frequency``, a 15 MB ``.civitai.info``
with 100,000 trained words, 1,000,000 tags, and a 7999×8000 and a 4096×4096 PNG preview.

Baselines measured in the same run, each in a fresh process: the *floor* (import workbench and
open the catalog: what any scanning process costs before reading a file) and a *raw read* (walk
the library without following links and read every regular file whole — the naive reader).
Ours: a cold scan, a no-change rescan, then a thumbnail of every catalogued preview (the gallery's
path). Peak memory is the high-water mark of the summed RSS of the process tree (100 ms samples)
and ``ru_maxrss``. Target: peak ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

TARGET_PEAK_MB = 300


def build(base: Path) -> Path:
    """Write the library once (reused when ``base/lib`` exists)."""
    import orjson
    from malformed_corpus import _tiny_entries, build_hostile_corpus, build_malformed_corpus, write_safetensors

    lib = base / "lib"
    if (base / "done").exists():
        return lib
    build_hostile_corpus(lib, base / "outside")
    build_malformed_corpus(lib / "malformed")
    probe = lib / "probe"
    freq = {"a": {f"tag_{i:09d}_" + "y" * 30: i for i in range(1_000_000)}}
    write_safetensors(
        probe / "tagfreq_50mb.safetensors", _tiny_entries(), {"ss_tag_frequency": orjson.dumps(freq).decode()}
    )
    del freq
    write_safetensors(probe / "info_15mb.safetensors", _tiny_entries())
    images = [{"url": f"https://x/{i}.png", "meta": {"prompt": "p" * 300, "seed": i}} for i in range(42_000)]
    words = [f"w{i}" for i in range(100_000)]
    (probe / "info_15mb.civitai.info").write_bytes(orjson.dumps({"id": 1, "images": images, "trainedWords": words}))
    del images
    write_safetensors(probe / "tags_1m.safetensors", _tiny_entries())
    (probe / "tags_1m.metadata.json").write_bytes(orjson.dumps({"tags": [f"t{i}" for i in range(1_000_000)]}))
    for name, (w, h) in (("png_8000", (7999, 8000)), ("png_4096", (4096, 4096))):
        write_safetensors(probe / f"{name}.safetensors", _tiny_entries())
        (probe / f"{name}.preview.png").write_bytes(_zero_png(w, h))
    (base / "done").write_text("ok")
    return lib


def _zero_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_floor(home: Path) -> dict:
    import workbench

    workbench.open(home).catalog.count()
    return {"maxrss_mb": _maxrss_mb()}


def child_raw(lib: Path) -> dict:
    import stat

    started = time.perf_counter()
    files = total = 0
    for dirpath, _, names in os.walk(lib):  # links to folders are not followed
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # links, FIFOs: a naive reader that followed them would hang or leave the root
                with open(path, "rb") as handle:
                    total += len(handle.read())
                files += 1
            except OSError:
                continue
    return {"seconds": time.perf_counter() - started, "files": files, "bytes": total, "maxrss_mb": _maxrss_mb()}


def child_scan(lib: Path, home: Path, workers: int | None) -> dict:
    import workbench

    wb = workbench.open(home)
    floor = _maxrss_mb()
    started = time.perf_counter()
    cold = wb.scan([lib], workers=workers, progress=False)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    again = wb.scan([lib], workers=workers, progress=False)
    rescan_s = time.perf_counter() - started
    return {
        "floor_mb": floor,
        "maxrss_mb": _maxrss_mb(),
        "cold_s": cold_s,
        "rescan_s": rescan_s,
        "cold": str(cold),
        "rescan": str(again),
        "rows": wb.catalog.count(),
    }


def child_thumbnails(home: Path) -> dict:
    """What a gallery kernel does: open the catalog, thumbnail every catalogued preview."""
    import workbench
    from workbench.files import ThumbnailCache

    wb = workbench.open(home)
    previews = wb.db.read_df("SELECT preview_path FROM loras WHERE preview_path IS NOT NULL")["preview_path"]
    floor = _maxrss_mb()
    thumbs = ThumbnailCache(home, wb.roots)
    started = time.perf_counter()
    made = sum(thumbs.get(p) is not None for p in previews)
    return {
        "floor_mb": floor,
        "maxrss_mb": _maxrss_mb(),
        "seconds": time.perf_counter() - started,
        "previews": len(previews),
        "thumbnails": made,
    }


def _run_child(kind: str, *args: str) -> tuple[dict, float]:
    from scan import TreeMemorySampler

    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    sampler = TreeMemorySampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed ({proc.returncode})")
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[7:]), sampler.peak_rss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "wb-bench-hostile")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = {"lib": str(build(Path(rest[0])))}
        elif kind == "floor":
            result = child_floor(Path(rest[0]))
        elif kind == "raw":
            result = child_raw(Path(rest[0]))
        elif kind == "thumbnails":
            result = child_thumbnails(Path(rest[0]))
        else:
            result = child_scan(Path(rest[0]), Path(rest[1]), int(rest[2]) if rest[2] != "None" else None)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    # Built in a child: ru_maxrss survives exec, so this process must stay small for its children's figures.
    lib = Path(_run_child("build", str(args.dir))[0]["lib"])
    with tempfile.TemporaryDirectory() as tmp:
        floor, floor_peak = _run_child("floor", str(Path(tmp) / "floor_home"))
        raw, raw_peak = _run_child("raw", str(lib))
        ours, ours_peak = _run_child("scan", str(lib), str(Path(tmp) / "home"), str(args.workers))
        thumbs, thumbs_peak = _run_child("thumbnails", str(Path(tmp) / "home"))
    peak = max(ours_peak, ours["maxrss_mb"])
    thumbs_max = max(thumbs_peak, thumbs["maxrss_mb"])
    print(f"hostile library: {lib} ({raw['files']} regular files, {raw['bytes'] / 1e6:.0f} MB)")
    print(f"cold scan:  {ours['cold']}")
    print(f"rescan:     {ours['rescan']}")
    print(f"thumbnails: {thumbs['thumbnails']} of {thumbs['previews']} previews in {thumbs['seconds']:.1f} s")
    print()
    print(f"{'figure':<48}{'value':>10}   target")
    print(f"{'floor: import + open catalog, maxrss (MB)':<48}{floor['maxrss_mb']:>10.0f}")
    print(f"{'raw read of every regular file, maxrss (MB)':<48}{raw['maxrss_mb']:>10.0f}")
    print(f"{'cold scan + rescan, peak (MB)':<48}{peak:>10.0f}   <= {TARGET_PEAK_MB}")
    print(f"{'  peak / floor':<48}{peak / floor['maxrss_mb']:>10.2f}")
    print(f"{'  peak above floor (MB)':<48}{peak - floor['maxrss_mb']:>10.0f}")
    print(f"{'gallery kernel thumbnailing every preview (MB)':<48}{thumbs_max:>10.0f}   <= {TARGET_PEAK_MB}")
    print(f"{'  above its floor (MB)':<48}{thumbs_max - thumbs['floor_mb']:>10.0f}")
    ratio = ours["cold_s"] / max(raw["seconds"], 1e-9)
    print(f"{'cold scan (s) / raw read (s)':<48}{ours['cold_s']:>6.1f} / {raw['seconds']:.1f} = {ratio:.1f}x")
    print(f"{'rescan (s)':<48}{ours['rescan_s']:>10.2f}")
    print(f"(sampled tree-RSS peaks: floor {floor_peak:.0f} MB, raw {raw_peak:.0f} MB, scan {ours_peak:.0f} MB)")
    peak = max(peak, thumbs_max)
    return 0 if peak <= TARGET_PEAK_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
