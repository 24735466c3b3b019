"""FAISS vector index: exact vs HNSW, incremental patching by id, persistence, staleness."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.search import VectorIndex


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_index_patches_by_id_and_persists(tmp_path: Path) -> None:
    vecs = _unit(50)
    ids = np.arange(100, 150, dtype=np.int64)
    idx = VectorIndex(tmp_path, "m1", hnsw_threshold=1000)
    wanted = {int(i): f"h{i}" for i in ids}
    load, drop = idx.plan(wanted)
    assert len(load) == 50 and not drop and idx.needs_rebuild(wanted, len(load), len(drop))
    idx.rebuild(ids, vecs, wanted)
    assert idx.kind == "flat" and len(idx) == 50
    found, scores = idx.search(vecs[7], 3)
    assert found[0] == 107 and abs(scores[0] - 1.0) < 1e-5
    np.testing.assert_allclose(idx.vector(120), vecs[20], atol=1e-6)

    # one changed, one removed, one added: patched in place, exact results stay exact
    wanted.pop(101)
    wanted[110] = "h110-new"
    wanted[999] = "h999"
    load, drop = idx.plan(wanted)
    assert sorted(load) == [110, 999] and drop == [101]
    assert not idx.needs_rebuild(wanted, len(load), len(drop))
    new = _unit(2, seed=1)
    idx.apply(np.array([110, 999]), new, wanted, drop)
    assert len(idx) == 50 and 101 not in idx
    assert idx.search(new[0], 1)[0][0] == 110 and idx.search(new[1], 1)[0][0] == 999
    idx.save()

    again = VectorIndex(tmp_path, "m1", hnsw_threshold=1000)
    assert again.load() and len(again) == 50 and again.hashes == wanted
    np.testing.assert_allclose(again.vector(999), new[1], atol=1e-6)
    # another model never reuses these vectors
    assert not VectorIndex(tmp_path, "m2").load()


def test_hnsw_above_threshold_and_rebuild_on_delete(tmp_path: Path) -> None:
    vecs = _unit(300, dim=32, seed=3)
    ids = np.arange(300, dtype=np.int64)
    wanted = {int(i): "h" for i in ids}
    idx = VectorIndex(tmp_path, "m", hnsw_threshold=200)
    idx.rebuild(ids, vecs, wanted)
    assert idx.kind == "hnsw"
    hits = sum(int(idx.search(vecs[i], 1)[0][0] == i) for i in range(0, 300, 10))
    assert hits >= 28  # approximate, but near-exact at this size
    np.testing.assert_allclose(idx.vector(5), vecs[5], atol=1e-6)
    wanted.pop(5)
    load, drop = idx.plan(wanted)
    assert idx.needs_rebuild(wanted, len(load), len(drop))  # HNSW cannot delete
    wanted2 = {i: "h" for i in range(150)}
    assert idx.needs_rebuild(wanted2, 0, 150)  # also: below threshold again -> flat


def test_changed_on_disk_detects_other_writers(tmp_path: Path) -> None:
    vecs = _unit(5)
    a = VectorIndex(tmp_path, "m")
    a.rebuild(np.arange(5), vecs, {i: "h" for i in range(5)})
    a.save()
    b = VectorIndex(tmp_path, "m")
    assert b.load() and not b.changed_on_disk()
    a.apply(np.array([9]), _unit(1, seed=9), {**{i: "h" for i in range(5)}, 9: "h"}, [])
    a.save()
    assert b.changed_on_disk()


def test_matrix_returns_every_vector_by_id_and_search_keeps_the_thread_setting(tmp_path: Path) -> None:
    import faiss

    vecs = _unit(40)
    ids = np.arange(500, 540, dtype=np.int64)
    for threshold in (1000, 10):  # flat, then HNSW
        idx = VectorIndex(tmp_path / str(threshold), "m", hnsw_threshold=threshold)
        idx.rebuild(ids, vecs, {int(i): "h" for i in ids})
        expect = 40
        if threshold == 1000:  # a flat index can drop an id: the matrix follows, the version moves
            before = idx.version
            idx.apply(np.zeros(0, np.int64), None, {int(i): "h" for i in ids[:39]}, [int(ids[39])])
            assert idx.version > before
            expect = 39
        got_ids, got = idx.matrix()
        assert sorted(got_ids.tolist()) == ids[:expect].tolist()
        assert np.allclose(got[np.argsort(got_ids)], vecs[:expect], atol=1e-6)
        threads = faiss.omp_get_max_threads()
        found, _ = idx.search(vecs[3], 3)
        assert found[0] == ids[3]
        assert faiss.omp_get_max_threads() == threads
    assert VectorIndex(tmp_path / "empty", "m").matrix()[1].shape == (0, 0)
