"""Writing what Civitai said beside the files, in the formats other tools read (off unless asked).

- ``<base>.civitai.info`` (Civitai Helper): the model-version JSON; ``{}`` for "looked up, not found".
  Written when absent or when it holds ``{}``: a user's existing file is never replaced.
- ``<base>.metadata.json`` (ComfyUI-Lora-Manager): fields merged into an existing file, unknown fields
  and the user's ``notes``/``favorite``/``usage_tips`` kept.

Written atomically (temporary file + rename); a file that cannot be written is reported, not fatal.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.catalog._civitai_online import CivitaiOnline


def _atomic_write(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _base(path: Path) -> Path:
    return path.with_name(path.name[: -len(path.suffix)] if path.suffix else path.name)


def write_sidecars(online: CivitaiOnline, ids: Iterable[int]) -> list[str]:
    """Write the interchange sidecars for these catalog ids; returns per-file problems."""
    wanted = [int(i) for i in ids]
    if not wanted:
        return []
    with online.db.read() as con:
        rows = con.execute(
            "SELECT v.id, v.path, v.name, lower(v.sha256), v.base_model, v.tags, v.description, v.preview_path, "
            "k.status, coalesce(cl.version, k.version) FROM lora_view v "
            "LEFT JOIN civitai_lookups k ON k.sha256 = lower(v.sha256) "
            "LEFT JOIN civitai_links cl ON cl.lora_id = v.id "
            "WHERE list_contains(?, v.id) AND v.path <> ''",
            [wanted],
        ).fetchall()
    problems: list[str] = []
    for lora_id, path, name, sha, base_model, tags, description, preview, status, version in rows:
        if status is None and version is None:
            continue  # never asked: nothing to say
        version = json.loads(version) if isinstance(version, str) else version
        base = _base(Path(path))
        try:
            info = base.with_name(base.name + ".civitai.info")
            existing = info.read_text(encoding="utf-8").strip() if info.exists() else ""
            if existing in ("", "{}"):
                _atomic_write(info, version if isinstance(version, Mapping) else {})
            lm = base.with_name(base.name + ".metadata.json")
            try:
                current = json.loads(lm.read_text(encoding="utf-8")) if lm.exists() else {}
            except ValueError:
                problems.append(f"{lm}: not JSON; left as it is")
                continue
            if not isinstance(current, dict):
                problems.append(f"{lm}: not a JSON object; left as it is")
                continue
            current.update(
                {
                    "file_name": base.name,
                    "model_name": name,
                    "file_path": str(path),
                    "sha256": sha,
                    "base_model": base_model or "Unknown",
                    "preview_url": preview or current.get("preview_url") or "",
                    "tags": list(tags) if tags is not None else [],
                    "modelDescription": description or "",
                    "from_civitai": isinstance(version, Mapping),
                    "civitai": version if isinstance(version, Mapping) else {},
                }
            )
            for key, default in (("notes", ""), ("favorite", False), ("usage_tips", "{}")):
                current.setdefault(key, default)
            _atomic_write(lm, current)
        except OSError as exc:
            problems.append(f"LoRA {lora_id}: {exc.strerror or exc}")
    return problems
