"""Civitai example images of one LoRA with their prompts, offline, blurred above a chosen NSFW level.

A plain ipywidgets HTML view over `wb.civitai.examples(id)`: every string is escaped, images are
inlined as cached WEBP thumbnails of files the workbench may serve (its home), nothing is fetched from
the network. The library view shows it under the detail panel.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from workbench.files import ThumbnailCache

#: Civitai's NSFW levels are a bitmask: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX. Above this, images are blurred.
DEFAULT_MAX_NSFW = 2
THUMB_SIZE = 256


def examples_html(wb: Any, lora_id: int, *, max_nsfw: int = DEFAULT_MAX_NSFW) -> str:
    """The example gallery as escaped HTML (images inlined as data URIs)."""
    frame = wb.civitai.examples(int(lora_id))
    if frame.empty:
        return "<div class='wb-examples'><i>No Civitai example images (run a Civitai fetch).</i></div>"
    cells = []
    thumbs = ThumbnailCache(wb.home)
    for row in frame.to_dict("records"):
        path = row.get("path")
        if not isinstance(path, str) or not wb.is_servable(path):
            continue
        image = thumbs.get(path, THUMB_SIZE)
        if image is None:
            continue  # not an image we can read (a video, a damaged file)
        data = base64.b64encode(image).decode()
        mime = "image/webp"
        level = row.get("nsfw_level")
        blurred = isinstance(level, (int, float)) and level == level and int(level) > max_nsfw
        style = "filter: blur(16px);" if blurred else ""
        params = ", ".join(
            f"{label}: {html.escape(str(row[key]))}"
            for key, label in (("seed", "Seed"), ("sampler", "Sampler"), ("steps", "Steps"), ("cfg_scale", "CFG"))
            if row.get(key) is not None and row.get(key) == row.get(key)
        )
        prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
        cells.append(
            "<figure class='wb-example' style='display:inline-block;width:200px;margin:4px;vertical-align:top'>"
            f"<img src='data:{mime};base64,{data}' style='width:200px;{style}' "
            f"title='{'blurred: NSFW level ' + str(int(level)) if blurred else ''}'>"
            f"<figcaption style='font-size:11px'>{html.escape(prompt[:400])}<br><small>{params}</small></figcaption>"
            "</figure>"
        )
    return "<div class='wb-examples'>" + "".join(cells) + "</div>"


def _widget_base() -> Any:
    import ipywidgets

    return ipywidgets.HTML


class ExamplesView(_widget_base()):  # type: ignore[misc]
    """The example gallery of the LoRA last given to `load` (ipywidgets.HTML)."""

    def __init__(self, wb: Any, *, max_nsfw: int = DEFAULT_MAX_NSFW, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wb = wb
        self.max_nsfw = max_nsfw
        self.lora_id: int | None = None
        self.add_class("wb-examples-view")

    def load(self, lora_id: int | None) -> None:
        self.lora_id = None if lora_id is None else int(lora_id)
        self.value = "" if self.lora_id is None else examples_html(self._wb, self.lora_id, max_nsfw=self.max_nsfw)


def examples_view(wb: Any, lora_id: int, *, max_nsfw: int = DEFAULT_MAX_NSFW) -> ExamplesView:
    """An example gallery widget for one LoRA (embed it in any layout)."""
    view = ExamplesView(wb, max_nsfw=max_nsfw)
    view.load(lora_id)
    return view
