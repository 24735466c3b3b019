"""The dashboard's shared worker: one Redis and one supervised RQ worker per dashboard.

Why: visitor kernels must stay light (no torch) and a GPU must hold one pipeline however many people
visit. So ``workbench dashboard`` starts (or joins, with ``--redis URL``) a Redis, and one
``workbench worker`` process that preloads the pipeline and runs every heavy job — generation,
embedding, hashing, rescans. Kernels find the Redis through ``$WORKBENCH_REDIS``.

The supervisor is a thread of the launcher: when the worker exits (a crash, an OOM kill, a
``kill -9``) it fails the jobs that worker had started, with the reason, and starts a new worker,
which takes the next job. Children get SIGTERM if the launcher dies (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from workbench.tasks import FAST_QUEUE, GENERATION_QUEUE, MAINTENANCE_QUEUE

REDIS_ENV = "WORKBENCH_REDIS"
#: queues the dashboard's worker serves, most urgent first (prompt embeddings before images before rescans)
QUEUES = (FAST_QUEUE, GENERATION_QUEUE, MAINTENANCE_QUEUE)
RESTART_BACKOFF_S = (0.5, 2.0, 5.0, 15.0)

log = logging.getLogger("workbench.service")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


#: the worker runs this much nicer than the pages: on a small machine a visitor's kernel (a page
#: opening, a filter) gets the CPU before the worker's start-up, scans and hashing; the GPU is unaffected
WORKER_NICENESS = 5


def _worker_preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
    _die_with_parent()
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: Path, timeout: float = 15.0) -> tuple[subprocess.Popen, str]:
    """A private ``redis-server`` on 127.0.0.1 with a random password; returns (process, URL)."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError(
            "the dashboard's shared worker needs redis-server (apt-get install redis-server), "
            "or pass --redis URL of a running Redis"
        )
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    port = _free_port()
    config = folder / "redis.conf"  # the password never appears on a command line (ps shows those)
    config.write_text(
        f'port {port}\nbind 127.0.0.1\nrequirepass {password}\nsave ""\nappendonly no\ndaemonize no\n'
        f'dir "{folder}"\nlogfile "{folder / "redis.log"}"\n'
    )
    config.chmod(0o600)
    process = subprocess.Popen(
        [exe, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout
    import redis

    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}; see {folder / 'redis.log'}")
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return process, url
        except redis.RedisError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s") from None
            time.sleep(0.05)


def worker_command(
    home: Path, library_roots: Sequence[Path], model: str = "tiny", cache_dir: Path | None = None
) -> list[str]:
    """``workbench worker`` for the dashboard: every queue, the pipeline preloaded, LoRAs from the roots.

    The Redis URL (with its password) travels in ``$WORKBENCH_REDIS``, never on the command line.
    """
    command = [sys.executable, "-m", "workbench.cli", "worker", "--model", model]
    command += ["--cache-dir", str(cache_dir or home / "models")]
    for queue in QUEUES:
        command += ["--queue", queue]
    for root in library_roots:
        command += ["--lora-dir", str(root)]
    return command


class SharedWorker:
    """Redis (started here unless a URL is given) plus one supervised worker process.

    ``restarts`` counts workers started after the first; ``failures`` lists (pid, reason, failed job ids).
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        library_roots: Sequence[str | os.PathLike[str]] = (),
        *,
        redis_url: str | None = None,
        model: str = "tiny",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.library_roots = [Path(r).expanduser().resolve() for r in library_roots]
        self.redis_url = redis_url
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.redis_process: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.restarts = 0
        self.failures: list[tuple[int, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.log_path = self.home / "logs" / "worker.log"

    @property
    def env(self) -> dict[str, str]:
        """What kernels need to find the worker (merge into the Voilà server's environment)."""
        return {REDIS_ENV: str(self.redis_url)}

    def start_redis(self) -> str:
        """Start the private Redis unless a URL was given (well under a second); returns the URL.

        ``workbench dashboard`` calls this, starts Voilà with the URL, and only then starts
        the worker (:meth:`start`), so the first page never waits for the worker to import torch and load a pipeline.
        """
        if self.redis_url is None:
            self.redis_process, self.redis_url = start_redis(self.home / "run")
        return self.redis_url

    def start(self) -> SharedWorker:
        url = self.start_redis()
        import redis

        try:
            redis.Redis.from_url(url, socket_timeout=5).ping()
        except redis.RedisError as exc:
            self.stop()
            raise RuntimeError(f"Redis at {_safe(self.redis_url)} does not answer: {exc}") from exc
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="workbench-worker-supervisor", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(_package_paths()),
            "HF_HUB_OFFLINE": "1",
            REDIS_ENV: str(self.redis_url),
        }
        with open(self.log_path, "ab") as out:
            self.worker = subprocess.Popen(
                worker_command(self.home, self.library_roots, self.model, self.cache_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_worker_preexec,
            )
        log.info("shared worker started (pid %s)", self.worker.pid)

    def _supervise(self) -> None:
        while not self._stop.wait(0.25):
            process = self.worker
            if process is None or process.poll() is None:
                continue
            reason = _exit_reason(process.pid, process.returncode)
            failed = self._fail_jobs_of(process.pid, f"{reason} mid-job; a new worker was started")
            self.failures.append((process.pid, reason, failed))
            log.warning("%s; %d job(s) failed; starting a new worker", reason, len(failed))
            if self._stop.wait(RESTART_BACKOFF_S[min(len(self.failures) - 1, len(RESTART_BACKOFF_S) - 1)]):
                return
            with self._lock:
                if self._stop.is_set():
                    return
                self._spawn()
                self.restarts += 1

    def _fail_jobs_of(self, pid: int, reason: str) -> list[str]:
        import redis

        from workbench.generate import fail_jobs_of_dead_worker

        try:
            conn = redis.Redis.from_url(str(self.redis_url), socket_timeout=5)
            try:
                return fail_jobs_of_dead_worker(conn, pid, reason)
            finally:
                conn.close()
        except Exception as exc:  # Redis down too: owners still see the job's heartbeat stop
            log.warning("could not fail the jobs of worker %s: %s", pid, exc)
            return []

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the supervisor, the worker and the Redis started here (a joined Redis is left running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            for process in (self.worker, self.redis_process):
                if process is None or process.poll() is not None:
                    continue
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> SharedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exit_reason(pid: int, code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process {pid} was killed by {name}"
    return f"the worker process {pid} exited with status {code}"


def _safe(url: str | None) -> str:
    """A Redis URL without its password (for messages and logs)."""
    text = str(url)
    if "@" in text and "://" in text:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


def _package_paths() -> list[str]:
    parent = str(Path(__file__).resolve().parents[1])
    return [parent, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != parent]]
