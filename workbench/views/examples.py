"""Civitai example images of one LoRA with their prompts, offline, blurred above a chosen NSFW level.

A plain ipywidgets HTML view over `wb.civitai.examples(id)`: every string is escaped, images are
inlined from files the workbench may serve (its home), nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path
from typing import Any

#: Civitai's NSFW levels are a bitmask: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX. Above this, images are blurred.
DEFAULT_MAX_NSFW = 2
_MAX_INLINE_BYTES = 4 * 1024 * 1024


def examples_html(wb: Any, lora_id: int, *, max_nsfw: int = DEFAULT_MAX_NSFW) -> str:
    """The example gallery as escaped HTML (images inlined as data URIs)."""
    frame = wb.civitai.examples(int(lora_id))
    if frame.empty:
        return "<div class='wb-examples'><i>No Civitai example images (run a Civitai fetch).</i></div>"
    cells = []
    for row in frame.to_dict("records"):
        path = row.get("path")
        if not isinstance(path, str) or not wb.is_servable(path) or Path(path).stat().st_size > _MAX_INLINE_BYTES:
            continue
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if not mime.startswith("image/"):
            continue
        data = base64.b64encode(Path(path).read_bytes()).decode()
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


def examples_view(wb: Any, lora_id: int, *, max_nsfw: int = DEFAULT_MAX_NSFW) -> Any:
    """An ipywidgets.HTML with the example gallery (embed it in a detail or library layout)."""
    import ipywidgets

    return ipywidgets.HTML(examples_html(wb, lora_id, max_nsfw=max_nsfw))
