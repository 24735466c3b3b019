"""Import Civitai ``/api/v1/models`` items into the catalog.

One catalog entry per Civitai model (the newest version is the entry's version: its id,
base model and primary file). Trigger words are the union over all versions; every
version's files (names, sizes, hashes) are kept in ``metadata.civitai.versions`` so a local
file of any version can be recognised.

An entry with no local file has ``missing`` true and ``path`` ''. When a scanned local
file has the same SHA256 as one of the model's files (from the hash cache or from a
sidecar's claim), the Civitai fields are written onto that file's row instead and no
second entry is made. `link_local_files` does the same merge later, after a scan or
hashing found the file.  Re-importing the same items updates entries in place.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.catalog._db import Database


@dataclass
class CivitaiImportReport:
    """What one import did."""

    items: int = 0
    added: int = 0
    updated: int = 0
    joined: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.items} Civitai items: {self.added} added, {self.updated} updated, "
            f"{self.joined} joined to local files, {self.skipped} skipped"
        )
        return text + (f", {len(self.errors)} errors" if self.errors else "")


def read_items(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Civitai model items from a .json (one item, a list, or an API page with ``items``), .jsonl or .jsonl.gz file."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        if p.name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{p}:{line_no}: not JSON ({exc})") from None
                if isinstance(item, dict):
                    yield item
            return
        data = json.load(fh)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, dict):
        data = [data]
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            yield item


def _base_model(label: Any) -> str | None:
    from workbench.files import normalize_base_model

    return normalize_base_model(label) if isinstance(label, str) else None


def _list(value: Any) -> list[Any]:
    """A JSON list, or [] for anything else (a string must not become a list of its characters)."""
    return value if isinstance(value, list) else []


def _files(version: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for f in _list(version.get("files")):
        if not isinstance(f, Mapping) or not isinstance(f.get("name"), str) or not f.get("name"):
            continue
        raw = f.get("hashes")
        raw_hashes: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        hashes = {str(k).lower(): str(v).upper() for k, v in raw_hashes.items() if isinstance(v, str) and v}
        out.append(
            {
                "name": str(f["name"]),
                "size_bytes": int(float(f["sizeKB"]) * 1024) if isinstance(f.get("sizeKB"), (int, float)) else None,
                "primary": bool(f.get("primary")),
                "type": f.get("type"),
                "sha256": hashes["sha256"].lower() if hashes.get("sha256") else None,  # as the hash cache spells it
                "autov2": hashes.get("autov2"),
                "hashes": hashes,
            }
        )
    return out


def _primary(files: list[dict[str, Any]]) -> dict[str, Any] | None:
    models = [f for f in files if f.get("type") in (None, "Model")] or files
    for f in models:
        if f["primary"]:
            return f
    return max(models, key=lambda f: f.get("size_bytes") or 0) if models else None


def item_to_record(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """Catalog columns for one Civitai model item (None when it has no usable id or name)."""
    model_id = item.get("id")
    name = item.get("name")
    if not isinstance(model_id, int) or not isinstance(name, str) or not name.strip():
        return None
    versions = [v for v in _list(item.get("modelVersions")) if isinstance(v, Mapping)]
    version_rows = []
    triggers: list[str] = []
    for v in versions:
        words = [str(w).strip() for w in _list(v.get("trainedWords")) if isinstance(w, str) and w.strip()]
        for w in words:
            if w not in triggers:
                triggers.append(w)
        version_rows.append(
            {
                "id": v.get("id") if isinstance(v.get("id"), int) else None,
                "name": v.get("name") if isinstance(v.get("name"), str) else None,
                "base_model": v.get("baseModel") if isinstance(v.get("baseModel"), str) else None,
                "trained_words": words,
                "created_at": v.get("createdAt") if isinstance(v.get("createdAt"), str) else None,
                "published_at": v.get("publishedAt") if isinstance(v.get("publishedAt"), str) else None,
                "files": _files(v),
            }
        )
    newest: dict[str, Any] = version_rows[0] if version_rows else {"id": None, "base_model": None, "files": []}
    primary = _primary(newest["files"]) or {}
    creator = item.get("creator")
    if isinstance(creator, Mapping):
        creator = creator.get("username")
    tags = [str(t).strip() for t in _list(item.get("tags")) if isinstance(t, (str, int)) and str(t).strip()]
    file_name = primary.get("name")
    fmt = file_name.rsplit(".", 1)[-1].lower() if file_name and "." in file_name else None
    return {
        "path": "",
        "root": None,
        "folder": None,
        "file_name": file_name,
        "name": name.strip(),
        "format": fmt,
        "size_bytes": primary.get("size_bytes"),
        "missing": True,
        "network_type": {"LORA": "LoRA", "LoCon": "LoCon", "LOCON": "LoCon", "DoRA": "DoRA"}.get(
            str(item.get("type")), "LoRA"
        ),
        "base_model": _base_model(newest.get("base_model")),
        "base_model_evidence": f"civitai: baseModel {newest.get('base_model')!r}" if newest.get("base_model") else None,
        "description": item.get("description") if isinstance(item.get("description"), str) else None,
        "trigger_words": triggers,
        "file_tags": tags,
        "metadata": {
            "civitai": {
                "model_id": model_id,
                "type": item.get("type"),
                "nsfw": item.get("nsfw"),
                "allow_commercial_use": item.get("allowCommercialUse"),
                "nsfw_level": item.get("nsfwLevel") if isinstance(item.get("nsfwLevel"), int) else None,
                "versions": version_rows,
            }
        },
        "sources": {
            "name": "civitai",
            "description": "civitai",
            "trigger_words": "civitai",
            "tags": "civitai",
            "base_model": "civitai",
        },
        "civitai_model_id": model_id,
        "civitai_version_id": newest.get("id") if isinstance(newest.get("id"), int) else None,
        "creator": creator if isinstance(creator, str) else None,
        "stats": item.get("stats") if isinstance(item.get("stats"), Mapping) else None,
        "sha256_claimed": primary.get("sha256"),
        "origin": "civitai",
    }


def _all_sha256(record: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(sha256, version) for every file of every version of a record."""
    out = []
    for v in record["metadata"]["civitai"]["versions"]:
        for f in v["files"]:
            if f.get("sha256"):
                out.append((f["sha256"], v))
    return out


# Civitai fields written onto a scanned file's row (its own header facts stay).
_JOIN_COLUMNS = ("civitai_model_id", "civitai_version_id", "creator", "stats")
_FILL_IF_EMPTY = ("description", "trigger_words", "file_tags", "base_model", "name")
_INSERT_COLUMNS = (
    "path",
    "root",
    "folder",
    "file_name",
    "name",
    "format",
    "size_bytes",
    "missing",
    "network_type",
    "base_model",
    "base_model_evidence",
    "description",
    "trigger_words",
    "file_tags",
    "metadata",
    "sources",
    "civitai_model_id",
    "civitai_version_id",
    "creator",
    "stats",
    "sha256_claimed",
    "origin",
)
_JSON = {"metadata", "sources", "stats"}
_LISTS = {"trigger_words", "file_tags"}


def _sql_value(col: str, value: Any) -> Any:
    if col in _JSON:
        return None if value is None else json.dumps(value)
    return value


def _local_sha_index(con: Any) -> dict[str, int]:
    """sha256 (lower case) -> id of scanned rows, from the hash cache and from sidecar claims."""
    rows = con.execute(
        """
        SELECT lower(coalesce(h.sha256, l.sha256_claimed)) AS sha, l.id
        FROM loras l LEFT JOIN hashes h
          ON h.path = l.path AND h.size_bytes = l.size_bytes AND h.mtime_ns = l.mtime_ns
        WHERE l.path <> '' AND coalesce(h.sha256, l.sha256_claimed) IS NOT NULL
        """
    ).fetchall()
    return {sha: int(i) for sha, i in rows}


def import_items(
    db: Database, items: Iterable[Mapping[str, Any]], *, batch: int = 1000, progress: bool = False
) -> CivitaiImportReport:
    """Add or update catalog entries for Civitai model items; returns counts."""
    from tqdm.auto import tqdm

    report = CivitaiImportReport()
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    for item in items:
        report.items += 1
        try:
            rec = item_to_record(item)
        except (TypeError, ValueError, KeyError) as exc:
            report.errors.append(f"item {item.get('id')!r}: {exc}")
            continue
        if rec is None or rec["civitai_model_id"] in seen:
            report.skipped += 1
            continue
        seen.add(rec["civitai_model_id"])
        records.append(rec)
    bar = tqdm(total=len(records), desc="importing Civitai models", unit="model", disable=not progress)
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        _write_chunk(db, chunk, report)
        bar.update(len(chunk))
    bar.close()
    return report


def _write_chunk(db: Database, chunk: list[dict[str, Any]], report: CivitaiImportReport) -> None:
    # Computed inside the transaction so a retried transaction starts from the same state.
    with db.write() as con:
        local = _local_sha_index(con)
        existing = {
            int(m): int(i)
            for m, i in con.execute(
                "SELECT civitai_model_id, id FROM loras WHERE origin = 'civitai' AND civitai_model_id IS NOT NULL"
            ).fetchall()
        }
        added = updated = joined = 0
        fresh: list[dict[str, Any]] = []
        for rec in chunk:
            local_id = next((local[s] for s, _ in _all_sha256(rec) if s in local), None)
            if local_id is not None:
                version = next(v for s, v in _all_sha256(rec) if local.get(s) == local_id)
                _join(con, local_id, rec, version)
                if rec["civitai_model_id"] in existing:  # an earlier catalog-only entry is now a real file
                    _retire(con, existing.pop(rec["civitai_model_id"]), local_id)
                joined += 1
                continue
            if rec["civitai_model_id"] in existing:
                fresh.append({**rec, "id": existing[rec["civitai_model_id"]]})
                updated += 1
            else:
                fresh.append({**rec, "id": None})
                added += 1
        _bulk_upsert(con, fresh)
    report.added += added
    report.updated += updated
    report.joined += joined


def _bulk_upsert(con: Any, records: list[dict[str, Any]]) -> None:
    """Insert new entries and rewrite existing catalog-only ones (same id, same added_at) in two statements."""
    if not records:
        return
    import pyarrow as pa

    types = {c: pa.string() for c in _INSERT_COLUMNS}
    types.update(
        {
            "size_bytes": pa.int64(),
            "missing": pa.bool_(),
            "civitai_model_id": pa.int64(),
            "civitai_version_id": pa.int64(),
            "trigger_words": pa.list_(pa.string()),
            "file_tags": pa.list_(pa.string()),
            "id": pa.int64(),
        }
    )
    cols = ["id", *_INSERT_COLUMNS]
    table = pa.table({c: pa.array([_sql_value(c, r[c]) for r in records], type=types[c]) for c in cols})
    select = ", ".join(f"CAST({c} AS JSON)" if c in _JSON else c for c in _INSERT_COLUMNS)
    con.register("_civitai_batch", table)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _civitai_kept AS SELECT id, added_at FROM loras "
            "WHERE id IN (SELECT id FROM _civitai_batch WHERE id IS NOT NULL)"
        )
        con.execute("DELETE FROM loras WHERE id IN (SELECT id FROM _civitai_kept)")
        con.execute(
            f"INSERT INTO loras (id, added_at, {', '.join(_INSERT_COLUMNS)}) "
            f"SELECT b.id, k.added_at, {select} FROM _civitai_batch b JOIN _civitai_kept k USING (id)"
        )
        con.execute(
            f"INSERT INTO loras ({', '.join(_INSERT_COLUMNS)}) SELECT {select} FROM _civitai_batch WHERE id IS NULL"
        )
        con.execute("DROP TABLE _civitai_kept")
    finally:
        con.unregister("_civitai_batch")


def _join(con: Any, lora_id: int, rec: Mapping[str, Any], version: Mapping[str, Any]) -> None:
    """Write Civitai facts onto a scanned file's row; fill descriptive fields the file lacks."""
    current = con.execute(
        f"SELECT {', '.join(_FILL_IF_EMPTY)}, file_name, metadata FROM loras WHERE id = ?", [lora_id]
    ).fetchone()
    stem = current[-2].rsplit(".", 1)[0] if isinstance(current[-2], str) else None
    current = (*current[:-2], current[-1])
    sets = {c: rec[c] for c in _JOIN_COLUMNS}
    sets["civitai_version_id"] = version.get("id") if isinstance(version.get("id"), int) else rec["civitai_version_id"]
    for col, value in zip(_FILL_IF_EMPTY, current[:-1]):
        if col == "name" and value == stem:
            value = None  # a name that is only the file's stem says less than Civitai's model name
        if value in (None, "", []) and rec.get(col) not in (None, "", []):
            sets[col] = rec[col]
    if "base_model" in sets:
        sets["base_model"] = _base_model(version.get("base_model")) or rec["base_model"]
    else:  # Civitai names the finetune (Pony, Illustrious…) where the tensors only say its family (SDXL)
        from workbench.files import base_model_family

        named = _base_model(version.get("base_model"))
        detected = current[_FILL_IF_EMPTY.index("base_model")]
        if named and detected and named != detected and base_model_family(named) == detected:
            sets["base_model"] = named
            sets["base_model_evidence"] = f"civitai: baseModel {version.get('base_model')!r}"
    try:
        meta = json.loads(current[-1]) if isinstance(current[-1], str) else (current[-1] or {})
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    meta["civitai"] = rec["metadata"]["civitai"]
    sets["metadata"] = meta
    cols = list(sets)
    con.execute(
        f"UPDATE loras SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
        [*(_sql_value(c, sets[c]) for c in cols), lora_id],
    )


def _retire(con: Any, civitai_row: int, local_id: int) -> None:
    """Fold a catalog-only entry into the local file's row: user fields move over if the file has none."""
    has_user = con.execute("SELECT count(*) FROM user_fields WHERE lora_id = ?", [local_id]).fetchone()[0]
    if not has_user:
        con.execute("UPDATE user_fields SET lora_id = ? WHERE lora_id = ?", [local_id, civitai_row])
    con.execute("UPDATE feedback SET lora_id = ? WHERE lora_id = ?", [local_id, civitai_row])
    con.execute("DELETE FROM user_fields WHERE lora_id = ?", [civitai_row])
    con.execute("DELETE FROM embeddings WHERE lora_id = ?", [civitai_row])
    con.execute("DELETE FROM loras WHERE id = ?", [civitai_row])


def link_local_files(db: Database) -> int:
    """Merge catalog-only Civitai entries into scanned files with the same SHA256 (run after scanning/hashing).

    Returns how many entries were merged.
    """
    with db.read() as con:
        rows = con.execute("SELECT id, metadata FROM loras WHERE origin = 'civitai' AND path = ''").fetchall()
        local = _local_sha_index(con)
    if not local or not rows:
        return 0
    todo = []
    for row_id, meta in rows:
        try:
            civ = json.loads(meta)["civitai"] if isinstance(meta, str) else (meta or {})["civitai"]
        except (ValueError, KeyError, TypeError):
            continue
        for v in civ.get("versions", []):
            hit = next((local[f["sha256"]] for f in v.get("files", []) if f.get("sha256") in local), None)
            if hit is not None:
                todo.append((int(row_id), hit))
                break
    if not todo:
        return 0
    with db.write() as con:
        for row_id, local_id in todo:
            (meta,) = con.execute("SELECT metadata FROM loras WHERE id = ?", [row_id]).fetchone() or (None,)
            if meta is None:
                continue  # already merged by a retried transaction
            rec = {
                c: v
                for c, v in zip(
                    _INSERT_COLUMNS,
                    con.execute(f"SELECT {', '.join(_INSERT_COLUMNS)} FROM loras WHERE id = ?", [row_id]).fetchone()
                    or (),
                )
            }
            rec["metadata"] = json.loads(rec["metadata"]) if isinstance(rec["metadata"], str) else rec["metadata"]
            rec["stats"] = json.loads(rec["stats"]) if isinstance(rec["stats"], str) else rec["stats"]
            local_shas = {s for s, i in _local_sha_index(con).items() if i == local_id}
            version = next((v for s, v in _all_sha256(rec) if s in local_shas), {})
            _join(con, local_id, rec, version)
            _retire(con, row_id, local_id)
    return len(todo)


def import_civitai(db: Database, path: str | os.PathLike[str], *, progress: bool = True) -> CivitaiImportReport:
    """Import a Civitai export file (.json, .jsonl, .jsonl.gz) into the catalog."""
    return import_items(db, read_items(path), progress=progress)
