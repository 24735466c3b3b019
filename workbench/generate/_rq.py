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
INFO_KEY = "workbench:worker-info:{}"
INFO_EVERY_S = 2.0
_PIPELINE_LOADS = [0]  # backends opened by this worker process (one per model, however many visitors)


def _backend(kind: str, options: dict):
    import json

    from workbench.generate.backends import open_backend

    merged = {**_WORKER_DEFAULTS.get(kind, {}), **options}
    key = (kind, json.dumps(merged, sort_keys=True, default=str))
    if key not in _BACKENDS:  # kept for the worker's life: pipelines and adapters stay loaded between jobs
        _BACKENDS[key] = open_backend(kind, **merged)
        _PIPELINE_LOADS[0] += 1
    return _BACKENDS[key]


def run_generation(payload: dict) -> dict:
    """The RQ job function (runs on a worker): one image, returned as bytes + parameters."""
    from rq import get_current_job

    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("run_generation runs only inside an RQ worker")
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


def run_via_rq(queue: Any, job: Any, request: GenerationRequest) -> GenerationResult:
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
                    if not isinstance(out, dict):
                        raise GenerationError(f"RQ job {rq_job.id} finished without a result")
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
    stop = threading.Event()
    threading.Thread(target=_publish_info, args=(conn, worker, stop), name="workbench-worker-info", daemon=True).start()
    try:
        worker.work(burst=burst, with_scheduler=False)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        stop.set()
    return 0


# -- what a supervisor and a status page need to know about workers -------------------------------
def worker_info(worker_name: str = "") -> dict[str, Any]:
    """This worker process: pid, host, loaded pipelines, and GPU name/memory when torch sees CUDA.

    torch is looked up only if this process imported it already (a pipeline is loaded): asking
    must never be what loads it.
    """
    import os
    import socket
    import sys

    info: dict[str, Any] = {
        "name": worker_name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pipelines": [f"{kind}:{options}" for kind, options in _BACKENDS],
        "pipeline_loads": _PIPELINE_LOADS[0],
        "torch": None,
        "cuda": False,
        "gpus": [],
        "updated_at": time.time(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = str(getattr(torch, "__version__", "?"))
        try:
            if torch.cuda.is_available():
                info["cuda"] = True
                for index in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(index)
                    info["gpus"].append(
                        {
                            "index": index,
                            "name": torch.cuda.get_device_name(index),
                            "memory_total": int(total),
                            "memory_free": int(free),
                            "memory_allocated": int(torch.cuda.memory_allocated(index)),
                        }
                    )
        except Exception as exc:  # a broken driver shows as such, it does not stop the worker
            info["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _publish_info(conn: Any, worker: Any, stop: threading.Event) -> None:
    """Keep ``workbench:worker-info:<name>`` fresh (expires when the worker dies) for status pages."""
    import json

    while not stop.is_set():
        try:
            conn.set(INFO_KEY.format(worker.name), json.dumps(worker_info(worker.name)), ex=int(INFO_EVERY_S * 4))
        except Exception:  # Redis gone: the worker itself will notice and stop
            pass
        stop.wait(INFO_EVERY_S)


def live_workers(conn: Any) -> list[dict[str, Any]]:
    """Info of every worker whose info key is fresh (i.e. alive within the last few seconds)."""
    import json

    out = []
    for key in conn.scan_iter(match=INFO_KEY.format("*")):
        raw = conn.get(key)
        if raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return sorted(out, key=lambda w: str(w.get("name")))


def fail_jobs_of_dead_worker(conn: Any, pid: int, reason: str) -> list[str]:
    """Mark the RQ jobs a dead worker process (by pid) had started as failed with ``reason``.

    Called by a supervisor that saw its worker exit: the owners waiting on these jobs then fail
    them with that reason at once, instead of waiting for the heartbeat to go stale. Also removes
    the dead worker's registration, so "workers alive" counts only live ones.
    """
    from rq import Queue, Worker
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry, record_job_failure

    names = set()
    for worker in Worker.all(connection=conn):
        if worker.pid == pid:
            names.add(worker.name)
            try:
                worker.register_death()
            except Exception:
                pass
            conn.delete(INFO_KEY.format(worker.name))
    failed = []
    for queue in Queue.all(connection=conn):
        key = StartedJobRegistry(queue.name, connection=conn).key
        for entry in conn.zrange(key, 0, -1):
            entry = entry.decode() if isinstance(entry, bytes) else str(entry)
            job_id = entry.split(":", 1)[0]  # entries are "<job id>:<execution id>"
            try:
                job = Job.fetch(job_id, connection=conn)
            except Exception:
                continue
            if job.worker_name not in names or job.get_status(refresh=True) != JobStatus.STARTED:
                continue
            with conn.pipeline() as pipe:
                record_job_failure(job, reason, pipe)
                pipe.zrem(key, entry)
                pipe.execute()
            failed.append(job_id)
    return failed
