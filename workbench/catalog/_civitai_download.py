"""Downloading a model version's file from Civitai into a library folder, safely.

The file streams into ``.<name>.<version>.part`` beside its destination (resumed with ``Range`` when a
part is there), its SHA256 must equal the one Civitai lists before it is moved into place, an existing
file is never overwritten, and a name that would leave the folder is refused. The new file is then
scanned, hashed and linked to its version (the lookup is already known, so no by-hash request).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.catalog._civitai_client import CivitaiClient, CivitaiError
from workbench.catalog._civitai_dump import _files, _primary

if TYPE_CHECKING:
    from workbench.catalog._civitai_online import CivitaiOnline

#: Room above Civitai's listed size (``sizeKB`` is rounded) before a download counts as too large.
_SIZE_SLACK = 1024 * 1024
_UNKNOWN_SIZE_CAP = 64 * 1024**3


@dataclass
class DownloadResult:
    """Where the file went and what it is."""

    path: Path
    lora_id: int | None
    model_id: int
    version_id: int
    sha256: str
    resumed: bool

    def __str__(self) -> str:
        how = " (resumed)" if self.resumed else ""
        return f"downloaded {self.path}{how}: Civitai model {self.model_id} version {self.version_id}, catalog id {self.lora_id}"


def safe_destination(folder: Path, name: Any) -> Path:
    """``folder/name`` when ``name`` is a plain file name that stays inside ``folder``; ValueError otherwise."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError(f"refused file name {str(name)[:80]!r}")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"refused file name {name[:80]!r}: it would leave the folder or hide the file")
    base = folder.resolve()
    target = (base / name).resolve()
    if target.parent != base:
        raise ValueError(f"refused file name {name[:80]!r}: it would leave {folder}")
    return target


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download_version(
    online: CivitaiOnline,
    ref: str | int,
    folder: Path,
    *,
    progress: bool = True,
    client: CivitaiClient | None = None,
) -> DownloadResult:
    """Download the primary file of a Civitai version (id or URL) into ``folder`` and catalog it, linked."""
    from tqdm.auto import tqdm

    from workbench.catalog._civitai_online import parse_civitai_ref
    from workbench.catalog._scan import scan

    model_id, version_id = parse_civitai_ref(ref)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    own = client is None
    client = client or online.client()
    try:
        if version_id is None:
            model = client.model(int(model_id))  # type: ignore[arg-type]
            listed = [
                v for v in model.get("modelVersions") or [] if isinstance(v, dict) and isinstance(v.get("id"), int)
            ]
            if not listed:
                raise CivitaiError("malformed", f"model {model_id} lists no versions")
            version_id = int(listed[0]["id"])
        version = client.version(version_id)
        if not isinstance(version.get("modelId"), int) or version.get("id") != version_id:
            raise CivitaiError("malformed", f"version {version_id}: malformed answer")
        primary = _primary(_files(version))
        if not primary:
            raise CivitaiError("malformed", f"version {version_id} lists no file")
        expected = primary.get("sha256")
        if not expected or len(expected) != 64:
            raise CivitaiError("refused", f"version {version_id}: Civitai lists no SHA256 to verify the file against")
        dest = safe_destination(folder, primary["name"])
        if dest.exists():
            raise CivitaiError("exists", f"{dest} already exists; not overwritten")
        part = dest.with_name(f".{dest.name}.{version_id}.part")
        offset = part.stat().st_size if part.exists() else 0
        size = primary.get("size_bytes")
        cap = size + _SIZE_SLACK if isinstance(size, int) else _UNKNOWN_SIZE_CAP
        with tqdm(
            total=size, initial=offset, unit="B", unit_scale=True, desc=dest.name[:40], disable=not progress
        ) as bar:
            with open(part, "ab+") as out:
                info = client.stream_to(
                    client.download_url(version_id),
                    out,
                    max_bytes=cap,
                    offset=offset,
                    same_host_redirects=False,  # Civitai redirects to its storage host
                    on_bytes=bar.update,
                )
        actual = _sha256_of(part)
        if actual != expected.lower():
            part.unlink(missing_ok=True)  # wrong bytes: resuming from them would only repeat the mismatch
            raise CivitaiError(
                "hash_mismatch",
                f"{dest.name}: SHA256 {actual[:10]}… is not the {expected[:10]}… Civitai lists; discarded",
            )
        try:
            os.link(part, dest)  # fails instead of overwriting a file that appeared meanwhile
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise CivitaiError("exists", f"{dest} appeared meanwhile; not overwritten; kept {part}") from None
            raise
        part.unlink()
        model_id = int(version["modelId"])
        with online.db.write() as con:
            con.execute(
                "INSERT OR REPLACE INTO civitai_lookups (sha256, status, model_id, version_id, version, checked_at) "
                "VALUES (?, 'found', ?, ?, ?, current_timestamp)",
                [actual, model_id, version_id, json.dumps(version)],
            )
        with online.db.read() as con:
            roots = [Path(r) for (r,) in con.execute("SELECT path FROM roots").fetchall()]
        root = next((r for r in roots if dest.is_relative_to(r.resolve())), folder.resolve())
        scan(online.db, [root], progress=False)
        with online.db.read() as con:
            row = con.execute("SELECT id FROM loras WHERE path = ? AND origin = 'scan'", [str(dest)]).fetchone()
        lora_id = int(row[0]) if row else None
        if lora_id is not None:
            online.fetch(ids=[lora_id], progress=False, client=client)
        return DownloadResult(dest, lora_id, model_id, version_id, actual, bool(info["resumed"]))
    finally:
        if own:
            client.close()
