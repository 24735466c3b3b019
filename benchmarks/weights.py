"""Weight-space benchmark: analysis throughput against reading the same bytes, and grouping 10,000 LoRAs.

    PYTHONPATH=. python benchmarks/weights.py [--files 8] [--modules 240] [--rank 32] [--n 10000] [--isa avx2]

1. **Analysis throughput.** Writes ``--files`` kohya-layout SDXL-shaped LoRAs (fp16, ``--modules`` modules of
   real SDXL attention / feed-forward widths, rank ``--rank``) into a library folder and scans it into a fresh
   workbench home (not timed). Raw baseline: read every byte of each file (``readinto`` in 1 MiB blocks).
   Ours: ``wb.weights.analyze(force=True)`` — what the CLI, the views and the shared worker run: pending files
   looked up, analysed in worker processes (one per core), stored (every tensor mapped, converted to float32,
   checked for NaN/Inf, norms, effective ranks, signature). The ratio printed is ours-throughput /
   read-throughput (goal ≥ 0.5: the maths costs no more than the I/O), twice: with the page cache warm (the read
   is then a memory copy) and cold (every file evicted with ``posix_fadvise(DONTNEED)`` before each run, so both
   sides read the disk), which is what analysing a library on disk costs against reading it. One file at a time
   in this process (``analyze_weights``) is printed too. float16 factors go through the native kernels
   (``workbench/files/_halfgram.c``; ``--isa avx2`` runs the ones CPUs without AVX-512 get) when they are
   built; the same run then times the numpy path too (kernels switched off), for the ratio they make. CPU
   time (this process's plus its joined workers') is printed beside wall time, and the load average with
   them: on a shared machine wall time is inflated by the others. Two floors say what numpy alone would cost: its float16→float32 conversion of every tensor, and
   that plus the two k × k Gram matrices per module that the exact norms and ranks need; then the CPU of each
   part of ``analyze_weights`` (native kernels or conversion, Grams and sketch; eigen-solves; the rest), each
   measured by running the analysis with that part replaced by a trivial stand-in.
2. **Grouping.** ``--n`` LoRAs as vectors in a 4,096-dimensional delta space: 70 % unrelated, the rest in
   near-duplicate families of 2–5 (cosine ≥ 0.98 inside a family) plus 50/50 merges of two unrelated LoRAs.
   Signatures are seeded Gaussian projections to 256 dimensions (what the per-module sketches amount to).
   ``workbench.catalog.group_by_signatures`` (FAISS HNSW candidates + exact confirmation + complete linkage)
   is timed; the exact cosines come from the in-memory vectors here (in the catalog each confirmation reads
   two files once and is then cached). Raw baseline: one all-pairs signature matrix product in numpy (the
   quadratic thing the index avoids). Goal: ≤ 60 s once signatures exist.
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))
sys.path.insert(0, str(_REPO / "tests"))

TARGET_RATIO = 0.5
TARGET_GROUP_S = 60.0

# (in, out) of real SDXL U-Net LoRA targets: attention projections at 640/1280 wide, cross-attention K/V from
# the 2048-wide text embedding, GEGLU feed-forward in/out.
_SDXL_SHAPES = [
    (640, 640),
    (1280, 1280),
    (2048, 640),
    (2048, 1280),
    (640, 5120),
    (2560, 640),
    (1280, 10240),
    (5120, 1280),
]


def write_files(folder: Path, files: int, modules: int, rank: int) -> list[Path]:
    from lora_factory import write_safetensors

    rng = np.random.default_rng(0)
    paths = []
    for number in range(files):
        tensors = {}
        for m in range(modules):
            width_in, width_out = _SDXL_SHAPES[m % len(_SDXL_SHAPES)]
            name = f"lora_unet_input_blocks_{(4, 5, 7, 8)[m % 4]}_1_transformer_blocks_{m // 4}_attn1_to_q"
            tensors[f"{name}.lora_down.weight"] = (rng.standard_normal((rank, width_in)) / 10).astype(np.float16)
            tensors[f"{name}.lora_up.weight"] = (rng.standard_normal((width_out, rank)) / 10).astype(np.float16)
            tensors[f"{name}.alpha"] = np.array(rank / 2, dtype=np.float16)
        paths.append(write_safetensors(folder / f"sdxl_r{rank}_{number}.safetensors", tensors))
    return paths


def read_all(paths: list[Path]) -> int:
    buffer = bytearray(1 << 20)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while True:
                got = handle.readinto(buffer)
                if not got:
                    break
                total += got
    return total


def drop_from_page_cache(paths: list[Path]) -> None:
    """Written back and evicted (``posix_fadvise(DONTNEED)``), so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _cold(run: Callable[[], object], paths: list[Path], repeats: int) -> tuple[float, float]:
    """(best wall, best CPU) of ``run`` with the files evicted from the page cache before each run."""
    walls, cpus = [], []
    for _ in range(repeats):
        drop_from_page_cache(paths)
        wall, cpu = time.perf_counter(), _cpu()
        run()
        cpus.append(_cpu() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus)


def _timed(run: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, last result) over ``repeats`` runs."""
    walls, cpus = [], []
    result: object = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu()
        result = run()
        cpus.append(_cpu() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus), result


def _floors(paths: list[Path], grams: bool) -> None:
    """Convert every tensor of the files to float32 (into one reused buffer), and with ``grams`` also form the
    k × k Gram matrix of each factor: the least any exact analysis of float16 factors does with numpy."""
    from workbench.files import read_header

    buffer = np.empty(0, dtype=np.float32)
    for path in paths:
        header = read_header(path)
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            for key, info in header.tensors.items():
                begin, end = info["data_offsets"]
                raw = np.frombuffer(mapped, np.float16, (end - begin) // 2, 8 + header.header_len + begin)
                if buffer.size < raw.size:
                    buffer = np.empty(raw.size, dtype=np.float32)
                factor = buffer[: raw.size].reshape(info["shape"])
                np.copyto(factor, raw.reshape(info["shape"]))
                if grams and factor.ndim == 2:
                    _ = factor.T @ factor if key.endswith("up.weight") else factor @ factor.T
                del raw


def _cpu() -> float:
    """CPU seconds of this process and of its worker processes that have ended (the pool's are joined)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def _numpy_path() -> Iterator[None]:
    """The analysis without the native kernels (forked workers inherit the switch)."""
    weights = sys.modules["workbench.files._weights"]
    saved = weights._NATIVE
    weights._NATIVE = None
    try:
        yield
    finally:
        weights._NATIVE = saved


def _breakdown(paths: list[Path]) -> list[tuple[str, float]]:
    """CPU seconds of each part of ``analyze_weights`` over ``paths`` in this process, each measured by running
    the analysis with that part replaced by a trivial stand-in (the full run minus that run)."""
    weights = sys.modules["workbench.files._weights"]  # white-box: the parts are swapped out one at a time
    ones = np.ones(1 << 22, dtype=np.float32)
    sketch_size = weights._SKETCH_ROWS * weights._SKETCH_COLS

    def unconverted(self: Any, key: str, slot: str) -> np.ndarray:
        _, _, shape = self._raw(key)
        return ones[: math.prod(shape)].reshape(shape)

    def identity_grams(self: Any) -> tuple[np.ndarray, np.ndarray]:
        return np.eye(self.up.shape[1]), np.eye(self.up.shape[1])

    def fixed_sketch(delta: Any, projection: Any) -> np.ndarray:
        return np.ones(sketch_size, np.float32)

    original_products = weights._products

    def identity_products(delta: Any) -> tuple[Any, np.ndarray, Any]:
        if delta.stored is None:
            return original_products(delta)
        identity = np.eye(delta.up.shape[1])
        return (identity, identity), np.ones(sketch_size, np.float32), weights._projection(delta.key, *delta.shape)

    def flat_spectrum(stack: list[Any]) -> np.ndarray:
        return np.ones((len(stack), len(stack[0][1])))

    parts: dict[str, list[tuple[Any, str, Any]]]
    if weights._NATIVE is not None:
        parts = {"native kernels (conversion, Grams, sketch; page faults)": [(weights, "_products", identity_products)]}
    else:
        parts = {
            "float16->float32 conversion (and its page faults)": [
                (weights.LoraWeights, "_scratch_tensor", unconverted)
            ],
            "k x k Gram matrices": [(weights.ModuleDelta, "grams", identity_grams)],
            "signature sketch": [(weights, "_sketch", fixed_sketch)],
        }
    parts["batched eigen-solves"] = [(weights, "_batched_squares", flat_spectrum)]
    parts["the rest (Python, header, plans, norms)"] = [swap for swaps in parts.values() for swap in swaps]

    def run() -> float:
        return _timed(lambda: [weights.analyze_weights(p) for p in paths], 2)[1]

    full = run()
    shares = []
    for label, swaps in parts.items():
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
        try:
            for owner, name, stand_in in swaps:
                setattr(owner, name, stand_in)
            without = run()
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)
        shares.append((label, without if label.startswith("the rest") else full - without))
    return [("whole analysis", full), *shares]


def bench_analysis(args: argparse.Namespace) -> None:
    import workbench
    from workbench.files import analyze_weights

    with tempfile.TemporaryDirectory(prefix="wb-weights-") as tmp:
        library = Path(tmp) / "library"
        library.mkdir()
        paths = write_files(library, args.files, args.modules, args.rank)
        wb = workbench.open(Path(tmp) / "home")
        wb.scan([library], progress=False)
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        read_all(paths)  # warm the page cache for both sides
        raw_wall, raw_cpu, _ = _timed(lambda: read_all(paths), 3)
        analyze_weights(paths[0])  # projections cached, imports done
        wall, cpu, results = _timed(lambda: [analyze_weights(p) for p in paths], 2)
        assert isinstance(results, list) and all(r.ok for r in results), results

        def product() -> object:
            done = wb.weights.analyze(force=True, progress=False)
            assert len(done) == len(paths) and done["ok"].all(), done
            return done

        pool_wall, pool_cpu, _ = _timed(product, 2)
        cold_wall, cold_cpu = _cold(product, paths, 2)
        cold_raw_wall, _cold_raw_cpu = _cold(lambda: read_all(paths), paths, 2)
        native = sys.modules["workbench.files._weights"]._NATIVE is not None
        if native:  # the same run without the kernels, for the ratio they make
            with _numpy_path():
                numpy_wall, numpy_cpu, _ = _timed(lambda: [analyze_weights(p) for p in paths], 2)
                numpy_cold_wall, numpy_cold_cpu = _cold(product, paths, 2)
        with _one_blas_thread():
            conv_wall, conv_cpu, _ = _timed(lambda: _floors(paths, grams=False), 2)
            gram_wall, gram_cpu, _ = _timed(lambda: _floors(paths, grams=True), 2)
        workers = min(os.cpu_count() or 1, 8)
        print(f"analysis: {len(paths)} files, {size:.1f} MiB, {args.modules} modules of rank {args.rank} each (fp16)")
        kernels = sys.modules["workbench.files._weights"]._NATIVE
        print(
            f"  float16 factors through the native kernels, {kernels.supported()} (workbench/files/_halfgram.c; "
            f"this CPU runs {', '.join(kernels.levels())})"
            if native
            else "  native kernels not built or CPU without F16C/AVX2: numpy path"
        )

        def line(label: str, wall: float, cpu: float) -> None:
            print(
                f"  {label:42s} wall {wall:.3f} s = {size / wall:>6,.0f} MiB/s (ratio {raw_wall / wall:.2f}); "
                f"CPU {cpu:.3f} s = {size / cpu:>6,.0f} MiB/s (ratio {raw_cpu / cpu:.2f})"
            )

        line("raw read (warm page cache)", raw_wall, raw_cpu)
        line("analyze_weights, one file at a time", wall, cpu)
        line(f"wb.weights.analyze ({workers} worker processes)", pool_wall, pool_cpu)
        print(
            f"  ratio (wb.weights.analyze / raw throughput, wall): {raw_wall / pool_wall:.3f}  (the read is a memory "
            "copy here; the goal compares with reading from disk, below)"
        )
        print("  cold (files evicted from the page cache before each run, so both sides read the disk):")
        cold_raw = size / cold_raw_wall
        print(f"  {'raw read (cold, from disk)':42s} wall {cold_raw_wall:.3f} s = {cold_raw:>6,.0f} MiB/s")
        print(
            f"  {'wb.weights.analyze, cold':42s} wall {cold_wall:.3f} s = {size / cold_wall:>6,.0f} "
            f"MiB/s (ratio {cold_raw_wall / cold_wall:.2f}); CPU {cold_cpu:.3f} s (workers included)"
        )
        print(
            f"  ratio (ours from disk / reading from disk, wall): {cold_raw_wall / cold_wall:.3f}  "
            f"(goal >= {TARGET_RATIO})"
        )
        if native:
            print("  the same without the native kernels (numpy path):")
            line("analyze_weights, one file at a time", numpy_wall, numpy_cpu)
            print(
                f"  {'wb.weights.analyze, cold':42s} wall {numpy_cold_wall:.3f} s = {size / numpy_cold_wall:>6,.0f} "
                f"MiB/s (ratio {cold_raw_wall / numpy_cold_wall:.2f}); CPU {numpy_cold_cpu:.3f} s"
            )
            print(
                f"  kernels' speed-up, one process CPU: {numpy_cpu / cpu:.2f}x; wb.weights.analyze from disk, "
                f"wall: {numpy_cold_wall / cold_wall:.2f}x"
            )
        print("  floors (numpy, one BLAS thread, one process):")
        line("float16->float32 conversion alone", conv_wall, conv_cpu)
        line("conversion + k x k Gram per factor", gram_wall, gram_cpu)
        print("  where the CPU goes (one process, each part left out in turn):")
        for label, seconds in _breakdown(paths):
            print(f"  {label:52s} CPU {seconds:.3f} s")
        rank99 = results[0].rank_summary()["rank99_median"]
        print(f"  effective rank check: rank99 median {rank99} of nominal {args.rank}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """The floors run under the same BLAS limit as the analysis (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def bench_grouping(args: argparse.Namespace) -> None:
    from workbench.catalog import group_by_signatures

    rng = np.random.default_rng(1)
    dim, n = 4096, args.n
    vectors = []
    planted = []
    while len(vectors) < int(n * 0.7):
        vectors.append(rng.standard_normal(dim))
    while len(vectors) < n - n // 20:
        size = int(rng.integers(2, 6))
        base = rng.standard_normal(dim)
        planted.append(list(range(len(vectors), len(vectors) + size)))
        for _ in range(size):
            vectors.append(base + 0.1 * rng.standard_normal(dim))  # cosine ≈ 0.99 to each other
    while len(vectors) < n:
        i, j = rng.integers(0, int(n * 0.7), 2)
        vectors.append(0.5 * vectors[i] + 0.5 * vectors[j])  # a 50/50 merge: ≈ 0.71 to each parent
    matrix = np.array(vectors[:n], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    projection = rng.standard_normal((dim, 256)).astype(np.float32) / 16
    signatures = matrix @ projection
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    confirmations = [0]

    def exact(i: int, j: int) -> float:
        confirmations[0] += 1
        return float(matrix[i] @ matrix[j])

    start = time.perf_counter()
    _ = signatures @ signatures.T
    raw = time.perf_counter() - start
    start = time.perf_counter()
    groups = group_by_signatures(signatures, 0.9, exact, index=args.index)
    ours = time.perf_counter() - start
    found = {tuple(members) for members, _ in groups}
    recovered = sum(tuple(p) in found for p in planted)
    print(
        f"grouping: {n:,} LoRAs, {len(planted)} planted near-duplicate families, {n // 20} merges, index {args.index}"
    )
    print(f"  raw all-pairs signature product (numpy): {raw:.2f} s")
    print(f"  group_by_signatures:                     {ours:.2f} s  (goal <= {TARGET_GROUP_S:.0f} s)")
    print(f"  ratio (ours / raw all-pairs): {ours / raw:.2f}; exact confirmations: {confirmations[0]:,}")
    print(f"  families recovered exactly: {recovered}/{len(planted)}; groups found: {len(groups)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--modules", type=int, default=240)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--index", choices=["auto", "flat", "hnsw"], default="auto", help="FAISS index for grouping")
    parser.add_argument("--isa", help="instruction set of the native kernels (avx512, avx2; default: the best)")
    parser.add_argument("--skip-analysis", action="store_true")
    parser.add_argument("--skip-grouping", action="store_true")
    args = parser.parse_args()
    if args.isa:
        import workbench.files  # noqa: F401  (loads the module looked up below)

        kernels = sys.modules["workbench.files._weights"]._NATIVE  # white-box: the kernels' instruction set
        if kernels is None:
            parser.error("the native kernels are not built or this CPU runs none of them")
        kernels.use(args.isa)
    if not args.skip_analysis:
        bench_analysis(args)
    if not args.skip_grouping:
        bench_grouping(args)


if __name__ == "__main__":
    main()
