"""Asking Civitai about the files a user has: lookup by hash, manual links, example images, update checks.

Answers are kept in their own tables (``civitai_lookups`` by SHA256, including "not on Civitai";
``civitai_models``; ``civitai_links`` for links made by hand; ``civitai_images``) and projected onto the
file's catalog row with the dump importer's mapping (`item_to_record` + its join), so what a fetch learned
survives a rescan and a second fetch asks almost nothing. User fields still win (``lora_view``). A failed
request changes nothing that was known. Images land under ``<home>/civitai/<version id>/``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from workbench.catalog._civitai_client import CivitaiClient, CivitaiError, _is_http_url
from workbench.catalog._civitai_dump import _join, item_to_record
from workbench.catalog._db import Database

#: Example images kept per version by default (the first is the cover).
DEFAULT_MAX_IMAGES = 4
MAX_IMAGE_BYTES = 32 * 1024 * 1024
_IMAGE_TYPES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}
#: Generation parameters kept from an image's ``meta`` (scalars only; everything else is dropped).
_META_KEYS = ("prompt", "negativePrompt", "seed", "sampler", "steps", "cfgScale", "Size", "Model", "clipSkip")
_WRITE_EVERY = 100


@dataclass
class FetchReport:
    """What one fetch did; ``errors`` says per file what failed (nothing known was lost for them)."""

    files: int = 0
    cached: int = 0
    asked: int = 0
    found: int = 0
    not_found: int = 0
    linked: int = 0
    images: int = 0
    image_errors: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.files} files: {self.found} found on Civitai, {self.not_found} not on Civitai, "
            f"{self.cached} answered from the cache, {self.linked} linked by hand; "
            f"{self.images} images downloaded ({self.image_errors} refused or failed); {self.requests} API requests"
        )
        return text + (f"; {len(self.errors)} errors" if self.errors else "")


def parse_civitai_ref(ref: str | int) -> tuple[int | None, int | None]:
    """(model id, version id) from a version id, a model URL (``…/models/12?modelVersionId=34``) or a
    download URL (``…/api/download/models/34``); ValueError for anything else."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        return None, int(ref)
    if not isinstance(ref, str):
        raise ValueError(f"not a Civitai URL or version id: {ref!r}")
    text = ref.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not a Civitai URL: {ref!r}")
    query = parse_qs(parts.query)
    version = query.get("modelVersionId", [None])[0]
    if version is not None and not str(version).isdigit():
        raise ValueError(f"modelVersionId is not a number in {ref!r}")
    if m := re.fullmatch(r"/api/download/models/(\d+)/?", parts.path):
        return None, int(m.group(1))
    if m := re.fullmatch(r"/(?:api/v1/)?model-versions/(\d+)/?", parts.path):
        return None, int(m.group(1))
    if m := re.fullmatch(r"/(?:api/v1/)?models/(\d+)(?:/[^/]*)?/?", parts.path):
        return int(m.group(1)), int(version) if version else None
    raise ValueError(f"not a Civitai model or version URL: {ref!r}")


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _item_from_version(version: Mapping[str, Any]) -> dict[str, Any]:
    """A minimal model item from a version answer, for when the model itself could not be fetched."""
    raw = version.get("model")
    model: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    return {
        "id": version.get("modelId"),
        "name": model.get("name"),
        "type": model.get("type"),
        "nsfw": model.get("nsfw"),
        "modelVersions": [version],
    }


def _clean_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in _META_KEYS:
        value = meta.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            out[key] = value
        elif isinstance(value, str):
            out[key] = value[:4000]
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CivitaiOnline:
    """``wb.civitai``: everything that asks Civitai, for one workbench home. Offline until called."""

    def __init__(
        self,
        db: Database,
        home: Path,
        *,
        client_factory: Any = None,
        max_images: int = DEFAULT_MAX_IMAGES,
    ) -> None:
        self.db = db
        self.home = Path(home)
        self._client_factory = client_factory or CivitaiClient
        self.max_images = max_images
        self.max_image_bytes = MAX_IMAGE_BYTES

    def client(self) -> CivitaiClient:
        """A new client (reads $CIVITAI_BASE_URL / $CIVITAI_API_KEY now)."""
        return self._client_factory()

    # -- fetch ---------------------------------------------------------------------------
    def fetch(
        self,
        *,
        refresh: bool = False,
        ids: Iterable[int] | None = None,
        max_images: int | None = None,
        sidecars: bool = False,
        progress: bool = True,
        client: CivitaiClient | None = None,
    ) -> FetchReport:
        """Identify the catalog's files on Civitai by SHA256 and store what it says (see module docstring).

        Hashes what has no hash yet; asks only about hashes with no cached answer (all with ``refresh``);
        downloads the cover and up to ``max_images`` example images per version; ``sidecars`` also writes
        ``.civitai.info`` / ``.metadata.json`` beside the files.
        """
        from tqdm.auto import tqdm

        from workbench.catalog._hashing import hash_catalog

        max_images = self.max_images if max_images is None else max(0, int(max_images))
        wanted = None if ids is None else [int(i) for i in ids]
        hash_catalog(self.db, wanted, progress=progress)
        own = client is None
        client = client or self.client()
        report = FetchReport()
        start_api = client.counts.api
        try:
            rows = self._files(wanted)
            report.files = len(rows)
            links = self._links()
            known = self._lookups()
            todo = sorted(
                {sha for lid, sha, _, _ in rows if lid not in links and (refresh or sha not in known)}
            )  # one question per distinct hash
            asked = set(todo)
            report.cached = sum(1 for lid, sha, _, _ in rows if lid not in links and sha in known and sha not in asked)
            report.asked = len(todo)
            bar = tqdm(total=len(todo), desc="Civitai lookups", unit="file", disable=not progress or not todo)
            pending: list[tuple[str, str, Any]] = []
            for sha, answer in client.map(client.version_by_hash, todo):
                bar.update(1)
                if isinstance(answer, CivitaiError):
                    if answer.kind == "not_found":
                        pending.append((sha, "not_found", None))
                    else:
                        report.errors.append(f"{sha[:10]}: {answer}")
                elif _int(answer.get("modelId")) is None or _int(answer.get("id")) is None:
                    report.errors.append(f"{sha[:10]}: malformed answer (no model or version id)")
                else:
                    pending.append((sha, "found", answer))
                if len(pending) >= _WRITE_EVERY:
                    self._store_lookups(pending)
                    pending = []
            bar.close()
            self._store_lookups(pending)
            known = self._lookups()
            # what each file is now: a link by hand wins over the hash lookup
            targets: dict[int, dict[str, Any]] = {}
            for lid, sha, _, _ in rows:
                if lid in links:
                    targets[lid] = links[lid]
                    report.linked += 1
                elif sha in known and known[sha]["status"] == "found":
                    targets[lid] = known[sha]
                    report.found += 1
                elif sha in known:
                    report.not_found += 1
            # rows to (re)write: new answers, another version than the row has, or a cover lost to a rescan
            with self.db.read() as con:
                covered = {
                    int(v)
                    for (v,) in con.execute("SELECT version_id FROM civitai_images WHERE path IS NOT NULL").fetchall()
                }
            stale = {
                lid: targets[lid]
                for lid, sha, version_id, has_preview in rows
                if lid in targets
                and (
                    refresh
                    or sha in asked
                    or version_id != targets[lid]["version_id"]
                    or (not has_preview and targets[lid]["version_id"] in covered)
                )
            }
            self._fetch_models(
                client, {t["model_id"] for t in targets.values()}, refresh, report, progress, targets=stale
            )
            self._fetch_images(client, targets, max_images, refresh, report, progress, stale)
            if sidecars:
                from workbench.catalog._civitai_sidecars import write_sidecars

                write_sidecars(self, [row[0] for row in rows])
        finally:
            report.requests = client.counts.api - start_api
            if own:
                client.close()
        return report

    def _files(self, ids: list[int] | None) -> list[tuple[int, str, int | None, bool]]:
        """(id, sha256, civitai version id, has a preview path) of the files to ask about."""
        sql = (
            "SELECT id, lower(sha256), civitai_version_id, preview_path IS NOT NULL FROM lora_view "
            "WHERE path <> '' AND NOT missing AND sha256 IS NOT NULL"
        )
        params: list[Any] = []
        if ids is not None:
            sql += " AND list_contains(?, id)"
            params.append(ids)
        with self.db.read() as con:
            found = con.execute(sql + " ORDER BY id", params).fetchall()
        return [(int(i), str(s), int(v) if v is not None else None, bool(p)) for i, s, v, p in found]

    def _links(self) -> dict[int, dict[str, Any]]:
        with self.db.read() as con:
            rows = con.execute("SELECT lora_id, model_id, version_id, version FROM civitai_links").fetchall()
        return {int(r[0]): {"model_id": int(r[1]), "version_id": int(r[2]), "version": _loads(r[3])} for r in rows}

    def _lookups(self) -> dict[str, dict[str, Any]]:
        with self.db.read() as con:
            rows = con.execute("SELECT sha256, status, model_id, version_id, version FROM civitai_lookups").fetchall()
        return {r[0]: {"status": r[1], "model_id": r[2], "version_id": r[3], "version": _loads(r[4])} for r in rows}

    def _store_lookups(self, answers: list[tuple[str, str, Any]]) -> None:
        if not answers:
            return
        with self.db.write() as con:
            for sha, status, version in answers:
                con.execute(
                    "INSERT OR REPLACE INTO civitai_lookups (sha256, status, model_id, version_id, version, checked_at) "
                    "VALUES (?, ?, ?, ?, ?, current_timestamp)",
                    [
                        sha,
                        status,
                        _int(version.get("modelId")) if version else None,
                        _int(version.get("id")) if version else None,
                        json.dumps(version) if version else None,
                    ],
                )

    def _models(self, model_ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        with self.db.read() as con:
            rows = con.execute("SELECT model_id, item FROM civitai_models").fetchall()
        wanted = None if model_ids is None else set(model_ids)
        return {int(m): _loads(i) for m, i in rows if wanted is None or int(m) in wanted}

    def _fetch_models(
        self,
        client: CivitaiClient,
        model_ids: set[int],
        refresh: bool,
        report: FetchReport,
        progress: bool,
        targets: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        """Ask for the models not cached (all with ``refresh``) and store them; with ``targets``, project
        each stored batch's files at once, so catalog writes overlap the paced requests still going out."""
        from tqdm.auto import tqdm

        have = set(self._models(model_ids))
        todo = sorted(model_ids if refresh else model_ids - have)
        pending: list[tuple[int, dict[str, Any]]] = []
        projected: set[int] = set()

        def flush() -> None:
            if not pending:
                return
            with self.db.write() as con:
                for model_id, item in pending:
                    con.execute(
                        "INSERT OR REPLACE INTO civitai_models (model_id, item, fetched_at) VALUES (?, ?, current_timestamp)",
                        [model_id, json.dumps(item)],
                    )
            if targets:
                done = {m for m, _ in pending}
                batch = {lid: t for lid, t in targets.items() if t["model_id"] in done}
                self._project(batch)
                projected.update(batch)
            pending.clear()

        bar = tqdm(total=len(todo), desc="Civitai models", unit="model", disable=not progress or not todo)
        for model_id, answer in client.map(client.model, todo):
            bar.update(1)
            if isinstance(answer, CivitaiError):
                report.errors.append(f"model {model_id}: {answer}")
            elif _int(answer.get("id")) != model_id:
                report.errors.append(f"model {model_id}: malformed answer (wrong or missing id)")
            else:
                pending.append((model_id, answer))
                if len(pending) >= 25:
                    flush()
        bar.close()
        flush()
        if targets:
            self._project({lid: t for lid, t in targets.items() if lid not in projected})

    def _project(self, targets: Mapping[int, Mapping[str, Any]]) -> None:
        """Write what Civitai says onto each file's row (the dump importer's mapping and join)."""
        if not targets:
            return
        models = self._models({t["model_id"] for t in targets.values()})
        with self.db.write() as con:
            for lora_id, target in targets.items():
                raw = target.get("version")
                version: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
                item = models.get(target["model_id"]) or _item_from_version(version)
                try:
                    rec = item_to_record(item)
                except (TypeError, ValueError, AttributeError, KeyError):
                    rec = None
                if rec is None:
                    try:
                        rec = item_to_record(_item_from_version(version))
                    except (TypeError, ValueError, AttributeError, KeyError):
                        rec = None
                if rec is None:
                    continue
                vid = target["version_id"]
                version_row = next(
                    (v for v in rec["metadata"]["civitai"]["versions"] if v.get("id") == vid),
                    {
                        "id": vid,
                        "base_model": version.get("baseModel") if isinstance(version.get("baseModel"), str) else None,
                    },
                )
                rec["metadata"]["civitai"]["version_nsfw_level"] = _int(version.get("nsfwLevel"))
                _join(con, lora_id, rec, version_row)

    # -- images --------------------------------------------------------------------------
    def _fetch_images(
        self,
        client: CivitaiClient,
        targets: Mapping[int, Mapping[str, Any]],
        max_images: int,
        refresh: bool,
        report: FetchReport,
        progress: bool,
        stale: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        """Download covers and examples of versions with none yet; then set covers on ``stale`` rows
        (default: all targets) and on the rows of versions that got images now."""
        from tqdm.auto import tqdm

        stale = targets if stale is None else stale
        versions: dict[int, Any] = {}
        for target in targets.values():
            version = target.get("version")
            if isinstance(version, Mapping):
                versions[int(target["version_id"])] = version
        with self.db.read() as con:
            done = {int(v) for (v,) in con.execute("SELECT DISTINCT version_id FROM civitai_images").fetchall()}
        jobs: list[tuple[int, int, dict[str, Any]]] = []
        for vid, version in versions.items():
            if vid in done and not refresh:
                continue
            images = version.get("images") if isinstance(version.get("images"), list) else []
            for position, image in enumerate([i for i in images if isinstance(i, Mapping)][:max_images]):
                jobs.append((vid, position, dict(image)))
        if not jobs:
            self._set_covers(stale)
            return
        bar = tqdm(total=len(jobs), desc="Civitai images", unit="image", disable=not progress)
        rows: list[list[Any]] = []
        for (vid, position, image), result in client.map(lambda job: self._download_image(client, *job), jobs):
            bar.update(1)
            error = str(result) if isinstance(result, CivitaiError) else None
            if error:
                report.image_errors += 1
            else:
                report.images += 1
            url = image.get("url")
            rows.append(
                [
                    vid,
                    position,
                    "cover" if position == 0 else "example",
                    url[:4096] if isinstance(url, str) else None,
                    None if error else result,
                    _int(image.get("nsfwLevel")),
                    _int(image.get("width")),
                    _int(image.get("height")),
                    json.dumps(_clean_meta(image.get("meta"))),
                    error,
                ]
            )
        bar.close()
        with self.db.write() as con:
            for vid in {r[0] for r in rows}:
                con.execute("DELETE FROM civitai_images WHERE version_id = ?", [vid])
            con.executemany(
                "INSERT INTO civitai_images (version_id, position, kind, url, path, nsfw_level, width, height, meta, "
                "error, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                rows,
            )
        fresh = {r[0] for r in rows}
        self._set_covers({**stale, **{lid: t for lid, t in targets.items() if int(t["version_id"]) in fresh}})

    def _download_image(self, client: CivitaiClient, version_id: int, position: int, image: dict[str, Any]) -> str:
        """Download one image into <home>/civitai/<version>/<position>.<ext>; returns its path relative to home."""
        url = image.get("url")
        if not isinstance(url, str) or not _is_http_url(url):
            raise CivitaiError("refused", f"image URL refused (only http/https): {str(url)[:60]!r}")
        folder = self.home / "civitai" / str(int(version_id))
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{position}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                info = client.stream_to(url, out, max_bytes=self.max_image_bytes, same_host_redirects=True)
            ctype = info["content_type"].split(";")[0].strip().lower()
            ext = _IMAGE_TYPES.get(ctype)
            if ext is None:
                raise CivitaiError("refused", f"{url[:80]}: not an image ({ctype or 'no content type'})")
            for old in folder.glob(f"{position}.*"):
                old.unlink()
            final = folder / f"{position}{ext}"
            os.replace(tmp, final)
            return str(final.relative_to(self.home))
        finally:
            tmp.unlink(missing_ok=True)

    def _set_covers(self, targets: Mapping[int, Mapping[str, Any]]) -> None:
        """A file with no preview of its own shows its version's downloaded cover."""
        if not targets:
            return
        with self.db.write() as con:
            covers = dict(
                con.execute(
                    "SELECT version_id, path FROM civitai_images WHERE path IS NOT NULL ORDER BY position DESC"
                ).fetchall()
            )
            for lora_id, target in targets.items():
                cover = covers.get(int(target["version_id"]))
                if cover and (self.home / cover).is_file():
                    con.execute(
                        "UPDATE loras SET preview_path = ? WHERE id = ? AND (preview_path IS NULL OR starts_with(preview_path, ?)) "
                        "AND NOT coalesce(preview_embedded, false)",
                        [str(self.home / cover), lora_id, str(self.home / "civitai") + os.sep],
                    )

    def examples(self, lora_id: int) -> pd.DataFrame:
        """The downloaded example images of a LoRA's Civitai version with their generation parameters."""
        with self.db.read() as con:
            frame = con.execute(
                "SELECT i.position, i.kind, i.path, i.url, i.nsfw_level, i.width, i.height, i.meta, i.error "
                "FROM civitai_images i JOIN loras l ON l.civitai_version_id = i.version_id "
                "WHERE l.id = ? ORDER BY i.position",
                [int(lora_id)],
            ).df()
        frame["path"] = [str(self.home / p) if isinstance(p, str) else None for p in frame["path"]]
        metas = [_loads(m) or {} for m in frame["meta"]]
        for key, column in (
            ("prompt", "prompt"),
            ("negativePrompt", "negative_prompt"),
            ("seed", "seed"),
            ("sampler", "sampler"),
            ("steps", "steps"),
            ("cfgScale", "cfg_scale"),
        ):
            frame[column] = [m.get(key) for m in metas]
        frame["meta"] = metas
        return frame

    # -- link by hand --------------------------------------------------------------------
    def link(
        self, lora_id: int, ref: str | int, *, max_images: int | None = None, client: CivitaiClient | None = None
    ) -> dict[str, Any]:
        """Link a file to a Civitai version by hand (for files whose hash Civitai does not know)."""
        model_id, version_id = parse_civitai_ref(ref)
        with self.db.read() as con:
            row = con.execute("SELECT path FROM loras WHERE id = ?", [int(lora_id)]).fetchone()
        if row is None:
            raise ValueError(f"LoRA {lora_id} is not in the catalog")
        own = client is None
        client = client or self.client()
        try:
            if version_id is None:
                model = client.model(int(model_id))  # type: ignore[arg-type]
                versions = [v for v in model.get("modelVersions") or [] if isinstance(v, Mapping) and _int(v.get("id"))]
                if not versions:
                    raise CivitaiError("malformed", f"model {model_id} lists no versions")
                version_id = int(versions[0]["id"])
            version = client.version(version_id)
            if _int(version.get("modelId")) is None or _int(version.get("id")) != version_id:
                raise CivitaiError("malformed", f"version {version_id}: malformed answer")
            if model_id is not None and version["modelId"] != model_id:
                raise ValueError(f"version {version_id} belongs to model {version['modelId']}, not {model_id}")
            model_id = int(version["modelId"])
            with self.db.write() as con:
                con.execute(
                    "INSERT OR REPLACE INTO civitai_links (lora_id, model_id, version_id, version, linked_at) "
                    "VALUES (?, ?, ?, ?, current_timestamp)",
                    [int(lora_id), model_id, version_id, json.dumps(version)],
                )
            target = {"model_id": model_id, "version_id": version_id, "version": version}
            report = FetchReport(files=1, linked=1)
            self._fetch_models(client, {model_id}, True, report, progress=False, targets={int(lora_id): target})
            self._fetch_images(
                client,
                {int(lora_id): target},
                self.max_images if max_images is None else max_images,
                False,
                report,
                progress=False,
            )
        finally:
            if own:
                client.close()
        return {
            "lora_id": int(lora_id),
            "model_id": model_id,
            "version_id": version_id,
            "errors": report.errors,
            "images": report.images,
        }

    # -- updates -------------------------------------------------------------------------
    def updates(
        self, *, refresh: bool = False, progress: bool = True, client: CivitaiClient | None = None
    ) -> pd.DataFrame:
        """Files whose Civitai model lists a newer version than theirs (from the cached model answers;
        ``refresh`` asks Civitai again about those models first)."""
        with self.db.read() as con:
            files = con.execute(
                "SELECT id, name, path, civitai_model_id, civitai_version_id FROM lora_view "
                "WHERE path <> '' AND civitai_model_id IS NOT NULL AND civitai_version_id IS NOT NULL ORDER BY id"
            ).fetchall()
        if refresh and files:
            own = client is None
            client = client or self.client()
            try:
                report = FetchReport()
                self._fetch_models(client, {int(f[3]) for f in files}, True, report, progress)
            finally:
                if own:
                    client.close()
        models = self._models({int(f[3]) for f in files})
        out = []
        for lora_id, name, path, model_id, version_id in files:
            item = models.get(int(model_id))
            versions = item.get("modelVersions") if isinstance(item, Mapping) else None
            versions = [v for v in versions or [] if isinstance(v, Mapping) and _int(v.get("id")) is not None]
            ids = [v["id"] for v in versions]
            if int(version_id) not in ids or ids.index(int(version_id)) == 0:
                continue  # Civitai lists versions newest first; ours is the newest (or no longer listed)
            current, latest = versions[ids.index(int(version_id))], versions[0]
            out.append(
                {
                    "id": int(lora_id),
                    "name": name,
                    "path": path,
                    "model_id": int(model_id),
                    "current_version_id": int(version_id),
                    "current_version": current.get("name") if isinstance(current.get("name"), str) else None,
                    "latest_version_id": int(latest["id"]),
                    "latest_version": latest.get("name") if isinstance(latest.get("name"), str) else None,
                    "latest_base_model": latest.get("baseModel") if isinstance(latest.get("baseModel"), str) else None,
                    "newer_versions": ids.index(int(version_id)),
                }
            )
        columns = [
            "id",
            "name",
            "path",
            "model_id",
            "current_version_id",
            "current_version",
            "latest_version_id",
            "latest_version",
            "latest_base_model",
            "newer_versions",
        ]
        return pd.DataFrame(out, columns=columns)

    def update_ids(self) -> set[int]:
        """Catalog ids with an update available (offline, from cached answers): for the gallery's badge and filter."""
        return {int(i) for i in self.updates(progress=False)["id"]}

    # -- download ------------------------------------------------------------------------
    def download(
        self,
        ref: str | int,
        folder: str | os.PathLike[str],
        *,
        progress: bool = True,
        client: CivitaiClient | None = None,
    ) -> Any:
        """Download a model version's file into ``folder`` and add it to the catalog, linked
        (see `workbench.catalog._civitai_download.download_version`)."""
        from workbench.catalog._civitai_download import download_version

        return download_version(self, ref, Path(folder), progress=progress, client=client)
