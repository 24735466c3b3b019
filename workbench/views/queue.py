"""The Queue tab: recent jobs with state, live progress, cancel and retry.

Updated from the queue's listeners, which run on the queue's worker thread: a listener only
records what changed (under a lock) and updates the one progress bar of that job; the job list
is re-read from the catalog when a job changes state, at most every ``min_refresh_s``. Widgets
are a fixed pool of rows, refilled, never one new widget per job.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from workbench.views._feedback import READ_ONLY_MESSAGE, guarded
from workbench.views._live import catalog_watcher

ROWS = 15
_STATE_COLORS = {
    "queued": "#666",
    "running": "#0b63c5",
    "succeeded": "#1e7e34",
    "failed": "var(--jp-error-color1, #b00020)",
    "cancelled": "#8a6d3b",
}


class _JobRow(w.HBox):
    def __init__(self, view: QueueView, read_only: bool = False) -> None:
        self.job_id: str | None = None
        self.state = ""
        self.text = w.HTML(layout=w.Layout(width="520px"))
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="200px"))
        self.cancel: w.Button | None = None
        self.retry: w.Button | None = None
        if read_only:  # a viewer's row has no buttons at all (not hidden ones a page could still click)
            super().__init__([self.text, self.bar])
            return
        self.cancel = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="95px"))
        self.retry = w.Button(description="Retry", icon="redo", layout=w.Layout(width="95px"))
        self.cancel.on_click(lambda _b: view._on_cancel(self))
        self.retry.on_click(lambda _b: view._on_retry(self))
        super().__init__([self.text, self.bar, self.cancel, self.retry])

    def show(self, job: dict | None) -> None:
        with self.hold_sync():
            if job is None:
                self.job_id, self.state = None, ""
                self.layout.display = "none"
                return
            self.layout.display = None
            self.job_id, self.state = str(job["id"]), str(job["state"])
            prompt = str(job.get("prompt") or "")
            error = job.get("error")
            error_html = (
                f'<br><small style="color:var(--jp-error-color1, #b00020)">{html.escape(str(error)[:300])}</small>'
                if isinstance(error, str) and error
                else ""
            )
            color = _STATE_COLORS.get(self.state, "#666")
            self.text.value = (
                f'<b style="color:{color}">{html.escape(self.state)}</b> '
                f"<code>{html.escape(self.job_id[:8])}</code> "
                f"{html.escape(prompt[:120])}{error_html}"
            )
            progress = job.get("progress")
            self.bar.value = float(progress) if isinstance(progress, (int, float)) and progress == progress else 0.0
            self.bar.bar_style = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}.get(
                self.state, ""
            )
            if self.cancel is not None and self.retry is not None:
                self.cancel.disabled = self.state not in ("queued", "running")
                self.retry.disabled = self.state not in ("failed", "cancelled")


class QueueView(w.VBox):
    """Live view over ``wb.queue``: the newest jobs, their progress, cancel and retry."""

    def __init__(
        self, wb: Any, rows: int = ROWS, min_refresh_s: float = 0.5, read_only: bool = False, **kwargs: Any
    ) -> None:
        self._wb = wb
        self._read_only = bool(read_only)
        watcher = catalog_watcher(wb)  # jobs other kernels or workers run show up through the catalog
        self.min_refresh_s = min_refresh_s
        self._lock = threading.RLock()
        self._last_refresh = 0.0
        self._refresh_timer: threading.Timer | None = None
        self._finished_callbacks: list[Callable[[Any], None]] = []
        self._finished_pending = False
        self._last_finished: Any = None
        self.finished_delay_s = 1.0
        self.header = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.rows = [_JobRow(self, read_only=self._read_only) for _ in range(rows)]
        self.message = w.HTML()
        super().__init__([w.HBox([self.header, self.refresh_button]), *self.rows, self.message], **kwargs)
        self.add_class("wb-queue")
        self._listener = self._on_job_event
        wb.queue.listeners.append(self._listener)
        self.refresh()
        self._live = watcher.subscribe(self.refresh)

    def on_finished(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(job)`` (on a background thread, about a second later, once for jobs ending together)."""
        self._finished_callbacks.append(callback)

    @guarded
    def refresh(self) -> None:
        """Re-read the newest jobs from the catalog (live progress included) and refill the rows."""
        with self._lock:
            self._last_refresh = time.monotonic()
            frame = self._wb.queue.jobs(limit=len(self.rows), flush=False)  # live states from memory, no commit
            jobs = frame.to_dict("records")
            counts = frame["state"].value_counts().to_dict() if len(frame) else {}
            self.header.value = (
                "<b>Queue</b> · " + " · ".join(f"{html.escape(str(k))}: {int(v)}" for k, v in sorted(counts.items()))
                if counts
                else "<b>Queue</b> · no jobs yet"
            )
            for row, job in zip(self.rows, jobs + [None] * len(self.rows)):
                row.show(job)

    def close(self) -> None:
        """Stop listening to the queue, then close the widgets."""
        try:
            self._wb.queue.listeners.remove(self._listener)
        except ValueError:
            pass
        catalog_watcher(self._wb).unsubscribe(self._live)
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
        super().close()

    def notify_error(self, message: str) -> None:
        self.message.value = f'<span style="color:var(--jp-error-color1, #b00020)">{html.escape(message)}</span>'

    # -- queue events (worker thread) -----------------------------------------------------------
    def _on_job_event(self, job: Any) -> None:
        try:
            with self._lock:
                row = next((r for r in self.rows if r.job_id == job.id), None)
                if row is not None and job.state == row.state == "running":
                    row.bar.value = float(job.progress)  # a step: only this bar changes
                    return
            self._schedule_refresh()
            if job.state in ("succeeded", "failed", "cancelled") and self._finished_callbacks:
                # off the worker thread, and coalesced: callbacks read the catalog (the history grid
                # refreshes), so jobs finishing close together share one flush and one refresh
                with self._lock:
                    self._last_finished = job
                    if self._finished_pending:
                        return
                    self._finished_pending = True
                timer = threading.Timer(self.finished_delay_s, self._run_finished)
                timer.daemon = True
                timer.start()
        except Exception:  # never break the queue's thread
            import logging

            logging.getLogger("workbench.views").exception("queue view update failed")

    def _run_finished(self) -> None:
        with self._lock:
            self._finished_pending = False
            job = self._last_finished
        self._wb.queue.flush()  # the jobs' results are in the catalog before anyone reads them
        for callback in list(self._finished_callbacks):
            guarded(callback)(job)

    def _schedule_refresh(self) -> None:
        with self._lock:
            wait = self.min_refresh_s - (time.monotonic() - self._last_refresh)
            if wait <= 0:
                self._last_refresh = time.monotonic()
                threading.Thread(target=self.refresh, daemon=True).start()  # the catalog read stays off the worker
            elif self._refresh_timer is None or not self._refresh_timer.is_alive():
                self._refresh_timer = threading.Timer(wait, self.refresh)
                self._refresh_timer.daemon = True
                self._refresh_timer.start()

    # -- buttons ------------------------------------------------------------------------------
    @guarded
    def _on_cancel(self, row: _JobRow) -> None:
        if self._read_only:
            self.message.value = html.escape(READ_ONLY_MESSAGE)
            return
        if row.job_id:
            self._wb.queue.cancel(row.job_id)
            self.message.value = f"Cancel requested for <code>{html.escape(row.job_id[:8])}</code>."
            self.refresh()

    @guarded
    def _on_retry(self, row: _JobRow) -> None:
        if self._read_only:
            self.message.value = html.escape(READ_ONLY_MESSAGE)
            return
        if row.job_id:
            self._wb.queue.retry_job(row.job_id)
            self.message.value = f"Retrying <code>{html.escape(row.job_id[:8])}</code>."
            self.refresh()
