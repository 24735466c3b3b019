"""A scan killed mid-way (SIGKILL, as a dying kernel) leaves no workers, no held lock, and keeps its progress."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from malformed_corpus import _tiny_entries, write_safetensors

import workbench

REPO = Path(__file__).resolve().parents[1]

_SLOW_SCAN = """
import sys, time
import workbench
from workbench.catalog import _scan as scanner

scanner._POOL_THRESHOLD = 4
scanner._CHUNK = 2
scanner._FLUSH_SECONDS = 0.0  # commit after every record
real = scanner._inspect_record

def slow(item):  # runs in the forked workers: slow enough to be killed mid-scan
    time.sleep(0.4)
    return real(item)

scanner._inspect_record = slow
workbench.open(sys.argv[1]).scan([sys.argv[2]], workers=2, progress=False)
"""


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie holds no descriptors and runs nothing


def _open_files(pid: int) -> set[str]:
    out = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            pass
    return out


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_killed_scan_leaves_no_workers_no_lock_and_keeps_its_progress(tmp_path: Path) -> None:
    lib, home = tmp_path / "lib", tmp_path / "home"
    for i in range(40):
        write_safetensors(lib / f"l{i:02d}.safetensors", _tiny_entries())
    wb = workbench.open(home)
    scan_lock = str((home / "scan.lock").resolve())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SCAN, str(home), str(lib)], env=env)
    workers: list[int] = []
    try:
        assert _wait_for(lambda: wb.catalog.count() >= 2, 120), "the scan committed nothing while running"
        workers = _children(proc.pid)
        assert workers, "the scan runs no pool workers; the test would prove nothing"
        assert scan_lock in _open_files(proc.pid)  # the scanning process holds the lock…
        for worker in workers:
            assert scan_lock not in _open_files(worker), "a pool worker inherited scan.lock"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 30), "pool workers outlived the scan"
    finally:
        if proc.poll() is None:
            proc.kill()
        for worker in workers:  # on failure, leave no orphan behind
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)
    kept = wb.catalog.count()
    assert 2 <= kept < 40  # progress committed as it went, and the scan really was cut short
    fd = os.open(scan_lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once: nobody holds it any more
    finally:
        os.close(fd)
    report = wb.scan([lib], progress=False)
    assert report.new == 40 - kept and wb.catalog.count() == 40
