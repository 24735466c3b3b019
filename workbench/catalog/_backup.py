"""Backups of a workbench home: the catalog (user fields, history, feedback, usage, recipes, jobs) and the
generated images, as one zip per backup, the oldest removed beyond ``keep``.

Why a copy of the DuckDB file and not an export: it is the only form that keeps every table (jobs,
results, feedback, usage events, embeddings) without a list to maintain here. The copy is taken
under the catalog's shared lock, so no writer of any process is mid-transaction, and it is checked
by opening it before the backup counts. A backup is written to a temporary name and renamed, so an
interrupted one never replaces a good one and is never counted by the rotation.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workbench.catalog._db import Database

BACKUP_DIR = "backups"
CATALOG_MEMBER = "catalog.duckdb"
MANIFEST_MEMBER = "manifest.json"
#: folders of the home that hold history (generated images, comparison grids); the rest is rebuilt
#: from the library (thumbnails, vector index) or downloaded again (models)
HISTORY_FOLDERS = ("outputs", "compare")
#: tables whose row counts the manifest records (what a person checks before restoring)
COUNTED_TABLES = ("loras", "user_fields", "jobs", "results", "feedback", "usage_events", "recipes", "edits")


class BackupError(Exception):
    """A backup that cannot be written, read or restored (the message says why)."""


@dataclass(frozen=True)
class BackupInfo:
    """One backup on disk: its path, when it was made, its size and the row counts it holds."""

    path: Path
    created_at: str
    size_bytes: int
    counts: dict[str, int]


def _counts(catalog_file: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(catalog_file), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        counts = {}
        for table in COUNTED_TABLES:
            if table in tables:
                row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                counts[table] = int(row[0]) if row else 0
        return counts
    finally:
        con.close()


def backup_home(
    home: str | os.PathLike[str], db: Database, *, keep: int = 5, dest: str | os.PathLike[str] | None = None
) -> BackupInfo:
    """Write ``<home>/backups/backup-<time>.zip`` and delete the oldest backups beyond ``keep``."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise BackupError(f"keep must be a whole number of at least 1, got {keep!r}")
    home = Path(home)
    folder = Path(dest) if dest is not None else home / BACKUP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now()
    name = f"backup-{stamp:%Y%m%d-%H%M%S-%f}.zip"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".partial-") as scratch:
        copy = Path(scratch) / CATALOG_MEMBER
        with db.read():  # the shared lock: no writer of any process is inside a transaction now
            shutil.copy2(db.path, copy)
            wal = db.path.with_name(db.path.name + ".wal")
            if wal.exists():
                shutil.copy2(wal, copy.with_name(copy.name + ".wal"))
        try:
            counts = _counts(copy)  # also proves the copy opens
        except Exception as exc:
            raise BackupError(f"the catalog copy does not open ({exc}); no backup was written") from exc
        created_at = stamp.isoformat(timespec="seconds")
        manifest = {"format": 1, "created_at": created_at, "home": str(home), "counts": counts}
        partial = Path(scratch) / name
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST_MEMBER, json.dumps(manifest, indent=2))
            zf.write(copy, CATALOG_MEMBER)
            for sub in HISTORY_FOLDERS:
                base = home / sub
                if not base.is_dir():
                    continue
                for path in sorted(base.rglob("*")):
                    if path.is_file() and not path.is_symlink():
                        # PNGs are compressed already: store them
                        kind = zipfile.ZIP_STORED if path.suffix.lower() in (".png", ".jpg", ".webp") else None
                        zf.write(path, f"{sub}/{path.relative_to(base).as_posix()}", compress_type=kind)
        final = folder / name
        os.replace(partial, final)
    _rotate(folder, keep)
    return BackupInfo(final, created_at, final.stat().st_size, counts)


def _rotate(folder: Path, keep: int) -> None:
    for old in sorted(folder.glob("backup-*.zip"))[:-keep]:
        old.unlink(missing_ok=True)


def list_backups(home: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> list[BackupInfo]:
    """Backups of ``home``, newest first (an unreadable zip is listed with empty counts)."""
    folder = Path(dest) if dest is not None else Path(home) / BACKUP_DIR
    out = []
    for path in sorted(folder.glob("backup-*.zip"), reverse=True):
        try:
            with zipfile.ZipFile(path) as zf:
                manifest = json.loads(zf.read(MANIFEST_MEMBER))
            created, counts = str(manifest.get("created_at", "")), {k: int(v) for k, v in manifest["counts"].items()}
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
            created, counts = "", {}
        out.append(BackupInfo(path, created, path.stat().st_size, counts))
    return out


def restore_backup(src: str | os.PathLike[str], home: str | os.PathLike[str]) -> Path:
    """Unpack a backup into ``home``, which must not hold a catalog yet (never overwrites one)."""
    home = Path(home)
    if (home / CATALOG_MEMBER).exists():
        raise BackupError(f"{home} already has a catalog; restore into a new, empty home")
    try:
        zf = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BackupError(f"{src} is not a readable backup: {exc}") from exc
    with zf:
        names = zf.namelist()
        if MANIFEST_MEMBER not in names or CATALOG_MEMBER not in names:
            raise BackupError(f"{src} is not a workbench backup (no manifest or catalog inside)")
        allowed = (CATALOG_MEMBER, CATALOG_MEMBER + ".wal", MANIFEST_MEMBER)
        for member in names:
            parts = Path(member).parts
            safe = member in allowed or (
                len(parts) > 1 and parts[0] in HISTORY_FOLDERS and ".." not in parts and not Path(member).is_absolute()
            )
            if not safe:
                raise BackupError(f"{src} holds an unexpected member {member!r}; nothing was restored")
        home.mkdir(parents=True, exist_ok=True)
        for member in names:
            if member != MANIFEST_MEMBER and not member.endswith("/"):
                target = home / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    return home
