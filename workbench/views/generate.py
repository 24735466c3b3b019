"""The Generate tab: a form that builds a request and submits it to ``wb.queue``, plus recipes.

The form holds no generation logic: trigger words come from ``wb.recipes``, ``<lora:…>`` tags
typed into the prompt are parsed by ``workbench.generate._prompt_syntax``, jobs go to ``wb.queue``. The
backends offered are the configured ones (``workbench.generate.backends.configured_backends``); the tiny
test pipeline is always labelled "random weights".
"""

from __future__ import annotations

import html
import logging
from typing import Any

import ipywidgets as w

from workbench.generate import BackendChoice, GenerationRequest, LoraSpec, configured_backends, loras_for_backend
from workbench.views._feedback import guarded

log = logging.getLogger("workbench.views")

SIZES = [64, 128, 256, 512, 768, 1024]
SAMPLERS = ["Euler", "Euler a", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "Heun", "LMS", "PNDM"]
MAX_NAMES = 2000
MAX_PROMPT = 10_000


class _StackRow(w.HBox):
    """One LoRA of the stack: name, U-Net and text-encoder weight sliders, remove button."""

    def __init__(self, name: str, unet: float, te: float | None, on_remove: Any) -> None:
        self.lora_name = name
        self.label = w.HTML(f"<code>{html.escape(name)}</code>", layout=w.Layout(width="220px"))
        self.unet = w.FloatSlider(
            value=unet, min=-2.0, max=2.0, step=0.05, description="unet", layout=w.Layout(width="260px")
        )
        self.te = w.FloatSlider(
            value=unet if te is None else te,
            min=-2.0,
            max=2.0,
            step=0.05,
            description="te",
            layout=w.Layout(width="260px"),
        )
        self.remove = w.Button(description="✕", tooltip="remove from the stack", layout=w.Layout(width="36px"))
        self.remove.on_click(lambda _b: on_remove(self))
        super().__init__([self.label, self.unet, self.te, self.remove])

    def spec(self) -> LoraSpec:
        te = None if self.te.value == self.unet.value else float(self.te.value)
        return LoraSpec(self.lora_name, float(self.unet.value), te)


class GenerateView(w.VBox):
    """Prompt, LoRA stack, parameters, backend; Generate submits to ``wb.queue``."""

    def __init__(self, wb: Any, backends: list[BackendChoice] | None = None, **kwargs: Any) -> None:
        self._wb = wb
        self.backends = backends or configured_backends(wb.home)
        self.last_job_id: str | None = None
        self._lora_labels: dict[str, tuple[str, str | None]] = {}
        self._reveal_callbacks: list[Any] = []
        self.backend_note = w.HTML()
        self.prompt = w.Textarea(
            placeholder="prompt (you may type <lora:name:weight> tags)", layout=w.Layout(width="100%", height="70px")
        )
        self.negative = w.Textarea(placeholder="negative prompt", layout=w.Layout(width="100%", height="40px"))
        self.lora_name = w.Combobox(placeholder="LoRA name", ensure_option=True, layout=w.Layout(width="300px"))
        self.add_button = w.Button(description="Add LoRA", icon="plus")
        self.stack_box = w.VBox([])
        self.triggers = w.Dropdown(
            options=[
                ("trigger words first", "prepend"),
                ("trigger words last", "append"),
                ("no trigger words", "none"),
            ],
            value="prepend",
            description="triggers",
        )
        self.seed = w.IntText(value=-1, description="seed", layout=w.Layout(width="200px"))
        self.steps = w.IntSlider(value=20, min=1, max=150, description="steps")
        self.cfg = w.FloatSlider(value=7.0, min=0.0, max=30.0, step=0.5, description="CFG")
        self.width = w.Dropdown(options=SIZES, value=512, description="width", layout=w.Layout(width="170px"))
        self.height = w.Dropdown(options=SIZES, value=512, description="height", layout=w.Layout(width="170px"))
        self.sampler = w.Dropdown(options=SAMPLERS, value="Euler", description="sampler")
        self.backend = w.Dropdown(
            options=[(b.label, i) for i, b in enumerate(self.backends)],
            value=0,
            description="backend",
            layout=w.Layout(width="520px"),
        )
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.recipe_name = w.Text(placeholder="recipe name", layout=w.Layout(width="220px"))
        self.save_recipe_button = w.Button(description="Save as recipe", icon="save")
        self.recipe_pick = w.Dropdown(options=[], description="recipe", layout=w.Layout(width="300px"))
        self.load_recipe_button = w.Button(description="Load recipe", icon="folder-open")
        self.message = w.HTML()
        if self.backends[0].random_weights:  # the tiny pipeline: start with settings that finish in about a second
            self.steps.value, self.width.value, self.height.value, self.sampler.value = 8, 64, 64, "DDIM"
        self.add_button.on_click(self._on_add)
        self.generate_button.on_click(self._on_generate)
        self.save_recipe_button.on_click(self._on_save_recipe)
        self.load_recipe_button.on_click(self._on_load_recipe)
        self.backend.observe(self._on_backend, names=["value"])
        super().__init__(
            [
                self.backend_note,
                self.backend,
                self.prompt,
                self.negative,
                w.HBox([self.lora_name, self.add_button, self.triggers]),
                self.stack_box,
                w.HBox([self.seed, self.steps, self.cfg]),
                w.HBox([self.width, self.height, self.sampler]),
                w.HBox([self.generate_button]),
                w.HBox([self.recipe_name, self.save_recipe_button, self.recipe_pick, self.load_recipe_button]),
                self.message,
            ],
            **kwargs,
        )
        self.add_class("wb-generate")
        self._show_backend()
        self.refresh()

    # -- public -----------------------------------------------------------------------------
    @guarded
    def refresh(self) -> None:
        """Re-read the LoRA names and saved recipes offered by the form."""
        self._refresh_names()
        self.recipe_pick.options = self._wb.recipes.names()

    def _refresh_names(self) -> None:
        """The LoRAs the selected backend can run first, then the others marked with why they cannot."""
        frame = loras_for_backend(self._wb.db, self.choice, MAX_NAMES)
        labels: dict[str, tuple[str, str | None]] = {}
        for row in frame.to_dict("records"):
            reason = row["reason"] if isinstance(row["reason"], str) else None
            label = f"✕ {row['name']} — {reason}" if reason else row["name"]
            labels.setdefault(label, (row["name"], reason))
        self._lora_labels = labels
        self.lora_name.options = list(labels)

    @property
    def choice(self) -> BackendChoice:
        return self.backends[self.backend.value]

    def stack(self) -> list[LoraSpec]:
        return [row.spec() for row in self.stack_box.children]

    def add_lora(self, name: str, unet: float | None = None, te: float | None = None) -> None:
        """Add (or replace) a LoRA; without ``unet`` its catalog preferred weight (else 1.0)."""
        spec = self._wb.recipes.spec(name, unet, te)
        rows = [r for r in self.stack_box.children if r.lora_name != name]
        self.stack_box.children = [*rows, _StackRow(spec.name, spec.unet, spec.te, self._remove_row)]
        negative = self._wb.recipes.negative_texts([name]).get(name)
        if negative and negative not in self.negative.value:  # the LoRA's own negative prompt (A1111 .json)
            current = self.negative.value.strip().rstrip(",")
            self.negative.value = f"{current}, {negative}" if current else negative
            self._say(f"Added {html.escape(name)} and its negative prompt.")

    def request(self) -> GenerationRequest:
        """The request the form describes (tags in the prompt join the stack; trigger words inserted)."""
        from workbench.generate import Recipe, parse_prompt

        text, tagged = parse_prompt(self.prompt.value[:MAX_PROMPT])
        stack = {s.name: s for s in self.stack()}
        for spec in tagged:
            stack[spec.name] = spec
        params = {
            "negative_prompt": self.negative.value[:MAX_PROMPT],
            "seed": int(self.seed.value),
            "steps": int(self.steps.value),
            "cfg_scale": float(self.cfg.value),
            "width": int(self.width.value),
            "height": int(self.height.value),
            "sampler": self.sampler.value,
            "triggers": self.triggers.value,
        }
        return self._wb.recipes.request(Recipe("form", list(stack.values()), params), prompt=text)

    def fill(self, request: GenerationRequest) -> None:
        """Put a request (from history's reuse or a recipe) into the form."""
        self.prompt.value = request.prompt
        self.negative.value = request.negative_prompt or ""
        self.seed.value = int(request.seed)
        self.steps.value = max(self.steps.min, min(self.steps.max, int(request.steps)))
        self.cfg.value = float(request.cfg_scale)
        for dropdown, value in ((self.width, int(request.width)), (self.height, int(request.height))):
            if value not in dropdown.options:
                dropdown.options = sorted({*dropdown.options, value})
            dropdown.value = value
        if request.sampler in self.sampler.options:
            self.sampler.value = request.sampler
        self.stack_box.children = [_StackRow(s.name, s.unet, s.te, self._remove_row) for s in request.loras]

    def on_reveal(self, callback: Any) -> None:
        """Call ``callback()`` when this form wants to be shown (the dashboard selects its tab)."""
        self._reveal_callbacks.append(callback)

    def reveal(self) -> None:
        for callback in list(self._reveal_callbacks):
            callback()

    def submit(self) -> str:
        """Submit the form to the queue; returns the job id."""
        choice = self.choice
        job_id = self._wb.queue.submit(self.request(), backend=choice.kind, backend_options=choice.options)
        self.last_job_id = job_id
        self._say(f"Queued job <code>{job_id[:8]}</code> on {html.escape(choice.label)}. See the Queue tab.")
        return job_id

    def notify_error(self, message: str) -> None:
        self._say(html.escape(message), error=True)

    # -- callbacks --------------------------------------------------------------------------
    @guarded
    def _on_add(self, _button: Any) -> None:
        label = (self.lora_name.value or "").strip()
        if not label:
            self._say("Pick a LoRA name first.")
            return
        name, reason = self._lora_labels.get(label, (label, None))
        if reason:
            self._say(f"{html.escape(name)} cannot run on this backend: {html.escape(reason)}.", error=True)
            return
        self.add_lora(name)
        self.lora_name.value = ""

    def _remove_row(self, row: _StackRow) -> None:
        self.stack_box.children = [r for r in self.stack_box.children if r is not row]
        row.close()

    @guarded
    def _on_generate(self, _button: Any) -> None:
        self.submit()

    @guarded
    def _on_save_recipe(self, _button: Any) -> None:
        from workbench.generate import RecipeError

        name = self.recipe_name.value.strip()
        if not name:
            self._say("Give the recipe a name first.")
            return
        request = self._form_request_without_triggers()
        try:
            recipe = self._wb.recipes.from_request(
                name, request, backend=self.choice.kind, triggers=self.triggers.value
            )
            self._wb.recipes.save(recipe)
        except RecipeError as exc:
            self._say(html.escape(str(exc)), error=True)
            return
        self.recipe_pick.options = self._wb.recipes.names()
        self._say(f"Saved recipe <b>{html.escape(name)}</b>.")

    @guarded
    def _on_load_recipe(self, _button: Any) -> None:
        name = self.recipe_pick.value
        if not name:
            self._say("No recipe selected.")
            return
        recipe = self._wb.recipes.get(name)
        self.fill(recipe.request(trigger_words={}))
        if "triggers" in recipe.params:
            self.triggers.value = recipe.params["triggers"]
        self.recipe_name.value = recipe.name
        self._say(f"Loaded recipe <b>{html.escape(recipe.name)}</b>.")

    @guarded
    def _on_backend(self, _change: Any) -> None:
        self._show_backend()
        self._refresh_names()

    # -- helpers ----------------------------------------------------------------------------
    def _form_request_without_triggers(self) -> GenerationRequest:
        from workbench.generate import parse_prompt

        text, tagged = parse_prompt(self.prompt.value[:MAX_PROMPT])
        stack = {s.name: s for s in self.stack()}
        stack.update({s.name: s for s in tagged})
        return GenerationRequest(
            prompt=text,
            negative_prompt=self.negative.value[:MAX_PROMPT],
            loras=list(stack.values()),
            seed=int(self.seed.value),
            steps=int(self.steps.value),
            cfg_scale=float(self.cfg.value),
            width=int(self.width.value),
            height=int(self.height.value),
            sampler=self.sampler.value,
        )

    def _show_backend(self) -> None:
        choice = self.choice
        if choice.random_weights:
            self.backend_note.value = (
                '<div class="wb-random-weights" style="background:#fff3cd;color:#3b2f00;padding:4px 8px">'
                "<b>Random weights:</b> the tiny test pipeline makes noise-like images that carry "
                "no meaning. Configure a real model with <code>WORKBENCH_BACKEND</code>.</div>"
            )
        else:
            self.backend_note.value = f"<div>Backend: {html.escape(choice.label)}</div>"

    def _say(self, text_html: str, error: bool = False) -> None:
        color = "var(--jp-error-color1, #b00020)" if error else "inherit"
        self.message.value = f'<span style="color:{color}">{text_html}</span>'


def generation_tabs(wb: Any) -> list[tuple[str, w.Widget]]:
    """The dashboard's Generate, Queue, History and Compare tabs, wired together (reuse fills the form)."""
    from workbench.views.compare import CompareView
    from workbench.views.history import HistoryView
    from workbench.views.queue import QueueView

    backends = configured_backends(wb.home)
    generate = GenerateView(wb, backends)
    queue = QueueView(wb)
    history = HistoryView(wb)
    compare = CompareView(wb, backends)

    def reuse(request: Any) -> None:
        generate.fill(request)
        generate._say("Loaded the parameters of a History image; press Generate to make it again.")
        generate.reveal()

    history.on_reuse(reuse)
    generate.generate_button.on_click(lambda _button: queue.refresh())  # after submit: the Queue tab shows the job
    queue.on_finished(lambda _job: history.refresh())
    return [("Generate", generate), ("Queue", queue), ("History", history), ("Compare", compare)]
