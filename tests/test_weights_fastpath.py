"""The analysis' fast paths give the numbers of the plain ones: reused conversion buffers for every stored dtype,
zero-copy float32 (aligned or not), batched effective ranks with singular Gram matrices, and the BLAS thread
limit undone afterwards."""

from __future__ import annotations

import json
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from lora_factory import write_safetensors, write_stored

from workbench.files import LoraWeights, analyze_weights

_NAME = "lora_unet_down_blocks_{}_attentions_0_transformer_blocks_{}_attn1_to_q"


def _stored(dtype: str, array: np.ndarray) -> np.ndarray:
    """The values a reader gets back from ``array`` stored as ``dtype``, in float64."""
    if dtype == "F16":
        return array.astype(np.float16).astype(np.float64)
    if dtype == "BF16":
        bits = (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    if dtype == "F32":
        return array.astype(np.float32).astype(np.float64)
    return array.astype(np.float64)


def _lowrank_ranks(up: np.ndarray, down: np.ndarray) -> tuple[int, int]:
    """rank90/rank99 from QR of both factors and an SVD of the small core (a third way, not Gram matrices)."""
    values = np.linalg.svd(np.linalg.qr(up)[1] @ np.linalg.qr(down.T)[1].T, compute_uv=False) ** 2
    if values.sum() == 0:
        return 0, 0
    share = np.cumsum(values) / values.sum()
    return int(np.searchsorted(share, 0.9 * (1 - 1e-9)) + 1), int(np.searchsorted(share, 0.99 * (1 - 1e-9)) + 1)


def test_every_dtype_through_reused_buffers_matches_independent_maths(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    # big, small, big again, …: each parameter's buffer grows, is reused for a smaller tensor, then grows again
    plan = [
        ("F16", 8, 640, 768),
        ("BF16", 8, 64, 96),
        ("F32", 8, 320, 1024),
        ("F64", 4, 96, 64),
        ("F16", 16, 1280, 640),
        ("F32", 4, 48, 80),
    ]
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    expected = {}
    same_in_f32: dict[str, np.ndarray] = {}
    for number, (dtype, rank, out, inp) in enumerate(plan):
        name = _NAME.format(number % 3, number)
        # the odd-sized float16 alpha comes first, so the float32 factors after it are not 4-byte aligned
        alpha = float(rank // 2)
        tensors[f"{name}.alpha"] = ("F16", np.array(alpha))
        down = rng.standard_normal((rank, inp)) / 7
        up = rng.standard_normal((out, rank)) / 5
        up[:, -1] *= 1e-3  # a weak direction: the 99 % rank is below the nominal rank
        tensors[f"{name}.lora_down.weight"] = (dtype, down)
        tensors[f"{name}.lora_up.weight"] = (dtype, up)
        down_v, up_v = _stored(dtype, down), _stored(dtype, up)
        expected[name] = (alpha / rank * up_v, down_v)
        same_in_f32[f"{name}.lora_down.weight"] = down_v.astype(np.float32)
        same_in_f32[f"{name}.lora_up.weight"] = up_v.astype(np.float32)
        same_in_f32[f"{name}.alpha"] = np.array(alpha, np.float32)
    path = write_stored(tmp_path / "mixed.safetensors", tensors)
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    starts = [
        8 + length + t["data_offsets"][0] for t in json.loads(data[8 : 8 + length]).values() if t["dtype"] == "F32"
    ]
    assert any(start % 4 for start in starts) and any(start % 4 == 0 for start in starts)

    result = analyze_weights(path)
    assert result.ok, result.error
    rows = {row["source"]: row for row in result.modules}
    assert set(rows) == set(expected)
    for name, (up, down) in expected.items():
        norm = float(np.linalg.norm(up @ down))
        assert rows[name]["norm"] == pytest.approx(norm, rel=1e-5), name
        assert (rows[name]["rank90"], rows[name]["rank99"]) == _lowrank_ranks(up, down), name
    # the plain reader (fresh float32 copies, one module at a time) agrees
    with LoraWeights(path) as lora:
        for key in lora.modules:
            row = next(r for r in result.modules if r["key"] == key)
            assert lora.module(key).norm2() == pytest.approx(row["norm"] ** 2, rel=1e-6)
    # the same values stored as plain float32 give the same signature
    again = analyze_weights(write_safetensors(tmp_path / "f32.safetensors", same_in_f32))
    assert again.ok and result.signature is not None and again.signature is not None
    np.testing.assert_allclose(again.signature, result.signature, atol=1e-6)
    assert again.total_norm == pytest.approx(result.total_norm, rel=1e-6)


def test_batched_effective_ranks_with_singular_grams_match_one_by_one(tmp_path: Path) -> None:
    """Modules of one rank share one batched solve; an all-zero or rank-deficient ``up`` (no Cholesky factor)
    must not change anyone's numbers."""
    rng = np.random.default_rng(11)
    rank, out, inp = 8, 96, 80
    ups = {
        "plain": rng.standard_normal((out, rank)),
        "zero": np.zeros((out, rank)),
        "duplicate_columns": rng.standard_normal((out, rank)),
        "padded": np.concatenate([rng.standard_normal((out, 2)), np.zeros((out, rank - 2))], axis=1),
        "graded": rng.standard_normal((out, rank)) * np.geomspace(1, 1e-2, rank),
    }
    ups["duplicate_columns"][:, 1] = ups["duplicate_columns"][:, 0]
    tensors = {}
    factors = {}
    for number, (label, up) in enumerate(ups.items()):
        name = _NAME.format(number % 3, number)
        down = rng.standard_normal((rank, inp))
        tensors[f"{name}.lora_down.weight"] = down.astype(np.float32)
        tensors[f"{name}.lora_up.weight"] = up.astype(np.float32)
        tensors[f"{name}.alpha"] = np.array(rank, np.float32)
        factors[name] = (label, up.astype(np.float32).astype(np.float64), down.astype(np.float32).astype(np.float64))
    result = analyze_weights(write_safetensors(tmp_path / "batch.safetensors", tensors))
    assert result.ok, result.error
    rows = {row["source"]: row for row in result.modules}
    for name, (label, up, down) in factors.items():
        row = rows[name]
        assert (row["rank90"], row["rank99"]) == _lowrank_ranks(up, down), label
        assert row["norm"] == pytest.approx(float(np.linalg.norm(up @ down)), rel=1e-5, abs=1e-12), label
        assert row["flag"] == ("zero" if label == "zero" else None)
    assert rows[_NAME.format(0, 3)]["rank99"] <= 2


def test_blas_thread_count_is_restored_after_concurrent_analyses(tmp_path: Path) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(5)
    paths = []
    for number in range(6):
        tensors = {}
        for m in range(12):
            name = _NAME.format(m % 3, m)
            tensors[f"{name}.lora_down.weight"] = rng.standard_normal((16, 1280)).astype(np.float16)
            tensors[f"{name}.lora_up.weight"] = rng.standard_normal((1280, 16)).astype(np.float16)
            tensors[f"{name}.alpha"] = np.array(8, np.float16)
        paths.append(write_safetensors(tmp_path / f"{number}.safetensors", tensors))

    def blas_threads() -> list[int]:
        return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(analyze_weights, paths * 2))
        assert all(r.ok for r in results)
        assert blas_threads() == before
        blas = sys.modules["workbench.files._blas"]  # white-box: the limit is really applied meanwhile
        api = blas._api()
        assert api is not None, "numpy's OpenBLAS not found: the analysis would run BLAS on every core"
        get_threads, _ = api
        assert get_threads() == 2
        with blas.single_threaded_blas():
            assert get_threads() == 1 and 1 in blas_threads()  # numpy's BLAS (others loaded may differ)
        assert get_threads() == 2 and blas_threads() == before


def test_a_forked_analysis_worker_does_not_inherit_a_held_blas_lock() -> None:
    """Analysis workers are forked, maybe while another thread of the kernel holds the BLAS-limit lock for a
    moment: the child must not wait forever for a lock no thread of its own will release."""
    import multiprocessing

    import workbench.files  # noqa: F401  (loads the module looked up below)

    blas = sys.modules["workbench.files._blas"]  # white-box: hold the very lock the analysis takes

    def child() -> None:
        with blas.single_threaded_blas():
            pass

    with blas._LOCK:
        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(timeout=30)
    alive = process.is_alive()
    if alive:
        process.kill()
        process.join()
    assert not alive and process.exitcode == 0
