"""Live pages: one watcher per kernel tells the open views when the catalog changed anywhere.

Every committed catalog write, from any process (another visitor's kernel, a notebook, a scan,
a worker), replaces ``<home>/catalog.version`` (see ``workbench.catalog.Database``). The watcher
stats that file every ``interval`` seconds: when nothing changed a tick costs one ``stat`` and no
query. When it changed, each subscribed view refreshes itself from the catalog.

In a kernel the ticks run on the kernel's own event loop, between the handling of browser
messages, so a refresh never races a view's message handler. Outside a running loop (a script,
a test) nothing ticks unless asked: :meth:`CatalogWatcher.start` then uses a daemon thread, and
:meth:`CatalogWatcher.check` looks once. One watcher serves every view of the kernel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("workbench.views")

#: seconds between two looks at the change stamp (pages must show a change within 2 s)
POLL_INTERVAL_S = 0.5
#: after the views took t seconds to follow a change, the next change waits at least t * this: a kernel
#: spends at most about half its time refreshing, even while a worker commits progress every 2 s
CALM_FACTOR = 1.0

Signature = tuple[int, int, int] | None


def stamp_signature(path: Path) -> Signature:
    """What ``stat`` says about the change stamp; differs after every committed write (None: no write yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    # the stamp is replaced (os.replace) on every write: a new inode, size and mtime
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class CatalogWatcher:
    """Calls its subscribers once after each change of the catalog's change stamp."""

    def __init__(
        self, stamp_path: str | os.PathLike[str], interval: float = POLL_INTERVAL_S, calm_factor: float = CALM_FACTOR
    ) -> None:
        self.stamp_path = Path(stamp_path)
        self.interval = float(interval)
        self.calm_factor = float(calm_factor)
        self.clock: Callable[[], float] = time.monotonic
        self._calm_until = 0.0
        self._seen = stamp_signature(self.stamp_path)
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._running = False
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each change; returns it (for :meth:`unsubscribe`)."""
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def check(self) -> bool:
        """Look at the stamp once; when it changed, run every subscriber. Returns whether they ran.

        Right after a slow round of refreshes the look is skipped (see ``CALM_FACTOR``); the change
        is still there for the next one.
        """
        if self.clock() < self._calm_until:
            return False
        current = stamp_signature(self.stamp_path)
        if current == self._seen:
            return False
        self._seen = current
        with self._lock:
            callbacks = list(self._callbacks)
        started = self.clock()
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one broken view must not stop the others' updates
                log.exception("live update failed in %s", getattr(callback, "__qualname__", callback))
        finished = self.clock()
        self._calm_until = finished + (finished - started) * self.calm_factor
        return True

    # -- ticking ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start ticking (on the running event loop if there is one, else on a daemon thread)."""
        if self._running:
            return
        self._running = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._schedule(loop)
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run_thread, name="workbench-live", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._running

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(self.interval, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._running:
            return
        try:
            self.check()
        finally:
            if self._running and not loop.is_closed():
                self._schedule(loop)

    def _run_thread(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


_watchers: dict[Path, CatalogWatcher] = {}
_watchers_lock = threading.Lock()


def catalog_watcher(wb: Any) -> CatalogWatcher:
    """The one watcher of ``wb``'s catalog in this process, ticking on the kernel's loop when there is one."""
    path = Path(wb.db.stamp_path).resolve()
    with _watchers_lock:
        watcher = _watchers.get(path)
        if watcher is None:
            watcher = _watchers[path] = CatalogWatcher(path)
    if not watcher.running and _has_running_loop():
        watcher.start()
    return watcher


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
