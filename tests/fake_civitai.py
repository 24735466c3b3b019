"""A loopback Civitai for tests and the benchmark, built from the real items in ../shared/data/civitai/.

Two Tornado servers on 127.0.0.1 (two hosts, as on the real site): the API
(``/api/v1/model-versions/by-hash/{hash}``, ``/api/v1/model-versions/{id}``, ``/api/v1/models/{id}``,
``/api/download/models/{id}`` → 307 to the storage host) and a CDN serving example images and model files
(with ``Range``). Answers follow Civitai's documented shapes (404 body ``{"error": "Model not found"}``);
images carry real prompts of the same model from ``prompts_dev.csv.gz``.

Local test files are renamed and given to a real item with `assign` (its file's SHA256 becomes the
local file's), so only the hash identifies them. Failure knobs: ``rate`` (requests/s, sliding one-second
window → 429 + ``Retry-After``), ``storm_retry_after`` (every API request 429s), ``fail_hashes``
(status per hash), ``hang_hashes`` (answer after ``hang_seconds``), ``hostile_versions`` (answers
replaced), ``download_bytes`` (what storage serves instead of the real bytes).
"""

from __future__ import annotations

import asyncio
import copy
import csv
import gzip
import hashlib
import io
import itertools
import json
import pathlib
import re
import threading
import time
from collections import deque
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from workbench.catalog import read_items

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "civitai"


def png_bytes(seed: int, size: int = 16) -> bytes:
    """A small real PNG."""
    from PIL import Image

    image = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def real_items(count: int = 300) -> list[dict[str, Any]]:
    return list(itertools.islice(read_items(SHARED / "loras_2023.jsonl.gz"), count))


def real_prompts(model_ids: set[int], per_model: int = 6) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    with gzip.open(SHARED / "prompts_dev.csv.gz", "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                mid = int(row["model_id"])
            except ValueError:
                continue
            if mid in model_ids and len(out.setdefault(mid, [])) < per_model:
                out[mid].append(row)
    return out


class _Thread:
    """A Tornado app on 127.0.0.1:<free port> in its own thread."""

    def __init__(self, app: tornado.web.Application) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
                self.port = sockets[0].getsockname()[1]
                self.server = tornado.httpserver.HTTPServer(app)
                self.server.add_sockets(sockets)
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "fake Civitai did not start"

    def close(self) -> None:
        async def stop() -> None:
            self.server.stop()

        if self.loop:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class FakeCivitai:
    """The fake site. ``url`` is the API base (what $CIVITAI_BASE_URL points at); ``cdn_url`` the other host."""

    def __init__(self, items: list[dict[str, Any]] | None = None, *, images_per_version: int = 3) -> None:
        self.items = {int(i["id"]): copy.deepcopy(i) for i in (items if items is not None else real_items())}
        self.images_per_version = images_per_version
        self.rate: float | None = None
        self.storm_retry_after: str | None = None
        self.fail_hashes: dict[str, int] = {}
        self.hang_hashes: set[str] = set()
        self.hang_seconds = 3.0
        self.hostile_versions: dict[int, dict[str, Any]] = {}
        self.download_bytes: dict[int, bytes] = {}
        self.files: dict[int, bytes] = {}
        self.requests: list[dict[str, Any]] = []  # every request to either host, in arrival order
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()
        self._prompts = real_prompts(set(self.items))
        self.api = _Thread(self._api_app())
        self.cdn = _Thread(self._cdn_app())
        self._reindex()

    # -- set-up ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def cdn_url(self) -> str:
        return f"http://localhost:{self.cdn.port}"

    def close(self) -> None:
        self.api.close()
        self.cdn.close()

    def _reindex(self) -> None:
        self.versions: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.by_hash: dict[str, int] = {}
        for item in self.items.values():
            for version in item.get("modelVersions") or []:
                self.versions[int(version["id"])] = (item, version)
                for f in version.get("files") or []:
                    sha = (f.get("hashes") or {}).get("SHA256")
                    if sha:
                        self.by_hash[sha.upper()] = int(version["id"])

    def assign(self, data: bytes, model_id: int, version_index: int = 0) -> dict[str, Any]:
        """Make a real item's version's primary file be ``data`` (its hashes and size); returns the version."""
        version = self.items[model_id]["modelVersions"][version_index]
        primary = next((f for f in version["files"] if f.get("primary")), version["files"][0])
        sha = hashlib.sha256(data).hexdigest().upper()
        primary["hashes"] = {"SHA256": sha, "AutoV2": sha[:10]}
        primary["sizeKB"] = len(data) / 1024
        self.files[int(version["id"])] = data
        self._reindex()
        return version

    def api_requests(self, prefix: str = "/api/v1/") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["host"] == "api" and r["path"].startswith(prefix)]

    # -- answers -------------------------------------------------------------------------
    def _images(self, item: dict[str, Any], version: dict[str, Any]) -> list[dict[str, Any]]:
        vid = int(version["id"])
        prompts = self._prompts.get(int(item["id"]), [])
        out = []
        for i in range(self.images_per_version):
            row = prompts[i % len(prompts)] if prompts else {}
            out.append(
                {
                    "url": f"{self.cdn_url}/images/{vid}/{i}.png",
                    "nsfwLevel": [1, 1, 4, 8][i % 4],
                    "width": 16,
                    "height": 16,
                    "hash": "U00000fQfQfQfQfQfQfQfQfQfQfQ",
                    "type": "image",
                    "meta": {
                        "prompt": row.get("prompt") or f"a picture of {item['name']}",
                        "negativePrompt": row.get("negative_prompt") or "",
                        "seed": 1000 + i,
                        "sampler": row.get("sampler") or "Euler a",
                        "steps": int(row["steps"]) if str(row.get("steps", "")).isdigit() else 20,
                        "cfgScale": float(row["cfg_scale"]) if row.get("cfg_scale") else 7.0,
                    },
                }
            )
        return out

    def version_answer(self, vid: int) -> dict[str, Any]:
        if vid in self.hostile_versions:
            return self.hostile_versions[vid]
        item, version = self.versions[vid]
        files = []
        for f in version.get("files") or []:
            files.append({**f, "id": vid * 10, "downloadUrl": f"{self.url}/api/download/models/{vid}"})
        return {
            "id": vid,
            "modelId": item["id"],
            "name": version.get("name"),
            "createdAt": version.get("createdAt"),
            "publishedAt": version.get("createdAt"),
            "trainedWords": version.get("trainedWords") or [],
            "baseModel": version.get("baseModel"),
            "description": version.get("description"),
            "nsfwLevel": 1,
            "stats": {"downloadCount": 1, "ratingCount": 0, "rating": 0},
            "model": {"name": item["name"], "type": item.get("type", "LORA"), "nsfw": False, "poi": False},
            "files": files,
            "images": self._images(item, version),
            "downloadUrl": f"{self.url}/api/download/models/{vid}",
        }

    def model_answer(self, mid: int) -> dict[str, Any]:
        item = copy.deepcopy(self.items[mid])
        creator = item.get("creator")
        item["creator"] = {"username": creator, "image": None} if isinstance(creator, str) else creator
        item.setdefault("type", "LORA")
        item.setdefault("nsfw", False)
        item.setdefault("nsfwLevel", 1)
        item["modelVersions"] = [
            {k: v for k, v in self.version_answer(int(v["id"])).items() if k not in ("model", "modelId")}
            for v in item.get("modelVersions") or []
        ]
        return item

    # -- servers -------------------------------------------------------------------------
    def _record(self, handler: tornado.web.RequestHandler, host: str) -> None:
        with self._lock:
            self.requests.append(
                {
                    "host": host,
                    "path": handler.request.path,
                    "time": time.monotonic(),
                    "auth": handler.request.headers.get("Authorization"),
                    "range": handler.request.headers.get("Range"),
                    "status": None,
                }
            )

    def _limited(self) -> str | None:
        """Retry-After value when this request is over the limit, else None (and the request counts)."""
        if self.storm_retry_after is not None:
            return self.storm_retry_after
        if self.rate is None:
            return None
        with self._lock:
            now = time.monotonic()
            while self._accepted and self._accepted[0] <= now - 1.0:
                self._accepted.popleft()
            if len(self._accepted) >= self.rate:
                return "1"
            self._accepted.append(now)
        return None

    def _api_app(self) -> tornado.web.Application:
        fake = self

        class Base(tornado.web.RequestHandler):
            def prepare(self) -> None:
                fake._record(self, "api")
                retry = fake._limited()
                if retry is not None:
                    fake.requests[-1]["status"] = 429
                    self.set_status(429)
                    self.set_header("Retry-After", retry)
                    self.finish({"error": "Too many requests"})

            def answer(self, data: Any) -> None:
                self.set_header("Content-Type", "application/json; charset=utf-8")
                self.finish(json.dumps(data) if not isinstance(data, (bytes, str)) else data)

            def not_found(self) -> None:
                self.set_status(404)
                self.finish({"error": "Model not found"})

        class ByHash(Base):
            async def get(self, sha: str) -> None:
                sha = sha.upper()
                if sha in fake.hang_hashes:
                    await asyncio.sleep(fake.hang_seconds)
                if sha in fake.fail_hashes:
                    self.set_status(fake.fail_hashes[sha])
                    return self.finish("<html>upstream error</html>")
                vid = fake.by_hash.get(sha)
                if vid is None:
                    return self.not_found()
                self.answer(fake.version_answer(vid))

        class Version(Base):
            def get(self, vid: str) -> None:
                if int(vid) not in fake.versions and int(vid) not in fake.hostile_versions:
                    return self.not_found()
                self.answer(fake.version_answer(int(vid)))

        class Model(Base):
            def get(self, mid: str) -> None:
                if int(mid) not in fake.items:
                    return self.not_found()
                self.answer(fake.model_answer(int(mid)))

        class Download(Base):
            def get(self, vid: str) -> None:
                if int(vid) not in fake.versions:
                    return self.not_found()
                self.redirect(f"{fake.cdn_url}/storage/{vid}/file.safetensors?token=signed", status=307)

        return tornado.web.Application(
            [
                (r"/api/v1/model-versions/by-hash/([0-9A-Fa-f]+)", ByHash),
                (r"/api/v1/model-versions/(\d+)", Version),
                (r"/api/v1/models/(\d+)", Model),
                (r"/api/download/models/(\d+)", Download),
            ]
        )

    def _cdn_app(self) -> tornado.web.Application:
        fake = self

        class Image(tornado.web.RequestHandler):
            def get(self, vid: str, index: str) -> None:
                fake._record(self, "cdn")
                self.set_header("Content-Type", "image/png")
                self.finish(png_bytes(int(vid) + int(index)))

        class Hostile(tornado.web.RequestHandler):
            async def get(self, kind: str) -> None:
                fake._record(self, "cdn")
                if kind == "huge-declared":
                    self.set_header("Content-Type", "image/png")
                    self.set_header("Content-Length", str(2 * 1024**3))
                    self.write(b"\x89PNG" + b"\0" * 1024)
                    await self.flush()
                    self.request.connection.close()
                elif kind == "huge-streamed":  # no Content-Length: chunked, endless
                    self.set_header("Content-Type", "image/png")
                    for _ in range(4096):
                        self.write(b"\0" * 65536)
                        try:
                            await self.flush()
                        except tornado.iostream.StreamClosedError:
                            return
                    self.finish()
                elif kind == "to-file":
                    self.redirect("file:///etc/passwd", status=302)
                elif kind == "elsewhere":
                    self.redirect(f"{fake.url}/api/v1/models/1", status=302)
                elif kind == "html":
                    self.set_header("Content-Type", "text/html")
                    self.finish("<script>alert(1)</script>")

        class Storage(tornado.web.RequestHandler):
            def get(self, vid: str) -> None:
                fake._record(self, "cdn")
                data = fake.download_bytes.get(int(vid), fake.files.get(int(vid)))
                if data is None:
                    self.set_status(404)
                    return self.finish()
                match = re.fullmatch(r"bytes=(\d+)-", self.request.headers.get("Range", ""))
                start = int(match.group(1)) if match else 0
                if start:
                    if start >= len(data):
                        self.set_status(416)
                        return self.finish()
                    self.set_status(206)
                    self.set_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.set_header("Content-Type", "application/octet-stream")
                self.finish(data[start:])

        return tornado.web.Application(
            [
                (r"/images/(\d+)/(\d+)\.png", Image),
                (r"/hostile/([a-z-]+)", Hostile),
                (r"/storage/(\d+)/file\.safetensors", Storage),
            ]
        )
