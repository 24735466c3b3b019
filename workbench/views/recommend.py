"""Recommendation panel: pick a LoRA or type a prompt, get ranked cards with reasons.

Each card has thumbs up / down (recorded with ``wb.recommend.feedback``, so the next
ranking changes) and "add to stack", which collects ``<lora:name:weight>`` tags and
trigger words to paste into a prompt (or hands the LoRA to ``on_add`` when the
dashboard wires it to the Generate tab). Every string from the catalog is escaped.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import pandas as pd

from workbench.views._feedback import GENERIC_ERROR

log = logging.getLogger(__name__)


def _e(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value), quote=True)


def _stem(file_name: Any, name: Any) -> str:
    text = file_name if isinstance(file_name, str) and file_name else (name if isinstance(name, str) else "lora")
    return text.rsplit(".", 1)[0] if "." in text else text


def card_html(row: dict[str, Any]) -> str:
    """One result card (escaped): name, base model, score parts, reason, trigger words."""
    triggers = ", ".join(str(t) for t in (row.get("trigger_words") if row.get("trigger_words") is not None else [])[:6])
    tags = ", ".join(str(t) for t in (row.get("tags") if row.get("tags") is not None else [])[:6])
    missing = " · <i>not downloaded</i>" if bool(row.get("missing")) else ""
    return (
        "<div class='wb-rec-card'>"
        f"<b>{_e(row.get('name'))}</b> <small>#{_e(row.get('id'))} · {_e(row.get('base_model') or '?')}{missing}</small><br>"
        f"<small>score {float(row.get('score', 0)):.2f} = semantic {float(row.get('score_semantic', 0)):.2f}, "
        f"trigger {float(row.get('score_trigger', 0)):.2f}, lexical {float(row.get('score_lexical', 0)):.2f}, "
        f"feedback {float(row.get('score_feedback', 0)):+.2f}</small><br>"
        f"<span class='wb-rec-reason'>{_e(row.get('reason'))}</span>"
        + (f"<br><small>triggers: {_e(triggers)}</small>" if triggers else "")
        + (f"<br><small>tags: {_e(tags)}</small>" if tags else "")
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
        self.text = w.Textarea(placeholder="a prompt, or trigger words", layout=w.Layout(width="100%", height="60px"))
        self.lora = w.Combobox(placeholder="LoRA name", ensure_option=True, layout=w.Layout(width="60%"))
        self.k = w.BoundedIntText(value=k, min=1, max=100, description="k", layout=w.Layout(width="120px"))
        self.base = w.Text(placeholder="base model (e.g. SD1, SDXL)", layout=w.Layout(width="200px"))
        self.diversity = w.FloatSlider(value=0.0, min=0.0, max=0.9, step=0.1, description="diversity")
        self.go = w.Button(description="Recommend", button_style="primary", icon="search")
        self.status = w.HTML()
        self.cards = w.VBox([])
        self.stack_text = w.Textarea(description="stack", layout=w.Layout(width="100%", height="50px"))
        self.go.on_click(lambda _b: self._safe(self.run))
        self.mode.observe(lambda _c: self._sync_mode(), names="value")
        self._names: dict[str, int] = {}
        self._sync_mode()
        super().__init__(
            [
                self.mode,
                self.text,
                self.lora,
                w.HBox([self.k, self.base, self.diversity, self.go]),
                self.status,
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
        """Run the query in the controls and show the cards."""
        rec = self.wb.recommend
        opts = {"k": int(self.k.value), "diversity": float(self.diversity.value)}
        base = self.base.value.strip() or None
        if self.mode.value == "similar":
            lora_id = self._names.get(self.lora.value)
            if lora_id is None:
                raise ValueError("pick a LoRA from the list")
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

    def show_similar(self, lora_id: int) -> pd.DataFrame:
        """Programmatic entry (e.g. from the gallery's detail view)."""
        self.mode.value = "similar"
        label = next((n for n, i in self._names.items() if i == int(lora_id)), None)
        if label:
            self.lora.value = label
        self.results = self.wb.recommend.similar(int(lora_id), k=int(self.k.value))
        self._query = ("similar", int(lora_id))
        self._render()
        return self.results

    # -- cards ----------------------------------------------------------------------------
    def _render(self) -> None:
        rows = self.results.to_dict("records")
        self.status.value = (
            f"{len(rows)} recommendation{'s' if len(rows) != 1 else ''}" if rows else "no recommendations"
        )
        self.cards.children = [self._card(r) for r in rows]

    def _card(self, row: dict[str, Any]) -> w.Widget:
        up = w.Button(icon="thumbs-up", tooltip="good recommendation", layout=w.Layout(width="40px"))
        down = w.Button(icon="thumbs-down", tooltip="bad recommendation", layout=w.Layout(width="40px"))
        add = w.Button(description="add to stack", icon="plus", layout=w.Layout(width="130px"))
        lora_id = int(row["id"])
        up.on_click(lambda _b: self._safe(lambda: self.rate(lora_id, +1)))
        down.on_click(lambda _b: self._safe(lambda: self.rate(lora_id, -1)))
        add.on_click(lambda _b: self._safe(lambda: self.add_to_stack(row)))
        box = w.HBox([w.HTML(card_html(row), layout=w.Layout(flex="1")), w.VBox([w.HBox([up, down]), add])])
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


def recommend_tab(wb: Any) -> w.Widget:
    """The dashboard's Recommend tab."""
    return RecommendPanel(wb)
