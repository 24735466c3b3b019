"""A FAISS index of LoRA embeddings, persisted beside the catalog in ``<home>/index/``.

The index maps catalog ids to vectors (``IndexIDMap2``, so vectors can be read back for
"similar to this LoRA" without touching the catalog).  Below `hnsw_threshold` vectors it
is exact (inner product over unit vectors = cosine); above it HNSW.  A small JSON file
beside it records the model, the kind, and the payload hash of every id it holds, so
`sync` can tell what to add, replace or remove when the catalog changed behind its back,
and rebuild when the model changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 80


def _faiss() -> Any:
    import faiss

    return faiss


class VectorIndex:
    """ids -> unit vectors, searchable by inner product; lives in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str], model: str, hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD):
        self.folder = Path(folder)
        self.model = model
        self.hnsw_threshold = int(hnsw_threshold)
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        self.index_path = self.folder / f"{slug}.faiss"
        self.meta_path = self.folder / f"{slug}.json"
        self.index: Any = None
        self.hashes: dict[int, str] = {}
        self.kind = "flat"
        self.dim = 0
        self._file_sig: tuple[int, int] | None = None
        #: bumped whenever the indexed vectors change (load, rebuild, apply), so copies can tell they are stale
        self.version = 0

    # -- persistence ---------------------------------------------------------------------
    def load(self) -> bool:
        """Read the persisted index if it exists and was built with this model; True on success."""
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("model") != self.model or not self.index_path.exists():
                return False
            index = _faiss().read_index(str(self.index_path))
        except (OSError, ValueError, RuntimeError):
            return False
        self.index = index
        self.kind = meta.get("kind", "flat")
        self.dim = int(meta.get("dim", index.d))
        self.hashes = {int(k): v for k, v in meta.get("hashes", {}).items()}
        self._file_sig = self._signature()
        self.version += 1
        return True

    def changed_on_disk(self) -> bool:
        """True when another process rewrote the persisted index since this one loaded or saved it."""
        return self._signature() != self._file_sig

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = self.meta_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def save(self) -> None:
        """Write index and metadata atomically (write to a temp file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        faiss = _faiss()
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".faiss.tmp")
        os.close(fd)
        faiss.write_index(self.index, tmp)
        os.replace(tmp, self.index_path)
        meta = {
            "model": self.model,
            "kind": self.kind,
            "dim": self.dim,
            "hashes": {str(k): v for k, v in self.hashes.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".json.tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh)
        os.replace(tmp, self.meta_path)
        self._file_sig = self._signature()

    # -- building ------------------------------------------------------------------------
    def _new_index(self, dim: int, n: int) -> Any:
        faiss = _faiss()
        if n >= self.hnsw_threshold:
            base = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            base.hnsw.efSearch = HNSW_EF_SEARCH
            self.kind = "hnsw"
        else:
            base = faiss.IndexFlatIP(dim)
            self.kind = "flat"
        self.dim = dim
        return faiss.IndexIDMap2(base)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray, hashes: Mapping[int, str]) -> None:
        """Replace the whole index with these vectors."""
        dim = vectors.shape[1] if vectors.size else (self.dim or 1)
        self.index = self._new_index(dim, len(ids))
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        self.hashes = {int(i): hashes[int(i)] for i in ids}
        self.version += 1

    def plan(self, wanted: Mapping[int, str]) -> tuple[list[int], list[int]]:
        """(ids to (re)load from the catalog, ids to drop) so the index holds exactly `wanted` {id: payload_hash}."""
        load = [i for i, h in wanted.items() if self.hashes.get(i) != h]
        drop = [i for i in self.hashes if i not in wanted]
        return load, drop

    def needs_rebuild(self, wanted: Mapping[int, str], n_load: int, n_drop: int) -> bool:
        """Rebuild rather than patch: no index yet, the size crossed the flat/HNSW threshold,
        or HNSW (which cannot delete) would have to replace or drop vectors.  An empty index is always
        rebuilt (it may have been made before any vector told its dimension)."""
        if self.index is None or len(self) == 0:
            return True
        want_kind = "hnsw" if len(wanted) >= self.hnsw_threshold else "flat"
        if want_kind != self.kind:
            return True
        replaced = sum(1 for i in wanted if i in self.hashes and self.hashes[i] != wanted[i])
        return self.kind == "hnsw" and (n_drop > 0 or replaced > 0)

    def apply(self, ids: np.ndarray, vectors: np.ndarray | None, hashes: Mapping[int, str], drop: list[int]) -> None:
        """Patch in place: remove `drop` and old versions of `ids`, then add `ids` (flat, or HNSW additions)."""
        remove = [int(i) for i in drop] + [int(i) for i in ids if int(i) in self.hashes]
        if remove:
            self.index.remove_ids(np.asarray(remove, dtype=np.int64))
            for i in remove:
                self.hashes.pop(i, None)
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
            for i in ids:
                self.hashes[int(i)] = hashes[int(i)]
        self.version += 1

    # -- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def __contains__(self, lora_id: object) -> bool:
        return lora_id in self.hashes

    def vector(self, lora_id: int) -> np.ndarray:
        """The stored vector of one id (KeyError when absent)."""
        if int(lora_id) not in self.hashes:
            raise KeyError(lora_id)
        return np.asarray(self.index.reconstruct(int(lora_id)), dtype=np.float32)

    def vectors(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of ids that are present (rows in the order given; absent ids give zero rows)."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for row, i in enumerate(ids):
            if int(i) in self.hashes:
                out[row] = self.index.reconstruct(int(i))
        return out

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything indexed, in storage order: one bulk copy instead of a
        `reconstruct` call per id, for callers that score many candidates per query."""
        if self.index is None or len(self) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        ids = _faiss().vector_to_array(self.index.id_map).astype(np.int64)
        vectors = np.asarray(self.index.index.reconstruct_n(0, self.index.ntotal), dtype=np.float32)
        return ids, vectors.reshape(len(ids), -1)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the `k` nearest vectors to one query vector, best first."""
        if self.index is None or len(self) == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        # One query gains nothing from an OpenMP team, and on a busy CPU the team's start-up and
        # spinning cost 10-25x the search itself (HNSW at 50,000: 0.5 ms alone, ~14 ms with 2 threads
        # under load).  The setting is per calling thread; builds elsewhere keep every core.
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = self.index.search(q, min(int(k), len(self)))
        finally:
            faiss.omp_set_num_threads(threads)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]
