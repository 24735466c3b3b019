"""Civitai fetch benchmark against the loopback Civitai (tests/fake_civitai.py) limited to --rate requests/s.

    PYTHONPATH=. python benchmarks/civitai.py [--files 1000] [--rate 5] [--known 0.9] [--baseline-requests 100]

1. ``--files`` small real safetensors files, each renamed and given to a distinct real Civitai item from
   ../shared/data/civitai/ (``--known`` of them; the rest are "not on Civitai"); scanned and hashed first
   (not timed).
2. Floor: the API requests the fetch needs (one by-hash per file + one model per identified model),
   divided by the rate. Raw baseline: a plain sequential httpx loop over by-hash URLs that sleeps
   Retry-After on a 429, on ``--baseline-requests`` of them, measured in the same run.
3. Ours: ``wb.civitai.fetch(max_images=0)`` wall time; requests per identified file; 429s received.
   Then a second fetch (cache: requests it sends) and a small run with 4 images per version (image
   downloads per identified file; they go to the CDN host, not the rate-limited API).

Prints absolute figures, ours/floor (goal ≤ 1.10) and the baseline's per-request pace against ours.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
for extra in (_REPO, _REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from fake_civitai import FakeCivitai, real_items  # noqa: E402
from lora_factory import write_safetensors  # noqa: E402

import workbench  # noqa: E402

GOAL = 1.10


class SiteProcess:
    """The fake Civitai in its own process (as the real one is elsewhere): our process's work does not
    delay the server's clock or its rate limiter. Same small interface as FakeCivitai."""

    def __init__(self, count: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, count), daemon=True)
        self._proc.start()
        self.url, self.cdn_url = self._conn.recv()

    def _call(self, *message: object) -> object:
        self._conn.send(message)
        return self._conn.recv()

    def assign(self, data: bytes, model_id: int) -> None:
        self._call("assign", data, model_id)

    def set_rate(self, rate: float | None) -> None:
        self._call("rate", rate)

    @property
    def requests(self) -> list[dict]:
        return self._call("requests")  # type: ignore[return-value]

    def clear(self) -> None:
        self._call("clear")

    def api_requests(self) -> list[dict]:
        return [r for r in self.requests if r["host"] == "api" and r["path"].startswith("/api/v1/")]

    def close(self) -> None:
        self._call("close")
        self._proc.join(10)


def _serve(conn: object, count: int) -> None:
    import logging

    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    site = FakeCivitai(real_items(count))
    conn.send((site.url, site.cdn_url))  # type: ignore[attr-defined]
    while True:
        kind, *rest = conn.recv()  # type: ignore[attr-defined]
        if kind == "assign":
            site.assign(rest[0], rest[1])
        elif kind == "rate":
            site.rate = rest[0]
        elif kind == "clear":
            site.requests.clear()
        elif kind == "requests":
            conn.send(list(site.requests))  # type: ignore[attr-defined]
            continue
        elif kind == "close":
            site.close()
            conn.send(None)  # type: ignore[attr-defined]
            return
        conn.send(None)  # type: ignore[attr-defined]


def build(tmp: Path, site: SiteProcess, items: list[dict], files: int, known: float) -> Path:
    lib = tmp / "lib"
    rng = np.random.default_rng(0)
    for n in range(files):
        key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
        path = write_safetensors(
            lib / f"file_{n:05d}.safetensors",
            {
                f"{key}.lora_down.weight": rng.standard_normal((4, 768)).astype("float16"),
                f"{key}.lora_up.weight": rng.standard_normal((320, 4)).astype("float16"),
            },
        )
        if n < int(files * known):
            site.assign(path.read_bytes(), items[n]["id"])
    return lib


def raw_baseline(site: SiteProcess, shas: list[str]) -> float:
    """Seconds per request of a plain sequential client that sleeps Retry-After on 429."""
    started = time.perf_counter()
    with httpx.Client(timeout=30) as client:
        for sha in shas:
            while True:
                r = client.get(f"{site.url}/api/v1/model-versions/by-hash/{sha.upper()}")
                if r.status_code != 429:
                    break
                time.sleep(float(r.headers.get("Retry-After", "1")))
    return (time.perf_counter() - started) / max(1, len(shas))


def main() -> None:
    import logging

    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--known", type=float, default=0.9)
    parser.add_argument("--baseline-requests", type=int, default=100)
    args = parser.parse_args()
    count = max(args.files, 50) * 2
    site = SiteProcess(count)
    items = [i for i in real_items(count) if (i.get("modelVersions") or [{}])[0].get("files")]  # a file to stand for
    import os

    os.environ["CIVITAI_BASE_URL"] = site.url
    os.environ.pop("CIVITAI_API_KEY", None)
    with tempfile.TemporaryDirectory(prefix="wb-civitai-bench-") as tmp_name:
        tmp = Path(tmp_name)
        lib = build(tmp, site, items, args.files, args.known)
        wb = workbench.open(tmp / "home")
        wb.scan([lib], progress=False)
        wb.hash(progress=False)
        shas = list(wb.catalog.query()["sha256"])

        site.set_rate(args.rate)
        time.sleep(1.1)
        base_pace = raw_baseline(site, shas[: args.baseline_requests])
        time.sleep(1.1)  # the baseline's window is over
        site.clear()
        started = time.perf_counter()
        report = wb.civitai.fetch(progress=False, max_images=0)
        wall = time.perf_counter() - started
        api = site.api_requests()
        limited = sum(1 for r in api if r["status"] == 429)
        needed = len(api) - limited
        floor = needed / args.rate
        identified = report.found
        print(
            f"files {args.files}, identified {identified}, not on Civitai {report.not_found}, errors {len(report.errors)}"
        )
        print(
            f"API requests answered: {needed} ({needed / max(1, identified):.2f} per identified file), 429s: {limited}"
        )
        print(
            f"floor at {args.rate:g} req/s: {floor:.1f} s; ours: {wall:.1f} s; ours/floor = {wall / floor:.3f} "
            f"(goal <= {GOAL}) {'OK' if wall / floor <= GOAL else 'MISSED'}"
        )
        print(
            f"raw sequential client: {base_pace * 1000:.0f} ms/request; ours: {wall / max(1, len(api)) * 1000:.0f} "
            f"ms/request sent; ratio ours/raw per answered request = {(wall / needed) / base_pace:.3f}"
        )

        site.clear()
        started = time.perf_counter()
        again = wb.civitai.fetch(progress=False, max_images=0)
        print(
            f"second fetch (cache): {again.requests} API requests, {again.cached} answered from the cache, "
            f"{time.perf_counter() - started:.1f} s"
        )

        site.set_rate(None)
        small = min(20, identified)
        ids = [int(i) for i in wb.catalog.query().sort_values("id")["id"][:small]]
        site.clear()
        images = wb.civitai.fetch(progress=False, ids=ids, max_images=4, refresh=True)
        cdn = [r for r in site.requests if r["host"] == "cdn"]
        print(
            f"with images (first {small} files, 4 per version): {len(cdn) / max(1, images.found):.2f} image "
            f"downloads per identified file, {images.images} stored"
        )
    site.close()


if __name__ == "__main__":
    main()
