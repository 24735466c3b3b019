"""The Status tab: GPU (asked of the shared worker), disk, catalog, coverage, queue, workers, backends.

It refreshes itself every ``interval`` seconds from a daemon thread (widget updates from a thread
reach the page); the numbers come from :func:`workbench.system.system_status`.
"""

from __future__ import annotations

import atexit
import html
import threading
from typing import Any

import ipywidgets as w

from workbench.system import system_status
from workbench.views._feedback import guarded


def start_poller(target: Any, stop: threading.Event, name: str) -> threading.Thread:
    """A daemon thread that refreshes a view until ``stop`` is set, also stopped (and waited for) at exit:
    a daemon thread killed inside a DuckDB query during interpreter shutdown aborts the process."""
    thread = threading.Thread(target=target, name=name, daemon=True)

    def finish() -> None:
        stop.set()
        thread.join(5)

    atexit.register(finish)
    thread.start()
    return thread


def _bytes(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.0%}"


def _ok(flag: bool) -> str:
    return "<b style='color:#1e7e34'>●</b>" if flag else "<b style='color:#b00020'>●</b>"


def render_status(status: dict[str, Any]) -> str:
    """The status dict as HTML; every value from outside (paths, names, errors) is escaped."""
    e = html.escape
    parts = []
    gpus = status.get("gpus") or []
    worker = status.get("worker") or {}
    if gpus:
        rows = "".join(
            f"<li>{e(str(g.get('name')))} — {_bytes(g.get('memory_total', 0) - g.get('memory_free', 0))} used of "
            f"{_bytes(g.get('memory_total'))} (pipelines hold {_bytes(g.get('memory_allocated'))}) on {e(str(g.get('host')))}</li>"
            for g in gpus
        )
        parts.append(f"<h4>GPU</h4><ul>{rows}</ul>")
    else:
        workers = worker.get("workers") or []
        why = (
            "no CUDA device seen by the worker (torch " + e(str(workers[0].get("torch"))) + ")"
            if workers
            else "no worker is alive to ask"
            if worker.get("available")
            else "no shared worker (" + e(str(worker.get("error", ""))) + ")"
        )
        parts.append(f"<h4>GPU</h4><p>{why}</p>")

    disk = "".join(
        f"<li>{e(d['path'])}: {_bytes(d['free'])} free of {_bytes(d['total'])}</li>"
        if not d.get("error")
        else f"<li>{e(d['path'])}: {e(d['error'])}</li>"
        for d in status.get("disk") or []
    )
    parts.append(f"<h4>Disk</h4><ul>{disk}</ul>")

    cat = status.get("catalog") or {}
    parts.append(
        "<h4>Catalog</h4><ul>"
        f"<li>{cat.get('loras', 0):,} LoRAs, {cat.get('local_files', 0):,} local files; catalog file "
        f"{_bytes(cat.get('catalog_bytes'))}, generated images {_bytes(cat.get('outputs_bytes'))}</li>"
        f"<li>hashed: {cat.get('hashed', 0):,} of {cat.get('local_files', 0):,} ({_pct(cat.get('hashed_fraction'))})</li>"
        f"<li>embedded: {cat.get('embedded', 0):,} of {cat.get('loras', 0):,} ({_pct(cat.get('embedded_fraction'))})</li>"
        "</ul>"
    )

    jobs = status.get("jobs") or {}
    queues = worker.get("queues") or {}
    waiting = ", ".join(f"{e(k)}: {int(v)}" for k, v in queues.items()) or "–"
    parts.append(
        "<h4>Queue</h4><ul>"
        f"<li>jobs queued {jobs.get('queued', 0):,}, running {jobs.get('running', 0):,}, "
        f"succeeded {jobs.get('succeeded', 0):,}, failed {jobs.get('failed', 0):,}</li>"
        f"<li>waiting on the shared worker: {waiting}</li></ul>"
    )

    if worker.get("available"):
        rows = (
            "".join(
                f"<li>{_ok(True)} {e(str(x.get('name', ''))[:12])} pid {int(x.get('pid', 0))} on {e(str(x.get('host')))}; "
                f"pipelines loaded: {len(x.get('pipelines') or [])}</li>"
                for x in worker.get("workers") or []
            )
            or f"<li>{_ok(False)} no worker alive</li>"
        )
        parts.append(f"<h4>Workers</h4><ul>{rows}</ul>")
    else:
        parts.append(f"<h4>Workers</h4><p>{_ok(False)} {e(str(worker.get('error', 'no shared worker')))}</p>")

    backends = "".join(
        f"<li>{_ok(bool(b.get('ok')))} {e(str(b.get('label')))} — {e(str(b.get('detail', '')))}</li>"
        for b in status.get("backends") or []
    )
    parts.append(f"<h4>Backends</h4><ul>{backends}</ul>")
    return "<div class='wb-system'>" + "".join(parts) + "</div>"


class SystemView(w.VBox):
    """Live system status; ``interval`` seconds between refreshes (0: only on demand)."""

    def __init__(self, wb: Any, interval: float = 5.0, **kwargs: Any) -> None:
        self._wb = wb
        self.interval = interval
        self.body = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="110px"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.status: dict[str, Any] = {}
        super().__init__([self.refresh_button, self.body], **kwargs)
        self.add_class("wb-status-tab")
        self._stop = threading.Event()
        self.refresh()
        if interval > 0:
            start_poller(self._loop, self._stop, "workbench-status")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    @guarded
    def refresh(self) -> None:
        """Ask the core (and through it the shared worker) for the current status."""
        self.status = system_status(self._wb)
        self.body.value = render_status(self.status)

    def close(self) -> None:
        self._stop.set()
        super().close()

    def notify_error(self, message: str) -> None:
        self.body.value = f"<span style='color:#b00020'>{html.escape(message)}</span>"


def status_tab(wb: Any) -> SystemView:
    """The dashboard's Status tab."""
    return SystemView(wb)
