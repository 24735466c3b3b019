"""Export and import what a person put into the catalog (ratings, tags, notes, recipes), optionally with files.

An archive is a zip with `manifest.json` (format version, counts, SHA256 of every member),
`loras.jsonl` (one catalogued LoRA each: identity, hashes, user fields) and `recipes.jsonl`,
plus `files/...` when files are included. Imports verify everything before writing anything,
refuse unsafe archives (paths escaping the target, links, bombs, checksum mismatches), can be
dry-run, and apply user fields to matching entries by a conflict policy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from workbench.catalog._catalog import USER_FIELDS, validate_user_fields

#: User fields an archive carries: a chosen preview is a file in this home, not portable (it stays local).
_PORTABLE_FIELDS = tuple(f for f in USER_FIELDS if f != "preview_override")

if TYPE_CHECKING:
    from workbench._workbench import Workbench

FORMAT = "lora-workbench-archive"
VERSION = 1
MAX_MEMBERS = 200_000
MAX_TOTAL_BYTES = 64 * 2**30
MAX_RATIO = 200  # uncompressed / compressed, per member: more looks like a zip bomb
MAX_JSON_BYTES = 512 * 2**20
CONFLICT_POLICIES = ("skip", "overwrite", "merge")


class ArchiveError(ValueError):
    """The archive is unsafe or malformed; nothing was written."""


@dataclass
class ImportReport:
    """What an import did (or, for a dry run, would do)."""

    dry_run: bool
    matched: int = 0
    updated: int = 0
    skipped_conflicts: int = 0
    unmatched: list[str] = field(default_factory=list)
    restored_files: int = 0
    recipes: int = 0

    def __str__(self) -> str:
        verb = "would update" if self.dry_run else "updated"
        return (
            f"{self.matched} entries matched, {verb} {self.updated}, {self.skipped_conflicts} kept (conflict policy), "
            f"{len(self.unmatched)} unmatched, {self.restored_files} files restored, {self.recipes} recipes"
        )


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _clean(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def export_archive(wb: Workbench, dest: str | os.PathLike[str], *, include_files: bool = False) -> Path:
    """Write the catalog's user data (and optionally the LoRA files with sidecars and previews) to a zip."""
    dest = Path(dest)
    frame = wb.catalog.query()
    user = wb.db.read_df("SELECT * FROM user_fields")
    user_by_id = {int(r["lora_id"]): r for r in user.to_dict("records")}
    records = []
    for row in frame.to_dict("records"):
        u = user_by_id.get(int(row["id"]), {})
        records.append(
            {
                "name": row["name"],
                "file_name": row["file_name"],
                "folder": row["folder"],
                "root": row["root"],
                "path": row["path"],
                "size_bytes": _clean(row["size_bytes"]),
                "sha256": row["sha256"],
                "tensor_hash": row["tensor_hash"],
                "base_model": row["base_model"],
                "user_fields": {f: _clean(u.get(f)) for f in _PORTABLE_FIELDS if _clean(u.get(f)) is not None},
            }
        )
    recipes = wb.db.read_df("SELECT name, stack, params FROM recipes").to_dict("records")
    members: dict[str, bytes] = {
        "loras.jsonl": "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records).encode(),
        "recipes.jsonl": "".join(
            json.dumps({k: _clean(v) for k, v in r.items()}, default=str) + "\n" for r in recipes
        ).encode(),
    }
    files: dict[str, Path] = {}
    if include_files:
        for row in records:
            if not row["path"] or not Path(row["path"]).is_file():
                continue
            source = Path(row["path"])
            base = source.name.rsplit(".", 1)[0]
            for sibling in source.parent.iterdir():
                if sibling == source or (sibling.name.startswith(base + ".") and sibling.is_file()):
                    rel = PurePosixPath("files", row["folder"] or "", sibling.name).as_posix()
                    files.setdefault(rel, sibling)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(),
        "loras": len(records),
        "recipes": len(recipes),
        "files": len(files),
        "sha256": {name: _sha256_bytes(data) for name, data in members.items()},
    }
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for rel, source in files.items():
            digest = hashlib.sha256()
            with open(source, "rb") as handle, zf.open(rel, "w", force_zip64=True) as out:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            manifest["sha256"][rel] = digest.hexdigest()
        zf.writestr("manifest.json", json.dumps(manifest, indent=1))
    os.replace(tmp, dest)
    return dest


def _safe_member(info: zipfile.ZipInfo) -> str:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ArchiveError(f"unsafe archive: member {name!r} has an absolute or Windows path")
    if any(part == ".." for part in path.parts):
        raise ArchiveError(f"unsafe archive: member {name!r} escapes the target folder")
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise ArchiveError(f"unsafe archive: member {name!r} is a symbolic link")
    if info.compress_size and info.file_size / max(info.compress_size, 1) > MAX_RATIO and info.file_size > 1 << 20:
        raise ArchiveError(
            f"unsafe archive: member {name!r} expands {info.file_size // max(info.compress_size, 1)}x (zip bomb?)"
        )
    return name


def _read_verified(zf: zipfile.ZipFile, name: str, expected: str) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise ArchiveError(f"{name} is too large ({info.file_size} bytes)")
    data = zf.read(name)
    if _sha256_bytes(data) != expected:
        raise ArchiveError(f"checksum mismatch for {name}: the archive is damaged or was altered")
    return data


def _jsonl(data: bytes, name: str) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(data.decode("utf-8", errors="strict").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ArchiveError(f"{name} line {number} is not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ArchiveError(f"{name} line {number} is not a JSON object")
        out.append(record)
    return out


def _open_checked(src: Path) -> tuple[zipfile.ZipFile, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{src} is not a readable zip archive: {exc}") from None
    try:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"unsafe archive: {len(infos)} members (at most {MAX_MEMBERS})")
        if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
            raise ArchiveError("unsafe archive: expands to more than 64 GiB")
        names = {_safe_member(i) for i in infos}
        if "manifest.json" not in names:
            raise ArchiveError("not a workbench archive: manifest.json is missing")
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveError("not a workbench archive: manifest.json has the wrong format marker")
        if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
            raise ArchiveError(
                f"archive version {manifest.get('version')!r} is newer than this workbench supports ({VERSION})"
            )
        checksums = manifest.get("sha256")
        if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
            raise ArchiveError("manifest.json has no valid checksum table")
        unlisted = names - set(checksums) - {"manifest.json"}
        if unlisted:
            raise ArchiveError(f"archive members not in the manifest: {sorted(unlisted)[:5]}")
        for required in ("loras.jsonl", "recipes.jsonl"):
            if required not in names or required not in checksums:
                raise ArchiveError(f"archive lacks {required}")
        loras = _jsonl(_read_verified(zf, "loras.jsonl", checksums["loras.jsonl"]), "loras.jsonl")
        recipes = _jsonl(_read_verified(zf, "recipes.jsonl", checksums["recipes.jsonl"]), "recipes.jsonl")
        return zf, manifest, loras, recipes
    except Exception:
        zf.close()
        raise


def import_archive(
    wb: Workbench,
    src: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    conflict: str = "skip",
    restore_to: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Apply an archive's user fields (and restore its files into `restore_to`) after checking all of it.

    conflict: `skip` keeps fields the catalog already has, `overwrite` takes the archive's,
    `merge` takes the archive's for empty fields and unions tag/trigger lists.
    """
    if conflict not in CONFLICT_POLICIES:
        raise ArchiveError(f"conflict must be one of {', '.join(CONFLICT_POLICIES)}")
    zf, manifest, loras, recipes = _open_checked(Path(src))
    report = ImportReport(dry_run=dry_run)
    with zf:
        planned: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for record in loras:
            fields = record.get("user_fields") or {}
            if not isinstance(fields, dict):
                raise ArchiveError(f"user_fields of {record.get('name')!r} is not an object")
            try:
                planned.append(
                    (record, validate_user_fields({k: v for k, v in fields.items() if k in _PORTABLE_FIELDS}))
                )
            except ValueError as exc:
                raise ArchiveError(f"entry {record.get('name')!r}: {exc}") from None
        file_members = [n for n in zf.namelist() if n.startswith("files/") and not n.endswith("/")]
        if restore_to is not None and file_members:
            target = Path(restore_to).resolve()
            for name in file_members:
                dest = (target / PurePosixPath(name).relative_to("files")).resolve()
                if target not in dest.parents:
                    raise ArchiveError(f"unsafe archive: {name!r} would be written outside {target}")
            if not dry_run:
                for name in file_members:
                    dest = target / PurePosixPath(name).relative_to("files")
                    if dest.exists():
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    digest = hashlib.sha256()
                    tmp = dest.with_name(dest.name + ".partial")
                    with zf.open(name) as source, open(tmp, "wb") as out:
                        for block in iter(lambda: source.read(1 << 20), b""):
                            digest.update(block)
                            out.write(block)
                    if digest.hexdigest() != manifest["sha256"].get(name):
                        tmp.unlink()
                        raise ArchiveError(f"checksum mismatch for {name}: stopped; files restored so far are intact")
                    os.replace(tmp, dest)
                    report.restored_files += 1
                wb.scan([target], progress=False)
                wb.hash(progress=False)
            else:
                report.restored_files = len(file_members)
    current = wb.catalog.query()
    by_sha = {s: int(i) for s, i in zip(current["sha256"], current["id"]) if isinstance(s, str)}
    by_name = {
        (f, int(s)): int(i) for f, s, i in zip(current["file_name"], current["size_bytes"].fillna(-1), current["id"])
    }
    existing = {int(r["lora_id"]): r for r in wb.db.read_df("SELECT * FROM user_fields").to_dict("records")}
    for record, fields in planned:
        lora_id = by_sha.get(record.get("sha256")) if record.get("sha256") else None
        if lora_id is None:
            lora_id = by_name.get((record.get("file_name"), int(record.get("size_bytes") or -1)))
        if lora_id is None:
            report.unmatched.append(str(record.get("name") or record.get("file_name")))
            continue
        report.matched += 1
        have = {
            k: _clean(v) for k, v in existing.get(lora_id, {}).items() if k in USER_FIELDS and _clean(v) is not None
        }
        if conflict == "overwrite":
            change = fields
        elif conflict == "skip":
            change = {k: v for k, v in fields.items() if k not in have}
            report.skipped_conflicts += int(any(k in have and have[k] != v for k, v in fields.items()))
        else:
            change = {}
            for key, value in fields.items():
                if key not in have:
                    change[key] = value
                elif isinstance(value, list):
                    union = list(have[key]) + [v for v in value if v not in have[key]]
                    if union != list(have[key]):
                        change[key] = union
        change = {k: v for k, v in change.items() if have.get(k) != v}
        if change:
            report.updated += 1
            if not dry_run:
                wb.catalog.update(lora_id, **change)
    report.recipes = len(recipes)
    if recipes and not dry_run:
        with wb.db.write() as con:
            for recipe in recipes:
                if not isinstance(recipe.get("name"), str):
                    continue
                exists = con.execute("SELECT 1 FROM recipes WHERE name = ?", [recipe["name"]]).fetchall()
                if exists and conflict == "skip":
                    continue
                con.execute(
                    "INSERT OR REPLACE INTO recipes (name, stack, params) VALUES (?, ?, ?)",
                    [recipe["name"], json.dumps(_loads(recipe.get("stack"))), json.dumps(_loads(recipe.get("params")))],
                )
    return report


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
