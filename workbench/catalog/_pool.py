"""Worker processes for per-file work (scan inspection, weight analysis) that die with the process that made them.

Both jobs are CPU-bound numpy/parsing loops per file: threads share one GIL and one address space (page
faults of memory-mapped files serialise on it), processes use every core. The pool forks: children start at
once, need no importable ``__main__`` (scripts without a main guard and notebooks both work) and only read
files; no catalog connection is used in them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from workbench.catalog._db import Database


def lock_paths(db: Database) -> tuple[str, ...]:
    """The catalog's lock files, which a worker must not keep open (see :func:`_worker_start`)."""
    return tuple(os.path.realpath(p) for p in (db.path.with_name("scan.lock"), db.lock_path))


def worker_pool(workers: int, held_locks: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """A forked pool of ``workers`` processes that die with this one and hold none of ``held_locks``."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_start,
        initargs=(os.getpid(), held_locks),
    )


def _worker_start(parent_pid: int, held_locks: tuple[str, ...]) -> None:
    """Pool-worker initializer: die with the parent process and hold none of its locks.

    A forked worker inherits every open descriptor, including a flock'd ``scan.lock``; a flock lives as long
    as any descriptor of it, so a worker outliving a SIGKILLed parent would block the next scan for its whole
    timeout. The inherited lock descriptors are closed here (the parent's stay open), and the worker asks the
    kernel for SIGKILL when its parent dies (Linux), with a parent-pid watchdog thread as a fallback elsewhere.
    """
    # What the worker inherited (pandas, DuckDB, the catalog's rows) is never garbage here: keep the collector
    # from walking it on every full collection (and from writing to, so copying, those shared pages).
    gc.freeze()
    _close_inherited(held_locks)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="pool-parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _close_inherited(paths: tuple[str, ...]) -> None:
    """Close this process's descriptors that point at ``paths`` (Linux: found through /proc/self/fd)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in fds:
        try:
            if os.readlink(f"/proc/self/fd/{name}") in paths:
                os.close(int(name))
        except (OSError, ValueError):
            continue
