"""Export and import what a person put into the catalog (ratings, tags, notes, recipes), optionally with files.

An archive is a zip with `manifest.json` (format version, counts, SHA256 of every member),
`loras.jsonl` (one catalogued LoRA each: identity, hashes, user fields) and `recipes.jsonl`,
plus `files/...` when files are included.

An import is all or nothing. It first verifies the whole archive — every member's name, type,
size, compression ratio and checksum, the JSON's schema, nesting depth and caps, where each file
would land — while streaming restored files into a hidden staging folder; a dry run runs exactly
these checks (hashing instead of staging), so a dry-run OK means the import goes through. Only
then are the staged files renamed into place (and scanned), and every user field and recipe is
applied in ONE short catalog transaction (an undoable edit), so a crash leaves the catalog as it
was or fully imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from workbench.catalog._catalog import Catalog, CatalogError, read_user_rows, validate_user_fields
from workbench.catalog._db import Database
from workbench.files import USER_FIELDS, fs_path


class Workbench(Protocol):
    """What an archive needs of the façade (``workbench.Workbench`` has it): the catalog, and scan + hash to
    catalogue restored files."""

    @property
    def catalog(self) -> Catalog: ...
    @property
    def db(self) -> Database: ...

    @property
    def scan(self) -> Callable[..., Any]: ...
    @property
    def hash(self) -> Callable[..., int]: ...


#: User fields an archive carries: a chosen preview is a file in this home, not portable (it stays local).
_PORTABLE_FIELDS = tuple(f for f in USER_FIELDS if f != "preview_override")

FORMAT = "lora-workbench-archive"
VERSION = 1
MAX_MEMBERS = 200_000
MAX_TOTAL_BYTES = 64 * 2**30
MAX_RATIO = 200  # uncompressed / compressed, for EVERY member (deflate tops out near 1,000 on zeros)
MAX_JSON_BYTES = 512 * 2**20
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_NAME_BYTES = 255  # one path component, as most filesystems allow
MAX_PATH_BYTES = 1024
MAX_PATH_DEPTH = 32
MAX_JSON_DEPTH = 32
MAX_RECIPES = 100_000
MAX_RECIPE_BYTES = 64 * 1024
CONFLICT_POLICIES = ("skip", "overwrite", "merge")
STAGING_PREFIX = ".workbench-import-"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_JSON_MEMBERS = ("manifest.json", "loras.jsonl", "recipes.jsonl")


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
    """A catalog value as plain JSON: arrays to lists, NaN/NaT/NA and infinities to None (never a literal NaN)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if type(value).__name__ in ("NaTType", "NAType"):
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
        record = {
            key: _clean(row[key])
            for key in (
                "name",
                "file_name",
                "folder",
                "root",
                "path",
                "size_bytes",
                "sha256",
                "tensor_hash",
                "base_model",
            )
        }
        if isinstance(record["size_bytes"], float):
            record["size_bytes"] = int(record["size_bytes"])
        record["user_fields"] = {f: _clean(u.get(f)) for f in _PORTABLE_FIELDS if _clean(u.get(f)) is not None}
        records.append(record)
    recipes = wb.db.read_df("SELECT name, stack, params FROM recipes").to_dict("records")
    members: dict[str, bytes] = {
        "loras.jsonl": "".join(
            json.dumps(r, ensure_ascii=False, default=str, allow_nan=False) + "\n" for r in records
        ).encode(),
        "recipes.jsonl": "".join(
            json.dumps({k: _clean(v) for k, v in r.items()}, default=str, allow_nan=False) + "\n" for r in recipes
        ).encode(),
    }
    files: dict[str, Path] = {}
    if include_files:
        for row in records:
            if not row["path"] or not Path(fs_path(row["path"])).is_file():
                continue
            source = Path(fs_path(row["path"]))
            base = source.name.rsplit(".", 1)[0]
            for sibling in source.parent.iterdir():
                if sibling == source or (sibling.name.startswith(base + ".") and sibling.is_file()):
                    rel = PurePosixPath("files", row["folder"] or "", sibling.name).as_posix()
                    files.setdefault(rel, sibling)
    manifest: dict[str, Any] = {
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


def _check_name(name: str) -> PurePosixPath:
    """A member name that is safe to extract: relative, no '..', no backslash, short components, shallow."""
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise ArchiveError(f"unsafe archive: member {name[:80]!r} has control characters in its name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ArchiveError(f"unsafe archive: member {name[:80]!r} has an absolute or Windows path")
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        raise ArchiveError(f"unsafe archive: member {name[:80]!r} escapes the target folder")
    encoded = len(name.encode("utf-8", "surrogatepass"))
    if encoded > MAX_PATH_BYTES:
        raise ArchiveError(f"unsafe archive: member name of {encoded} bytes (at most {MAX_PATH_BYTES})")
    for part in path.parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise ArchiveError(
                f"unsafe archive: member {name[:60]!r}... has a name part longer than {MAX_NAME_BYTES} bytes"
            )
    if len(path.parts) > MAX_PATH_DEPTH:
        raise ArchiveError(f"unsafe archive: member {name[:60]!r}... is nested {len(path.parts)} folders deep")
    return path


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise ArchiveError(f"unsafe archive: member {name[:80]!r} is a symbolic link")
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
        raise ArchiveError(f"unsafe archive: member {name[:80]!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"archive member {name[:80]!r} is encrypted")
    if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 4096:
        raise ArchiveError(
            f"unsafe archive: member {name[:80]!r} expands {info.file_size // max(info.compress_size, 1)}x (zip bomb?)"
        )


def _check_layout(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Every member checked on its own and against the others; returns the regular members."""
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"unsafe archive: {len(infos)} members (at most {MAX_MEMBERS})")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(f"unsafe archive: expands to {total:,} bytes (at most {MAX_TOTAL_BYTES:,})")
    packed = sum(i.compress_size for i in infos)
    if total > 1 << 20 and total > MAX_RATIO * max(packed, 1):
        raise ArchiveError(f"unsafe archive: expands {total // max(packed, 1)}x in all (zip bomb?)")
    files: dict[str, zipfile.ZipInfo] = {}
    folders: set[str] = set()
    for info in infos:
        path = _check_name(info.filename)
        _check_member(info)
        if info.is_dir():
            folders.add(path.as_posix())
            continue
        key = path.as_posix()
        if key in files:
            raise ArchiveError(f"unsafe archive: member {key[:80]!r} appears twice")
        files[key] = info
        folders.update(p.as_posix() for p in path.parents if p.as_posix() != ".")
    clash = sorted(set(files) & folders)
    if clash:
        raise ArchiveError(f"malformed archive: {clash[0][:80]!r} is both a file and a folder")
    return list(files.values())


def _json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether nesting stays within ``limit`` (iterative: a deep value cannot overflow the stack here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _parse_json(data: bytes | str, what: str) -> Any:
    try:
        value = json.loads(data)
    except RecursionError:
        raise ArchiveError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if not _json_depth_ok(value):
        raise ArchiveError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    if info.file_size > cap:
        raise ArchiveError(f"{info.filename} is too large ({info.file_size:,} bytes; at most {cap:,})")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise ArchiveError(f"archive member {info.filename!r} is damaged: {exc}") from None


def _jsonl(data: bytes, name: str) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{name} is not UTF-8 text: {exc}") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = _parse_json(line, f"{name} line {number}")
        if not isinstance(record, dict):
            raise ArchiveError(f"{name} line {number} is not a JSON object")
        out.append(record)
    return out


def _optional(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, cap: int = 4096) -> Any:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ArchiveError(
            f"{where}: {key} must be {getattr(kind, '__name__', 'a number')}, got {type(value).__name__}"
        )
    if isinstance(value, str) and len(value) > cap:
        raise ArchiveError(f"{where}: {key} is {len(value):,} characters (at most {cap:,})")
    return value


def _check_lora_records(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Schema of loras.jsonl, every entry: identity types, hash format, user fields by the catalog's own rules."""
    planned = []
    for number, record in enumerate(records, 1):
        where = f"loras.jsonl line {number}"
        for key in ("name", "file_name", "folder", "root", "path", "base_model"):
            _optional(record, key, str, where)
        sha = _optional(record, "sha256", str, where)
        if sha is not None and not _SHA256.fullmatch(sha.lower()):
            raise ArchiveError(f"{where}: sha256 must be 64 hexadecimal characters")
        size = _optional(record, "size_bytes", int, where)
        if size is not None and not 0 <= size < 2**62:
            raise ArchiveError(f"{where}: size_bytes {size} is out of range")
        fields = record.get("user_fields") or {}
        if not isinstance(fields, dict):
            raise ArchiveError(f"{where}: user_fields is not an object")
        try:
            clean = validate_user_fields({k: v for k, v in fields.items() if k in _PORTABLE_FIELDS})
        except (CatalogError, ValueError, TypeError) as exc:
            raise ArchiveError(f"{where} ({str(record.get('name'))[:80]!r}): {exc}") from None
        planned.append((record, clean))
    return planned


def _check_recipes(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """recipes.jsonl: (name, stack JSON, params JSON) each, with names, sizes and nesting checked."""
    if len(records) > MAX_RECIPES:
        raise ArchiveError(f"recipes.jsonl holds {len(records):,} recipes (at most {MAX_RECIPES:,})")
    out = []
    for number, recipe in enumerate(records, 1):
        where = f"recipes.jsonl line {number}"
        name = recipe.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ArchiveError(f"{where}: a recipe needs a name of 1 to 200 characters")
        parts = []
        for key in ("stack", "params"):
            value = recipe.get(key)
            if isinstance(value, str):  # stored as JSON text by older exports
                value = _parse_json(value, f"{where} {key}")
            if key == "stack" and not isinstance(value, (list, type(None))):
                raise ArchiveError(f"{where}: stack must be a list of LoRAs")
            if key == "params" and not isinstance(value, (dict, type(None))):
                raise ArchiveError(f"{where}: params must be an object")
            try:
                text = json.dumps(value, allow_nan=False)
            except ValueError:
                raise ArchiveError(f"{where}: {key} holds NaN or infinity") from None
            if len(text) > MAX_RECIPE_BYTES:
                raise ArchiveError(f"{where}: {key} is {len(text):,} bytes (at most {MAX_RECIPE_BYTES:,})")
            parts.append(text)
        out.append((name, parts[0], parts[1]))
    return out


@dataclass
class _Verified:
    """An archive that passed every check: what it holds, ready to apply."""

    manifest: dict[str, Any]
    planned: list[tuple[dict[str, Any], dict[str, Any]]]
    recipes: list[tuple[str, str, str]]
    file_members: list[zipfile.ZipInfo]


def _verify(zf: zipfile.ZipFile) -> _Verified:
    """Everything but the file members' contents: layout, manifest, checksums and schema of the JSON members."""
    members = {i.filename.rstrip("/"): i for i in _check_layout(zf.infolist())}
    if "manifest.json" not in members:
        raise ArchiveError("not a workbench archive: manifest.json is missing")
    manifest = _parse_json(_read_member(zf, members["manifest.json"], MAX_MANIFEST_BYTES), "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError("not a workbench archive: manifest.json has the wrong format marker")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArchiveError(f"manifest.json has no valid version (got {str(version)[:40]!r})")
    if version > VERSION:
        raise ArchiveError(f"archive version {version} is newer than this workbench supports ({VERSION})")
    checksums = manifest.get("sha256")
    if not isinstance(checksums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in checksums.items()
    ):
        raise ArchiveError("manifest.json has no valid checksum table (member name -> SHA256 hex)")
    present = set(members) - {"manifest.json"}
    unlisted = sorted(present - set(checksums))
    if unlisted:
        raise ArchiveError(f"archive members not in the manifest: {[n[:80] for n in unlisted[:5]]}")
    absent = sorted(set(checksums) - present)
    if absent:
        raise ArchiveError(f"the manifest lists members the archive lacks: {[n[:80] for n in absent[:5]]}")
    unexpected = sorted(n for n in present if n not in _JSON_MEMBERS and not n.startswith("files/"))
    if unexpected:
        raise ArchiveError(f"not a workbench archive: unexpected member {unexpected[0][:80]!r}")
    parsed = {}
    for required in ("loras.jsonl", "recipes.jsonl"):
        if required not in members:
            raise ArchiveError(f"archive lacks {required}")
        data = _read_member(zf, members[required], MAX_JSON_BYTES)
        if _sha256_bytes(data) != checksums[required]:
            raise ArchiveError(f"checksum mismatch for {required}: the archive is damaged or was altered")
        parsed[required] = _jsonl(data, required)
    loras, recipes = parsed["loras.jsonl"], parsed["recipes.jsonl"]
    for key, found in (("loras", len(loras)), ("recipes", len(recipes))):
        claimed = manifest.get(key)
        if claimed is not None and claimed != found:
            raise ArchiveError(f"manifest.json says {str(claimed)[:20]} {key} but the archive holds {found}")
    return _Verified(
        manifest=manifest,
        planned=_check_lora_records(loras),
        recipes=_check_recipes(recipes),
        file_members=[i for n, i in members.items() if n.startswith("files/")],
    )


def _destinations(members: list[zipfile.ZipInfo], target: Path) -> dict[str, Path]:
    """Where each file member lands under ``target``; refuses anything outside it or clashing with what is there."""
    out = {}
    for info in members:
        rel = PurePosixPath(info.filename).relative_to("files")
        dest = target.joinpath(*rel.parts)
        if os.path.commonpath([os.path.abspath(dest), str(target)]) != str(target):
            raise ArchiveError(f"unsafe archive: {info.filename[:80]!r} would be written outside {target}")
        for parent in [*reversed(dest.relative_to(target).parents), dest.relative_to(target)]:
            here = target / parent
            if here == target:
                continue
            if here.is_symlink():
                raise ArchiveError(f"{here} is a symbolic link; refusing to restore through it")
            if here != dest and here.exists() and not here.is_dir():
                raise ArchiveError(f"cannot restore {info.filename[:80]!r}: {here} is a file, not a folder")
        if dest.is_dir():
            raise ArchiveError(f"cannot restore {info.filename[:80]!r}: {dest} is a folder")
        out[info.filename] = dest
    return out


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: str, out: Any) -> None:
    """Copy (or just hash, ``out=None``) one member, enforcing its declared size and its checksum."""
    digest = hashlib.sha256()
    seen = 0
    try:
        with zf.open(info) as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                seen += len(block)
                if seen > info.file_size:
                    raise ArchiveError(f"archive member {info.filename[:80]!r} is larger than it declares")
                digest.update(block)
                if out is not None:
                    out.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"archive member {info.filename[:80]!r} is damaged: {exc}") from None
    if digest.hexdigest() != expected:
        raise ArchiveError(f"checksum mismatch for {info.filename[:80]!r}: the archive is damaged or was altered")


def _clear_stale_staging(target: Path) -> None:
    """Remove staging folders of imports whose process died (their files were never renamed into place)."""
    try:
        entries = list(os.scandir(target))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            pid = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), 0)
                    continue
                except ProcessLookupError:
                    shutil.rmtree(entry.path, ignore_errors=True)
                except PermissionError:
                    continue


def _stage_files(
    zf: zipfile.ZipFile, verified: _Verified, target: Path | None, dry_run: bool
) -> tuple[Path | None, list[tuple[Path, Path]]]:
    """Check every file member's checksum; for a real restore also write it under a temporary name.

    Returns the staging folder and the (staged, destination) pairs of files to rename into place.
    """
    checksums = verified.manifest["sha256"]
    if target is None or dry_run:
        for info in verified.file_members:  # verified whole even when nothing is restored
            _stream_member(zf, info, checksums[info.filename], None)
        if target is not None:
            _destinations(verified.file_members, target)
        return None, []
    destinations = _destinations(verified.file_members, target)
    todo = [(info, dest) for info, dest in zip(verified.file_members, destinations.values()) if not dest.exists()]
    need = sum(info.file_size for info, _ in todo)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    _clear_stale_staging(target)
    free = shutil.disk_usage(target).free
    if need > free:
        if created:
            target.rmdir()
        raise ArchiveError(f"not enough disk space in {target}: the files need {need:,} bytes, {free:,} are free")
    staging = target / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    pairs = []
    try:
        for number, info in enumerate(verified.file_members):
            dest = destinations[info.filename]
            if dest.exists():  # kept as it is; its member is still verified
                _stream_member(zf, info, checksums[info.filename], None)
                continue
            staged = staging / f"{number}.part"
            with open(staged, "wb") as out:
                _stream_member(zf, info, checksums[info.filename], out)
            pairs.append((staged, dest))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(target, ignore_errors=True)  # it held nothing but the staging folder
        raise
    return staging, pairs


def _publish(staging: Path | None, pairs: list[tuple[Path, Path]]) -> int:
    """Rename staged files into place (each rename atomic; an existing file is never replaced)."""
    if staging is None:
        return 0
    restored = 0
    try:
        for staged, dest in pairs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(staged, dest)  # fails if dest appeared meanwhile: never overwrite
            except FileExistsError:
                continue
            except OSError:
                if dest.exists():
                    continue
                os.replace(staged, dest)
            restored += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return restored


def _merge(fields: dict[str, Any], have: dict[str, Any], conflict: str) -> tuple[dict[str, Any], bool]:
    """The fields to write for one entry under a conflict policy, and whether a conflict was kept."""
    kept = False
    if conflict == "overwrite":
        change = dict(fields)
    elif conflict == "skip":
        change = {k: v for k, v in fields.items() if k not in have}
        kept = any(k in have and have[k] != v for k, v in fields.items())
    else:
        change = {}
        for key, value in fields.items():
            if key not in have:
                change[key] = value
            elif isinstance(value, list):
                seen = set(have[key])
                union = list(have[key]) + [v for v in value if v not in seen]
                if union != list(have[key]):
                    change[key] = union
    return {k: v for k, v in change.items() if have.get(k) != v}, kept


def import_archive(
    wb: Workbench,
    src: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    conflict: str = "skip",
    restore_to: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Verify a whole archive, then apply its user fields and recipes in one transaction (and restore its files
    into ``restore_to``). Raises :class:`ArchiveError` — with nothing written — for anything unsafe or malformed.

    conflict: `skip` keeps fields the catalog already has, `overwrite` takes the archive's,
    `merge` takes the archive's for empty fields and unions tag/trigger lists.
    """
    if conflict not in CONFLICT_POLICIES:
        raise ArchiveError(f"conflict must be one of {', '.join(CONFLICT_POLICIES)}")
    source = Path(src)
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveError(f"{source} is not a readable zip archive: {exc}") from None
    report = ImportReport(dry_run=dry_run)
    target = Path(restore_to).resolve() if restore_to is not None else None
    with zf:
        verified = _verify(zf)
        staging, pairs = _stage_files(zf, verified, target, dry_run)
    report.recipes = len(verified.recipes)
    if dry_run:
        report.restored_files = len(verified.file_members) if target is not None else 0
        _plan_fields(wb, verified, conflict, report)
        return report
    report.restored_files = _publish(staging, pairs)
    if target is not None and verified.file_members:
        wb.scan([target], progress=False)
        wb.hash(progress=False)
    _apply(wb, verified, conflict, report)
    return report


def _match(wb: Workbench, verified: _Verified, report: ImportReport) -> dict[int, dict[str, Any]]:
    """Catalog id -> archive fields for every entry that matches by SHA256, else by file name + size."""
    current = wb.catalog.query()
    by_sha = {s.lower(): int(i) for s, i in zip(current["sha256"], current["id"]) if isinstance(s, str)}
    by_name = {
        (f, int(s)): int(i) for f, s, i in zip(current["file_name"], current["size_bytes"].fillna(-1), current["id"])
    }
    found: dict[int, dict[str, Any]] = {}
    for record, fields in verified.planned:
        sha = record.get("sha256")
        lora_id = by_sha.get(sha.lower()) if sha else None
        if lora_id is None:
            lora_id = by_name.get((record.get("file_name"), int(record.get("size_bytes") or -1)))
        if lora_id is None:
            report.unmatched.append(str(record.get("name") or record.get("file_name")))
            continue
        found[lora_id] = {**found.get(lora_id, {}), **fields}
    report.matched = len(found)
    return found


def _user_view(row: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _clean(v) for k, v in (row or {}).items() if k in _PORTABLE_FIELDS and _clean(v) is not None}


def _plan_fields(wb: Workbench, verified: _Verified, conflict: str, report: ImportReport) -> None:
    """Dry run: what the import would change, computed the way `_apply` computes it."""
    found = _match(wb, verified, report)

    with wb.db.read() as con:
        current = read_user_rows(con, list(found)) if found else {}
    for lora_id, fields in found.items():
        change, kept = _merge(fields, _user_view(current.get(lora_id)), conflict)
        report.skipped_conflicts += int(kept)
        report.updated += int(bool(change))


def _apply(wb: Workbench, verified: _Verified, conflict: str, report: ImportReport) -> None:
    """All user fields and recipes in one transaction, recorded as one undoable edit (kind 'import')."""
    found = _match(wb, verified, report)

    def compute(current: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        report.updated = report.skipped_conflicts = 0
        after = {}
        for lora_id, fields in found.items():
            change, kept = _merge(fields, _user_view(current.get(lora_id)), conflict)
            report.skipped_conflicts += int(kept)
            if change:
                report.updated += 1
                after[lora_id] = {**current.get(lora_id, {}), **change}
        return after

    def recipes(con: Any) -> None:
        if not verified.recipes:
            return
        names = [name for name, _, _ in verified.recipes]
        existing = {
            r[0] for r in con.execute("SELECT name FROM recipes WHERE name IN (SELECT unnest(?))", [names]).fetchall()
        }
        rows = {name: (stack, params) for name, stack, params in verified.recipes}
        if conflict == "skip":
            rows = {n: v for n, v in rows.items() if n not in existing}
        if not rows:
            return
        import pyarrow as pa

        table = pa.table(
            {
                "name": pa.array(list(rows), pa.string()),
                "stack": pa.array([v[0] for v in rows.values()], pa.string()),
                "params": pa.array([v[1] for v in rows.values()], pa.string()),
            }
        )
        con.execute("DELETE FROM recipes WHERE name IN (SELECT unnest(?))", [list(rows)])
        con.register("_archive_recipes", table)
        try:
            con.execute(
                "INSERT INTO recipes (name, stack, params) SELECT name, stack::JSON, params::JSON FROM _archive_recipes"
            )
        finally:
            con.unregister("_archive_recipes")

    if found:
        wb.catalog.apply_edit("import", list(found), compute, also=recipes)
    elif verified.recipes:
        with wb.db.write() as con:
            recipes(con)
