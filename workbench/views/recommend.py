"""Recommendation panel: pick a LoRA or type a prompt, get ranked cards with reasons.

Each card shows the thumbnail, name, base model and a one-line reason, with the score
formula behind "why"; thumbs up / down are recorded with ``wb.recommend.feedback`` (the next
ranking changes) and "add to stack" collects ``<lora:name:weight>`` tags and trigger words to
paste into a prompt (or hands the LoRA to ``on_add`` when the dashboard wires it to the
Generate tab), and says so.  While the library is embedded in the background the panel shows
the progress and results rest on lexical evidence.  Every string from the catalog is escaped.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import pandas as pd

from workbench.files import ThumbnailCache
from workbench.views._feedback import GENERIC_ERROR

THUMB_SIZE = 96

log = logging.getLogger(__name__)


def _e(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value), quote=True)


def _stem(file_name: Any, name: Any) -> str:
    text = file_name if isinstance(file_name, str) and file_name else (name if isinstance(name, str) else "lora")
    return text.rsplit(".", 1)[0] if "." in text else text


def card_html(row: dict[str, Any]) -> str:
    """One result card (escaped): name, base model, a one-line reason, triggers, and the score formula behind "why"."""
    words = row.get("trigger_words")
    triggers = ", ".join(str(t) for t in (list(words) if words is not None else [])[:6])
    missing = " · <i>not downloaded</i>" if bool(row.get("missing")) else ""
    reason = str(row.get("reason") or "")
    why = row.get("why") or f"score {float(row.get('score', 0)):.2f}"
    parts = ", ".join(
        f"{label} {float(row.get(col, 0) or 0):.2f}"
        for label, col in (
            ("semantic", "score_semantic"),
            ("trigger", "score_trigger"),
            ("lexical", "score_lexical"),
            ("popularity", "score_popularity"),
            ("usage", "score_usage"),
            ("feedback", "score_feedback"),
        )
        if col in row
    )
    return (
        "<div class='wb-rec-card'>"
        f"<b>{_e(row.get('name'))}</b> <small>#{_e(row.get('id'))} · {_e(row.get('base_model') or 'base model unknown')}"
        f"{missing}</small><br>"
        f"<div class='wb-rec-reason' title='{_e(reason)}' style='white-space:nowrap;overflow:hidden;"
        f"text-overflow:ellipsis'>{_e(reason)}</div>"
        + (f"<small>triggers: {_e(triggers)}</small>" if triggers else "")
        + f"<details><summary>why</summary><small>{_e(why)}"
        + (f"<br>{_e(parts)}" if parts else "")
        + "</small></details>"
        + "</div>"
    )


class RecommendPanel(w.VBox):
    """Query controls on top, result cards below, the collected stack at the bottom."""

    def __init__(self, wb: Any, k: int = 10, on_add: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.wb = wb
        self.on_add = on_add
        self.stack: list[dict[str, Any]] = []
        self.results = pd.DataFrame()
        self._query: tuple[str, Any] | None = None
        self.mode = w.ToggleButtons(
            options=[("Prompt", "prompt"), ("Similar to LoRA", "similar"), ("Trigger", "trigger")], value="prompt"
        )
        self.similar_by = w.ToggleButtons(
            options=[("by description", "description"), ("by weights", "weights")],
            value="description",
            tooltips=[
                "names, descriptions, trigger words and tags",
                "the cosine of the weight changes (analysed LoRAs)",
            ],
        )
        self.text = w.Textarea(placeholder="a prompt, or trigger words", layout=w.Layout(width="100%", height="60px"))
        self.lora = w.Combobox(placeholder="LoRA name", ensure_option=True, layout=w.Layout(width="60%"))
        self.k = w.BoundedIntText(
            value=k,
            min=1,
            max=100,
            description="results",
            style={"description_width": "initial"},
            layout=w.Layout(width="150px"),
        )
        self.base = w.Text(placeholder="base model (e.g. SD1, SDXL)", layout=w.Layout(width="200px"))
        self.diversity = w.FloatSlider(value=0.0, min=0.0, max=0.9, step=0.1, description="diversity")
        self.go = w.Button(description="Recommend", button_style="primary", icon="search")
        self.status = w.HTML()
        self.embed_progress = w.IntProgress(
            value=0, min=0, max=1, description="embedding", layout=w.Layout(display="none")
        )
        self.cards = w.VBox([])
        self._thumbs = ThumbnailCache(wb.home, wb.roots)
        self._watcher: threading.Thread | None = None
        self.stack_text = w.Textarea(description="stack", layout=w.Layout(width="100%", height="50px"))
        self.go.on_click(lambda _b: self._safe(self.run))
        self.mode.observe(lambda _c: self._sync_mode(), names="value")
        self._names: dict[str, int] = {}
        self._sync_mode()
        super().__init__(
            [
                self.mode,
                self.text,
                w.HBox([self.lora, self.similar_by]),
                w.HBox([self.k, self.base, self.diversity, self.go]),
                self.status,
                self.embed_progress,
                self.cards,
                self.stack_text,
            ]
        )
        self.add_class("wb-recommend")

    # -- controls -------------------------------------------------------------------------
    def _sync_mode(self) -> None:
        similar = self.mode.value == "similar"
        self.text.layout.display = "none" if similar else ""
        self.lora.layout.display = "" if similar else "none"
        self.similar_by.layout.display = "" if similar else "none"
        if similar and not self._names:
            df = self.wb.catalog.query(sort="name", limit=5000)
            self._names = {f"{n} (#{i})": int(i) for i, n in zip(df["id"], df["name"])}
            self.lora.options = list(self._names)

    def _safe(self, func: Callable[[], None]) -> None:
        try:
            func()
        except (KeyError, LookupError, ValueError) as exc:
            self.status.value = f"<span style='color:#b00'>{_e(exc.args[0] if exc.args else exc)}</span>"
        except Exception:
            log.exception("recommend panel")
            self.status.value = f"<span style='color:#b00'>{_e(GENERIC_ERROR)}</span>"

    def run(self) -> pd.DataFrame:
        """Run the query in the controls and show the cards (the button says it is working meanwhile)."""
        self.go.disabled, self.go.description = True, "Working…"
        self.status.value = "Ranking…"
        try:
            return self._run()
        finally:
            self.go.disabled, self.go.description = False, "Recommend"

    def _run(self) -> pd.DataFrame:
        rec = self.wb.recommend
        opts = {"k": int(self.k.value), "diversity": float(self.diversity.value)}
        base = self.base.value.strip() or None
        if self.mode.value == "similar":
            lora_id = self._names.get(self.lora.value)
            if lora_id is None:
                raise ValueError("pick a LoRA from the list")
            if self.similar_by.value == "weights":  # the weight analysis decides the family: no base/diversity
                self.results = rec.similar(lora_id, k=opts["k"], by="weights")
            else:
                self.results = rec.similar(lora_id, base_model=base or "auto", **opts)
            self._query = ("similar", lora_id)
        elif self.mode.value == "trigger":
            self.results = rec.by_trigger(self.text.value, base_model=base, **opts)
            self._query = ("trigger", self.text.value)
        else:
            self.results = rec.for_prompt(self.text.value, base_model=base, **opts)
            self._query = ("prompt", self.text.value)
        self._render()
        return self.results

    def show_similar(self, lora_id: int, by: str | None = None) -> pd.DataFrame:
        """Programmatic entry (e.g. from the gallery's detail view); ``by``: "description" or "weights"
        (default: the panel's choice)."""
        self.mode.value = "similar"
        if by is not None:
            self.similar_by.value = by
        label = next((n for n, i in self._names.items() if i == int(lora_id)), None)
        if label:
            self.lora.value = label
        self.results = self.wb.recommend.similar(int(lora_id), k=int(self.k.value), by=self.similar_by.value)
        self._query = ("similar", int(lora_id))
        self._render()
        return self.results

    # -- cards ----------------------------------------------------------------------------
    def _render(self) -> None:
        rows = self.results.to_dict("records")
        self.status.value = (
            f"{len(rows)} recommendation{'s' if len(rows) != 1 else ''}" if rows else "no recommendations"
        )
        if self.results.attrs.get("by") == "weights":
            self.status.value += " by weights" + (
                f": {_e(self.results.attrs['empty_reason'])}" if self.results.attrs.get("empty_reason") else ""
            )
        progress = self.results.attrs.get("embedding")
        if progress:
            self.status.value += (
                f" · embedding the library in the background ({progress['done']:,} / {progress['total']:,}):"
                " until it finishes, results rest on names, trigger words and tags"
            )
            self._watch_embedding()
        self.cards.children = [self._card(r) for r in rows]

    def _watch_embedding(self) -> None:
        """Show the background embedding's progress until it ends."""
        rec = self.wb.recommend
        if self._watcher is not None and self._watcher.is_alive():
            return
        self.embed_progress.layout.display = ""

        def watch() -> None:
            while rec.embedding:
                done, total = rec.embedding_progress or (0, 0)
                self.embed_progress.max, self.embed_progress.value = max(total, 1), done
                time.sleep(0.5)
            self.embed_progress.layout.display = "none"
            if rec.embedding_error:
                self.status.value = f"<span style='color:#b00'>{_e(rec.embedding_error)}</span>"
            else:
                self.status.value += " · library embedded: run again for semantic matches"

        self._watcher = threading.Thread(target=watch, name="recommend-progress", daemon=True)
        self._watcher.start()

    def _thumbnail(self, row: dict[str, Any]) -> w.Widget:
        source = row.get("preview_path")
        if not (isinstance(source, str) and source) and bool(row.get("preview_embedded")):
            source = row.get("path")
        data = self._thumbs.get(source, THUMB_SIZE) if isinstance(source, str) and source else None
        layout = w.Layout(width=f"{THUMB_SIZE}px", height=f"{THUMB_SIZE}px", flex="0 0 auto")
        if data:
            return w.Image(value=data, format="webp", layout=layout)
        return w.HTML("<div class='wb-rec-nothumb'>no preview</div>", layout=layout)

    def _card(self, row: dict[str, Any]) -> w.Widget:
        up = w.Button(icon="thumbs-up", tooltip="good recommendation", layout=w.Layout(width="40px"))
        down = w.Button(icon="thumbs-down", tooltip="bad recommendation", layout=w.Layout(width="40px"))
        add = w.Button(description="add to stack", icon="plus", layout=w.Layout(width="130px"))
        lora_id = int(row["id"])
        up.on_click(lambda _b: self._safe(lambda: self.rate(lora_id, +1)))
        down.on_click(lambda _b: self._safe(lambda: self.rate(lora_id, -1)))
        if any(s["id"] == lora_id for s in self.stack):
            add.description, add.icon, add.disabled = "in stack", "check", True

        def on_add(_b: Any) -> None:
            self.add_to_stack(row)
            add.description, add.icon, add.disabled = "in stack", "check", True

        add.on_click(lambda b: self._safe(lambda: on_add(b)))
        box = w.HBox(
            [
                w.HTML(card_html(row), layout=w.Layout(flex="1", order="2")),
                self._thumbnail(row),
                w.VBox([w.HBox([up, down]), add], layout=w.Layout(order="3")),
            ]
        )
        box.add_class("wb-rec-row")
        return box

    def rate(self, lora_id: int, value: int) -> None:
        """Thumbs up/down for a shown result; re-ranks with the feedback applied."""
        if self._query is None:
            return
        kind, query = self._query
        self.wb.recommend.feedback(query, lora_id, value, kind=kind)
        self.run() if kind != "similar" else self.show_similar(query)
        self.status.value += f" · feedback {'👍' if value > 0 else '👎'} recorded for #{int(lora_id)}"

    def add_to_stack(self, row: dict[str, Any]) -> None:
        """Collect the LoRA as a <lora:…> tag plus its first trigger word."""
        if any(s["id"] == int(row["id"]) for s in self.stack):
            self.status.value = f"{_e(row.get('name'))} is already in the stack"
            return
        weight = row.get("preferred_weight")
        weight = float(weight) if isinstance(weight, (int, float)) and not pd.isna(weight) else 0.8
        triggers = row.get("trigger_words")
        entry = {
            "id": int(row["id"]),
            "name": _stem(row.get("file_name"), row.get("name")),
            "weight": weight,
            "trigger": str(triggers[0]) if triggers is not None and len(triggers) else "",
        }
        self.stack.append(entry)
        self.stack_text.value = ", ".join(
            f"<lora:{s['name']}:{s['weight']:g}>" + (f", {s['trigger']}" if s["trigger"] else "") for s in self.stack
        )
        if self.on_add:
            self.on_add(entry)
        self.status.value = (
            f"Added {_e(row.get('name'))} to the stack ({len(self.stack)} LoRA{'s' if len(self.stack) != 1 else ''}):"
            " copy the tags from the stack box below" + (" or use them in Generate" if self.on_add else "")
        )


def recommend_tab(wb: Any) -> w.Widget:
    """The dashboard's Recommend tab."""
    return RecommendPanel(wb)
