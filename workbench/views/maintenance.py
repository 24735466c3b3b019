"""The Maintenance tab (editors): rescan, hash, embed and analyse weights on the shared worker with progress;
duplicates with "remove from catalog"; archive export as a download and import from an upload with a dry-run
preview; backups of the home with rotation.

Everything calls the core (``wb.tasks``, ``wb.catalog``, ``wb.export``, ``wb.import_archive``,
``wb.backup``). Task progress lives in Redis, so every page showing this tab sees the same tasks
move; a daemon thread polls them while the tab exists. Uploaded archives are written under
``<home>/run/uploads`` and checked completely (dry run) before anything is applied.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as w

from workbench.views._assets import asset_path
from workbench.views._feedback import GENERIC_ERROR, guarded
from workbench.views.system import start_poller

log = logging.getLogger("workbench.views")

TASK_ROWS = 6
MAX_UPLOAD_BYTES = 200 * 2**20
_TASK_LABELS = {
    "scan": "Rescan library",
    "hash": "Hash files",
    "embed": "Embed for recommendations",
    "weights": "Analyse weights",
}


class DownloadWidget(anywidget.AnyWidget):
    """Hands the browser a file made in the kernel (sent as one binary buffer, saved with a download link)."""

    _esm = asset_path("download.js")

    def offer(self, name: str, data: bytes, mime: str = "application/zip") -> None:
        self.send({"kind": "file", "name": Path(name).name, "mime": mime}, buffers=[data])


class _TaskRow(w.HBox):
    def __init__(self) -> None:
        self.text = w.HTML(layout=w.Layout(width="560px"))
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="220px"))
        super().__init__([self.text, self.bar])

    def show(self, task: dict[str, Any] | None) -> None:
        with self.hold_sync():
            if task is None:
                self.layout.display = "none"
                return
            self.layout.display = None
            state = str(task["state"])
            total = int(task.get("total") or 0)
            count = (
                f" {int(task.get('done') or 0):,}/{total:,} {html.escape(str(task.get('stage') or ''))}"
                if total
                else ""
            )
            detail = task.get("error") or task.get("summary") or ""
            color = {"finished": "#1e7e34", "failed": "#b00020", "started": "#0b63c5"}.get(state, "#666")
            self.text.value = (
                f"<b>{html.escape(_TASK_LABELS.get(str(task['kind']), str(task['kind'])))}</b> "
                f"<span style='color:{color}'>{html.escape(state)}</span>{count}"
                + (f"<br><small>{html.escape(str(detail)[:300])}</small>" if detail else "")
            )
            self.bar.value = float(task.get("progress") or 0.0)
            self.bar.bar_style = {"finished": "success", "failed": "danger"}.get(state, "")


class MaintenanceView(w.VBox):
    """Maintenance actions over one workbench; ``interval`` seconds between task polls (0: on demand)."""

    def __init__(self, wb: Any, interval: float = 1.0, **kwargs: Any) -> None:
        self._wb = wb
        self.message = w.HTML()
        # -- tasks on the shared worker
        self.task_buttons = {
            kind: w.Button(description=label, layout=w.Layout(width="230px")) for kind, label in _TASK_LABELS.items()
        }
        for kind, button in self.task_buttons.items():
            button.on_click(lambda _b, kind=kind: self.run_task(kind))
        self.task_rows = [_TaskRow() for _ in range(TASK_ROWS)]
        if not wb.tasks.available:
            for button in self.task_buttons.values():
                button.disabled = True
                button.tooltip = "needs the shared worker (start the dashboard with `workbench dashboard`)"
        # -- duplicates
        self.dup_by = w.Dropdown(
            # tensor_hash: the same tensor bytes (addnet hash); LoRAs with *similar* weights are the Weights tab's
            options=[("same file (SHA256)", "sha256"), ("same tensor bytes", "tensor_hash")],
            layout=w.Layout(width="220px"),
        )
        self.dup_find = w.Button(description="Find duplicates", icon="search", layout=w.Layout(width="160px"))
        self.dup_list = w.SelectMultiple(options=[], rows=8, layout=w.Layout(width="100%"))
        self.dup_remove = w.Button(
            description="Remove selected from catalog",
            icon="trash",
            button_style="warning",
            disabled=True,
            layout=w.Layout(width="260px"),
        )
        self.dup_undo = w.Button(description="Undo", icon="undo", disabled=True, layout=w.Layout(width="100px"))
        self.dup_find.on_click(lambda _b: self.find_duplicates())
        self.dup_remove.on_click(lambda _b: self.remove_selected())
        self.dup_undo.on_click(lambda _b: self.undo_remove())
        self.dup_list.observe(lambda _c: setattr(self.dup_remove, "disabled", not self.dup_list.value), names=["value"])
        self._last_edit: int | None = None
        # -- archive
        self.export_button = w.Button(
            description="Export catalog (zip)", icon="download", layout=w.Layout(width="230px")
        )
        self.download = DownloadWidget()
        self.export_button.on_click(lambda _b: self.export_archive())
        self.upload = w.FileUpload(accept=".zip", multiple=False, description="Archive to import")
        self.upload.observe(lambda _c: self.preview_upload(), names=["value"])
        self.conflict = w.Dropdown(
            options=["skip", "overwrite", "merge"],
            value="skip",
            description="Conflicts",
            layout=w.Layout(width="220px"),
        )
        self.import_button = w.Button(
            description="Apply import",
            icon="upload",
            button_style="primary",
            disabled=True,
            layout=w.Layout(width="160px"),
        )
        self.import_button.on_click(lambda _b: self.apply_import())
        self.import_preview = w.HTML()
        self._upload_path: Path | None = None
        # -- backups
        self.keep = w.BoundedIntText(value=5, min=1, max=100, description="Keep", layout=w.Layout(width="150px"))
        self.backup_button = w.Button(description="Back up now", icon="save", layout=w.Layout(width="160px"))
        self.backup_button.on_click(lambda _b: self.backup())
        self.backup_list = w.HTML()
        # -- Civitai download (a model version into a library folder, added to the catalog linked)
        self.civitai_ref = w.Text(
            placeholder="Civitai model URL (…?modelVersionId=…) or version id", layout=w.Layout(width="420px")
        )
        self.civitai_folder = w.Dropdown(
            options=[str(r) for r in wb.roots], description="into", layout=w.Layout(width="360px")
        )
        self.civitai_button = w.Button(description="Download", icon="cloud-download", layout=w.Layout(width="140px"))
        self.civitai_button.on_click(lambda _b: self.download_from_civitai())
        self.civitai_status = w.HTML()
        self._download_thread: threading.Thread | None = None

        super().__init__(
            [
                self.message,
                w.HTML("<h4>Library tasks (run by the shared worker)</h4>"),
                w.HBox(list(self.task_buttons.values())),
                w.VBox(self.task_rows),
                w.HTML("<h4>Duplicates</h4>"),
                w.HBox([self.dup_by, self.dup_find]),
                self.dup_list,
                w.HBox([self.dup_remove, self.dup_undo]),
                w.HTML("<h4>Archive</h4>"),
                w.HBox([self.export_button, self.download]),
                w.HBox([self.upload, self.conflict, self.import_button]),
                self.import_preview,
                w.HTML("<h4>Download from Civitai</h4>"),
                w.HBox([self.civitai_ref, self.civitai_folder, self.civitai_button]),
                self.civitai_status,
                w.HTML("<h4>Backups of this home (catalog, history, feedback, usage, generated images)</h4>"),
                w.HBox([self.keep, self.backup_button]),
                self.backup_list,
            ],
            **kwargs,
        )
        self.add_class("wb-maintenance")
        self._stop = threading.Event()
        self.refresh_tasks()
        self.refresh_backups()
        if interval > 0 and wb.tasks.available:
            start_poller(lambda: self._poll(interval), self._stop, "workbench-maintenance")

    # -- feedback -----------------------------------------------------------------------
    def _say(self, text: str, level: str = "info") -> None:
        color = {"info": "#333", "success": "#1e7e34", "error": "#b00020"}[level]
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>"

    def notify_error(self, message: str) -> None:
        self._say(message, "error")

    # -- tasks --------------------------------------------------------------------------
    @guarded
    def run_task(self, kind: str) -> str:
        """Ask the shared worker for a task (a running one of that kind is joined, not doubled)."""
        task_id = self._wb.tasks.submit(kind)
        self._say(f"{_TASK_LABELS[kind]}: queued on the shared worker.", "info")
        self.refresh_tasks()
        return task_id

    @guarded
    def refresh_tasks(self) -> None:
        tasks = self._wb.tasks.list(limit=TASK_ROWS) if self._wb.tasks.available else []
        for row, task in zip(self.task_rows, tasks + [None] * (TASK_ROWS - len(tasks))):
            row.show(task)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.refresh_tasks()

    # -- duplicates ---------------------------------------------------------------------
    @guarded
    def find_duplicates(self) -> None:
        frame = self._wb.catalog.duplicates(by=self.dup_by.value)
        options = [
            (f"{str(r['hash'])[:10]} · {r['name']} · {r['path'] or '(catalog only)'}", int(r["id"]))
            for r in frame.to_dict("records")
        ]
        self.dup_list.options = options
        groups = frame["hash"].nunique() if len(frame) else 0
        self._say(f"{len(frame):,} entries in {groups:,} duplicate groups." if len(frame) else "No duplicates.", "info")

    @guarded
    def remove_selected(self) -> None:
        ids = [int(i) for i in self.dup_list.value]
        if not ids:
            return
        self._last_edit = self._wb.catalog.remove(ids)
        self.dup_undo.disabled = False
        self._say(f"Removed {len(ids)} entries from the catalog (files untouched).", "success")
        self.find_duplicates()

    @guarded
    def undo_remove(self) -> None:
        if self._last_edit is not None and self._wb.catalog.undo(self._last_edit):
            self._say("Removal undone.", "success")
        self._last_edit = None
        self.dup_undo.disabled = True
        self.find_duplicates()

    # -- archive ------------------------------------------------------------------------
    @guarded
    def export_archive(self) -> Path:
        name = f"workbench-export-{_dt.datetime.now():%Y%m%d-%H%M%S}.zip"
        with tempfile.TemporaryDirectory() as scratch:
            path = self._wb.export(Path(scratch) / name)
            data = Path(path).read_bytes()
        self.download.offer(name, data)
        self._say(f"Export ready: {name} ({len(data):,} bytes).", "success")
        return Path(name)

    @guarded
    def preview_upload(self) -> None:
        files = list(self.upload.value or ())
        if not files:
            return
        item = files[0]
        content = bytes(item["content"])
        if len(content) > MAX_UPLOAD_BYTES:
            raise ValueError("archive too large")
        folder = self._wb.home / "run" / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.zip"
        path.write_bytes(content)
        self._upload_path = None
        self.import_button.disabled = True
        try:
            report = self._wb.import_archive(path, dry_run=True, conflict=self.conflict.value)
        except Exception as exc:  # an unsafe or broken archive: say why, keep nothing
            path.unlink(missing_ok=True)
            self.import_preview.value = f"<span style='color:#b00020'>Refused: {html.escape(str(exc)[:400])}</span>"
            return
        self._upload_path = path
        self.import_button.disabled = False
        self.import_preview.value = (
            f"<b>Dry run of {html.escape(str(item.get('name', 'archive')))}:</b> {html.escape(str(report))}"
        )

    @guarded
    def apply_import(self) -> None:
        if self._upload_path is None:
            return
        report = self._wb.import_archive(self._upload_path, conflict=self.conflict.value)
        self._upload_path.unlink(missing_ok=True)
        self._upload_path = None
        self.import_button.disabled = True
        self.import_preview.value = f"<b>Imported:</b> {html.escape(str(report))}"
        self._say("Import applied.", "success")

    # -- Civitai download -----------------------------------------------------------------
    @guarded
    def download_from_civitai(self, wait: bool = False) -> None:
        """Download the version named in the box into the chosen library folder, off the kernel's thread
        (the file streams, is verified against Civitai's SHA256, then catalogued with its Civitai data)."""
        ref, folder = self.civitai_ref.value.strip(), self.civitai_folder.value
        if not ref or not folder:
            self.civitai_status.value = "<i>Paste a Civitai model URL or version id and pick a library folder.</i>"
            return
        if self._download_thread is not None and self._download_thread.is_alive():
            self.civitai_status.value = "<i>A download is already running.</i>"
            return
        self.civitai_button.disabled = True
        self.civitai_status.value = f"Downloading <code>{html.escape(ref[:200])}</code>…"
        self._download_thread = threading.Thread(
            target=self._download, args=(ref, folder), daemon=True, name="workbench-civitai-download"
        )
        self._download_thread.start()
        if wait:
            self._download_thread.join()

    def _download(self, ref: str, folder: str) -> None:
        from workbench.catalog import CivitaiError

        try:
            result = self._wb.civitai.download(ref, folder, progress=False)
            self.civitai_status.value = (
                f"<span style='color:#1e7e34'>Downloaded <code>{html.escape(Path(result.path).name)}</code> "
                f"and added it to the catalog (id {int(result.lora_id)}).</span>"
            )
        except CivitaiError as exc:  # our own message: safe to show, escaped
            self.civitai_status.value = f"<span style='color:#b00020'>{html.escape(str(exc)[:500])}</span>"
        except Exception:
            log.exception("Civitai download of %r failed", ref[:200])
            self.civitai_status.value = f"<span style='color:#b00020'>{html.escape(GENERIC_ERROR)}</span>"
        finally:
            self.civitai_button.disabled = False

    # -- backups ------------------------------------------------------------------------
    @guarded
    def backup(self) -> Any:
        info = self._wb.backup(keep=int(self.keep.value))
        self._say(f"Backup written: {info.path.name} ({info.size_bytes:,} bytes).", "success")
        self.refresh_backups()
        return info

    @guarded
    def refresh_backups(self) -> None:
        rows = []
        for info in self._wb.backups():
            counts = ", ".join(
                f"{k} {v:,}" for k, v in info.counts.items() if k in ("loras", "results", "feedback", "usage_events")
            )
            rows.append(
                f"<li><code>{html.escape(info.path.name)}</code> — {html.escape(info.created_at)}, "
                f"{info.size_bytes / 2**20:.1f} MiB; {html.escape(counts)}</li>"
            )
        self.backup_list.value = f"<ul>{''.join(rows)}</ul>" if rows else "<i>no backups yet</i>"

    def close(self) -> None:
        self._stop.set()
        super().close()


def maintenance_tab(wb: Any) -> MaintenanceView:
    """The dashboard's Maintenance tab (editors only: the read-only role leaves it out)."""
    return MaintenanceView(wb)
