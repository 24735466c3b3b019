"""The Compare tab: pick LoRAs, weights and seeds; the grid runs through the queue and is shown. "Block norms"
shows where each picked LoRA acts (its weight analysis, :func:`workbench.views.weights.block_norms_grid`) side by side.

``workbench.generate._compare.compare`` waits for every cell, so it runs on a background thread: the
kernel stays responsive (and the Queue tab shows the cells' progress) while the grid is built.
"""

from __future__ import annotations

import html
import io
import threading
from typing import Any

import ipywidgets as w

from workbench.generate import BackendChoice, CompareResult, GenerationRequest, configured_backends, loras_for_backend
from workbench.views._feedback import guarded
from workbench.views.weights import block_norms_grid, show_figure

MAX_CELLS = 64
MAX_NAMES = 2000


def parse_numbers(text: str, kind: type, limit: int = 16) -> list:
    """``"0, 0.5, 1"`` -> numbers; raises ValueError naming the bad entry."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(kind(part))
        except ValueError:
            raise ValueError(f"{part[:20]!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not out:
        raise ValueError("give at least one value")
    if len(out) > limit:
        raise ValueError(f"at most {limit} values")
    return out


class CompareView(w.VBox):
    """Form for a LoRA × weight × seed grid and the resulting image."""

    def __init__(self, wb: Any, backends: list[BackendChoice] | None = None, **kwargs: Any) -> None:
        self._wb = wb
        self.backends = backends or configured_backends(wb.home)
        tiny = self.backends[0].random_weights
        self.loras = w.SelectMultiple(options=[], description="LoRAs", rows=8, layout=w.Layout(width="640px"))
        self.weights = w.Text(value="0, 0.5, 1", description="weights")
        self.seeds = w.Text(value="1, 2", description="seeds")
        self.prompt = w.Text(value="a lighthouse at dusk", description="prompt", layout=w.Layout(width="420px"))
        self.steps = w.IntSlider(value=8 if tiny else 20, min=1, max=150, description="steps")
        self.size = w.Dropdown(options=[64, 128, 256, 512, 768, 1024], value=64 if tiny else 512, description="size")
        self.cols = w.Dropdown(
            options=[("columns: weight", "weight"), ("columns: seed", "seed"), ("columns: LoRA", "lora")],
            value="weight",
        )
        self.backend = w.Dropdown(
            options=[(b.label, i) for i, b in enumerate(self.backends)],
            value=0,
            description="backend",
            layout=w.Layout(width="520px"),
        )
        self.run_button = w.Button(description="Run grid", button_style="primary", icon="th")
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))  # shown with a grid
        self.norms_button = w.Button(
            description="Block norms", icon="th", tooltip="where each picked LoRA acts, side by side (analysed LoRAs)"
        )
        self.norms_status = w.HTML()
        self.norms_figure = w.Output(layout=w.Layout(width="100%"))
        self.norms_button.on_click(self._on_norms)
        self._ids: dict[str, list[int]] = {}
        self.result: CompareResult | None = None
        self._thread: threading.Thread | None = None
        note = (
            (
                '<div style="background:#fff3cd;color:#3b2f00;padding:4px 8px"><b>Random weights:</b> tiny test pipeline, '
                "images carry no meaning.</div>"
            )
            if tiny
            else ""
        )
        self.run_button.on_click(self._on_run)
        self.backend.observe(lambda _change: self.refresh(), names=["value"])
        self._reasons: dict[str, str] = {}
        super().__init__(
            [
                w.HTML(note),
                self.backend,
                w.HBox([self.loras, w.VBox([self.weights, self.seeds, self.cols])]),
                self.prompt,
                w.HBox([self.steps, self.size]),
                w.HBox([self.run_button, self.norms_button]),
                self.status,
                self.image,
                self.norms_status,
                self.norms_figure,
            ],
            **kwargs,
        )
        self.add_class("wb-compare")
        self.refresh()

    @guarded
    def refresh(self) -> None:
        """LoRAs the selected backend can run first; the others after them, labelled with the reason."""
        frame = loras_for_backend(self._wb.db, self.backends[self.backend.value], MAX_NAMES)
        self._reasons = {r["name"]: r["reason"] for r in frame.to_dict("records") if isinstance(r["reason"], str)}
        self._ids = {}
        for lora_id, name in zip(frame["id"], frame["name"]):
            self._ids.setdefault(name, []).append(int(lora_id))
        options = []
        for name in dict.fromkeys(frame["name"]):
            reason = self._reasons.get(name)
            options.append((f"✕ {name} — {reason}" if reason else name, name))
        self.loras.options = options

    def run(self) -> threading.Thread | None:
        """Check the form and start the grid on a background thread (returned, e.g. to join in tests)."""
        try:
            weights = parse_numbers(self.weights.value, float)
            seeds = parse_numbers(self.seeds.value, int)
        except ValueError as exc:
            self._say(html.escape(str(exc)), error=True)
            return None
        loras = list(self.loras.value)
        if not loras:
            self._say("Pick at least one LoRA.", error=True)
            return None
        blocked = [f"{name}: {self._reasons[name]}" for name in loras if name in self._reasons]
        if blocked:
            self._say("Cannot run on this backend — " + html.escape("; ".join(blocked[:3])), error=True)
            return None
        if len(loras) * len(weights) * len(seeds) > MAX_CELLS:
            self._say(f"At most {MAX_CELLS} images per grid.", error=True)
            return None
        if self._thread is not None and self._thread.is_alive():
            self._say("A grid is still running.")
            return None
        choice = self.backends[self.backend.value]
        base = GenerationRequest(
            prompt=self.prompt.value[:2000],
            steps=int(self.steps.value),
            width=int(self.size.value),
            height=int(self.size.value),
            sampler="DDIM" if choice.random_weights else "Euler",
        )
        cols = self.cols.value
        self._say(f"Running {len(loras) * len(weights) * len(seeds)} images… (see the Queue tab)")
        self._thread = threading.Thread(
            target=self._build, args=(loras, weights, seeds, base, cols, choice), daemon=True
        )
        self._thread.start()
        return self._thread

    def block_norms(self) -> Any:
        """Show the block norms of the picked LoRAs side by side (those with a weight analysis; a name shared by
        several files shows the first analysed one); returns the figure, or None when none is analysed."""
        names = list(self.loras.value)
        if not names:
            self.norms_status.value = "Pick LoRAs to see where each one acts."
            show_figure(self.norms_figure, None)
            return None
        records, shown, missing = [], [], []
        for name in names:
            record = next(
                (r for r in (self._wb.weights.get(i) for i in self._ids.get(name, [])) if r and r.get("ok")), None
            )
            if record is None:
                missing.append(name)
            else:
                records.append(record)
                shown.append(name)
        figure = block_norms_grid(records, shown) if records else None
        show_figure(self.norms_figure, figure)
        self.norms_status.value = (
            f"Not analysed yet (Analyse weights in the Library or the Weights tab): {html.escape(', '.join(missing))}"
            if missing
            else ""
        )
        return figure

    @guarded
    def _on_norms(self, _button: Any) -> None:
        self.block_norms()

    def notify_error(self, message: str) -> None:
        self._say(html.escape(message), error=True)

    @guarded
    def _on_run(self, _button: Any) -> None:
        self.run()

    @guarded
    def _build(
        self, loras: list, weights: list, seeds: list, base: GenerationRequest, cols: str, choice: BackendChoice
    ) -> None:
        from workbench.generate import compare

        try:
            result = compare(
                self._wb,
                loras,
                weights,
                seeds,
                base=base,
                cols=cols,
                backend=choice.kind,
                backend_options=choice.options,
                progress=False,
            )
        except RuntimeError as exc:  # a cell failed: the reason is the job's error, safe to show escaped
            self._say(html.escape(str(exc)[:500]), error=True)
            return
        buf = io.BytesIO()
        result.image.save(buf, format="PNG")
        self.result = result
        self.image.value = buf.getvalue()
        self.image.layout.display = None
        self._say(f"{len(result.cells)} images · saved as <code>{html.escape(result.path.name)}</code>")

    def _say(self, text_html: str, error: bool = False) -> None:
        color = "var(--jp-error-color1, #b00020)" if error else "inherit"
        self.status.value = f'<span style="color:{color}">{text_html}</span>'
