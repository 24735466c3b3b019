"""Weight-space views: where a LoRA acts (block heatmap), its effective rank, LoRAs similar by weights, and
near-duplicate groups with "keep one, remove the rest from the catalog".

Views only call ``wb.weights``, ``wb.catalog`` and ``wb.tasks``; every string from a file name or the catalog is
escaped before it reaches HTML. Analysing reads tensors (seconds for a large file): in the dashboard the shared
worker does it (a ``weights`` task every page sees), in a plain notebook a background thread of the kernel; a
progress bar follows either, and the panel redraws when it is done. Figures go into ``Output`` widgets as
plotly's JSON mimetype, which a background thread may set safely.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w

from workbench.views._feedback import READ_ONLY_MESSAGE, guarded

log = logging.getLogger("workbench.views")


def _fit() -> w.Layout:
    """A button as wide as its label (ipywidgets cuts labels at 148 px); one Layout per widget."""
    return w.Layout(width="auto")


MAX_SIMILAR = 10
MAX_GROUPS = 200
POLL_S = 0.3
#: a worker task still waiting (queued, deferred, …) after this long is reported as not taken
QUEUED_LIMIT_S = 600.0
PLOTLY_MIME = "application/vnd.plotly.v1+json"

_KIND_ORDER = ("self-attention", "attention", "cross-attention", "feed-forward", "projection", "conv", "other")


def block_heatmap(record: dict[str, Any], title: str = "") -> Any:
    """A plotly heatmap of one analysis: blocks (network order) across, layer kinds down, Frobenius norm as colour."""
    import plotly.graph_objects as go

    blocks = [b["block"] for b in record.get("blocks", [])]
    kinds_present = {k for kinds in record.get("block_kinds", {}).values() for k in kinds}
    kinds = [k for k in _KIND_ORDER if k in kinds_present]
    z = [[record["block_kinds"].get(b, {}).get(k) for b in blocks] for k in kinds]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=blocks,
            y=kinds,
            colorscale="Viridis",
            colorbar={"title": "‖ΔW‖"},
            hovertemplate="%{x} %{y}: ‖ΔW‖_F = %{z:.4g}<extra></extra>",
        )
    )
    figure.update_layout(
        title=html.escape(title)
        if title
        else "Where the LoRA acts (Frobenius norm of the effective change per block and layer kind)",
        height=320,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"type": "category", "title": "block"},
        yaxis={"title": ""},
    )
    return figure


def block_norms_grid(records: Sequence[dict[str, Any]], names: Sequence[str]) -> Any:
    """LoRAs side by side: one row per LoRA, blocks across, each block's share of that LoRA's energy."""
    import plotly.graph_objects as go

    order: dict[str, int] = {}
    for record in records:
        for position, block in enumerate(record.get("blocks", [])):
            order.setdefault(block["block"], position)
    columns = sorted(order, key=lambda b: _block_rank(b))
    z = [[next((b["share"] for b in r.get("blocks", []) if b["block"] == c), None) for c in columns] for r in records]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[html.escape(str(n)) for n in names],  # plotly renders a few tags in labels: show names as text
            colorscale="Viridis",
            colorbar={"title": "share"},
            hovertemplate="%{y} %{x}: %{z:.1%} of the energy<extra></extra>",
        )
    )
    figure.update_layout(
        title="Block norms side by side (share of each LoRA's ‖ΔW‖²)",
        height=120 + 28 * len(records),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"type": "category"},
    )
    return figure


def show_figure(out: w.Output, figure: Any | None) -> None:
    """Put a plotly figure into ``out`` as plotly's JSON mimetype (None empties it); safe from any thread."""
    if figure is None:
        out.outputs = ()
        return
    import plotly.io as pio

    spec = json.loads(pio.to_json(figure, validate=False))
    spec["config"] = {"displaylogo": False, "responsive": True}
    out.outputs = (
        {"output_type": "display_data", "data": {PLOTLY_MIME: spec, "text/plain": "plotly figure"}, "metadata": {}},
    )


def _bytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


class WeightsRun:
    """Runs ``wb.weights.analyze`` for a view: on the shared worker when one is configured (a ``weights`` task
    every page sees; the kernel reads no tensors), else on a background thread of this kernel. ``bar`` and
    ``status`` follow it either way; ``on_done(summary)`` is called when it has finished."""

    def __init__(self, wb: Any, on_done: Callable[[str], None], poll: float = POLL_S) -> None:
        self._wb = wb
        self._on_done = on_done
        self._poll = poll
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="200px", display="none"))
        self.status = w.HTML()
        self.thread: threading.Thread | None = None
        self.task_id: str | None = None
        self.where = ""
        self._shown = 0.0

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _error(self, message: str) -> None:
        self.bar.bar_style = "danger"
        self.status.value = f'<span style="color:#b00">{html.escape(message)}</span>'

    def start(self, ids: Sequence[int] | None = None) -> threading.Thread | None:
        """Analyse ``ids`` again (None: every file lacking a current analysis); returns the thread that runs or
        follows it (None when one is already running)."""
        if self.running:
            self.status.value = "<i>an analysis is already running</i>"
            return None
        chosen = [int(i) for i in ids] if ids is not None else None
        with self.bar.hold_sync():
            self.bar.value, self.bar.bar_style, self.bar.layout.display = 0.0, "", None
        if self._wb.tasks.available:
            self.where = "worker"
            self.task_id = self._wb.tasks.submit("weights", ids=chosen)
            self.status.value = "queued on the shared worker…"
            target: Callable[[], None] = self._follow
        else:
            self.where = "kernel"
            self.task_id = None
            self.status.value = "reading tensors…"

            def target() -> None:
                self._analyse_here(chosen)

        self.thread = threading.Thread(
            target=guarded(notify=self._error)(target), daemon=True, name="workbench-weights"
        )
        self.thread.start()
        return self.thread

    def _progress(self, done: int, total: int) -> None:
        if time.monotonic() - self._shown < 0.2 and done < total:
            return  # at most 5 updates a second reach the page
        self._shown = time.monotonic()
        self.bar.value = done / total if total else 0.0
        self.status.value = f"reading tensors: {_bytes(done)} of {_bytes(total)}"

    def _analyse_here(self, ids: list[int] | None) -> None:
        done = self._wb.weights.analyze(ids, force=ids is not None, progress=False, on_progress=self._progress)
        from workbench.catalog import analysis_summary

        self._finish(analysis_summary(done))

    def _follow(self) -> None:
        assert self.task_id is not None
        waiting_since = time.monotonic()
        while True:
            task = self._wb.tasks.get(self.task_id)
            state = task["state"]
            if state == "started":
                waiting_since = time.monotonic()
            elif time.monotonic() - waiting_since > QUEUED_LIMIT_S:  # no worker took it: say so, allow a retry
                self._error(
                    f"no shared worker started the analysis within {QUEUED_LIMIT_S / 60:.0f} minutes "
                    "(the Status tab shows whether one is alive)"
                )
                return
            if state == "finished":
                self._finish(str(task.get("summary") or "done"))
                return
            if state in ("failed", "canceled", "stopped"):
                # the worker's exception stays in its log (Maintenance lists the task); per-file errors are
                # stored with each analysis and shown by the panel
                self._error(f"the analysis {state} on the shared worker (see the worker's log)")
                return
            if state == "started" and task.get("total"):
                self._progress(int(task["done"]), int(task["total"]))
            elif state != "started":
                self.status.value = f"{html.escape(state)} on the shared worker…"
            time.sleep(self._poll)

    def _finish(self, summary: str) -> None:
        with self.bar.hold_sync():
            self.bar.value, self.bar.bar_style = 1.0, "success"
        self.status.value = html.escape(summary)
        self._on_done(summary)


def _block_rank(block: str) -> tuple[int, str]:
    prefixes = ("TE", "IN", "MID", "OUT", "D", "S", "J", "BASE", "?")
    for position, prefix in enumerate(prefixes):
        if block.startswith(prefix):
            return position, block
    return len(prefixes), block


def _number(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def summary_html(record: dict[str, Any] | None) -> str:
    """Effective rank, norm and flags of one analysis as escaped HTML."""
    if record is None:
        return "<i>Not analysed yet: the weights have not been read.</i>"
    if not record.get("ok"):
        return f'<span style="color:#b00">Could not analyse: {html.escape(str(record.get("error")))}</span>'
    ranks = record.get("ranks", {})
    parts = [
        f"<b>{html.escape(str(record.get('network_type') or ''))}</b> in "
        f"{html.escape(str(record.get('key_layout') or ''))} layout, {record.get('module_count')} modules, "
        f"family {html.escape(str(record.get('family') or 'unknown'))}",
        f"nominal rank <b>{_number(ranks.get('nominal_rank'))}</b>; rank holding 90 % of each module's energy: "
        f"median <b>{_number(ranks.get('rank90_median'))}</b> (max {_number(ranks.get('rank90_max'))}); "
        f"99 %: median <b>{_number(ranks.get('rank99_median'))}</b> (max {_number(ranks.get('rank99_max'))})",
        f"‖ΔW‖<sub>F</sub> over all modules: {_number(record.get('total_norm'))}",
    ]
    if record.get("flagged_count"):
        parts.append(f"{record['flagged_count']} modules flagged (all-zero or skipped)")
    for warning in record.get("warnings", [])[:5]:
        parts.append(f'<span style="color:#8a6d00">{html.escape(str(warning))}</span>')
    return "<br>".join(parts)


def similar_html(frame: Any) -> str:
    """The similar-by-weights table as escaped HTML."""
    if frame is None or len(frame) == 0:
        return "<i>No other analysed LoRA of the same base-model family.</i>"
    rows = "".join(
        f"<tr><td>{int(r.id)}</td><td>{html.escape(str(r.name))}</td><td>{r.cosine:.4f}</td></tr>"
        for r in frame.itertuples()
    )
    return f"<table><thead><tr><th>id</th><th>name</th><th>cosine of ΔW</th></tr></thead><tbody>{rows}</tbody></table>"


class WeightsPanel(w.VBox):
    """One LoRA's weight-space analysis: summary, block heatmap, similar by weights; an Analyse button.

    ``read_only`` (a viewer's page): no Analyse button, and :meth:`analyse` refuses; ``title``: a heading.
    ``background_similar``:
    "similar by weights" (which may read files for exact cosines) is found on a thread after the rest is shown,
    as the Library's detail column does so that opening a card stays quick.
    """

    def __init__(
        self,
        wb: Any,
        lora_id: int | None = None,
        read_only: bool = False,
        background_similar: bool = False,
        title: str = "",
        **kwargs: Any,
    ) -> None:
        self._wb = wb
        self._read_only = bool(read_only)
        self._background_similar = bool(background_similar)
        self.lora_id: int | None = None
        self.summary = w.HTML()
        self.analyse_button = w.Button(description="Analyse weights", icon="cogs", layout=_fit())
        self.run = WeightsRun(wb, self._analysed)
        # A plain figure shown through plotly's mime renderer: plotly's FigureWidget does not start in Voilà.
        self.figure = w.Output()
        self.heatmap: Any = None
        self.similar = w.HTML()
        self.status = self.run.status
        self.similar_thread: threading.Thread | None = None
        self._similar_wanted: int | None = None
        self._similar_lock = threading.Lock()
        self.analyse_button.on_click(self._on_analyse)
        controls = w.HBox([self.analyse_button, self.run.bar, self.status])
        if self._read_only:
            self.analyse_button.layout.display = "none"
        heading = [w.HTML(f"<h4>{html.escape(title)}</h4>")] if title else []
        super().__init__([*heading, self.summary, controls, self.figure, self.similar], **kwargs)
        self.add_class("wb-weights")
        if lora_id is not None:
            self.show(lora_id)

    def notify_error(self, message: str) -> None:
        self.status.value = f'<span style="color:#b00">{html.escape(message)}</span>'

    def _analysable(self, lora_id: int) -> str | None:
        """Why this LoRA's weights cannot be read (None: they can)."""
        frame = self._wb.catalog.query(ids=[lora_id])
        if not len(frame):
            return f"no LoRA with id {lora_id}"
        row = frame.iloc[0]
        path = str(row.get("path") or "")
        if not path or bool(row.get("missing")):
            return "the file is not on disk"
        if not path.lower().endswith(".safetensors"):
            return "weights are read from .safetensors files only"
        return None

    @guarded
    def show(self, lora_id: int | None) -> None:
        """Show the stored analysis of one LoRA (nothing is read from the file here); None empties the panel."""
        if lora_id is None:
            self.lora_id, self.heatmap = None, None
            self.summary.value = self.similar.value = ""
            show_figure(self.figure, None)
            return
        self.lora_id = int(lora_id)
        record = self._wb.weights.get(self.lora_id)
        reason = self._analysable(self.lora_id) if record is None else None
        self.summary.value = summary_html(record) if reason is None else f"<i>Not analysed: {html.escape(reason)}.</i>"
        self.analyse_button.description = "Analyse weights" if record is None else "Analyse again"
        self.analyse_button.disabled = reason is not None
        ok = record is not None and record.get("ok")
        self.heatmap = block_heatmap(record, "Where it acts: ‖ΔW‖ per block and layer kind") if ok else None
        show_figure(self.figure, self.heatmap)
        if record is None or not record.get("ok"):
            self.similar.value = ""
        elif self._background_similar:
            self.similar.value = "<i>finding LoRAs similar by weights…</i>"
            with self._similar_lock:  # one search thread per panel; the card opened last is the one searched
                self._similar_wanted = self.lora_id
                if self.similar_thread is None or not self.similar_thread.is_alive():
                    self.similar_thread = threading.Thread(
                        target=self._similar_loop, daemon=True, name="workbench-weights-similar"
                    )
                    self.similar_thread.start()
        else:
            self._show_similar(self.lora_id)

    def _similar_loop(self) -> None:
        """Search for the card wanted now until no newer card is waiting (clicking through cards quickly
        starts no pile of threads each reading files)."""
        while True:
            with self._similar_lock:
                lora_id, self._similar_wanted = self._similar_wanted, None
            if lora_id is None:
                return
            self._show_similar(lora_id)

    def _show_similar(self, lora_id: int) -> None:
        try:
            text = "<b>Similar by weights</b><br>" + similar_html(self._wb.weights.similar(lora_id, k=MAX_SIMILAR))
        except Exception:
            log.exception("similar by weights failed for LoRA %s", lora_id)
            text = "<i>Similar by weights could not be found (see the kernel log).</i>"
        if self.lora_id == lora_id:  # another card may have opened meanwhile
            self.similar.value = text

    def analyse(self) -> threading.Thread | None:
        """Read this LoRA's tensors (on the shared worker when there is one, else a kernel thread), then redraw;
        the thread running or following it is returned (for tests). Refused on a read-only page."""
        if self._read_only:
            self.notify_error(READ_ONLY_MESSAGE)
            return None
        if self.lora_id is None:
            return None
        return self.run.start([self.lora_id])

    def _analysed(self, _summary: str) -> None:
        if self.lora_id is not None:
            self.show(self.lora_id)

    @guarded
    def _on_analyse(self, _button: Any) -> None:
        self.analyse()


class WeightDuplicatesView(w.VBox):
    """Near-duplicate groups by weights; per group choose the one to keep and remove the rest from the catalog
    (files are never deleted; undo restores them)."""

    def __init__(self, wb: Any, threshold: float = 0.9, **kwargs: Any) -> None:
        self._wb = wb
        self.threshold = w.FloatSlider(value=threshold, min=0.5, max=1.0, step=0.005, description="cosine ≥")
        self.find_button = w.Button(description="Find duplicates", icon="search", button_style="primary", layout=_fit())
        self.undo_button = w.Button(description="Undo last removal", icon="undo", disabled=True, layout=_fit())
        self.status = w.HTML()
        self.groups_box = w.VBox()
        self.groups: list[dict[str, Any]] = []
        self._edits: list[int] = []
        self.find_button.on_click(lambda _b: self.find())
        self.undo_button.on_click(lambda _b: self.undo())
        super().__init__(
            [
                w.HTML(
                    "Groups of LoRAs whose weight changes are nearly the same (every pair's cosine ≥ the "
                    "threshold): fp16/fp32 copies, re-saved with another alpha, converted between layouts, "
                    "close retrains. Only analysed LoRAs take part: analyse them first "
                    "(<b>Analyse new files</b> above, or <code>workbench weights</code>)."
                ),
                w.HBox([self.threshold, self.find_button, self.undo_button]),
                self.status,
                self.groups_box,
            ],
            **kwargs,
        )
        self.add_class("wb-weight-duplicates")

    def notify_error(self, message: str) -> None:
        self.status.value = f'<span style="color:#b00">{html.escape(message)}</span>'

    @guarded
    def find(self) -> None:
        """Compute the groups at the slider's threshold and list them."""
        self.groups = self._wb.weights.groups(float(self.threshold.value))[:MAX_GROUPS]
        self.status.value = f"{len(self.groups)} groups" if self.groups else "no near-duplicates at this threshold"
        self.groups_box.children = [self._group_box(number, g) for number, g in enumerate(self.groups)]

    def _group_box(self, number: int, group: dict[str, Any]) -> w.Widget:
        options = [
            (f"{name}  —  {path}", int(lora_id))
            for lora_id, name, path in zip(group["ids"], group["names"], group["paths"])
        ]
        keep = w.RadioButtons(options=options, value=options[0][1], layout=w.Layout(width="auto"))
        remove = w.Button(
            description="Keep this one, remove the rest", icon="trash", button_style="warning", layout=_fit()
        )
        remove.on_click(lambda _b, n=number: self.keep_one(n, int(keep.value)))
        header = w.HTML(
            f"<b>Group {number + 1}</b> ({html.escape(str(group['family']))}), lowest cosine {group['similarity']:.4f}"
        )
        return w.VBox([header, keep, remove])

    @guarded
    def keep_one(self, number: int, keep_id: int) -> int:
        """Remove every member of group ``number`` except ``keep_id`` from the catalog; returns the edit id."""
        group = self.groups[number]
        if keep_id not in group["ids"]:
            raise ValueError(f"LoRA {keep_id} is not in group {number + 1}")
        others = [i for i in group["ids"] if i != keep_id]
        edit = self._wb.catalog.remove(others)
        self._edits.append(edit)
        self.undo_button.disabled = False
        self.find()
        self.status.value = f"removed {len(others)} LoRAs from the catalog (files untouched)"
        return edit

    @guarded
    def undo(self) -> None:
        """Bring back the LoRAs of the last removal."""
        if self._edits:
            self._wb.catalog.undo(self._edits.pop())
        self.undo_button.disabled = not self._edits
        self.find()


class WeightsTab(w.VBox):
    """The dashboard's Weights tab: analyse the library, look at one LoRA, find near-duplicates by weights."""

    def __init__(self, wb: Any, **kwargs: Any) -> None:
        self._wb = wb
        self.picker = w.Dropdown(description="LoRA", options=[], layout=w.Layout(width="520px"))
        self.analyse_all = w.Button(description="Analyse new files", icon="cogs", layout=_fit())
        self.run = WeightsRun(wb, self._analysed)
        self.status = self.run.status
        self.panel = WeightsPanel(wb)
        self.duplicates = WeightDuplicatesView(wb)
        self.compare_pick = w.SelectMultiple(description="compare", options=[], rows=5, layout=w.Layout(width="520px"))
        self.compare_button = w.Button(description="Block norms side by side", icon="th", layout=_fit())
        self.compare_status = w.HTML()
        self.compare_figure = w.Output()
        self.picker.observe(self._picked, names=["value"])
        self.analyse_all.on_click(self._on_analyse)
        self.compare_button.on_click(lambda _b: self.compare())
        super().__init__(
            [
                w.HBox([self.picker, self.analyse_all, self.run.bar, self.status]),
                self.panel,
                w.HTML("<hr>"),
                w.HBox([self.compare_pick, w.VBox([self.compare_button, self.compare_status])]),
                self.compare_figure,
                w.HTML("<hr>"),
                self.duplicates,
            ],
            **kwargs,
        )
        self.add_class("wb-weights-tab")
        self.refresh()

    def notify_error(self, message: str) -> None:
        self.status.value = f'<span style="color:#b00">{html.escape(message)}</span>'

    @guarded
    def refresh(self) -> None:
        """Reload the LoRA list (names are option labels: ipywidgets shows them as text, not HTML)."""
        frame = self._wb.catalog.query(missing=False, sort="name", limit=5000)
        self.picker.options = [(f"{name} (#{int(i)})", int(i)) for i, name in zip(frame["id"], frame["name"])]
        self.compare_pick.options = self.picker.options

    @guarded
    def compare(self) -> Any:
        """Show the block norms of the LoRAs picked in ``compare_pick`` side by side (analysed ones only)."""
        ids = list(self.compare_pick.value)
        records, names = [], []
        labels = dict((value, label) for label, value in self.compare_pick.options)
        for lora_id in ids:
            record = self._wb.weights.get(lora_id)
            if record is not None and record.get("ok"):
                records.append(record)
                names.append(labels.get(lora_id, str(lora_id)))
        skipped = len(ids) - len(records)
        self.compare_status.value = f"{skipped} not analysed yet" if skipped else ""
        figure = block_norms_grid(records, names) if records else None
        show_figure(self.compare_figure, figure)
        return figure

    @guarded
    def _picked(self, change: Any) -> None:
        if change["new"] is not None:
            self.panel.show(int(change["new"]))

    def analyse(self) -> threading.Thread | None:
        """Analyse every file without a current analysis (on the shared worker when there is one, else a kernel
        thread); returns the thread running or following it."""
        return self.run.start(None)

    def _analysed(self, _summary: str) -> None:
        if self.panel.lora_id is not None:
            self.panel.show(self.panel.lora_id)

    @guarded
    def _on_analyse(self, _button: Any) -> None:
        self.analyse()


def weights_tab(wb: Any) -> WeightsTab:
    """Builder for the dashboard's Weights tab."""
    return WeightsTab(wb)
