"""Civitai's public REST API over httpx: polite to the server, one failure fails one item.

Only what a user asked for goes out (a fetch, a link, an update check, a download); nothing at import.

- Base URL from ``$CIVITAI_BASE_URL`` (default https://civitai.com); ``$CIVITAI_API_KEY`` goes out as
  ``Authorization: Bearer`` to that host only, never to image or storage hosts, never into logs or errors.
- Per host: a 429's ``Retry-After`` blocks the host until it expires (no request goes out before),
  and the pace adapts to the rate the server accepted; 5xx and timeouts retry with back-off.
- Bounded concurrency (a thread pool of ``concurrency`` workers); each request has its own timeout.
- Downloads (images, model files) stream with a byte cap, only over http(s), with redirects checked.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

log = logging.getLogger("workbench.civitai")

DEFAULT_BASE_URL = "https://civitai.com"
MAX_JSON_BYTES = 16 * 1024 * 1024
#: A 429 asking to wait longer than this fails the items now instead of sleeping for it.
MAX_RETRY_AFTER = 600.0

T = TypeVar("T")
R = TypeVar("R")


class CivitaiError(RuntimeError):
    """One request's clear failure; ``kind`` is one of not_found, http, timeout, network, rate_limited,
    malformed, refused, too_large, hash_mismatch, exists."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass
class RequestCounts:
    """Requests that went out, by kind (for summaries and the benchmark)."""

    api: int = 0
    rate_limited: int = 0
    retried: int = 0
    downloads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds, also fractional, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class _HostGate:
    """When the next request to one host may go out: Retry-After blocks, plus an adaptive pace.

    The pace starts free (only the pool bounds it). The first 429 sets it to the interval at which the
    host had been accepting requests (plus 4 %); each later 429 for a request sent after the last block
    widens it by 2 %, and every accepted request lets it drift 2 % of the way back. Sends are at least
    one interval apart on a grid of slots, whoever wakes first.
    """

    WINDOW = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.blocked_until = 0.0
        self.interval = 0.0
        self._last_sent = -1e9
        self._last_block = -1e9
        self._learn_at: float | None = None
        self._base = 0.0
        self._successes: deque[float] = deque(maxlen=256)
        self._first_success: float | None = None
        self.consecutive_429 = 0

    def wait_turn(self, url: str) -> float:
        """Sleep until a request may go out (returns the send time); a block longer than
        MAX_RETRY_AFTER fails now instead."""
        while True:
            with self._lock:
                now = time.monotonic()
                if self.blocked_until - now > MAX_RETRY_AFTER:
                    wait = self.blocked_until - now
                    raise CivitaiError("rate_limited", f"{_safe(url)}: rate limited, retry after {wait:.0f} s", 429)
                if self._learn_at is not None and now >= self.blocked_until:
                    self._learn(self._learn_at)
                start = max(self.blocked_until, self._last_sent + self.interval)
                if start <= now:
                    # Slots stay on a grid, so a late wake-up (a busy machine) does not slow the pace;
                    # at most a fifth of an interval is made up, so two sends are never bunched together.
                    self._last_sent = max(start, now - 0.2 * self.interval)
                    return now
            time.sleep(start - now)

    def _learn(self, hit: float) -> None:
        """The pace from the answers accepted in the seconds before the 429 at ``hit`` (caller holds the lock)."""
        span = max(1.0, min(self.WINDOW, hit - (self._first_success or hit)))
        accepted = sum(1 for t in self._successes if hit - span < t <= hit + 0.5)
        self.interval = self._base = span / accepted * 1.04 if accepted else 0.0
        self._learn_at = None

    def success(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.interval > self._base:  # a widened pace drifts back to the learned one
                self.interval = self._base + (self.interval - self._base) * 0.98
            self._successes.append(now)
            if self._first_success is None:
                self._first_success = now
            self.consecutive_429 = 0

    def rate_limited(self, retry_after: float | None, sent_at: float) -> float:
        """Record a 429 for a request sent at ``sent_at``; returns how long the host is now blocked."""
        with self._lock:
            now = time.monotonic()
            self.consecutive_429 += 1
            wait = retry_after if retry_after is not None else min(60.0, 2.0**self.consecutive_429)
            if sent_at >= self._last_block:  # new evidence, not a request already in flight at the last 429
                if self.interval == 0.0 and self._learn_at is None:
                    self._learn_at = now  # learned when the block ends: answers in flight have landed by then
                elif self.interval:
                    self.interval *= 1.02
                self._last_block = now
            self.blocked_until = max(self.blocked_until, now + wait)
            return self.blocked_until - now


def _is_http_url(url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 4096:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class CivitaiClient:
    """Talks to one Civitai (or mirror); thread-safe; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 4,
        timeout: float = 30.0,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = (base_url or os.environ.get("CIVITAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not _is_http_url(base):
            raise ValueError(f"CIVITAI_BASE_URL must be an http(s) URL, got {base!r}")
        self.base_url = base
        self._api_host = urlsplit(base).netloc.lower()
        key = api_key if api_key is not None else os.environ.get("CIVITAI_API_KEY")
        self._api_key = key.strip() if key and key.strip() else None
        self.concurrency = max(1, int(concurrency))
        self.retries = max(0, int(retries))
        self.counts = RequestCounts()
        self._gates: dict[str, _HostGate] = {}
        self._gates_lock = threading.Lock()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "lora-workbench (+https://github.com/)"},
            transport=transport,
            limits=httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency * 2),
        )

    def __repr__(self) -> str:  # never shows the key
        return f"CivitaiClient({self.base_url!r}, api_key={'set' if self._api_key else 'unset'})"

    def __enter__(self) -> CivitaiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------
    def _gate(self, url: str) -> _HostGate:
        host = urlsplit(url).netloc.lower()
        with self._gates_lock:
            return self._gates.setdefault(host, _HostGate())

    def _headers(self, url: str) -> dict[str, str]:
        if self._api_key and urlsplit(url).netloc.lower() == self._api_host:
            return {"Authorization": f"Bearer {self._api_key}"}
        return {}

    def _send(self, method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """One request with rate-limit gating and retries; the response is open (streamed): close it."""
        gate = self._gate(url)
        attempt = 0
        while True:
            sent_at = gate.wait_turn(url)
            try:
                request = self._http.build_request(method, url, headers={**self._headers(url), **(headers or {})})
                response = self._http.send(request, stream=True)
            except httpx.TimeoutException:
                failure = CivitaiError("timeout", f"{_safe(url)}: no answer in time")
            except httpx.HTTPError as exc:
                failure = CivitaiError("network", f"{_safe(url)}: {type(exc).__name__}")
            else:
                if response.status_code == 429:
                    response.close()
                    self.counts.add("rate_limited")
                    wait = gate.rate_limited(parse_retry_after(response.headers.get("Retry-After")), sent_at)
                    if wait > MAX_RETRY_AFTER:
                        raise CivitaiError("rate_limited", f"{_safe(url)}: rate limited, retry after {wait:.0f} s", 429)
                    failure = CivitaiError("rate_limited", f"{_safe(url)}: still rate limited", 429)
                elif response.status_code >= 500:
                    response.close()
                    failure = CivitaiError("http", f"{_safe(url)}: server error {response.status_code}", 500)
                    gate.success()  # the host answered: its pace is not the problem
                else:
                    gate.success()
                    return response
            attempt += 1
            if attempt > self.retries:
                raise failure
            self.counts.add("retried")
            if failure.kind != "rate_limited":
                time.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))

    def get_json(self, path_or_url: str) -> dict[str, Any]:
        """GET an API path; a dict, or CivitaiError (``not_found`` for 404)."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        self.counts.add("api")
        response = self._send("GET", url)
        try:
            if response.status_code == 404:
                raise CivitaiError("not_found", f"{_safe(url)}: not on Civitai", 404)
            if response.status_code >= 300:
                raise CivitaiError("http", f"{_safe(url)}: HTTP {response.status_code}", response.status_code)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JSON_BYTES:
                    raise CivitaiError("too_large", f"{_safe(url)}: answer larger than {MAX_JSON_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise CivitaiError("network", f"{_safe(url)}: {type(exc).__name__} while reading") from None
        finally:
            response.close()
        try:
            data = json.loads(bytes(body))
        except ValueError:
            raise CivitaiError("malformed", f"{_safe(url)}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise CivitaiError("malformed", f"{_safe(url)}: answer is not a JSON object")
        return data

    # -- endpoints -----------------------------------------------------------------------
    def version_by_hash(self, sha256: str) -> dict[str, Any]:
        """GET /api/v1/model-versions/by-hash/{hash}: the model version that has a file with this hash."""
        if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256):
            raise ValueError(f"not a SHA256: {sha256!r}")
        return self.get_json(f"/api/v1/model-versions/by-hash/{sha256.upper()}")

    def version(self, version_id: int) -> dict[str, Any]:
        """GET /api/v1/model-versions/{id}."""
        return self.get_json(f"/api/v1/model-versions/{int(version_id)}")

    def model(self, model_id: int) -> dict[str, Any]:
        """GET /api/v1/models/{id}: the model with all its versions, tags, creator, stats."""
        return self.get_json(f"/api/v1/models/{int(model_id)}")

    def download_url(self, version_id: int) -> str:
        return f"{self.base_url}/api/download/models/{int(version_id)}"

    def stream_to(
        self,
        url: str,
        out: IO[bytes],
        *,
        max_bytes: int,
        offset: int = 0,
        same_host_redirects: bool = True,
        on_bytes: Callable[[int], None] | None = None,
        max_redirects: int = 5,
    ) -> dict[str, Any]:
        """Stream a GET into ``out``; returns {'content_type', 'resumed', 'total'}.

        ``offset`` asks for the rest of a partial file (Range); a server that ignores it answers 200 and
        the caller must start over (``resumed`` False, ``out`` has been truncated to 0). Redirects are
        followed by hand: only http(s), at most ``max_redirects``, and with ``same_host_redirects`` only
        to the host the URL named. Never more than ``max_bytes`` (by Content-Length and while reading).
        """
        if not _is_http_url(url):
            raise CivitaiError("refused", f"refused URL {_safe(url)!r}: only http(s) is fetched")
        first_host = urlsplit(url).netloc.lower()
        self.counts.add("downloads")
        for _ in range(max_redirects + 1):
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._send("GET", url, headers)
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    target = urljoin(url, response.headers.get("Location", ""))
                    if not _is_http_url(target):
                        raise CivitaiError("refused", f"{_safe(url)}: redirect to a non-http(s) location refused")
                    if same_host_redirects and urlsplit(target).netloc.lower() != first_host:
                        raise CivitaiError("refused", f"{_safe(url)}: redirect to another host refused")
                    url = target
                    continue
                if response.status_code == 404:
                    raise CivitaiError("not_found", f"{_safe(url)}: not found", 404)
                if response.status_code == 416 and offset:
                    raise CivitaiError("http", f"{_safe(url)}: the server cannot resume at byte {offset}", 416)
                if response.status_code not in (200, 206):
                    raise CivitaiError("http", f"{_safe(url)}: HTTP {response.status_code}", response.status_code)
                resumed = response.status_code == 206 and offset > 0
                if not resumed:
                    out.seek(0)
                    out.truncate()
                    offset = 0
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and offset + int(length) > max_bytes:
                    raise CivitaiError("too_large", f"{_safe(url)}: {int(length)} bytes is over the {max_bytes} cap")
                written = offset
                try:
                    for chunk in response.iter_bytes(1 << 16):
                        written += len(chunk)
                        if written > max_bytes:
                            raise CivitaiError("too_large", f"{_safe(url)}: more than {max_bytes} bytes")
                        out.write(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                except httpx.TimeoutException:
                    raise CivitaiError("timeout", f"{_safe(url)}: stalled after {written} bytes") from None
                except httpx.HTTPError as exc:
                    raise CivitaiError("network", f"{_safe(url)}: {type(exc).__name__} after {written} bytes") from None
                total = int(length) + offset if length and length.isdigit() else None
                return {"content_type": response.headers.get("Content-Type", ""), "resumed": resumed, "total": total}
            finally:
                response.close()
        raise CivitaiError("refused", f"{_safe(url)}: more than {max_redirects} redirects")

    # -- concurrency ---------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | CivitaiError]]:
        """Run ``fn`` over items on the bounded pool; yields (item, result or CivitaiError) as they finish."""
        items = list(items)
        if not items:
            return

        def run(item: T) -> tuple[T, R | CivitaiError]:
            try:
                return item, fn(item)
            except CivitaiError as exc:
                return item, exc

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="civitai") as pool:
            futures = [pool.submit(run, item) for item in items]
            for future in futures:
                yield future.result()


def _safe(url: str) -> str:
    """A URL for messages: no query string (it could carry a token), bounded length."""
    if not isinstance(url, str):
        return repr(url)[:80]
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200] if parts.scheme else url[:80]
