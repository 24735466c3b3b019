"""System status for the dashboard's Status tab and for scripts: disk, catalog, coverage, queue, workers, backends.

Cheap to call every few seconds: catalog facts are re-read only when the catalog's change stamp
moved (a stat, not a query), the size of the generated images at most once a minute.

GPU facts come from the shared worker (the process that holds the pipeline), never from the caller:
a visitor's kernel has no torch and may run on a machine without the GPU. Backend reachability of
HTTP backends is checked with their ``health()`` (a few seconds at most) and cached briefly, so a
page refreshing itself does not hammer a generation server.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench._workbench import Workbench

HEALTH_TTL_S = 30.0
OUTPUTS_TTL_S = 60.0  # walking the generated images is the slow part; they change slowly
_HEALTH_CACHE: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_CATALOG_CACHE: dict[str, tuple[str, dict[str, Any]]] = {}  # home -> (change stamp, catalog facts)
_OUTPUTS_CACHE: dict[str, tuple[float, int]] = {}


def disk_usage(paths: list[Path]) -> list[dict[str, Any]]:
    """Free and total bytes of the file system holding each path (an unreachable path says so)."""
    out = []
    for path in paths:
        try:
            usage = shutil.disk_usage(path)
            out.append({"path": str(path), "free": int(usage.free), "total": int(usage.total), "error": None})
        except OSError as exc:
            out.append({"path": str(path), "free": None, "total": None, "error": f"{type(exc).__name__}: {exc}"})
    return out


def coverage(wb: Workbench) -> dict[str, Any]:
    """How much of the library is hashed and embedded (counts and fractions of the local, present files)."""
    row = wb.db.read_df(
        "SELECT count(*) AS loras, "
        "count(*) FILTER (WHERE path <> '' AND NOT coalesce(missing, false)) AS local_files, "
        "count(*) FILTER (WHERE path <> '' AND NOT coalesce(missing, false) AND sha256 IS NOT NULL) AS hashed, "
        "(SELECT count(DISTINCT e.lora_id) FROM embeddings e WHERE e.lora_id IN (SELECT id FROM lora_view)) "
        "AS embedded FROM lora_view"
    ).iloc[0]
    loras, local, hashed, embedded = (int(row[c]) for c in ("loras", "local_files", "hashed", "embedded"))
    return {
        "loras": loras,
        "local_files": local,
        "hashed": hashed,
        "hashed_fraction": round(hashed / local, 4) if local else None,
        "embedded": embedded,
        "embedded_fraction": round(embedded / loras, 4) if loras else None,
    }


def catalog_size(wb: Workbench) -> dict[str, Any]:
    """Bytes of the catalog file (with its write-ahead log) and of the generated images."""
    files = [wb.db.path, wb.db.path.with_name(wb.db.path.name + ".wal")]
    catalog_bytes = sum(p.stat().st_size for p in files if p.exists())
    outputs = wb.home / "outputs"
    cached = _OUTPUTS_CACHE.get(str(outputs))
    if cached is None or time.monotonic() - cached[0] > OUTPUTS_TTL_S:
        total = sum(p.stat().st_size for p in outputs.rglob("*") if p.is_file()) if outputs.is_dir() else 0
        cached = (time.monotonic(), total)
        _OUTPUTS_CACHE[str(outputs)] = cached
    output_bytes = cached[1]
    return {"catalog_bytes": int(catalog_bytes), "outputs_bytes": int(output_bytes)}


def job_counts(wb: Workbench) -> dict[str, int]:
    """Jobs per state in the catalog (queued and running ones are the queue's depth)."""
    frame = wb.db.read_df("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {str(s): int(n) for s, n in frame.itertuples(index=False)}


def backend_reachability(wb: Workbench, worker: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each configured backend and whether it answers (HTTP backends) or who runs it (diffusers)."""
    from workbench.generate import configured_backends, open_backend

    worker = worker if worker is not None else {}
    out = []
    try:
        choices = configured_backends(wb.home)
    except (ValueError, OSError) as exc:
        return [{"label": "settings", "kind": "?", "ok": False, "detail": f"backend settings unreadable: {exc}"}]
    for choice in choices:
        entry: dict[str, Any] = {"label": choice.label, "kind": choice.kind}
        if choice.kind == "diffusers":
            if worker.get("available"):
                alive = len(worker.get("workers") or [])
                entry.update(ok=alive > 0, detail=f"runs on the shared worker ({alive} alive)")
            else:
                entry.update(ok=True, detail="runs in the notebook's own process")
        else:
            key = (choice.kind, str(choice.options.get("url")))
            cached = _HEALTH_CACHE.get(key)
            if cached is None or time.monotonic() - cached[0] > HEALTH_TTL_S:
                try:
                    health = open_backend(choice.kind, **choice.options).health()
                except Exception as exc:
                    health = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                cached = (time.monotonic(), health)
                _HEALTH_CACHE[key] = cached
            health = cached[1]
            entry.update(
                ok=bool(health.get("ok")),
                detail=str(health.get("error") or ("busy" if health.get("busy") else "reachable")),
            )
        out.append(entry)
    return out


def system_status(wb: Workbench) -> dict[str, Any]:
    """Everything the Status tab shows, as plain data (one dict, cheap enough to refresh every few seconds)."""
    from workbench.tasks import shared_worker_status

    worker = shared_worker_status()
    gpus = [
        dict(g, worker=w.get("name"), host=w.get("host"))
        for w in worker.get("workers") or []
        for g in w.get("gpus") or []
    ]
    stamp = wb.db.stamp()
    cached = _CATALOG_CACHE.get(str(wb.home))
    if cached is None or cached[0] != stamp:  # the catalog is read only after someone wrote to it
        cached = (stamp, {"roots": wb.roots, "coverage": coverage(wb), "jobs": job_counts(wb)})
        _CATALOG_CACHE[str(wb.home)] = cached
    facts = cached[1]
    return {
        "home": str(wb.home),
        "disk": disk_usage([wb.home, *facts["roots"]]),
        "catalog": {**catalog_size(wb), **facts["coverage"]},
        "jobs": facts["jobs"],
        "worker": worker,
        "gpus": gpus,
        "backends": backend_reachability(wb, worker),
        "checked_at": time.time(),
    }
