"""Weight-space analysis of the catalogued files: cached analyses, "similar by weights", near-duplicate groups.

The per-file maths is :mod:`workbench.files` (``analyze_weights``, ``weights_cosine``); this module decides what
to analyse (files whose (path, size, mtime) has no analysis of the current version), stores the results, and
answers similarity questions at library scale: every valid analysis carries a fixed-size signature whose inner
products estimate the cosine of two LoRAs' deltas, a FAISS index over the signatures of one base-model family
proposes candidates (k nearest neighbours: no all-pairs comparison), and the exact cosine — read from both files
in low-rank form, cached per file-identity pair — confirms them. Groups are complete-linkage: every pair inside a
group has an exact cosine ≥ the threshold, so a 50/50 merge of two LoRAs (cosine ≈ 0.71 to each) joins neither.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.catalog._db import Database
from workbench.catalog._pool import lock_paths, worker_pool
from workbench.files import (
    ANALYSIS_VERSION,
    SIGNATURE_DIM,
    WeightAnalysis,
    WeightsError,
    analyze_weights,
    base_model_family,
    single_threaded_blas,
    weights_cosine,
)

if TYPE_CHECKING:
    from workbench.catalog._catalog import Catalog

log = logging.getLogger("workbench.weights")

#: Default cosine for "near-duplicate by weights": the same LoRA re-saved (fp16, other alpha, other key
#: layout, re-factorised) scores ≥ 0.999, retrains of one dataset typically 0.9–0.99, a 50/50 merge ≈ 0.71
#: to each parent, unrelated LoRAs ≈ 0.
DEFAULT_THRESHOLD = 0.9
#: Candidates are pairs whose signature estimate is within this of the threshold (the estimate's error is
#: a few hundredths; the margin leaves room for it).
CANDIDATE_MARGIN = 0.2
NEIGHBOURS = 16
# Up to this many signatures a flat index (one blocked BLAS product, ~5 s for 10,000 on 2 busy cores) beats
# building a graph; above it an HNSW graph keeps the neighbour search sub-quadratic.
FLAT_INDEX_MAX = 20_000
_WRITE_EVERY = 16


def _identity(path: str, size: int, mtime_ns: int) -> str:
    return f"{path}\x1f{size}\x1f{mtime_ns}\x1f{ANALYSIS_VERSION}"


def _index(signatures: np.ndarray, kind: str = "auto") -> Any:
    """A FAISS inner-product index over unit signatures: flat when small, HNSW (sub-quadratic) when large."""
    import faiss

    index: Any
    if kind == "flat" or (kind == "auto" and len(signatures) <= FLAT_INDEX_MAX):
        index = faiss.IndexFlatIP(signatures.shape[1])
    else:
        index = faiss.IndexHNSWFlat(signatures.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = 48
    index.add(np.ascontiguousarray(signatures, dtype=np.float32))
    return index


def _complete_linkage(similarity: np.ndarray, threshold: float) -> list[list[int]]:
    """Agglomerative complete-linkage clustering: merge the two closest clusters while their *lowest*
    pairwise similarity is ≥ threshold. Returns clusters of two or more members."""
    n = len(similarity)
    work = similarity.astype(np.float64, copy=True)
    np.fill_diagonal(work, -np.inf)
    clusters: list[list[int] | None] = [[i] for i in range(n)]
    while n > 1:
        flat = int(np.argmax(work))
        i, j = divmod(flat, n)
        if work[i, j] < threshold:
            break
        cluster_i, cluster_j = clusters[i], clusters[j]
        assert cluster_i is not None and cluster_j is not None
        cluster_i.extend(cluster_j)
        clusters[j] = None
        merged = np.minimum(work[i], work[j])
        work[i, :] = merged
        work[:, i] = merged
        work[i, i] = -np.inf
        work[j, :] = -np.inf
        work[:, j] = -np.inf
    return [sorted(c) for c in clusters if c is not None and len(c) > 1]


def group_by_signatures(
    signatures: np.ndarray,
    threshold: float,
    exact: Callable[[int, int], float | None],
    *,
    neighbours: int = NEIGHBOURS,
    margin: float = CANDIDATE_MARGIN,
    index: str = "auto",
) -> list[tuple[list[int], float]]:
    """Complete-linkage groups of rows whose exact cosines are all ≥ threshold.

    ``signatures`` are unit rows (one base-model family); ``exact(i, j)`` returns the exact cosine or None
    when the pair cannot be compared. FAISS proposes each row's nearest neighbours; pairs estimated within
    ``margin`` of the threshold are confirmed exactly; connected components of confirmed pairs are then split
    by complete linkage (pairs inside a component that were never proposed are estimated, and confirmed
    exactly when the estimate is close). ``index``: "auto" (flat up to FLAT_INDEX_MAX rows, else HNSW),
    "flat" or "hnsw". Returns ``(rows, lowest pairwise cosine)`` per group.
    """
    n = len(signatures)
    if n < 2:
        return []
    estimates, neighbours_of = _index(signatures, index).search(
        np.ascontiguousarray(signatures, dtype=np.float32), min(n, neighbours + 1)
    )
    floor = threshold - margin
    known: dict[tuple[int, int], float] = {}

    def cosine(i: int, j: int) -> float:
        pair = (i, j) if i < j else (j, i)
        if pair not in known:
            value = exact(*pair)
            known[pair] = -1.0 if value is None else value
        return known[pair]

    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero((estimates >= floor) & (neighbours_of >= 0))
    for i, col in zip(rows.tolist(), cols.tolist()):
        j = int(neighbours_of[i, col])
        if j == i or (min(i, j), max(i, j)) in known:
            continue
        if cosine(i, j) >= threshold:
            parent[find(i)] = find(j)
    components: dict[int, list[int]] = {}
    for i in {k for pair, value in known.items() if value >= threshold for k in pair}:
        components.setdefault(find(i), []).append(i)
    groups: list[tuple[list[int], float]] = []
    for members in components.values():
        members.sort()
        sims = signatures[members] @ signatures[members].T
        matrix = np.empty((len(members), len(members)))
        for a, i in enumerate(members):
            for b in range(a, len(members)):
                j = members[b]
                value = 1.0 if a == b else (cosine(i, j) if sims[a, b] >= floor else float(sims[a, b]))
                matrix[a, b] = matrix[b, a] = value
        for cluster in _complete_linkage(matrix, threshold):
            lowest = min(matrix[a, b] for x, a in enumerate(cluster) for b in cluster[x + 1 :])
            groups.append(([members[a] for a in cluster], float(lowest)))
    groups.sort(key=lambda g: (-len(g[0]), -g[1]))
    return groups


def analysis_summary(done: pd.DataFrame) -> str:
    """One line for what an `Weights.analyze` run did (the worker task and a view's kernel thread say the same)."""
    failed = int((~done["ok"].astype(bool)).sum()) if len(done) else 0
    return f"{len(done):,} file(s) analysed" + (f", {failed:,} could not be read" if failed else "")


class Weights:
    """Weight-space analysis of the catalogued files (``wb.weights``): analyse, look up, similar, duplicates."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.db: Database = catalog.db
        self._cache: dict[str, tuple[str, Any]] = {}

    # -- analysing ---------------------------------------------------------------------------------
    def _pending(self, ids: Iterable[int] | None, force: bool) -> list[tuple[int, str, int, int]]:
        sql = (
            "SELECT l.id, l.path, l.size_bytes, l.mtime_ns FROM loras l "
            "LEFT JOIN user_fields u ON u.lora_id = l.id "
            "LEFT JOIN weight_analyses w ON w.path = l.path AND w.size_bytes = l.size_bytes "
            "AND w.mtime_ns = l.mtime_ns AND w.version = ? "
            "WHERE l.path <> '' AND NOT l.missing AND lower(l.path) LIKE '%.safetensors' "
            "AND NOT coalesce(u.removed, false)"
        )
        params: list[Any] = [ANALYSIS_VERSION]
        if not force:
            sql += " AND w.path IS NULL"
        if ids is not None:
            sql += " AND list_contains(?, l.id)"
            params.append([int(i) for i in ids])
        with self.db.read() as con:
            rows = con.execute(sql + " ORDER BY l.size_bytes", params).fetchall()
        return [(int(i), p, int(s), int(m)) for i, p, s, m in rows]

    def analyze(
        self,
        ids: Iterable[int] | None = None,
        *,
        force: bool = False,
        progress: bool = True,
        workers: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> pd.DataFrame:
        """Analyse the tensors of files lacking a current analysis (all, or ``ids``); returns one row per file
        analysed now (id, path, ok, error). A bad file gets its error recorded and the run goes on.
        ``workers`` processes (default: one per core, up to 8) analyse files side by side; a single file is
        analysed in this process. ``on_progress(bytes_done, bytes_total)`` follows each file (the shared
        worker reports it to pages)."""
        from tqdm.auto import tqdm

        if ids is not None:
            ids = [self.catalog._check_id(i) for i in ids]
        pending = self._pending(ids, force)
        if workers is None:
            workers = min(os.cpu_count() or 1, 8)
        done: list[dict[str, Any]] = []
        buffer: list[tuple[str, int, int, WeightAnalysis]] = []
        total = sum(size for _, _, size, _ in pending)
        read = 0
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="Weights", disable=not progress or not pending)
        # closing(): an interrupted run shuts its workers down and lifts the BLAS limit now, not when a stored
        # traceback lets the suspended generator go
        with bar, closing(_analysed(pending, workers, lock_paths(self.db))) as analysed:
            for item, result in analysed:
                bar.update(item[2])
                read += item[2]
                if on_progress is not None:
                    on_progress(read, total)
                if result is None:
                    continue
                buffer.append((item[1], item[2], item[3], result))
                done.append({"id": item[0], "path": item[1], "ok": result.ok, "error": result.error})
                if len(buffer) >= _WRITE_EVERY:
                    self._store(buffer)
                    buffer = []
        self._store(buffer)
        return pd.DataFrame(done, columns=["id", "path", "ok", "error"])

    def _store(self, rows: list[tuple[str, int, int, WeightAnalysis]]) -> None:
        if not rows:
            return
        values = []
        for path, size, mtime_ns, result in rows:
            ranks = result.rank_summary() if result.ok else {}
            values.append(
                [
                    path,
                    size,
                    mtime_ns,
                    ANALYSIS_VERSION,
                    result.ok,
                    result.error,
                    result.family,
                    result.network_type,
                    result.key_layout,
                    result.nominal_rank,
                    ranks.get("rank90_median"),
                    ranks.get("rank99_median"),
                    result.total_norm if result.ok else None,
                    len(result.modules),
                    json.dumps(result.summary()) if result.ok else None,
                    result.signature.tolist() if result.ok and result.signature is not None else None,
                ]
            )
        with self.db.write() as con:
            con.execute("DELETE FROM weight_analyses WHERE list_contains(?, path)", [[row[0] for row in values]])
            con.executemany(
                "INSERT INTO weight_analyses (path, size_bytes, mtime_ns, version, ok, error, family, network_type,"
                " key_layout, nominal_rank, rank90, rank99, total_norm, module_count, summary, signature)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    # -- reading -----------------------------------------------------------------------------------
    _CURRENT = (
        "FROM lora_view v JOIN loras l ON l.id = v.id JOIN weight_analyses w ON w.path = l.path "
        f"AND w.size_bytes = l.size_bytes AND w.mtime_ns = l.mtime_ns AND w.version = {ANALYSIS_VERSION} "
        "WHERE NOT v.missing"
    )

    def table(self, ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Current analyses joined to the catalog: id, name, path, base_model, family, ok, error, network_type,
        key_layout, nominal_rank, rank90, rank99 (medians over modules), total_norm, module_count."""
        sql = (
            "SELECT v.id, v.name, v.path, v.base_model, w.family, w.ok, w.error, w.network_type, w.key_layout,"
            " w.nominal_rank, w.rank90, w.rank99, w.total_norm, w.module_count " + self._CURRENT
        )
        params: list[Any] = []
        if ids is not None:
            sql += " AND list_contains(?, v.id)"
            params.append([self.catalog._check_id(i) for i in ids])
        return self.db.read_df(sql + " ORDER BY v.id", params)

    def get(self, lora_id: int) -> dict[str, Any] | None:
        """The stored analysis of one LoRA (summary with blocks, block_kinds, ranks, flags), or None if it has
        no current analysis. A bad file has ``ok`` False and ``error`` set."""
        lora_id = self.catalog._check_id(lora_id)
        with self.db.read() as con:
            rows = con.execute(
                "SELECT w.ok, w.error, w.summary, v.base_model " + self._CURRENT + " AND v.id = ?", [lora_id]
            ).fetchall()
        if not rows:
            return None
        ok, error, summary, base_model = rows[0]
        record = json.loads(summary) if summary else {}
        record.update({"id": lora_id, "ok": bool(ok), "error": error})
        record["family"] = base_model_family(base_model) or record.get("family")
        return record

    def _signatures(self) -> pd.DataFrame:
        """Every valid analysis with its family and signature (a (n, SIGNATURE_DIM) array in ``attrs``)."""
        stamp = self.db.stamp()
        cached = self._cache.get("signatures")
        if cached and cached[0] == stamp:
            return cached[1]
        with self.db.read() as con:
            table = con.sql(
                "SELECT v.id, v.name, v.path, l.size_bytes, l.mtime_ns, v.base_model, w.family AS file_family,"
                " w.signature " + self._CURRENT + " AND w.ok AND w.signature IS NOT NULL ORDER BY v.id"
            ).to_arrow_table()
        frame = table.drop(["signature"]).to_pandas()
        column = table.column("signature").combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        frame.attrs["signatures"] = values.reshape(len(frame), SIGNATURE_DIM)
        frame["family"] = [
            base_model_family(b) or f or "unknown" for b, f in zip(frame["base_model"], frame["file_family"])
        ]
        frame["identity"] = [
            _identity(p, s, m) for p, s, m in zip(frame["path"], frame["size_bytes"], frame["mtime_ns"])
        ]
        self._cache["signatures"] = (stamp, frame)
        return frame

    def _pairs(self, frame: pd.DataFrame) -> Callable[[int, int], float | None]:
        """Exact cosine of two rows of ``frame``, from the pair cache or both files (new ones are stored)."""
        with self.db.read() as con:
            stored = con.execute("SELECT key_a, key_b, cosine FROM weight_pairs").fetchall()
        cache: dict[tuple[str, str], float | None] = {(a, b): c for a, b, c in stored}
        fresh: list[tuple[str, str, float | None, int | None, str | None]] = []
        identity, paths = frame["identity"].tolist(), frame["path"].tolist()

        def exact(i: int, j: int) -> float | None:
            key = (identity[i], identity[j]) if identity[i] < identity[j] else (identity[j], identity[i])
            if key in cache:
                return cache[key]
            try:
                result = weights_cosine(paths[i], paths[j])
                value, common, error = result.cosine, result.common_modules, None
            except (WeightsError, OSError) as err:
                value, common, error = None, None, str(err)
            cache[key] = value
            fresh.append((key[0], key[1], value, common, error))
            return value

        exact.fresh = fresh  # type: ignore[attr-defined]
        return exact

    def _save_pairs(self, exact: Callable[[int, int], float | None]) -> None:
        fresh = getattr(exact, "fresh", [])
        if not fresh:
            return
        with self.db.write() as con:  # another kernel may have stored the same pair meanwhile: keep one row
            con.executemany(
                "INSERT INTO weight_pairs (key_a, key_b, cosine, common_modules, error) SELECT ?, ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM weight_pairs WHERE key_a = ? AND key_b = ?)",
                [(*pair, pair[0], pair[1]) for pair in fresh],
            )
        fresh.clear()

    # -- questions ---------------------------------------------------------------------------------
    def similar(self, lora_id: int, k: int = 10) -> pd.DataFrame:
        """The ``k`` LoRAs of the same base-model family closest by weights: id, name, path, cosine (exact),
        estimate (from signatures). Raises LookupError when the LoRA has no valid analysis."""
        lora_id = self.catalog._check_id(lora_id)
        frame = self._signatures()
        mine = frame.index[frame["id"] == lora_id]
        if not len(mine):
            record = self.get(lora_id)
            if record is not None and not record["ok"]:
                raise LookupError(f"LoRA {lora_id} could not be analysed: {record['error']}")
            raise LookupError(f"LoRA {lora_id} has no weight analysis yet: run wb.weights.analyze([{lora_id}])")
        row = int(mine[0])
        family = frame.at[row, "family"]
        same = np.flatnonzero((frame["family"] == family).to_numpy())
        same = same[same != row]
        columns = ["id", "name", "path", "cosine", "estimate"]
        if not len(same):
            return pd.DataFrame(columns=columns)
        signatures = frame.attrs["signatures"]
        index = _index(signatures[same])
        estimates, hits = index.search(signatures[row : row + 1], min(len(same), k + 10))
        exact = self._pairs(frame)
        records = []
        for estimate, hit in zip(estimates[0].tolist(), hits[0].tolist()):
            if hit < 0:
                continue
            other = int(same[hit])
            cosine = exact(row, other)
            if cosine is None:
                continue
            records.append(
                {
                    "id": int(frame.at[other, "id"]),
                    "name": frame.at[other, "name"],
                    "path": frame.at[other, "path"],
                    "cosine": cosine,
                    "estimate": estimate,
                }
            )
        self._save_pairs(exact)
        result = pd.DataFrame(records, columns=columns)
        return result.sort_values("cosine", ascending=False).head(k).reset_index(drop=True)

    def groups(self, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
        """Near-duplicate groups by weights, within each base-model family: every pair in a group has an exact
        cosine ≥ ``threshold``. Each group: family, ids, names, paths, similarity (lowest pairwise cosine)."""
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        frame = self._signatures()
        signatures = frame.attrs["signatures"]
        exact = self._pairs(frame)
        out: list[dict[str, Any]] = []
        try:
            for family, members_of_family in frame.groupby("family").indices.items():
                rows = np.asarray(members_of_family)

                def family_exact(i: int, j: int, rows: np.ndarray = rows) -> float | None:
                    return exact(int(rows[i]), int(rows[j]))

                found = group_by_signatures(signatures[rows], threshold, family_exact)
                for members, lowest in found:
                    picked = frame.iloc[rows[members]]
                    out.append(
                        {
                            "family": family,
                            "ids": picked["id"].astype(int).tolist(),
                            "names": picked["name"].tolist(),
                            "paths": picked["path"].tolist(),
                            "similarity": lowest,
                        }
                    )
        finally:
            self._save_pairs(exact)
        out.sort(key=lambda g: (-len(g["ids"]), -g["similarity"]))
        return out

    def duplicates(self, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
        """The groups of :meth:`groups` as rows: group, similarity, family, id, name, path, size_bytes, missing."""
        groups = self.groups(threshold)
        columns = ["group", "similarity", "family", "id", "name", "path", "size_bytes", "missing"]
        if not groups:
            return pd.DataFrame(columns=columns)
        ids = [i for g in groups for i in g["ids"]]
        info = self.catalog.query(ids=ids, limit=None).set_index("id")
        rows = [
            {
                "group": number,
                "similarity": group["similarity"],
                "family": group["family"],
                "id": lora_id,
                "name": info.at[lora_id, "name"] if lora_id in info.index else None,
                "path": info.at[lora_id, "path"] if lora_id in info.index else None,
                "size_bytes": info.at[lora_id, "size_bytes"] if lora_id in info.index else None,
                "missing": bool(info.at[lora_id, "missing"]) if lora_id in info.index else None,
            }
            for number, group in enumerate(groups, start=1)
            for lora_id in group["ids"]
        ]
        return pd.DataFrame(rows, columns=columns)

    def _repr_html_(self) -> str:
        table = self.table()
        ok = int(table["ok"].sum()) if len(table) else 0
        return f"<b>Weight-space analysis</b>: {ok} LoRAs analysed, {len(table) - ok} with errors"


_Pending = tuple[int, str, int, int]  # id, path, size, mtime_ns


def _analyze_pending(item: _Pending) -> WeightAnalysis | None:
    """One file's analysis (None: the file changed since the scan; the next scan picks it up). Never raises."""
    _, path, size, mtime_ns = item
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != size or st.st_mtime_ns != mtime_ns:
        return None
    try:
        return analyze_weights(path)
    except Exception as err:  # a bug must not stop the run over a library; the file records it
        log.exception("weight analysis of %s failed", path)
        return WeightAnalysis(path=path, error=f"unexpected error: {type(err).__name__}: {err}")


def _analysed(
    pending: list[_Pending], workers: int, held_locks: tuple[str, ...]
) -> Generator[tuple[_Pending, WeightAnalysis | None], None, None]:
    """(item, analysis) for every pending file, in completion order: in worker processes when there are two
    or more files, a few files in flight per worker (bounded memory). A worker process that dies (a crash in
    native code, the OOM killer) costs only its own file: the files it may have been reading are analysed again
    one at a time, and the one that kills its process again is recorded as bad."""
    if workers <= 1 or len(pending) < 2:
        for item in pending:
            yield item, _analyze_pending(item)
        return
    queue = list(reversed(pending))  # pop() from the end: smallest files first, as _pending orders them
    while queue:
        suspects: list[_Pending] = []
        with _one_blas_thread(), worker_pool(min(workers, len(queue)), held_locks) as pool:
            in_flight: dict[Future[WeightAnalysis | None], _Pending] = {}
            while (queue or in_flight) and not suspects:
                while queue and len(in_flight) < 2 * workers:
                    item = queue.pop()
                    in_flight[pool.submit(_analyze_pending, item)] = item
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = in_flight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        suspects = [item, *in_flight.values()]
                        break
                    yield item, result
        for item in suspects:
            yield item, _alone(item, held_locks)


def _one_blas_thread() -> Any:
    """Workers are forked while this process holds OpenBLAS to one thread: a worker that changed the limit
    itself would start OpenBLAS's thread pool, whose threads spin ~0.1 s of CPU each (measured: a fifth of a
    worker's first file), and its parallelism is the pool's anyway."""
    return single_threaded_blas()


def _alone(item: _Pending, held_locks: tuple[str, ...]) -> WeightAnalysis | None:
    """Analyse one file in a process of its own: if that process dies too, the file is what killed it."""
    with _one_blas_thread(), worker_pool(1, held_locks) as pool:
        try:
            return pool.submit(_analyze_pending, item).result()
        except BrokenProcessPool:
            return WeightAnalysis(
                path=item[1], error="the analysis process died reading this file (crash or out of memory)"
            )
