"""Generation on RQ workers (Redis) for several GPU machines; the catalog owner records results.

Workers never open the DuckDB catalog: ``run_generation`` returns the PNG bytes and parameters as
the RQ job result, progress goes into the RQ job's ``meta``, and a heartbeat key shows the worker
is alive. The owner's queue thread (``run_via_rq``) polls these, records the result and turns a
dead worker (heartbeat gone), an error or a cancel into the job's final state.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from typing import Any

from workbench.generate._limits import GenerationLimits, limits_for, request_from_stored, validate_request
from workbench.generate._types import (
    BackendUnavailableError,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    JobCancelledError,
    JobControl,
)

CANCEL_KEY = "workbench:cancel:{}"
ALIVE_KEY = "workbench:alive:{}"
HEARTBEAT_S = 1.0
DEAD_AFTER_S = 6.0

_WORKER_DEFAULTS: dict[str, dict] = {}
_BACKENDS: dict[tuple, Any] = {}


def _backend(kind: str, options: dict):
    import json

    from workbench.generate.backends import open_backend

    merged = {**_WORKER_DEFAULTS.get(kind, {}), **options}
    key = (kind, json.dumps(merged, sort_keys=True, default=str))
    if key not in _BACKENDS:  # kept for the worker's life: pipelines and adapters stay loaded between jobs
        _BACKENDS[key] = open_backend(kind, **merged)
    return _BACKENDS[key]


def run_generation(payload: dict) -> dict:
    """The RQ job function (runs on a worker): one image, returned as bytes + parameters."""
    from rq import get_current_job

    rq_job = get_current_job()
    conn = rq_job.connection
    job_id = payload["job_id"]
    control = JobControl()
    stop = threading.Event()
    last = [0.0]

    def on_progress(c: JobControl) -> None:
        if time.monotonic() - last[0] >= 0.2 or c.step == c.steps:
            last[0] = time.monotonic()
            rq_job.meta.update(step=c.step, steps=c.steps, progress=c.progress)
            rq_job.save_meta()

    control._on_progress = on_progress

    def heartbeat() -> None:
        while not stop.is_set():
            conn.set(ALIVE_KEY.format(job_id), "1", ex=int(DEAD_AFTER_S))
            if conn.exists(CANCEL_KEY.format(job_id)):
                control.cancel()
            stop.wait(HEARTBEAT_S / 4 if control.steps else HEARTBEAT_S)

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        # Redis is shared: check what arrives as the owner did (its limits travel with the job).
        request = request_from_stored(payload)
        limits = payload.get("limits")
        validate_request(
            request, GenerationLimits(**limits) if isinstance(limits, dict) else limits_for(payload["backend"])
        )
        backend = _backend(payload["backend"], payload.get("backend_options") or {})
        result = backend.submit(request, control)
    finally:
        stop.set()
        beat.join(5)
        conn.delete(ALIVE_KEY.format(job_id))
    return {
        "png": result.png,
        "seed": result.seed,
        "width": result.width,
        "height": result.height,
        "infotext": result.infotext,
        "params": result.params,
        "lora_hashes": result.lora_hashes,
        "backend": result.backend,
        "elapsed_s": result.elapsed_s,
    }


def _error_from(exc_string: str) -> GenerationError:
    lines = [ln for ln in (exc_string or "").strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "the RQ job failed"
    name, _, message = last.partition(": ")
    cls = {"BackendUnavailableError": BackendUnavailableError, "JobCancelledError": JobCancelledError}.get(
        name.rsplit(".", 1)[-1], GenerationError
    )
    return cls(f"worker: {message or last}")


def run_via_rq(queue, job, request: GenerationRequest) -> GenerationResult:
    """Owner side: enqueue on Redis, mirror progress, forward cancel, detect a dead worker."""
    import redis
    from rq import Queue
    from rq.job import JobStatus

    if not queue.redis_url:
        raise GenerationError("executor 'rq' needs redis_url")
    conn = redis.Redis.from_url(queue.redis_url)
    control = job.control
    payload = {
        "job_id": job.id,
        "backend": job.backend,
        "backend_options": job.backend_options,
        "request": request.to_dict(),
        "limits": dataclasses.asdict(queue._limits(job.backend)),
    }
    try:
        conn.delete(CANCEL_KEY.format(job.id))
        rq_job = Queue(queue.rq_queue, connection=conn).enqueue(
            run_generation,
            payload,
            job_id=f"wb-{job.id}-{job.attempts}",
            job_timeout=24 * 3600,
            result_ttl=3600,
            failure_ttl=24 * 3600,
        )
    except redis.RedisError as exc:
        raise BackendUnavailableError(f"Redis at {queue.redis_url} unavailable: {exc}") from exc
    control.on_cancel(lambda: conn.set(CANCEL_KEY.format(job.id), "1", ex=3600))
    started_seen = None
    try:
        while True:
            time.sleep(0.1)
            try:
                status = rq_job.get_status(refresh=True)
                if status == JobStatus.QUEUED and control.cancelled:
                    rq_job.cancel()
                    raise JobCancelledError("cancelled before a worker took it")
                if status == JobStatus.STARTED:
                    meta = rq_job.get_meta(refresh=True)
                    if meta.get("steps") and meta.get("step") != control.step:
                        control.report(int(meta["step"]), int(meta["steps"]))
                    alive = conn.exists(ALIVE_KEY.format(job.id))
                    started_seen = started_seen or time.monotonic()
                    if not alive and time.monotonic() - started_seen > DEAD_AFTER_S:
                        worker = rq_job.worker_name or "?"
                        rq_job.cancel()
                        raise BackendUnavailableError(
                            f"RQ worker {worker} stopped mid-job (no heartbeat for {DEAD_AFTER_S:.0f} s)"
                        )
                if status == JobStatus.FINISHED:
                    out = rq_job.return_value(refresh=True)
                    return GenerationResult(**out)
                if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                    latest = rq_job.latest_result()
                    raise _error_from(getattr(latest, "exc_string", "") or str(status))
            except redis.RedisError as exc:
                raise BackendUnavailableError(f"Redis at {queue.redis_url} unavailable: {exc}") from exc
    finally:
        conn.delete(CANCEL_KEY.format(job.id))
        conn.close()


def run_worker(
    redis_url: str,
    queues: list[str] | None = None,
    *,
    burst: bool = False,
    backend_defaults: dict[str, dict] | None = None,
) -> int:
    """``workbench worker``: a SimpleWorker (no fork) so pipelines and adapters stay loaded between jobs."""
    import redis
    from rq import Queue, SimpleWorker

    _WORKER_DEFAULTS.update(backend_defaults or {})
    if (backend_defaults or {}).get("diffusers", {}).get("model"):
        # Load the pipeline before taking jobs: importing torch/diffusers inside the first job can hold
        # the GIL long enough to starve the heartbeat, and the owner would take the worker for dead.
        _ = _backend("diffusers", {}).pipe
    conn = redis.Redis.from_url(redis_url)
    worker = SimpleWorker([Queue(q, connection=conn) for q in (queues or ["workbench"])], connection=conn)
    try:
        worker.work(burst=burst, with_scheduler=False)
    except Exception:
        traceback.print_exc()
        return 1
    return 0
