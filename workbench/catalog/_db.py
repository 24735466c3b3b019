"""Short-lived, retried access to the one DuckDB catalog file shared by many processes.

DuckDB lets one process at a time hold a file read-write (or several read-only). A JupyterLab
kernel, Voilà visitor kernels, a papermill run and a worker all use the same catalog, so nobody
keeps a connection open: each read or write takes an advisory file lock (shared for reads,
exclusive for writes), opens the file, does its work and closes it. Waiting happens on our lock
file, not as DuckDB lock errors; a DuckDB lock error (someone outside the workbench holding the
file) is retried with backoff as well. Callers never see a lock error before `timeout` seconds.

Fairness: a waiting writer first takes a turnstile lock exclusively, which new readers pass through
(shared) before taking their read lock; so a stream of readers cannot starve a writer, and a writer
waits only for the reads already under way. Waiting is a blocking ``flock`` (the kernel wakes
waiters at once when the lock is released), not a sleep-and-poll that a busy neighbour always wins.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:  # pandas is loaded by read_df only: a no-change scan and the CLI's light commands never pay for it
    import pandas as pd


class CatalogBusyError(RuntimeError):
    """The catalog stayed locked by another process for longer than the timeout."""


_LOCK_ERROR_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked", "different configuration")


# Every operation opens the file anew, so opening must be cheap: no extension autoloading
# (JSON is built in), and a small thread pool (catalog transactions are small).
#: no extension downloads; two threads (the machine is shared)
_CONNECT_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "threads": 2,
}


def _flock(fd: int, mode: int, timeout: float, what: Path) -> None:
    """Take ``mode`` on ``fd`` within ``timeout`` seconds, waiting in the kernel (woken on release), else raise.

    ``flock`` itself has no timeout, so a contended wait runs in a helper thread; if the caller gives
    up, the helper releases the lock as soon as it gets it (the descriptor is the caller's to close).
    """
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    got, gave_up, guard = threading.Event(), threading.Event(), threading.Lock()
    waiter_fd = os.dup(fd)  # same open file description: the lock taken through it is the caller's

    def wait() -> None:
        try:
            fcntl.flock(waiter_fd, mode)
            with guard:
                if gave_up.is_set():
                    fcntl.flock(waiter_fd, fcntl.LOCK_UN)
                else:
                    got.set()
        except OSError:
            pass
        finally:
            os.close(waiter_fd)

    threading.Thread(target=wait, name="workbench-flock", daemon=True).start()
    if got.wait(timeout):
        return
    with guard:
        if got.is_set():
            return
        gave_up.set()
    raise CatalogBusyError(f"{what} stayed locked by another process for {timeout:.0f} s")


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOCK_ERROR_MARKERS)


class Database:
    """The catalog file plus its lock file and change stamp."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_suffix(".lock")
        self.turnstile_path = self.path.with_suffix(".turnstile")
        self.stamp_path = self.path.with_suffix(".version")
        self.timeout = timeout
        # One connection at a time per process: DuckDB caches one instance per file and
        # refuses mixed read-only/read-write configurations inside a process.
        self._process_lock = threading.RLock()
        self._held = threading.local()

    # -- locking -----------------------------------------------------------------------
    @contextmanager
    def _file_lock(self, exclusive: bool, path: Path | None = None, timeout: float | None = None) -> Iterator[None]:
        fd = os.open(path or self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(
                fd,
                fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH,
                self.timeout if timeout is None else timeout,
                path or self.path,
            )
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def _catalog_lock(self, exclusive: bool) -> Iterator[None]:
        """The catalog's lock behind the turnstile: writers queue there and hold it until they got the catalog."""
        deadline = time.monotonic() + self.timeout
        with self._file_lock(exclusive, self.turnstile_path):
            lock = self._file_lock(exclusive, timeout=max(0.0, deadline - time.monotonic()))
            lock.__enter__()
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only, config=_CONNECT_CONFIG)
                con.execute("SET enable_progress_bar = false")  # a slow query must not print a bar into a notebook
                return con
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    if _is_lock_error(exc):
                        raise CatalogBusyError(f"the catalog {self.path} is locked: {exc}") from exc
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.6, 0.2)

    # -- public ------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short read connection; nests inside `write()` by reusing its connection."""
        current = getattr(self._held, "con", None)
        if current is not None:
            yield current
            return
        if not self.path.exists():
            with self.write() as con:
                yield con
            return
        with self._process_lock, self._catalog_lock(exclusive=False):
            con = self._open(read_only=True)
            self._held.con = con
            try:
                yield con
            finally:
                self._held.con = None
                con.close()

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the exclusive lock; committed (and the stamp bumped) on success."""
        current = getattr(self._held, "con", None)
        if current is not None and getattr(self._held, "writable", False):
            yield current
            return
        if current is not None:
            raise RuntimeError("cannot start a catalog write inside a catalog read")
        with self._process_lock, self._catalog_lock(exclusive=True):
            con = self._open(read_only=False)
            self._held.con, self._held.writable = con, True
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
                self._bump_stamp()
            finally:
                self._held.con, self._held.writable = None, False
                con.close()

    def ensure_schema(self) -> None:
        """Create or migrate the catalog's tables if needed (cheap when they are current: one short read).

        Here rather than only in :class:`Catalog` so a scan can run without loading the query stack.
        """
        from workbench.catalog._schema import migrate, needs_migration

        if self.path.exists():
            with self.read() as con:
                if not needs_migration(con):
                    return
        with self.write() as con:
            migrate(con)

    @contextmanager
    def task_lock(self, name: str, timeout: float = 3600.0) -> Iterator[None]:
        """Serialise a long task (a scan) across processes without blocking catalog reads/writes."""
        with self._file_lock(exclusive=True, path=self.path.with_name(f"{name}.lock"), timeout=timeout):
            yield

    def read_df(self, sql: str, params: list[Any] | tuple[Any, ...] | None = None) -> pd.DataFrame:
        """Run a read query from core code (never from a browser) and return a DataFrame."""
        with self.read() as con:
            return con.execute(sql, params or []).df()

    def library_roots(self) -> list[str]:
        """Library roots scanned into this catalog, as stored (catalog paths), sorted.

        Here rather than only on `Catalog`, so `workbench scan` with no roots given stays free of pandas.
        """
        with self.read() as con:
            return [r[0] for r in con.execute("SELECT path FROM roots ORDER BY path").fetchall()]

    def stamp(self) -> str:
        """The change stamp: differs after every committed write from any process."""
        try:
            return self.stamp_path.read_text()
        except FileNotFoundError:
            return ""

    def _bump_stamp(self) -> None:
        tmp = self.stamp_path.with_name(f"{self.stamp_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(f"{time.time_ns()}-{os.getpid()}-{random.getrandbits(32):08x}")
        os.replace(tmp, self.stamp_path)
