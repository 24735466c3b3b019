"""Hold numpy's OpenBLAS to one thread while the weight analysis runs.

The analysis is a long stream of small products (k × k outputs from tall factors). OpenBLAS threads each of
them across all cores; on a busy machine the threads spin and wait for each other: an analysis was measured
to cost 4–6× the CPU time of a single-threaded one (17× with two analyses in threads). Parallelism comes from
analysing files side by side instead (``wb.weights.analyze`` runs one worker process per core). OpenBLAS's
thread count is process-wide (its ``_local`` setter too), so the limit is reference-counted: it is restored
when the last analysis running in the process ends.

Only OpenBLAS is handled (the one numpy's wheels bundle, or a system one it links on Linux); with any other
BLAS this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_LOCK = threading.Lock()
_STATE = {"users": 0, "saved": 0}
_API: list[tuple[Callable[[], int], Callable[[int], None]] | None] = []  # [] not looked up yet


def _find_openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the OpenBLAS numpy loaded, or None (another BLAS, or not found)."""
    import numpy as np

    root = Path(np.__file__).resolve().parent
    candidates = [
        *sorted((root.parent / "numpy.libs").glob("*openblas*")),  # manylinux / Windows wheels
        *sorted((root / ".dylibs").glob("*openblas*")),  # macOS wheels
        *_mapped_openblas(),  # a distribution's numpy linked to the system OpenBLAS (Linux)
    ]
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix, suffix in (
            ("scipy_openblas", "64_"),
            ("scipy_openblas", ""),
            ("openblas", "64_"),
            ("openblas", ""),
        ):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return get, put
    return None


def _mapped_openblas() -> list[Path]:
    """OpenBLAS libraries this process has mapped, from /proc/self/maps (empty elsewhere)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    found = {line.split(maxsplit=5)[-1] for line in lines if "openblas" in line and ".so" in line}
    return sorted(Path(name) for name in found if name.startswith("/"))


def _api() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    if not _API:
        try:
            _API.append(_find_openblas())
        except Exception:  # a BLAS we do not know how to talk to: leave it alone
            _API.append(None)
    return _API[0]


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block (and while any other thread is inside it) numpy's OpenBLAS uses one thread."""
    api = _api()
    if api is None:
        yield
        return
    get, put = api
    with _LOCK:
        if _STATE["users"] == 0:
            _STATE["saved"] = get()
            if _STATE["saved"] != 1:
                put(1)
        _STATE["users"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["users"] -= 1
            if _STATE["users"] == 0 and _STATE["saved"] != 1:
                put(_STATE["saved"])


def _fresh_lock_in_child() -> None:
    """A forked worker (``wb.weights.analyze`` forks its analysis processes, possibly from a kernel thread) gets
    a lock of its own: another thread of the parent may have held this one at the fork, and nothing in the
    child would ever release it."""
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_in_child)
