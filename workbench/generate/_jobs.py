"""The generation queue: jobs persisted in the catalog, run by a background thread of the kernel.

Why it looks like this: DuckDB allows one writer process at a time and every catalog access opens
the file briefly (~50 ms here), so the worker thread never waits on the catalog — state changes
go through one recorder thread that batches them into short transactions while the next image is
computed. A short job costs one catalog transaction (its final state, result and usage, shared
with neighbouring jobs' writes); a job running longer than ``progress_interval`` is also recorded
as running and its progress persisted at that interval. Live progress lives in memory. Jobs
survive a kernel restart: on start, queued jobs and jobs whose owner died mid-run are claimed and
requeued.

With ``executor="rq"`` the thread hands jobs to RQ workers on Redis (``workbench worker``) and
records what they return; workers never open the catalog.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as _dt
import heapq
import json
import os
import pathlib
import queue as _queue
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from workbench.catalog import Database
from workbench.files import fs_path
from workbench.generate._limits import (
    BACKEND_LIMITS,
    GenerationLimits,
    InvalidRequestError,
    request_from_stored,
    validate_request,
)
from workbench.generate._types import (
    Backend,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    JobCancelledError,
    JobControl,
)

if TYPE_CHECKING:
    import pandas as pd

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
_ACTIVE_OWNERS: set[str] = set()  # queue owners alive in this process


@dataclasses.dataclass
class RetryPolicy:
    """How often and how late to retry jobs that failed with a retryable error (server down, HTTP 5xx, timeout)."""

    max_attempts: int = 3
    base_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 120.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * self.factor ** max(0, attempt - 1))


@dataclasses.dataclass
class Job:
    """A job as the owner sees it (live progress included)."""

    id: str
    backend: str
    request: GenerationRequest
    backend_options: dict
    state: str = "queued"
    progress: float = 0.0
    step: int = 0
    steps: int = 0
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    created_at: _dt.datetime | None = None
    started_at: _dt.datetime | None = None
    finished_at: _dt.datetime | None = None
    result_id: str | None = None
    control: JobControl | None = dataclasses.field(default=None, repr=False)
    done: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    persisted_running: bool = dataclasses.field(default=False, repr=False)
    running_since: float = dataclasses.field(default=0.0, repr=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "backend": self.backend,
            "state": self.state,
            "progress": self.progress,
            "step": self.step,
            "steps": self.steps,
            "error": self.error,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result_id": self.result_id,
            "prompt": self.request.prompt,
            "loras": [s.to_dict() for s in self.request.loras],
            "seed": self.request.seed,
        }


def _now() -> _dt.datetime:
    return _dt.datetime.now()


def _process_start(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot), '' when unknown: tells a reused pid apart."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_alive(owner: str | None) -> bool:
    """Whether the queue owner that claimed a job is still running (same host: by pid and its start time;
    other hosts: assume yes). Owners are ``host:pid:nonce[:start ticks]``."""
    if not owner:
        return False
    if owner in _ACTIVE_OWNERS:
        return True
    parts = owner.split(":")
    host, pid_text = parts[0], parts[1] if len(parts) > 1 else ""
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # a queue of this process that is gone (closed or crashed)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = parts[3] if len(parts) > 3 else ""
    return not started or _process_start(pid) in ("", started)


def _owner_label(owner: str | None) -> str:
    parts = (owner or "?").split(":")
    return f"pid {parts[1]} on {parts[0]}" if len(parts) > 1 else (owner or "unknown")


def _flush_at_exit(ref: weakref.ref[JobQueue], timeout: float = 15.0) -> None:
    """Commit recorded job states when the interpreter exits (the recorder is a daemon thread)."""
    queue = ref()
    if queue is None or queue._recorder is None or not queue._recorder.is_alive():
        return
    queue._flush_now.set()
    deadline = time.monotonic() + timeout
    while queue._writes.unfinished_tasks and time.monotonic() < deadline:
        queue._flush_now.set()
        time.sleep(0.02)


class JobQueue:
    """Persisted queue of generation jobs with one worker thread (or RQ workers).

    ``backend_defaults``: per backend kind, the options used to open it (``{"diffusers": {"model": "tiny"}}``).
    ``resolver``: name -> (lora_id | None, path) for LoRAs in the catalog (usage counting, diffusers paths).
    """

    def __init__(
        self,
        db: Database,
        outputs_dir: str | pathlib.Path,
        *,
        backend_defaults: dict[str, dict] | None = None,
        resolver: Callable[[str], tuple[int | None, str | None]] | None = None,
        retry: RetryPolicy | None = None,
        executor: str = "thread",
        redis_url: str | None = None,
        rq_queue: str = "workbench",
        progress_interval: float = 2.0,
        commit_interval: float = 2.0,
    ) -> None:
        self.db = db
        self.outputs_dir = pathlib.Path(outputs_dir)
        self.backend_defaults = {k: dict(v) for k, v in (backend_defaults or {}).items()}
        self.resolver = resolver
        self.retry = retry or RetryPolicy()
        self.executor = executor
        self.redis_url = redis_url
        self.rq_queue = rq_queue
        self.progress_interval = progress_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_process_start(os.getpid())}"
        #: Per backend kind, what a request may ask for (checked before a job is queued); raise a limit here.
        self.limits: dict[str, GenerationLimits] = dict(BACKEND_LIMITS)
        #: Running jobs leave a marker file here (owner, attempt) until their final state is committed, so a
        #: job whose process died is found within ``dead_check_s`` by any live queue, and its attempt counts.
        self.markers_dir = self.outputs_dir / ".running"
        self.dead_check_s = 2.0
        self._jobs: dict[str, Job] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._writes: _queue.Queue = _queue.Queue()
        self._backends: dict[tuple, Any] = {}
        self._thread: threading.Thread | None = None
        self._recorder: threading.Thread | None = None
        self._stop = threading.Event()
        self.listeners: list[Callable[[Job], None]] = []
        self._own_stamp = ""
        self._committing = False
        self.full_check_s = 10.0
        self.linger_s = 0.02
        self.commit_interval = commit_interval
        self._last_commit = 0.0
        self._flush_now = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> JobQueue:
        """Start the recorder and worker threads (idempotent) and recover jobs left by a dead owner."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        _ACTIVE_OWNERS.add(self.owner)
        atexit.register(_flush_at_exit, weakref.ref(self))
        self._recorder = threading.Thread(target=self._record_loop, name="workbench-recorder", daemon=True)
        self._recorder.start()
        self.recover()
        self._thread = threading.Thread(target=self._work_loop, name="workbench-queue", daemon=True)
        self._thread.start()
        return self

    def close(self, wait: bool = True) -> None:
        """Stop after the current job (queued jobs stay queued in the catalog for the next start)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None and wait:
            self._thread.join(60)
        self.flush()
        self._writes.put(None)
        self._flush_now.set()
        if self._recorder is not None and wait:
            self._recorder.join(30)
        _ACTIVE_OWNERS.discard(self.owner)

    def recover(self) -> list[str]:
        """Claim jobs whose owner died: queued ones are queued here; an interrupted one counts its attempt and is
        failed with the reason when no attempt is left, else requeued behind newer jobs. Returns the claimed ids."""
        dead_markers = self._dead_markers()
        rows = self.db.read_df(
            "SELECT id, backend, params, state, attempts, max_attempts, worker, created_at FROM jobs "
            "WHERE state IN ('queued', 'running') ORDER BY created_at"
        ).to_dict("records")
        plans: list[tuple[dict, Job | None, str, str | None, int]] = []  # row, job to run here, state, error, attempts
        for row in rows:
            marker = dead_markers.get(row["id"])
            if row["id"] in self._jobs or _owner_alive(row["worker"]):
                continue
            attempts = int(row["attempts"] or 0)
            max_attempts = max(1, int(row["max_attempts"] or 1))
            if marker is not None:
                attempts = max(attempts, int(marker.get("attempt") or 0))
            interrupted = row["state"] == "running" or marker is not None
            try:
                params = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
                request = request_from_stored(params)
                validate_request(request, self._limits(row["backend"]))
            except (InvalidRequestError, ValueError, TypeError, RecursionError) as exc:
                plans.append((row, None, "failed", f"not run: {exc}", attempts))
                continue
            job = Job(
                id=row["id"],
                backend=row["backend"],
                request=request,
                backend_options=params.get("backend_options") or {},
                attempts=attempts,
                max_attempts=max_attempts,
                created_at=row["created_at"],
            )
            if not interrupted:
                plans.append((row, job, "queued", None, attempts))
                continue
            who = _owner_label((marker or {}).get("owner") or row["worker"])
            reason = f"its process ({who}) died during attempt {attempts} of {max_attempts}"
            if attempts >= max_attempts:
                plans.append((row, None, "failed", f"{reason}; no attempts left", attempts))
            else:
                plans.append((row, job, "queued", f"interrupted: {reason}; requeued behind newer jobs", attempts))
        claimed = self._claim(plans)
        unfinished = {row["id"] for row in rows}
        for job_id in dead_markers:  # left by the dead: claimed now, finished, or taken over by a live queue
            if (
                job_id in claimed
                or job_id not in unfinished
                or job_id in self._jobs
                or job_id not in {p[0]["id"] for p in plans}
            ):
                self._marker(job_id).unlink(missing_ok=True)
        return claimed

    def _claim(self, plans: list[tuple[dict, Job | None, str, str | None, int]]) -> list[str]:
        """Apply recovery plans in one transaction; a row another queue claimed meanwhile is left alone."""
        if not plans:
            return []
        now, won = _now(), []
        with self.db.write() as con:
            for row, job, state, error, attempts in plans:
                hit = con.execute(
                    "UPDATE jobs SET state=?, worker=?, error=?, progress=0, attempts=?, updated_at=?, "
                    "finished_at=CASE WHEN ? = 'failed' THEN ? ELSE NULL END "
                    "WHERE id=? AND worker IS NOT DISTINCT FROM ? AND state IN ('queued', 'running') RETURNING id",
                    [
                        state,
                        self.owner,
                        error,
                        attempts,
                        now,
                        state,
                        now,
                        row["id"],
                        row["worker"],
                    ],
                ).fetchall()
                if hit:
                    won.append((row["id"], job, error))
        claimed = []
        for job_id, job, error in won:
            claimed.append(job_id)
            if job is None:
                continue
            job.error = error
            self._jobs[job.id] = job
            # an interrupted job waits its back-off and yields to fresh jobs (their heap key is 0.0)
            self._push(job.id, time.monotonic() + self.retry.delay(job.attempts) if error else 0.0)
        return claimed

    def _limits(self, backend: str) -> GenerationLimits:
        return self.limits.get(backend) or GenerationLimits()

    # -- running markers: a job's attempt survives its process's death
    def _marker(self, job_id: str) -> pathlib.Path:
        return self.markers_dir / f"{job_id}.json"

    def _mark_running(self, job: Job) -> None:
        try:
            self.markers_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.markers_dir / f".{job.id}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"owner": self.owner, "attempt": job.attempts, "max_attempts": job.max_attempts}))
            os.replace(tmp, self._marker(job.id))
        except OSError:  # an unwritable outputs folder fails the job later with its own clear error
            pass

    def _dead_markers(self) -> dict[str, dict]:
        """Markers left by owners that are gone: job id -> {owner, attempt}."""
        out: dict[str, dict] = {}
        try:
            entries = list(os.scandir(self.markers_dir))
        except OSError:
            return out
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                marker = json.loads(pathlib.Path(entry.path).read_text())
                owner = marker["owner"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if owner != self.owner and not _owner_alive(owner):
                out[entry.name[: -len(".json")]] = marker
        return out

    # ---------------------------------------------------------------- public API
    def submit(
        self,
        request: GenerationRequest,
        backend: str = "diffusers",
        *,
        backend_options: dict | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Persist a job and queue it; returns its id. Starts the worker thread if needed.

        The request is checked against ``self.limits[backend]`` first: a bad parameter raises
        :class:`InvalidRequestError` (a ``ValueError``) naming it, and nothing is stored.
        """
        validate_request(request, self._limits(backend))
        if max_attempts is not None and (isinstance(max_attempts, bool) or not 1 <= int(max_attempts) <= 100):
            raise InvalidRequestError(f"max_attempts must be from 1 to 100, got {max_attempts!r}")
        job = Job(
            id=uuid.uuid4().hex,
            backend=backend,
            request=request,
            backend_options=dict(backend_options or {}),
            max_attempts=max_attempts if max_attempts is not None else self.retry.max_attempts,
            created_at=_now(),
        )
        params = json.dumps({"request": request.to_dict(), "backend_options": job.backend_options})
        row = [job.id, backend, params, job.max_attempts, self.owner, job.created_at, job.created_at]
        self.start()
        # Persisted by the recorder (submits arriving together share one transaction); `flush()` waits for it.
        self._write(
            lambda con: con.execute(
                "INSERT INTO jobs (id, backend, params, state, progress, attempts, max_attempts, worker, created_at, "
                "updated_at) VALUES (?, ?, ?, 'queued', 0, 0, ?, ?, ?, ?)",
                row,
            )
        )
        self._jobs[job.id] = job
        self._push(job.id, 0.0)
        return job.id

    def get(self, job_id: str) -> dict:
        """Live state of a job of this queue, else its catalog row."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job.to_dict()
        rows = self.db.read_df("SELECT * FROM jobs WHERE id = ?", [job_id]).to_dict("records")
        if not rows:
            raise KeyError(f"no job {job_id}")
        return rows[0]

    def jobs(self, states: list[str] | None = None, limit: int = 200, *, flush: bool = True) -> pd.DataFrame:
        """Jobs as a DataFrame, newest first: the catalog's rows, with this queue's jobs as they are now.

        ``flush=False`` skips committing first (a live view refreshing often): this queue's own
        jobs still show their current state from memory, other owners' as last committed.
        """
        import pandas as pd

        if flush:
            self.flush()
        sql = (
            "SELECT id, backend, state, progress, error, attempts, max_attempts, created_at, started_at, finished_at, "
            "params FROM jobs"
        )
        args: list = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args += list(states)
        df = self.db.read_df(sql + " ORDER BY created_at DESC LIMIT ?", args + [int(limit)])
        df["prompt"] = [json.loads(p)["request"]["prompt"] if isinstance(p, str) else "" for p in df["params"]]
        df = df.drop(columns=["params"])
        live = {j.id: j for j in list(self._jobs.values()) if not states or j.state in states}
        if not live:
            return df
        columns = [
            "id",
            "backend",
            "state",
            "progress",
            "error",
            "attempts",
            "max_attempts",
            "created_at",
            "started_at",
            "finished_at",
            "prompt",
        ]
        rows = [{c: v for c, v in j.to_dict().items() if c in columns} for j in live.values()]
        mine = pd.DataFrame(rows, columns=columns)
        for column in ("created_at", "started_at", "finished_at"):
            mine[column] = pd.to_datetime(mine[column])
            df[column] = pd.to_datetime(df[column])
        df = pd.concat([mine, df[~df["id"].isin(live)]] if len(df) else [mine], ignore_index=True)
        return df.sort_values("created_at", ascending=False, kind="stable").head(int(limit)).reset_index(drop=True)

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job; a running one has its backend interrupted."""
        job = self._jobs.get(job_id)
        if job is None:  # owned elsewhere: the owner sees cancel_requested
            with self.db.write() as con:
                con.execute(
                    "UPDATE jobs SET cancel_requested=true, updated_at=? WHERE id=? AND state IN ('queued','running')",
                    [_now(), job_id],
                )
            return
        with self._cv:
            if job.state == "queued":
                self._finish(job, "cancelled", "cancelled before it started")
                return
        if job.state == "running" and job.control is not None:
            job.control.cancel()
            self._write(lambda con: con.execute("UPDATE jobs SET cancel_requested=true WHERE id=?", [job_id]))

    def retry_job(self, job_id: str) -> str:
        """Queue a failed or cancelled job again (same parameters, attempts reset)."""
        self.flush()
        row = self.get(job_id)
        if row["state"] not in ("failed", "cancelled"):
            raise ValueError(f"job {job_id} is {row['state']}; only failed or cancelled jobs are retried")
        job = self._jobs.get(job_id)
        if job is None:
            rows = self.db.read_df(
                "SELECT backend, params, max_attempts, created_at FROM jobs WHERE id=?", [job_id]
            ).to_dict("records")
            try:
                params = json.loads(rows[0]["params"])
            except (ValueError, TypeError, RecursionError):
                params = None
            request = request_from_stored(params)
            validate_request(request, self._limits(rows[0]["backend"]))  # a row stored before the limits existed
            job = Job(
                id=job_id,
                backend=rows[0]["backend"],
                request=request,
                backend_options=params.get("backend_options") or {},
                max_attempts=max(1, int(rows[0]["max_attempts"] or 1)),
                created_at=rows[0]["created_at"],
            )
            self._jobs[job_id] = job
        job.state, job.error, job.attempts, job.progress, job.done = "queued", None, 0, 0.0, threading.Event()
        job.finished_at = None
        with self.db.write() as con:
            con.execute(
                "UPDATE jobs SET state='queued', error=NULL, attempts=0, progress=0, cancel_requested=false, "
                "worker=?, finished_at=NULL, updated_at=? WHERE id=?",
                [self.owner, _now(), job_id],
            )
        self.start()
        self._push(job_id, 0.0)
        return job_id

    def wait(self, job_id: str, timeout: float | None = None, *, flush: bool = False) -> dict:
        """Block until the job is final; returns its state dict. Raises TimeoutError.

        The catalog gets the job's final state within ``commit_interval``; reads through the
        workbench (``result``, ``jobs``, ``wb.history``) flush first. ``flush=True`` commits before
        returning, for callers that read the catalog with their own SQL or hand over to another process.
        """
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"job {job_id} is not owned by this queue")
        if not job.done.wait(timeout):
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
        if flush:
            self.flush()
        return job.to_dict()

    def result(self, job_id: str) -> dict | None:
        self.flush()
        rows = self.db.read_df("SELECT * FROM results WHERE job_id = ? AND NOT deleted", [job_id]).to_dict("records")
        return rows[0] if rows else None

    def flush(self) -> None:
        """Wait until every recorded change (running jobs' state included) is committed to the catalog."""
        for job in list(self._jobs.values()):
            if job.state == "running" and not job.persisted_running:
                self._persist_running(job)
        if self._recorder is not None and self._recorder.is_alive():
            self._flush_now.set()
            self._writes.join()

    # ---------------------------------------------------------------- internals
    def _push(self, job_id: str, not_before: float) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (not_before, self._seq, job_id))
            self._cv.notify_all()

    def _next(self) -> Job | None:
        with self._cv:
            while not self._stop.is_set():
                now = time.monotonic()
                while (
                    self._heap
                    and self._jobs.get(self._heap[0][2]) is not None
                    and self._jobs[self._heap[0][2]].state != "queued"
                ):
                    heapq.heappop(self._heap)
                if self._heap and self._heap[0][0] <= now:
                    _, _, jid = heapq.heappop(self._heap)
                    job = self._jobs.get(jid)
                    if job is not None and job.state == "queued":
                        job.state = "running"
                        return job
                    continue
                self._cv.wait(min(1.0, self._heap[0][0] - now) if self._heap else 1.0)
            return None

    def _write(self, fn: Callable, after: Callable[[], None] | None = None) -> None:
        """Queue a write for the recorder; ``after`` runs once it is committed (markers are removed then)."""
        if after is not None:
            fn.after_commit = after  # type: ignore[attr-defined]
        self._writes.put(fn)

    def _next_batch(self) -> list:
        """The writes for one transaction: everything that arrives until ``commit_interval`` after the
        previous commit (at least ``linger_s``), cut short by ``flush()`` or ``close()``.

        Each catalog open costs tens of milliseconds of CPU, so a stream of short jobs shares
        transactions instead of paying one each; readers through the workbench flush first.
        """
        first = self._writes.get()
        batch = [first]
        deadline = max(time.monotonic() + self.linger_s, self._last_commit + self.commit_interval)
        while first is not None and batch[-1] is not None:
            left = deadline - time.monotonic()
            if self._flush_now.is_set() or left <= 0:
                break
            try:
                batch.append(self._writes.get(timeout=min(left, 0.05)))
            except _queue.Empty:
                continue
        self._flush_now.clear()  # a flush asked after this point gets the next batch at once
        while batch[-1] is not None:
            try:
                batch.append(self._writes.get_nowait())
            except _queue.Empty:
                break
        return batch

    def _record_loop(self) -> None:
        while True:
            batch = self._next_batch()
            stop = any(f is None for f in batch)
            todo = [f for f in batch if f is not None]
            try:
                if todo:
                    for attempt in range(5):
                        try:
                            self._committing = True
                            try:
                                with self.db.write() as con:
                                    for f in todo:
                                        f(con)
                                self._own_stamp = self.db.stamp()
                                self._last_commit = time.monotonic()
                                for f in todo:
                                    after = getattr(f, "after_commit", None)
                                    if after is not None:
                                        try:
                                            after()
                                        except OSError:
                                            pass
                            finally:
                                self._committing = False
                            break
                        except Exception:
                            if attempt == 4:
                                raise
                            time.sleep(0.2 * (attempt + 1))
            except Exception as exc:  # never lose the thread; the job rows stay 'running' and get recovered
                import logging

                logging.getLogger(__name__).exception("recording job state failed: %s", exc)
            finally:
                for _ in batch:
                    self._writes.task_done()
            if stop:
                return

    def _notify(self, job: Job) -> None:
        for listener in list(self.listeners):
            try:
                listener(job)
            except Exception:
                pass

    def _work_loop(self) -> None:
        watcher = threading.Thread(target=self._watch_cancel_requests, name="workbench-cancel-watch", daemon=True)
        watcher.start()
        while not self._stop.is_set():
            job = self._next()
            if job is None:
                return
            self._run(job)

    def _watch_cancel_requests(self) -> None:
        """Record long-running jobs as running, and pick up cancels requested from another process.

        Such cancels arrive through the catalog. Reading it costs a file open, so the watcher first
        compares the change stamp (a tiny file) with the stamps this queue's own commits produced,
        and reads the catalog only after someone else wrote (or every ``full_check_s`` as a safety
        net). A cancel from this process never touches the catalog: it sets the job's event.
        """
        seen, last_full = self.db.stamp(), time.monotonic()
        last_dead = last_recover = time.monotonic()
        while not self._stop.wait(min(1.0, self.dead_check_s)):
            if time.monotonic() - last_dead >= self.dead_check_s:
                last_dead = time.monotonic()
                full = time.monotonic() - last_recover >= 3 * self.full_check_s
                if full or self._dead_markers():
                    last_recover = time.monotonic()
                    self._recover_quietly()
            running = [j for j in list(self._jobs.values()) if j.state == "running" and j.control is not None]
            for job in running:
                if not job.persisted_running and time.monotonic() - job.running_since >= self.progress_interval:
                    self._persist_running(job)
            if not running:
                continue
            if self._committing:
                continue  # our own commit may have bumped the stamp already; look again next round
            stamp = self.db.stamp()
            foreign = stamp != seen and stamp != self._own_stamp
            if not foreign and time.monotonic() - last_full < self.full_check_s:
                seen = stamp
                continue
            seen, last_full = stamp, time.monotonic()
            try:
                rows = self.db.read_df(
                    f"SELECT id FROM jobs WHERE cancel_requested AND id IN ({', '.join('?' for _ in running)})",
                    [j.id for j in running],
                )
            except Exception:
                continue
            for jid in rows["id"]:
                cancelled = self._jobs.get(jid)
                if cancelled is not None and cancelled.control is not None:
                    cancelled.control.cancel()

    def _recover_quietly(self) -> None:
        """The watcher's periodic recovery: a failure here is logged and tried again next round."""
        try:
            self.recover()
        except Exception as exc:
            import logging

            logging.getLogger(__name__).warning("recovering jobs of dead owners failed: %s", exc)

    def _run(self, job: Job) -> None:
        if job.attempts >= job.max_attempts:  # never "attempt 4 of 3"
            self._finish(job, "failed", job.error or f"no attempts left ({job.attempts} of {job.max_attempts})")
            return
        job.attempts += 1
        self._mark_running(job)
        job.started_at = _now()
        job.error = None
        job.persisted_running = False
        job.running_since = time.monotonic()
        last_saved = [job.running_since]

        def on_progress(control: JobControl) -> None:
            job.progress, job.step, job.steps = control.progress, control.step, control.steps
            self._notify(job)
            if time.monotonic() - last_saved[0] >= self.progress_interval:
                last_saved[0] = time.monotonic()
                self._persist_running(job)

        job.control = JobControl(on_progress=on_progress)
        self._notify(job)
        try:
            request = self._resolve_paths(job)
            if self.executor == "rq":
                from workbench.generate._rq import run_via_rq

                result = run_via_rq(self, job, request)
            else:
                result = self._backend(job.backend, job.backend_options).submit(request, job.control)
        except JobCancelledError as exc:
            self._finish(job, "cancelled", str(exc))
            return
        except GenerationError as exc:
            if exc.retryable and job.attempts < job.max_attempts and not job.control.cancelled:
                self._requeue(job, str(exc))
            else:
                self._finish(job, "failed", str(exc))
            return
        except Exception as exc:  # a bug or an unexpected library error: fail with the reason, never hang
            self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
            return
        self._record_result(job, result)

    def _persist_running(self, job: Job) -> None:
        """Record that a job runs (first time: state, attempt, start; then its progress).

        A job that finishes within ``progress_interval`` never needs this: its one final write
        carries everything, which keeps short jobs at one catalog transaction each.
        """
        with self._cv:
            if job.state != "running":
                return
            first = not job.persisted_running
            job.persisted_running = True
            p, attempts, started = job.progress, job.attempts, job.started_at
        if first:
            self._write(
                lambda con: con.execute(
                    "UPDATE jobs SET state='running', attempts=?, started_at=?, progress=?, updated_at=?, worker=? "
                    "WHERE id=? AND state IN ('queued', 'running')",
                    [attempts, started, p, _now(), self.owner, job.id],
                )
            )
        else:
            self._write(
                lambda con: con.execute(
                    "UPDATE jobs SET progress=?, updated_at=? WHERE id=? AND state='running'", [p, _now(), job.id]
                )
            )

    def _requeue(self, job: Job, error: str) -> None:
        delay = self.retry.delay(job.attempts)
        job.state, job.error, job.control = (
            "queued",
            f"attempt {job.attempts} failed: {error}; retrying in {delay:.0f} s",
            None,
        )
        err, when, attempts, started = job.error, _now() + _dt.timedelta(seconds=delay), job.attempts, job.started_at
        self._write(
            lambda con: con.execute(
                "UPDATE jobs SET state='queued', error=?, next_attempt_at=?, attempts=?, started_at=?, updated_at=? WHERE id=?",
                [err, when, attempts, started, _now(), job.id],
            ),
            after=lambda: self._marker(job.id).unlink(missing_ok=True),
        )
        self._notify(job)
        self._push(job.id, time.monotonic() + delay)

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished_at = state, error, _now()
        job.control = None
        fin, attempts, started = job.finished_at, job.attempts, job.started_at
        self._write(
            lambda con: con.execute(
                "UPDATE jobs SET state=?, error=?, attempts=?, started_at=coalesce(?, started_at), finished_at=?, updated_at=?, "
                "worker=? WHERE id=?",
                [state, error, attempts, started, fin, fin, self.owner, job.id],
            ),
            after=lambda: self._marker(job.id).unlink(missing_ok=True),
        )
        job.done.set()
        self._notify(job)

    def _record_result(self, job: Job, result: GenerationResult) -> None:
        day = _dt.date.today().isoformat()
        folder = self.outputs_dir / day
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job.id}.png"
        path.write_bytes(result.png)
        result_id = job.id
        params = {
            **result.params,
            "backend": job.backend,
            "backend_options": job.backend_options,
            "lora_hashes": result.lora_hashes,
            "elapsed_s": round(result.elapsed_s, 4),
        }
        usage = []
        for spec in job.request.loras:
            lora_id = self.resolver(spec.name)[0] if self.resolver else None
            usage.append((lora_id, spec.unet))
        fin = _now()
        job.state, job.progress, job.finished_at, job.result_id, job.control = "succeeded", 1.0, fin, result_id, None
        attempts, started = job.attempts, job.started_at

        def write(con) -> None:
            con.execute(
                "INSERT OR REPLACE INTO results (id, job_id, path, params, infotext, seed, width, height, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    result_id,
                    job.id,
                    str(path),
                    json.dumps(params),
                    result.infotext,
                    result.seed,
                    result.width,
                    result.height,
                    fin,
                ],
            )
            con.execute(
                "UPDATE jobs SET state='succeeded', progress=1, error=NULL, attempts=?, started_at=?, finished_at=?, "
                "updated_at=?, worker=? WHERE id=?",
                [attempts, started, fin, fin, self.owner, job.id],
            )
            for lora_id, weight in usage:
                if lora_id is not None:
                    con.execute(
                        "INSERT INTO usage_events (lora_id, kind, job_id, weight) VALUES (?, 'generate', ?, ?)",
                        [lora_id, job.id, weight],
                    )

        self._write(write, after=lambda: self._marker(job.id).unlink(missing_ok=True))
        job.done.set()
        self._notify(job)

    def _resolve_paths(self, job: Job) -> GenerationRequest:
        """For in-process diffusers: pin catalog paths of the stack's LoRAs (workers share the filesystem)."""
        if job.backend != "diffusers" or self.resolver is None:
            return job.request
        from workbench.generate.backends._compat import remember_short_hash

        loras = []
        for spec in job.request.loras:
            path = spec.path or self.resolver(spec.name)[1]
            known = getattr(self.resolver, "tensor_hash", lambda _p: None)(path) if path else None
            if path and known is not None:
                remember_short_hash(path, known[0], known[1], known[2][:12])
            loras.append(dataclasses.replace(spec, path=path) if path else spec)
        return dataclasses.replace(job.request, loras=loras)

    def set_backend(self, kind: str, backend: Backend) -> None:
        """Use an already-open backend for jobs of this kind submitted without options (e.g. a loaded pipeline)."""
        merged = self.backend_defaults.get(kind, {})
        self._backends[(kind, json.dumps(merged, sort_keys=True, default=str))] = backend

    def backend(self, kind: str, options: dict | None = None) -> Backend:
        """The (cached) backend instance this queue uses for a kind + options."""
        return self._backend(kind, options or {})

    def _backend(self, kind: str, options: dict):
        merged = {**self.backend_defaults.get(kind, {}), **options}
        key = (kind, json.dumps(merged, sort_keys=True, default=str))
        if key not in self._backends:
            from workbench.generate.backends import open_backend

            self._backends[key] = open_backend(kind, **merged)
        return self._backends[key]


class CatalogResolver:
    """name (display name, file stem or file name) -> (lora_id, path) from the catalog, cached.

    Also knows the catalog's tensor hash of each file (from ``wb.hash()``), so infotext's
    ``Lora hashes`` never re-reads a file the catalog already hashed. An entry is reused for
    ``ttl`` seconds while its file still exists; a moved file is looked up again.
    """

    def __init__(self, db: Database, ttl: float = 30.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[str, tuple[float, tuple[int | None, str | None]]] = {}
        self._hashes: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, tensor hash)
        self._lock = threading.Lock()

    def __call__(self, name: str) -> tuple[int | None, str | None]:
        with self._lock:
            hit = self._cache.get(name)
        if hit and time.monotonic() - hit[0] < self.ttl and (hit[1][1] is None or os.path.exists(hit[1][1])):
            return hit[1]
        rows = self.db.read_df(
            "SELECT v.id, v.path, l.size_bytes, l.mtime_ns, v.tensor_hash FROM lora_view v JOIN loras l ON l.id = v.id "
            "WHERE NOT v.missing AND (v.name = ? OR v.file_name = ? OR v.file_name = ? || '.safetensors' "
            "OR regexp_replace(v.file_name, '\\.[^.]*$', '') = ?) ORDER BY (v.name = ?) DESC, v.id LIMIT 1",
            [name, name, name, name, name],
        ).to_dict("records")
        value: tuple[int | None, str | None] = (None, None)
        if rows:
            row = rows[0]
            path = fs_path(row["path"]) if row["path"] else None  # the stored form may escape non-UTF-8 bytes
            value = (int(row["id"]), path)
            if path and isinstance(row["tensor_hash"], str):
                with self._lock:
                    self._hashes[path] = (int(row["size_bytes"]), int(row["mtime_ns"]), row["tensor_hash"])
        with self._lock:
            self._cache[name] = (time.monotonic(), value)
        return value

    def tensor_hash(self, path: str) -> tuple[int, int, str] | None:
        """(size, mtime_ns, tensor hash) the catalog recorded for a resolved path, if hashed."""
        with self._lock:
            return self._hashes.get(path)


def catalog_resolver(db: Database, ttl: float = 30.0) -> CatalogResolver:
    """The resolver ``wb.queue`` uses (kept as a function for existing callers)."""
    return CatalogResolver(db, ttl)
