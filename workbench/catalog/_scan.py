"""Scan library roots into the catalog: walk, diff by (size, mtime, sidecars), inspect what changed.

Only changed files are reopened, so a rescan of a big unchanged library costs one directory walk
and one catalog read. Inspection (header + sidecars) runs in worker processes when there is
enough of it to pay for them. Rows are written in short batches so other kernels can interleave.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from workbench.catalog._db import Database

#: File suffixes catalogued as LoRAs. Pickle formats are listed but never opened.
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

#: Below this many files to inspect, worker processes cost more than they save.
_POOL_THRESHOLD = 400
_BATCH_ROWS = 2000
_CHUNK = 64

_COLUMNS = (
    "id",
    "path",
    "root",
    "folder",
    "file_name",
    "name",
    "format",
    "size_bytes",
    "mtime",
    "mtime_ns",
    "sidecar_sig",
    "added_at",
    "scanned_at",
    "missing",
    "error",
    "header_len",
    "key_layout",
    "network_type",
    "rank",
    "rank_min",
    "rank_max",
    "alpha",
    "scale",
    "base_model",
    "base_model_evidence",
    "module_count",
    "tensor_count",
    "has_text_encoder",
    "description",
    "trigger_words",
    "file_tags",
    "training_tags",
    "metadata",
    "sidecars",
    "sidecar_errors",
    "sources",
    "preview_path",
    "preview_embedded",
    "civitai_model_id",
    "civitai_version_id",
    "creator",
    "stats",
    "sha256_claimed",
    "origin",
)


@dataclass
class ScanReport:
    """What one scan found and did."""

    roots: list[str]
    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    returned: int = 0
    relinked: int = 0
    errors: int = 0
    skipped_dirs: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"scanned {self.seen} files in {self.seconds:.1f} s: {self.new} new, {self.changed} changed, "
            f"{self.unchanged} unchanged, {self.missing} now missing, {self.returned} returned, "
            f"{self.relinked} relinked, {self.errors} with errors"
        )

    def _repr_html_(self) -> str:
        import html

        return f"<b>Scan</b>: {html.escape(str(self))}"


@dataclass
class _Found:
    path: str
    root: str
    folder: str
    file_name: str
    size: int
    mtime_ns: int
    sidecar_sig: str


def walk_roots(roots: Sequence[Path], skipped: list[str] | None = None) -> dict[str, _Found]:
    """Every LoRA file under the roots, keyed by resolved path; symlinks followed without loops or dupes."""
    found: dict[str, _Found] = {}
    visited_dirs: set[tuple[int, int]] = set()
    skipped = skipped if skipped is not None else []
    for root in roots:
        root_real = os.path.realpath(root)
        if not os.path.isdir(root_real):
            raise FileNotFoundError(f"library root {root} is not a folder")
        stack = [root_real]
        while stack:
            directory = stack.pop()
            try:
                st = os.stat(directory)
            except OSError as exc:
                skipped.append(f"{directory}: {exc.strerror}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited_dirs:
                continue  # a symlink loop or a folder reached twice
            visited_dirs.add(key)
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                skipped.append(f"{directory}: {exc.strerror}")
                continue
            _collect_dir(directory, root_real, entries, found, stack)
    return found


def _collect_dir(
    directory: str, root: str, entries: list[os.DirEntry[str]], found: dict[str, _Found], stack: list[str]
) -> None:
    folder = os.path.relpath(directory, root)
    folder = "" if folder == "." else folder
    names: list[tuple[str, os.DirEntry[str]]] = []
    loras: list[os.DirEntry[str]] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        lower = entry.name.lower()
        if is_dir and lower.endswith(LORA_SUFFIXES):
            loras.append(entry)  # a folder named like a LoRA file: catalogued with a clear error
            continue
        if is_dir:
            if not entry.name.startswith("."):
                stack.append(os.path.realpath(entry.path) if entry.is_symlink() else entry.path)
            continue
        if lower.endswith(LORA_SUFFIXES):
            loras.append(entry)
        else:
            names.append((lower, entry))
    if not loras:
        return
    names.sort(key=lambda item: item[0])
    sorted_names = [n for n, _ in names]
    for entry in loras:
        real = entry.path
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            real = target if os.path.exists(target) else entry.path  # a broken link keeps its own name
        if real in found:
            continue
        try:
            st = entry.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:  # broken link, loop: inspect_lora names the problem
            size, mtime_ns = 0, 0
        base = entry.name.rsplit(".", 1)[0].lower() + "."
        digest = hashlib.blake2b(digest_size=8)
        start = bisect_left(sorted_names, base)
        for i in range(start, len(sorted_names)):
            name = sorted_names[i]
            if not name.startswith(base):
                break
            try:
                sst = names[i][1].stat()
                digest.update(f"{name}\0{sst.st_size}\0{sst.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name}\0?\n".encode())
        found[real] = _Found(real, root, folder, os.path.basename(real), size, mtime_ns, digest.hexdigest())
    return


def _inspect_record(item: _Found) -> dict[str, Any]:
    """Runs in a worker: inspect one file and flatten the result into catalog columns."""
    from workbench.files import inspect_lora

    try:
        info = inspect_lora(Path(item.path))
    except Exception as exc:  # inspect_lora promises not to raise; keep the scan alive if it does
        info = {"error": f"could not inspect file: {type(exc).__name__}: {exc}", "format": _format_of(item.file_name)}
    return _record_from_info(item, info)


def _format_of(file_name: str) -> str:
    return file_name.rsplit(".", 1)[-1].lower()


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _str_list(value: Any) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, str):
        value = [value]
    out = [str(v) for v in value if v is not None and str(v).strip()]
    return out or None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _record_from_info(item: _Found, info: dict[str, Any]) -> dict[str, Any]:
    merged = info.get("merged") or {}

    def pick(key: str) -> Any:
        value = merged.get(key)
        return value if value not in (None, "", []) else info.get(key)

    stem = item.file_name.rsplit(".", 1)[0]
    return {
        "path": item.path,
        "root": item.root,
        "folder": item.folder,
        "file_name": item.file_name,
        "name": pick("name") or stem,
        "format": info.get("format") or _format_of(item.file_name),
        "size_bytes": item.size,
        "mtime": item.mtime_ns / 1e9,
        "mtime_ns": item.mtime_ns,
        "sidecar_sig": item.sidecar_sig,
        "missing": False,
        "error": info.get("error"),
        "header_len": _int_or_none(info.get("header_len")),
        "key_layout": info.get("key_layout"),
        "network_type": info.get("network_type"),
        "rank": _int_or_none(info.get("rank")),
        "rank_min": _int_or_none(info.get("rank_min")),
        "rank_max": _int_or_none(info.get("rank_max")),
        "alpha": info.get("alpha"),
        "scale": info.get("scale"),
        "base_model": pick("base_model"),
        "base_model_evidence": info.get("base_model_evidence"),
        "module_count": _int_or_none(info.get("module_count")),
        "tensor_count": _int_or_none(info.get("tensor_count")),
        "has_text_encoder": info.get("has_text_encoder"),
        "description": pick("description"),
        "trigger_words": _str_list(pick("trigger_words")),
        "file_tags": _str_list(pick("tags")),
        "training_tags": _json(info.get("training_tags")),
        "metadata": _json(info.get("metadata")),
        "sidecars": _json(info.get("sidecars")),
        "sidecar_errors": _str_list(info.get("sidecar_errors")),
        "sources": _json(info.get("sources")),
        "preview_path": info.get("preview_path"),
        "preview_embedded": bool(info.get("preview_embedded")),
        "civitai_model_id": _int_or_none(pick("civitai_model_id")),
        "civitai_version_id": _int_or_none(pick("civitai_version_id")),
        "creator": pick("creator"),
        "stats": _json(merged.get("stats")),
        "sha256_claimed": pick("sha256_claimed"),
        "origin": "scan",
    }


def _inspect_chunk(items: list[_Found]) -> list[dict[str, Any]]:
    return [_inspect_record(item) for item in items]


def _inspect_all(
    items: list[_Found], workers: int, progress: bool, on_progress: Callable[[int, int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Inspect files, in the pool when there are enough; at most a few chunks in flight (bounded memory)."""
    inspected = [0]

    def advance(n: int) -> None:
        bar.update(n)
        inspected[0] += n
        if on_progress is not None:
            on_progress(inspected[0], len(items))

    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc="Inspecting LoRAs", unit="file", disable=not progress or not items)
    try:
        if workers <= 1 or len(items) < _POOL_THRESHOLD:
            for item in items:
                yield _inspect_record(item)
                advance(1)
            return
        chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        chunks.reverse()  # pop() from the end takes them in walk order
        # fork: children only parse files, start instantly and need no importable __main__
        # (scripts without a main guard and notebooks both work); no catalog connection is open here.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            pending: set[Any] = set()
            while chunks or pending:
                while chunks and len(pending) < 4 * workers:
                    pending.add(pool.submit(_inspect_chunk, chunks.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    records = future.result()
                    yield from records
                    advance(len(records))
    finally:
        bar.close()


def _existing_rows(db: Database) -> dict[str, dict[str, Any]]:
    columns = (
        "id",
        "path",
        "root",
        "file_name",
        "size_bytes",
        "mtime_ns",
        "sidecar_sig",
        "missing",
        "added_at",
        "error",
    )
    with db.read() as con:
        rows = con.execute(f"SELECT {', '.join(columns)} FROM loras WHERE origin = 'scan' AND path <> ''").fetchall()
    return {row[1]: dict(zip(columns, row)) for row in rows}


def _write_records(db: Database, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    frame = pd.DataFrame.from_records(records, columns=list(_COLUMNS))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    frame["scanned_at"] = now
    frame["added_at"] = frame["added_at"].where(frame["added_at"].notna(), now)
    with_ids = frame[frame["id"].notna()]
    without_ids = frame[frame["id"].isna()].drop(columns=["id"])
    cols_no_id = [c for c in _COLUMNS if c != "id"]
    with db.write() as con:
        if len(with_ids):
            con.register("_batch", with_ids.astype({"id": "int64"}))
            # What a Civitai import joined into a row outlives a rescan when the files say nothing instead.
            kept = ", ".join(_KEPT_ON_RESCAN)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _kept AS SELECT id, {kept} FROM loras WHERE id IN (SELECT id FROM _batch)"
            )
            con.execute("DELETE FROM loras WHERE id IN (SELECT id FROM _batch)")
            con.execute(f"INSERT INTO loras ({', '.join(_COLUMNS)}) SELECT {_select_list(_COLUMNS)} FROM _batch")
            con.execute(
                "UPDATE loras SET "
                + ", ".join(f"{c} = coalesce(loras.{c}, k.{c})" for c in _KEPT_ON_RESCAN)
                + " FROM _kept k WHERE loras.id = k.id"
            )
            con.execute("DROP TABLE _kept")
            con.unregister("_batch")
        if len(without_ids):
            con.register("_batch", without_ids)
            con.execute(
                f"INSERT INTO loras ({', '.join(cols_no_id)}) SELECT {_select_list(cols_no_id)} FROM _batch "
                "WHERE path NOT IN (SELECT path FROM loras WHERE origin = 'scan')"
            )
            con.unregister("_batch")


_KEPT_ON_RESCAN = (
    "civitai_model_id",
    "civitai_version_id",
    "creator",
    "stats",
    "description",
    "trigger_words",
    "file_tags",
)
_LIST_COLUMNS = {"trigger_words", "file_tags", "sidecar_errors"}
_JSON_COLUMNS = {"training_tags", "metadata", "sidecars", "sources", "stats"}
_CASTS = {
    "id": "BIGINT",
    "size_bytes": "BIGINT",
    "mtime": "DOUBLE",
    "mtime_ns": "BIGINT",
    "header_len": "BIGINT",
    "rank": "INTEGER",
    "rank_min": "INTEGER",
    "rank_max": "INTEGER",
    "alpha": "DOUBLE",
    "scale": "DOUBLE",
    "module_count": "INTEGER",
    "tensor_count": "INTEGER",
    "has_text_encoder": "BOOLEAN",
    "missing": "BOOLEAN",
    "preview_embedded": "BOOLEAN",
    "civitai_model_id": "BIGINT",
    "civitai_version_id": "BIGINT",
    "added_at": "TIMESTAMP",
    "scanned_at": "TIMESTAMP",
}


def _select_list(columns: Iterable[str]) -> str:
    parts = []
    for col in columns:
        if col in _LIST_COLUMNS:
            parts.append(f"CAST({col} AS VARCHAR[])")
        elif col in _JSON_COLUMNS:
            parts.append(f"CAST({col} AS JSON)")
        elif col in _CASTS:
            parts.append(f"TRY_CAST({col} AS {_CASTS[col]})")
        else:
            parts.append(f"CAST({col} AS VARCHAR)")
    return ", ".join(parts)


def scan(
    db: Database,
    roots: Sequence[Path],
    *,
    workers: int | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Bring the catalog in line with the files under `roots`; see the module docstring.

    ``on_progress(files_inspected, files_to_inspect)`` follows the inspection of new or changed files.
    """
    started = time.perf_counter()
    resolved = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]
    report = ScanReport(roots=[str(r) for r in resolved])
    if not resolved:
        raise ValueError("no library roots given (pass folders to scan)")
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    with db.task_lock("scan"):  # a second kernel scanning at once waits, then finds nothing to do
        _scan_locked(db, resolved, report, workers, progress, on_progress)
    report.seconds = time.perf_counter() - started
    return report


def _scan_locked(
    db: Database,
    resolved: list[Path],
    report: ScanReport,
    workers: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    found = walk_roots(resolved, report.skipped_dirs)
    report.seen = len(found)
    existing = _existing_rows(db)

    to_inspect: list[_Found] = []
    ids_for: dict[str, Any] = {}
    added_for: dict[str, Any] = {}
    returned_ids: list[int] = []
    missing_by_name: dict[tuple[str, int], list[dict[str, Any]]] = {}
    root_strs = [str(r) for r in resolved]
    for path, row in existing.items():
        if path not in found and (row["missing"] is True or _under(path, root_strs)):
            missing_by_name.setdefault((row["file_name"], int(row["size_bytes"] or 0)), []).append(row)

    for path, item in found.items():
        row = existing.get(path)
        if row is None:
            candidates = missing_by_name.get((item.file_name, item.size))
            if candidates:
                old = candidates.pop(0)  # the same file moved: keep its id, so user fields follow it
                ids_for[path], added_for[path] = int(old["id"]), old["added_at"]
                report.relinked += 1
                existing.pop(old["path"], None)  # its row is rewritten under the new path (same id)
                to_inspect.append(item)
            else:
                report.new += 1
                to_inspect.append(item)
            continue
        unchanged = (
            int(row["size_bytes"] or -1) == item.size
            and int(row["mtime_ns"] or -1) == item.mtime_ns
            and row["sidecar_sig"] == item.sidecar_sig
        )
        if row["missing"] is True:
            report.returned += 1
        if unchanged:
            report.unchanged += 1
            if row["missing"] is True:
                returned_ids.append(int(row["id"]))
        else:
            report.changed += 1
            ids_for[path], added_for[path] = int(row["id"]), row["added_at"]
            to_inspect.append(item)

    newly_missing = [
        int(row["id"])
        for path, row in existing.items()
        if path not in found and row["missing"] is not True and _under(path, root_strs)
    ]
    report.missing = len(newly_missing)

    with db.write() as con:
        for root in root_strs:
            con.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", [root])
        if newly_missing:
            con.execute("UPDATE loras SET missing = true WHERE list_contains(?, id)", [newly_missing])
        if returned_ids:
            con.execute("UPDATE loras SET missing = false WHERE list_contains(?, id)", [returned_ids])

    batch: list[dict[str, Any]] = []
    for record in _inspect_all(to_inspect, workers, progress, on_progress):
        record["id"] = ids_for.get(record["path"])
        record["added_at"] = added_for.get(record["path"])
        if record["error"]:
            report.errors += 1
        batch.append(record)
        if len(batch) >= _BATCH_ROWS:
            _write_records(db, batch)
            batch = []
    _write_records(db, batch)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
