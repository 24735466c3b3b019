"""Scan library roots into the catalog: walk, diff by (size, mtime, sidecars), inspect what changed.

Only changed files are reopened, so a rescan of a big unchanged library costs one directory walk
and one catalog read. Inspection (header + sidecars) runs in worker processes when there is
enough of it to pay for them. Rows are written in short batches so other kernels can interleave.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from workbench.catalog._db import Database
from workbench.catalog._pool import lock_paths, worker_pool
from workbench.files import (
    LORA_SUFFIXES,
    catalog_path,
    forget_model_json_cache,
    fs_path,
    is_inside,
    printable,
    refuse_system_root,
    unclaimed_json_names,
)

#: Below this many files to inspect, worker processes cost more than they save.
_POOL_THRESHOLD = 400
#: Rows per write. A kohya file's metadata is ~20 KB, so a batch is ~20 MB of text before pandas and
#: DuckDB copy it; with one batch being built, one waiting and one being written (see _BatchWriter),
#: 1,000 keeps the scan's peak near what one 2,000-row batch written inline used to cost.
_BATCH_ROWS = 1000
#: A slow scan (hostile or cold files) still commits at least this often, so a killed scan keeps its progress.
_FLUSH_SECONDS = 2.0
_CHUNK = 64
#: Longest ``error`` stored for a file, and longest / most ``sidecar_errors`` lines.
MAX_ERROR_CHARS = 500
MAX_NOTE_CHARS = 300
MAX_NOTES = 50
#: Largest JSON document stored in one column of one row (metadata, sidecars, …).
MAX_STORED_JSON_BYTES = 1024 * 1024

OUTSIDE_NOTE = (
    "links outside the library root (to {target}); not followed: scan with --follow-outside "
    "(wb.scan(..., follow_outside=True)) to include it"
)

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
    "imported_notes",
    "imported_preferred_weight",
    "imported_negative_text",
    "imported_favorite",
    "usage_tips",
    "nsfw_level",
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
    error_files: list[tuple[str, str]] = field(default_factory=list)
    """(path, error) of every file inspected in this scan that has an error."""
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
    #: Set for a link that resolves outside the root (not followed): stored as the file's error, never opened.
    note: str | None = None


def walk_roots(
    roots: Sequence[Path], skipped: list[str] | None = None, follow_outside: Iterable[str] = ()
) -> dict[str, _Found]:
    """Every LoRA file under the roots, keyed by resolved path; symlinks followed without loops or dupes.

    A link (file or folder) that resolves outside its root is followed only when that root is in
    ``follow_outside``; otherwise a file link is listed with a note (and never opened) and a folder
    link is named in ``skipped``. Links to ``/`` or a system folder are never followed.
    """
    found: dict[str, _Found] = {}
    visited_dirs: set[tuple[int, int]] = set()
    skipped = skipped if skipped is not None else []
    follow = {os.path.realpath(r) for r in follow_outside}
    for root in roots:
        root_real = os.path.realpath(root)
        if not os.path.isdir(root_real):
            raise FileNotFoundError(f"library root {printable(os.fspath(root))} is not a folder")
        stack = [root_real]
        while stack:
            directory = stack.pop()
            try:
                st = os.stat(directory)
            except OSError as exc:
                skipped.append(f"{printable(directory)}: {exc.strerror}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited_dirs:
                continue  # a symlink loop or a folder reached twice
            visited_dirs.add(key)
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                skipped.append(f"{printable(directory)}: {exc.strerror}")
                continue
            _collect_dir(directory, root_real, entries, found, stack, skipped, root_real in follow)
    return found


def _link_target(entry: os.DirEntry[str], root: str, follow_outside: bool) -> tuple[str | None, str | None]:
    """(resolved target to use, or None; why it is not followed, or None) for a symlink ``entry``."""
    target = os.path.realpath(entry.path)
    if is_inside(target, (root,)):
        return target, None
    refused = refuse_system_root(target)
    if refused is not None:
        return None, f"links to {printable(target)[:200]}, a system folder or the file-system root; never followed"
    if follow_outside:
        return target, None
    return None, OUTSIDE_NOTE.format(target=printable(target)[:200])


def _collect_dir(
    directory: str,
    root: str,
    entries: list[os.DirEntry[str]],
    found: dict[str, _Found],
    stack: list[str],
    skipped: list[str],
    follow_outside: bool,
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
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                target, note = _link_target(entry, root, follow_outside)
                if target is None:
                    skipped.append(f"{printable(entry.path)}: folder {note}")
                    continue
                stack.append(target)
            else:
                stack.append(entry.path)
            continue
        if lower.endswith(LORA_SUFFIXES):
            loras.append(entry)
        else:
            names.append((lower, entry))
    if not loras:
        return
    names.sort(key=lambda item: item[0])
    sorted_names = [n for n, _ in names]
    # A Civitai model JSON named after the model, not the file, is read as a sidecar of the file(s) it
    # lists: its (name, size, mtime) joins every LoRA's signature in this folder, so editing it rescans them.
    folder_digest = b""
    if any(n.endswith(".json") for n in sorted_names):
        listing = {n: e.name for n, e in names} | {e.name.lower(): e.name for e in loras}
        unclaimed = unclaimed_json_names(listing)
        if unclaimed:
            by_name = dict(names)
            folder_digest = "".join(_entry_sig(n, by_name[n]) for n in unclaimed).encode()
    for entry in loras:
        real = entry.path
        note = None
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if not os.path.exists(target):
                real = entry.path  # a broken link keeps its own name; inspect_lora names the problem
            else:
                resolved, note = _link_target(entry, root, follow_outside)
                real = resolved if resolved is not None else entry.path
        if real in found:
            continue
        if note is not None:  # listed, never opened: the link's own stat, not its target's; no sidecars
            try:
                lst = entry.stat(follow_symlinks=False)
                size, mtime_ns = lst.st_size, lst.st_mtime_ns
            except OSError:
                size, mtime_ns = 0, 0
            found[real] = _Found(real, root, folder, entry.name, size, mtime_ns, "link", note)
            continue
        try:
            st = entry.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:  # broken link, loop: inspect_lora names the problem
            size, mtime_ns = 0, 0
        base = entry.name.rsplit(".", 1)[0].lower() + "."
        digest = hashlib.blake2b(folder_digest, digest_size=8) if folder_digest else hashlib.blake2b(digest_size=8)
        start = bisect_left(sorted_names, base)
        for i in range(start, len(sorted_names)):
            name = sorted_names[i]
            if not name.startswith(base):
                break
            digest.update(_entry_sig(name, names[i][1]).encode("utf-8", "surrogateescape"))
        found[real] = _Found(real, root, folder, os.path.basename(real), size, mtime_ns, digest.hexdigest())
    return


def _entry_sig(name: str, entry: os.DirEntry[str]) -> str:
    try:
        sst = entry.stat()
        return f"{name}\0{sst.st_size}\0{sst.st_mtime_ns}\n"
    except OSError:
        return f"{name}\0?\n"


def _inspect_record(item: _Found) -> dict[str, Any]:
    """Runs in a worker: inspect one file and flatten the result into storable catalog columns.

    Never raises: whatever goes wrong with one file becomes that file's ``error``.
    """
    from workbench.files import inspect_lora

    if item.note is not None:
        return _storable(_record_from_info(item, {"error": item.note, "format": _format_of(item.file_name)}))
    started = time.perf_counter()
    try:
        # Sidecars and previews must resolve inside the root (or beside a file the user let us follow).
        info = inspect_lora(Path(item.path), roots=(item.root, os.path.dirname(item.path)))
    except Exception as exc:  # inspect_lora promises not to raise; keep the scan alive if it does
        info = {"error": f"could not inspect file: {type(exc).__name__}: {exc}", "format": _format_of(item.file_name)}
    try:
        record = _storable(_record_from_info(item, info))
    except Exception as exc:
        record = _error_record(item, exc)
    if time.perf_counter() - started > _SLOW_FILE_SECONDS:
        del info
        _trim_heap()
    return record


#: A file that took this long parsed megabytes (a hostile header or sidecar): give the memory back after it.
_SLOW_FILE_SECONDS = 0.05


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so one huge file does not raise the floor."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _format_of(file_name: str) -> str:
    return file_name.rsplit(".", 1)[-1].lower()


def _json(value: Any) -> str | None:
    """JSON text of ``value`` for a JSON column: any Python value, bounded to ``MAX_STORED_JSON_BYTES``."""
    if value is None:
        return None
    try:
        data = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an int beyond 64 bits, a string with undecodable bytes (surrogates)
        data = orjson.dumps(_json_safe(value), default=str, option=orjson.OPT_NON_STR_KEYS)
    if len(data) > MAX_STORED_JSON_BYTES:
        data = orjson.dumps({"<not kept>": f"{len(data)} bytes of JSON, over the {MAX_STORED_JSON_BYTES} byte cap"})
    return data.decode()


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that orjson can write: big ints as text, undecodable bytes escaped."""
    if depth > 100:
        return "<nested too deeply>"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return _text(str(value))


def _text(value: str, limit: int | None = None) -> str:
    """``value`` with undecodable bytes escaped (UTF-8 safe), cut to ``limit`` characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = printable(value).encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def _str_list(value: Any, limit: int | None = None) -> list[str] | None:
    if not value:
        return None
    if isinstance(value, str):
        value = [value]
    out = [_text(str(v), limit) for v in value if v is not None and str(v).strip()]
    return out or None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


_PATH_COLUMNS = ("path", "root", "folder", "file_name", "preview_path")
_TEXT_COLUMNS = (
    "name",
    "format",
    "key_layout",
    "network_type",
    "base_model",
    "base_model_evidence",
    "description",
    "creator",
    "sha256_claimed",
)


_TEXT_LIMITS = {"description": 65_600}


def _storable(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the catalog can hold it: paths in their stored form, text UTF-8 safe and bounded."""
    for key in _PATH_COLUMNS:
        if isinstance(record.get(key), str):
            record[key] = catalog_path(record[key])
    for key in _TEXT_COLUMNS:
        if isinstance(record.get(key), str):
            record[key] = _text(record[key], _TEXT_LIMITS.get(key, 500))
    if record.get("error"):
        record["error"] = _text(str(record["error"]), MAX_ERROR_CHARS)
    notes = record.get("sidecar_errors") or []
    if len(notes) > MAX_NOTES:
        notes = [*notes[:MAX_NOTES], f"… and {len(notes) - MAX_NOTES} more problem(s)"]
    record["sidecar_errors"] = _str_list(notes, MAX_NOTE_CHARS)
    for key in ("trigger_words", "file_tags"):
        record[key] = _str_list(record.get(key), 200)
    for key in ("alpha", "scale"):
        value = record.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not -1e300 < float(value) < 1e300):
            record[key] = None
    return record


def _error_record(item: _Found, exc: BaseException) -> dict[str, Any]:
    """The row of a file whose details could not be stored: its identity and one clear error."""
    message = f"could not store this file's details: {type(exc).__name__}: {exc}"
    return _storable(_record_from_info(item, {"error": message, "format": _format_of(item.file_name)}))


def _record_from_info(item: _Found, info: dict[str, Any]) -> dict[str, Any]:
    merged = info.get("merged") or {}

    def pick(key: str) -> Any:
        value = merged.get(key)
        return value if value not in (None, "", []) else info.get(key)

    stem = printable(item.file_name.rsplit(".", 1)[0])
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
        # What the person made in another tool, stored apart from user_fields (their edits here still win).
        "imported_notes": merged.get("notes"),
        "imported_preferred_weight": merged.get("preferred_weight"),
        "imported_negative_text": merged.get("negative_text"),
        "imported_favorite": merged.get("favorite"),
        "usage_tips": _json(merged.get("usage_tips")),
        "nsfw_level": _int_or_none(merged.get("nsfw_level")),
    }


def _inspect_chunk(items: list[_Found]) -> list[dict[str, Any]]:
    return [_inspect_record(item) for item in items]


def _inspect_all(
    items: list[_Found],
    workers: int,
    progress: bool,
    held_locks: tuple[str, ...] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Inspect files, in the pool when there are enough; at most a few chunks in flight (bounded memory)."""
    inspected = 0

    def advance(n: int) -> None:
        nonlocal inspected
        bar.update(n)
        inspected += n
        if on_progress is not None:
            on_progress(inspected, len(items))

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
        with worker_pool(workers, held_locks) as pool:
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
    existing: dict[str, dict[str, Any]] = {}
    for values in rows:
        row = dict(zip(columns, values))
        for key in ("path", "root", "file_name"):  # stored form → file-system form, as the walk sees them
            if row[key] is not None:
                row[key] = fs_path(row[key])
        existing[row["path"]] = row
    return existing


def _write_records(db: Database, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    import pandas as pd  # only when something changed: a no-change rescan never loads it

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
_JSON_COLUMNS = {"training_tags", "metadata", "sidecars", "sources", "stats", "usage_tips"}
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
    "imported_preferred_weight": "DOUBLE",
    "imported_favorite": "BOOLEAN",
    "nsfw_level": "INTEGER",
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


class RootRefusedError(ValueError):
    """A library root that is never scanned: ``/``, a system folder, or not a folder at all."""


def check_root(root: str | os.PathLike[str]) -> Path:
    """The resolved library root, or ``RootRefusedError`` saying why it cannot be one."""
    resolved = os.path.realpath(os.path.expanduser(fs_path(os.fspath(root))))
    why = refuse_system_root(resolved)
    if why is not None:
        raise RootRefusedError(f"refusing to scan {printable(os.fspath(root))}: {why}")
    return Path(resolved)


def remembered_follow_outside(db: Database) -> set[str]:
    """Roots (file-system form) whose user opted in to following links outside them."""
    with db.read() as con:
        rows = con.execute("SELECT path FROM roots WHERE coalesce(follow_outside, false)").fetchall()
    return {fs_path(r[0]) for r in rows}


def scan(
    db: Database,
    roots: Sequence[Path],
    *,
    workers: int | None = None,
    progress: bool = True,
    follow_outside: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Bring the catalog in line with the files under `roots`; see the module docstring.

    ``follow_outside``: follow links that resolve outside a root (True/False is remembered for
    each root given; None uses what was remembered, by default False). ``/`` and system folders are
    refused as roots (``RootRefusedError``) before anything is read.

    ``on_progress(files_inspected, files_to_inspect)`` follows the inspection of new or changed files.
    """
    started = time.perf_counter()
    resolved = [check_root(r) for r in roots]
    report = ScanReport(roots=[printable(str(r)) for r in resolved])
    if not resolved:
        raise ValueError("no library roots given (pass folders to scan)")
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    with db.task_lock("scan"):  # a second kernel scanning at once waits, then finds nothing to do
        _scan_locked(db, resolved, report, workers, progress, follow_outside, on_progress)
    report.seconds = time.perf_counter() - started
    return report


def _scan_locked(
    db: Database,
    resolved: list[Path],
    report: ScanReport,
    workers: int,
    progress: bool,
    follow_outside: bool | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    root_strs = [str(r) for r in resolved]
    # One short read for all the diff needs (each connection costs ~25 ms of CPU): the rows are read
    # before the walk, which is safe because only a scan changes what the diff compares, and scans
    # are serialised by the task lock held here.
    with db.read() as con:
        known_roots = {
            fs_path(path): bool(follow)
            for path, follow in con.execute("SELECT path, coalesce(follow_outside, false) FROM roots").fetchall()
        }
        existing = _existing_rows(db)
    if follow_outside is None:
        follow = {r for r, on in known_roots.items() if on} & set(root_strs)
    else:
        follow = set(root_strs) if follow_outside else set()
    forget_model_json_cache()
    found = walk_roots(resolved, report.skipped_dirs, follow)
    report.seen = len(found)

    to_inspect: list[_Found] = []
    ids_for: dict[str, Any] = {}
    added_for: dict[str, Any] = {}
    returned_ids: list[int] = []
    missing_by_name: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path, row in existing.items():
        if path not in found and (row["missing"] is True or _owned(path, row, root_strs)):
            missing_by_name.setdefault((row["file_name"], int(row["size_bytes"] or 0)), []).append(row)

    for path, item in found.items():
        known = existing.get(path)
        if known is None:
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
            known["size_bytes"] is not None
            and int(known["size_bytes"]) == item.size
            and known["mtime_ns"] is not None
            and int(known["mtime_ns"]) == item.mtime_ns
            and known["sidecar_sig"] == item.sidecar_sig
        )
        if known["missing"] is True:
            report.returned += 1
        if unchanged:
            report.unchanged += 1
            if known["missing"] is True:
                returned_ids.append(int(known["id"]))
        else:
            report.changed += 1
            ids_for[path], added_for[path] = int(known["id"]), known["added_at"]
            to_inspect.append(item)

    newly_missing = [
        int(row["id"])
        for path, row in existing.items()
        if path not in found and row["missing"] is not True and _owned(path, row, root_strs)
    ]
    report.missing = len(newly_missing)

    roots_current = all(
        root in known_roots and (follow_outside is None or known_roots[root] == bool(follow_outside))
        for root in root_strs
    )
    # Nothing to record means no write: other kernels' snapshots stay valid (the change stamp is not bumped).
    if not (roots_current and not newly_missing and not returned_ids):
        _record_roots_and_presence(db, root_strs, follow_outside, newly_missing, returned_ids)
    _write_inspected(db, to_inspect, workers, progress, on_progress, ids_for, added_for, report)


def _record_roots_and_presence(
    db: Database,
    root_strs: list[str],
    follow_outside: bool | None,
    newly_missing: list[int],
    returned_ids: list[int],
) -> None:
    with db.write() as con:
        for root in root_strs:
            con.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", [catalog_path(root)])
            if follow_outside is not None:
                con.execute(
                    "UPDATE roots SET follow_outside = ? WHERE path = ?", [bool(follow_outside), catalog_path(root)]
                )
        if newly_missing:
            con.execute("UPDATE loras SET missing = true WHERE list_contains(?, id)", [newly_missing])
        if returned_ids:
            con.execute("UPDATE loras SET missing = false WHERE list_contains(?, id)", [returned_ids])


def _write_inspected(
    db: Database,
    to_inspect: list[_Found],
    workers: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None,
    ids_for: dict[str, Any],
    added_for: dict[str, Any],
    report: ScanReport,
) -> None:
    if not to_inspect:
        return
    batch: list[dict[str, Any]] = []
    flushed = time.monotonic()
    writer = _BatchWriter(db)
    try:
        for record in _inspect_all(to_inspect, workers, progress, lock_paths(db), on_progress):
            path = fs_path(record["path"])
            record["id"] = ids_for.get(path)
            record["added_at"] = added_for.get(path)
            if record["error"]:
                report.errors += 1
                report.error_files.append((record["path"], str(record["error"])))
            batch.append(record)
            if len(batch) >= _BATCH_ROWS or time.monotonic() - flushed > _FLUSH_SECONDS:
                writer.put(batch)
                batch, flushed = [], time.monotonic()
        writer.put(batch)
    finally:
        writer.close()  # waits for the batches handed over (a stopped scan keeps them), re-raises its error


class _BatchWriter:
    """Writes batches in a thread of its own, in order, so the workers never wait on a commit.

    A commit ends in an fsync that can take seconds on a busy disk; written inline, it left the pool
    without work for that long (most of a 50,000-file scan's time on a loaded machine). One batch
    waits while one is written, so memory stays bounded; an error in the writer stops the scan at the next
    hand-over and is raised there.
    """

    def __init__(self, db: Database) -> None:
        import queue

        self._db = db
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="scan-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._failed:
                continue  # drain: the scan is stopping
            try:
                _write_contained(self._db, batch)
                del batch
                _trim_heap()  # the batch's frames and DuckDB's buffers are gone: give the pages back
            except BaseException as exc:  # handed to the scanning thread
                self._error, self._failed = exc, True

    def put(self, batch: list[dict[str, Any]]) -> None:
        import queue

        self._raise_error()
        while batch:
            try:
                self._queue.put(batch, timeout=1.0)
                return
            except queue.Full:  # never block for good on a writer that is gone
                self._raise_error()
                if not self._thread.is_alive():
                    raise RuntimeError("the scan's catalog writer stopped unexpectedly") from None

    def close(self) -> None:
        """Wait until every handed batch is written, then raise the writer's error if it had one.

        An interrupt (Ctrl+C) meanwhile stops the batches still waiting but not the one being written,
        and is raised only once the writer has ended: the scan lock, released after this, must outlive
        every write, or a second scan could insert the same files again.
        """
        import queue

        interrupt: BaseException | None = None
        ended_queue = False
        while self._thread.is_alive():
            try:
                if not ended_queue:
                    self._queue.put(None, timeout=1.0)
                    ended_queue = True
                self._thread.join(timeout=1.0)
            except queue.Full:
                continue
            except KeyboardInterrupt as exc:
                interrupt, self._failed = exc, True
        if interrupt is not None:
            raise interrupt
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _write_contained(db: Database, records: list[dict[str, Any]]) -> None:
    """Write a batch; if the catalog refuses it, write row by row and turn a refused row into an error row."""
    import duckdb

    refused = (duckdb.Error, ValueError, TypeError, OverflowError, UnicodeError)
    try:
        _write_records(db, records)
        return
    except refused as exc:
        if len(records) == 1:
            try:
                _write_records(db, [_minimal_record(records[0], exc)])
            except refused:
                pass  # nothing of this file can be stored; the rest of the scan goes on
            return
    for record in records:
        _write_contained(db, [record])


def _minimal_record(record: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """Only the identity of a row the catalog refused, with an error saying so."""
    keep = {
        "id",
        "path",
        "root",
        "folder",
        "file_name",
        "format",
        "size_bytes",
        "mtime",
        "mtime_ns",
        "sidecar_sig",
        "added_at",
        "missing",
        "origin",
    }
    out = {key: (record.get(key) if key in keep else None) for key in _COLUMNS}
    for key in _PATH_COLUMNS:
        if isinstance(out.get(key), str):
            out[key] = catalog_path(fs_path(str(out[key])))  # idempotent on the stored form, escapes a raw one
    out["name"] = _text(str(record.get("name") or out.get("file_name") or ""), 500)
    out["preview_embedded"] = False
    first_line = (str(exc).strip().splitlines() or [""])[0]
    reason = _text(f"{type(exc).__name__}: {first_line}", 300)
    out["error"] = f"could not store this file's details ({reason}); only its identity is kept"
    return out


def _owned(path: str, row: dict[str, Any], roots: Sequence[str]) -> bool:
    """True when this scan of ``roots`` answers for the row: its file lies under one, or was reached from one."""
    return is_inside(path, roots) or row.get("root") in roots
