"""File hashes people look LoRAs up by: SHA256 (Civitai), AutoV2, AutoV1, and the addnet tensor hash.

Hashing reads whole files, so it is lazy (on demand or in a background thread) and cached by
(path, size, mtime): an unchanged file is never hashed twice. One read pass yields every hash.
"""
from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from workbench._db import Database

_BLOCK = 1 << 20
_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000
_WRITE_EVERY = 64


@dataclass(frozen=True)
class FileHashes:
    """All hashes of one file. `tensor_hash` is None for files that are not valid safetensors."""

    sha256: str
    autov1: str
    tensor_hash: str | None

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    @property
    def lora_shorthash(self) -> str | None:
        """What A1111 writes into `Lora hashes:` infotext (first 12 hex of the tensor hash)."""
        return self.tensor_hash[:12] if self.tensor_hash else None


def file_hashes(path: str | os.PathLike[str]) -> FileHashes:
    """Hash one file in 1 MiB blocks, computing the whole-file, legacy and tensor-data hashes in one pass."""
    whole = hashlib.sha256()
    legacy = hashlib.sha256()
    tensor: hashlib._Hash | None = None
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        whole.update(prefix)
        data_start = None
        if len(prefix) == 8:
            (header_len,) = struct.unpack("<Q", prefix)
            if 8 + header_len <= size:
                data_start = 8 + header_len
                tensor = hashlib.sha256()
        position = 8 if len(prefix) == 8 else len(prefix)
        while True:
            block = handle.read(_BLOCK)
            if not block:
                break
            whole.update(block)
            end = position + len(block)
            # legacy AutoV1 window: bytes [0x100000, 0x110000)
            lo, hi = max(position, _LEGACY_OFFSET), min(end, _LEGACY_OFFSET + _LEGACY_LENGTH)
            if lo < hi:
                legacy.update(block[lo - position : hi - position])
            if tensor is not None and data_start is not None and end > data_start:
                tensor.update(block[max(0, data_start - position) :])
            position = end
    return FileHashes(whole.hexdigest(), legacy.hexdigest()[:8], tensor.hexdigest() if tensor else None)


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
        st = os.stat(path)
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return None  # changed since the scan: the next scan will pick it up
        return path, size, mtime_ns, file_hashes(path)
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
    db: Database, ids: Iterable[int] | None = None, *, progress: bool = True, workers: int | None = None
) -> int:
    """Hash every catalogued file that has no hash for its current (size, mtime); returns the count."""
    from tqdm.auto import tqdm

    pending = _pending(db, ids)
    total_bytes = sum(size for _, size, _ in pending)
    done = 0
    buffer: list[tuple[str, int, int, FileHashes]] = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="Hashing", disable=not progress or not pending) as bar:
        with ThreadPoolExecutor(max_workers=workers or min(2, os.cpu_count() or 1)) as pool:
            for item, result in zip(pending, pool.map(_hash_one, pending)):
                bar.update(item[1])
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
    thread = threading.Thread(target=hash_catalog, args=(db,), kwargs={"progress": False}, daemon=True, name="workbench-hash")
    thread.start()
    return thread

