"""Hashing the catalogued files: which rows lack a hash for their current (size, mtime), and storing them.

The hashes of one file come from :func:`workbench.files.file_hashes`; this module only decides what to hash
and writes the results in batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from workbench.catalog._db import Database
from workbench.files import FileHashes, file_hashes, fs_path

_WRITE_EVERY = 64


def _pending(db: Database, ids: Iterable[int] | None) -> list[tuple[str, int, int]]:
    sql = (
        "SELECT l.path, l.size_bytes, l.mtime_ns FROM loras l LEFT JOIN hashes h "
        "ON h.path = l.path AND h.size_bytes = l.size_bytes AND h.mtime_ns = l.mtime_ns "
        "WHERE h.path IS NULL AND l.path <> '' AND NOT l.missing AND l.format IS NOT NULL "
        "AND (l.error IS NULL OR l.header_len IS NOT NULL)"
    )
    params: list[object] = []
    if ids is not None:
        sql += " AND list_contains(?, l.id)"
        params.append([int(i) for i in ids])
    with db.read() as con:
        return [(p, int(s), int(m)) for p, s, m in con.execute(sql + " ORDER BY l.size_bytes", params).fetchall()]


def _hash_one(item: tuple[str, int, int]) -> tuple[str, int, int, FileHashes] | None:
    path, size, mtime_ns = item
    try:
        st = os.stat(fs_path(path))  # the stored path may be escaped (a name that is not UTF-8)
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return None  # changed since the scan: the next scan will pick it up
        return path, size, mtime_ns, file_hashes(fs_path(path))
    except OSError:
        return None


def _store(db: Database, rows: list[tuple[str, int, int, FileHashes]]) -> None:
    if not rows:
        return
    with db.write() as con:
        for path, size, mtime_ns, hashes in rows:
            con.execute("DELETE FROM hashes WHERE path = ?", [path])
            con.execute(
                "INSERT INTO hashes (path, size_bytes, mtime_ns, sha256, autov1, tensor_hash) VALUES (?, ?, ?, ?, ?, ?)",
                [path, size, mtime_ns, hashes.sha256, hashes.autov1, hashes.tensor_hash],
            )


def hash_catalog(
    db: Database,
    ids: Iterable[int] | None = None,
    *,
    progress: bool = True,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Hash every catalogued file that has no hash for its current (size, mtime); returns the count.

    ``on_progress(bytes_done, bytes_total)`` is called as files finish (a worker reporting to pages).
    """
    from tqdm.auto import tqdm

    pending = _pending(db, ids)
    total_bytes = sum(size for _, size, _ in pending)
    done = 0
    buffer: list[tuple[str, int, int, FileHashes]] = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="Hashing", disable=not progress or not pending) as bar:
        with ThreadPoolExecutor(max_workers=workers or min(2, os.cpu_count() or 1)) as pool:
            hashed_bytes = 0
            for item, result in zip(pending, pool.map(_hash_one, pending)):
                bar.update(item[1])
                hashed_bytes += item[1]
                if on_progress is not None:
                    on_progress(hashed_bytes, total_bytes)
                if result is None:
                    continue
                buffer.append(result)
                done += 1
                if len(buffer) >= _WRITE_EVERY:
                    _store(db, buffer)
                    buffer = []
    _store(db, buffer)
    return done


def hash_in_background(db: Database) -> threading.Thread:
    """Hash what is missing in a daemon thread, so a notebook stays responsive."""
    thread = threading.Thread(
        target=hash_catalog, args=(db,), kwargs={"progress": False}, daemon=True, name="workbench-hash"
    )
    thread.start()
    return thread
