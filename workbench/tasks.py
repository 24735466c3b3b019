"""Heavy work done by the shared worker — rescans, hashing, embedding, weight analysis, prompt embeddings — and
the light client kernels use to ask for it and follow it.

Why: a visitor's kernel must not import torch or read every file of the library. The dashboard's
worker (``workbench.dashboard._service``) shares the filesystem with the kernels, so maintenance tasks open the
same home and write the catalog through its usual short locked transactions; their progress goes
into the RQ job's ``meta``, which every page reads, so every page that watches a task sees it move.
Prompt embeddings return vectors only (the kernel ranks), on a queue served before images.
"""

from __future__ import annotations

import hashlib
import numbers
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from workbench._workbench import Workbench

FAST_QUEUE = "workbench-fast"  # prompt embeddings: a Recommend click must not wait behind a rescan
GENERATION_QUEUE = "workbench"  # JobQueue's rq_queue default
MAINTENANCE_QUEUE = "workbench-maintenance"
TASK_KINDS = ("scan", "hash", "embed", "weights")
TASK_TTL_S = 24 * 3600
_OPEN: dict[str, Workbench] = {}  # worker side: one Workbench per home
_RECOMMENDERS: dict[str, Any] = {}  # worker side: one Recommender (embedding model loaded here) per home


class NoSharedWorkerError(RuntimeError):
    """Raised when a task is asked for but no shared worker is configured ($WORKBENCH_REDIS)."""


# -- worker side ------------------------------------------------------------------------------
def _workbench(home: str) -> Workbench:
    import workbench

    if home not in _OPEN:
        _OPEN[home] = workbench.open(home)
    return _OPEN[home]


def _recommender(home: str) -> Any:
    """The worker's own Recommender, embedding in this process (``wb.recommend`` would ask the worker: itself)."""
    from workbench.search import Recommender

    if home not in _RECOMMENDERS:
        _RECOMMENDERS[home] = Recommender(_workbench(home), progress=False)
    return _RECOMMENDERS[home]


def _reporter(stage: str) -> Callable[[int, int], None]:
    """A progress callback that writes (done, total) into the current RQ job's meta, at most 5 times a second."""
    from rq import get_current_job

    job = get_current_job()
    last = [0.0]

    def report(done: int, total: int) -> None:
        if job is None or (time.monotonic() - last[0] < 0.2 and done < total):
            return
        last[0] = time.monotonic()
        job.meta.update(stage=stage, done=int(done), total=int(total))
        job.save_meta()

    report(0, 0)
    return report


def scan_task(home: str, roots: Sequence[str] | None = None) -> dict[str, Any]:
    """Rescan the library roots (default: the ones scanned before); returns the scan report's counts."""
    from workbench.catalog import scan

    wb = _workbench(home)
    chosen = [str(r) for r in roots] if roots else [str(r) for r in wb.roots]
    if not chosen:
        raise ValueError("no library folder has been scanned into this catalog yet")
    report = scan(wb.db, [Path(r) for r in chosen], progress=False, on_progress=_reporter("inspecting"))
    return {
        "summary": str(report),
        "seen": int(report.seen),
        "seconds": round(float(report.seconds), 2),
    }


def hash_task(home: str) -> dict[str, Any]:
    """Compute missing file hashes; returns how many files were hashed."""
    from workbench.catalog import hash_catalog, link_local_files

    wb = _workbench(home)
    hashed = hash_catalog(wb.db, progress=False, on_progress=_reporter("hashing bytes"))
    if hashed:
        link_local_files(wb.db)
    return {"summary": f"{hashed:,} file(s) hashed", "hashed": int(hashed)}


def embed_task(home: str) -> dict[str, Any]:
    """Embed new or changed LoRAs for recommendations (the model lives in this worker only)."""
    embedded = _recommender(home).embed(progress=False, on_progress=_reporter("embedding"))
    return {"summary": f"{embedded:,} LoRA(s) embedded", "embedded": int(embedded)}


def encode_texts(home: str, model_name: str, texts: list[str], max_seq_length: int | None) -> dict[str, Any]:
    """Unit vectors for ``texts`` from the worker's embedding model (for a kernel's Recommender)."""
    embedder = _recommender(home).embedder
    if embedder.name != model_name:
        raise ValueError(f"the worker embeds with {embedder.name!r}, the kernel asked for {model_name!r}")
    vectors = embedder.encode(list(texts), max_seq_length=max_seq_length)
    return {"shape": list(vectors.shape), "data": np.ascontiguousarray(vectors, dtype=np.float32).tobytes()}


def weights_task(home: str, ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Analyse LoRA weights: every file without a current analysis, or exactly ``ids`` again (a page's
    "Analyse weights" on one LoRA). Progress is in bytes read."""
    from workbench.catalog import analysis_summary

    wb = _workbench(home)
    chosen = [int(i) for i in ids] if ids else None
    done = wb.weights.analyze(
        chosen, force=chosen is not None, progress=False, on_progress=_reporter("reading tensors")
    )
    return {
        "summary": analysis_summary(done),
        "analysed": len(done),
        "failed": int((~done["ok"].astype(bool)).sum()) if len(done) else 0,
    }


_TASK_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "scan": scan_task,
    "hash": hash_task,
    "embed": embed_task,
    "weights": weights_task,
}


# -- kernel side ------------------------------------------------------------------------------
def _connection(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10)


def _redis_url() -> str:
    from workbench._workbench import shared_worker_url

    url = shared_worker_url()
    if not url:
        raise NoSharedWorkerError(
            "no shared worker: start the dashboard with `workbench dashboard` (it starts one) or set $WORKBENCH_REDIS"
        )
    return url


def _error_line(job: Any) -> str:
    latest = job.latest_result()
    text = str(getattr(latest, "exc_string", "") or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


class Tasks:
    """Rescan, hash, embed and analyse weights on the shared worker (``wb.tasks``); every page sees the same tasks."""

    def __init__(self, wb: Workbench, redis_url: str | None = None) -> None:
        self.wb = wb
        self._url = redis_url

    @property
    def available(self) -> bool:
        """Whether a shared worker is configured for this process."""
        from workbench._workbench import shared_worker_url

        return bool(self._url or shared_worker_url())

    def _conn(self) -> Any:
        return _connection(self._url or _redis_url())

    def submit(self, kind: str, ids: Sequence[int] | None = None) -> str:
        """Queue a task (``scan``, ``hash``, ``embed`` or ``weights``) and return its id; a task of that kind
        (and ``ids``) already queued or running is returned instead of starting a second one. ``ids``: only
        for ``weights``, the LoRAs to analyse (again); without them every file lacking an analysis."""
        from rq import Queue
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        if kind not in TASK_KINDS:
            raise ValueError(f"unknown task {kind!r}; one of {', '.join(TASK_KINDS)}")
        chosen: list[int] | None = None
        if ids is not None:
            if kind != "weights":
                raise ValueError(f"the {kind} task takes no ids")
            if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in ids):
                raise ValueError(f"LoRA ids must be integers, got {list(ids)[:5]!r}")
            chosen = sorted({int(i) for i in ids})
            if not chosen:
                raise ValueError("no LoRA ids given")
        conn = self._conn()
        latest_key = f"workbench:task-latest:{self.wb.home}:{kind}"
        if chosen:
            latest_key += ":" + hashlib.sha1(",".join(map(str, chosen)).encode()).hexdigest()[:16]
        # check-and-enqueue under a lock: two visitors clicking at once get the same task
        with conn.lock(latest_key + ":lock", timeout=30, blocking_timeout=30):
            current = conn.get(latest_key)
            if current:
                try:  # the job's own status: continuous from queued to started (the registries are not)
                    status = Job.fetch(current.decode(), connection=conn).get_status(refresh=True)
                    if str(getattr(status, "value", status)) in ("queued", "started", "deferred", "scheduled"):
                        return current.decode()
                except NoSuchJobError:
                    pass
            job = Queue(MAINTENANCE_QUEUE, connection=conn).enqueue(
                _TASK_FUNCTIONS[kind],
                str(self.wb.home),
                *([chosen] if chosen else []),
                job_id=f"task-{kind}-{uuid.uuid4().hex[:12]}",
                job_timeout=24 * 3600,
                result_ttl=TASK_TTL_S,
                failure_ttl=TASK_TTL_S,
                meta={"kind": kind, "home": str(self.wb.home), **({"ids": chosen} if chosen else {})},
            )
            conn.set(latest_key, job.id, ex=TASK_TTL_S)
        return str(job.id)

    def get(self, task_id: str) -> dict[str, Any]:
        """One task: kind, state (queued, started, finished, failed, ...), progress, summary or error."""
        from rq.job import Job

        return self._describe(Job.fetch(task_id, connection=self._conn()))

    def list(self, limit: int = 20) -> list[dict[str, Any]]:
        """Tasks of this home, newest first (finished ones are kept for a day)."""
        from rq import Queue
        from rq.job import Job

        conn = self._conn()
        queue = Queue(MAINTENANCE_QUEUE, connection=conn)
        ids: list[str] = list(queue.get_job_ids())
        for registry in (
            queue.started_job_registry,
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.canceled_job_registry,
        ):
            ids += [i.split(":", 1)[0] for i in registry.get_job_ids()]
        jobs = [j for j in Job.fetch_many(list(dict.fromkeys(ids)), connection=conn) if j is not None]
        mine = [j for j in jobs if (j.meta or {}).get("home") == str(self.wb.home)]
        mine.sort(key=lambda j: j.enqueued_at or j.created_at, reverse=True)
        return [self._describe(j) for j in mine[: int(limit)]]

    def wait(self, task_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the task is finished or failed; returns its description. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task["state"] in ("finished", "failed", "canceled", "stopped"):
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['state']} after {timeout:.0f} s")
            time.sleep(0.2)

    @staticmethod
    def _describe(job: Any) -> dict[str, Any]:
        status = job.get_status(refresh=True)
        state = str(getattr(status, "value", status) or "unknown")  # JobStatus is a str enum: str() gives its name
        meta = job.get_meta(refresh=True) or {}
        done, total = int(meta.get("done") or 0), int(meta.get("total") or 0)
        out: dict[str, Any] = {
            "id": job.id,
            "kind": meta.get("kind", "?"),
            "state": str(state),
            "stage": meta.get("stage", ""),
            "done": done,
            "total": total,
            "progress": (1.0 if state == "finished" else (done / total if total else 0.0)),
            "summary": "",
            "error": None,
            "enqueued_at": job.enqueued_at,
            "ended_at": job.ended_at,
        }
        if state == "finished":
            result = job.return_value(refresh=True) or {}
            out["summary"] = str(result.get("summary", ""))
        elif state == "failed":
            out["error"] = _error_line(job)
        return out


class RemoteEmbedder:
    """Stands in for the Recommender's embedder in a kernel: vectors come from the shared worker."""

    def __init__(self, wb: Workbench, name: str, timeout: float = 600.0, redis_url: str | None = None) -> None:
        self.wb = wb
        self.name = name
        self.timeout = timeout
        self._url = redis_url
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False, max_seq_length: int | None = None
    ) -> np.ndarray:
        from rq import Queue
        from rq.job import JobStatus

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        conn = _connection(self._url or _redis_url())
        job = Queue(FAST_QUEUE, connection=conn).enqueue(
            encode_texts,
            str(self.wb.home),
            self.name,
            list(texts),
            max_seq_length,
            job_timeout=3600,
            result_ttl=60,
            failure_ttl=3600,
        )
        deadline = time.monotonic() + self.timeout
        while True:
            status = job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                out = job.return_value(refresh=True)
                if not isinstance(out, dict):
                    raise RuntimeError(f"embedding job {job.id} finished without vectors")
                vectors = np.frombuffer(out["data"], dtype=np.float32).reshape(out["shape"]).copy()
                self._dim = int(vectors.shape[1])
                return vectors
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                raise RuntimeError(f"the shared worker could not embed: {_error_line(job)}")
            if time.monotonic() > deadline:
                job.cancel()
                raise TimeoutError(f"the shared worker did not embed within {self.timeout:.0f} s")
            time.sleep(0.02)


def shared_worker_status(redis_url: str | None = None) -> dict[str, Any]:
    """Queue depths and live workers (with their GPU and pipelines), or ``{"available": False}``."""
    from workbench._workbench import shared_worker_url

    url = redis_url or shared_worker_url()
    if not url:
        return {"available": False, "error": "no shared worker configured"}
    try:
        from rq import Queue

        from workbench.generate import live_workers

        conn = _connection(url)
        depths = {
            name: int(Queue(name, connection=conn).count) for name in (FAST_QUEUE, GENERATION_QUEUE, MAINTENANCE_QUEUE)
        }
        return {"available": True, "queues": depths, "workers": live_workers(conn)}
    except Exception as exc:
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
