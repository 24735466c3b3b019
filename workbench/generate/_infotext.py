"""A1111 "infotext": the parameters text A1111 writes into a PNG's ``parameters`` chunk.

Written for every image the workbench makes (so A1111, Civitai and other tools read our images'
parameters, including ``Lora hashes``) and parsed back for "reuse parameters".
"""

from __future__ import annotations

import io
import re
from typing import Any

_PARAM = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _quote(value: str) -> str:
    if "," in value or '"' in value or ":" in value or "\n" in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return value


def format_lora_hashes(hashes: dict[str, str]) -> str:
    """``name: shorthash, name2: shorthash`` as A1111 writes it (quoted when written into infotext)."""
    return ", ".join(f"{name}: {h}" for name, h in hashes.items())


def parse_lora_hashes(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        name, sep, h = part.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = h.strip()
    return out


def build_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Prompt line(s), ``Negative prompt: …``, then ``Key: value, …`` in the order given."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(str(v))}" for k, v in params.items() if v is not None and v != ""))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, Any]:
    """Inverse of :func:`build_infotext`: ``{"prompt", "negative_prompt", "params": {...}}``."""
    lines = text.strip("\n").split("\n")
    last = lines[-1] if lines else ""
    params: dict[str, Any] = {}
    if len(_PARAM.findall(last)) >= 3:
        lines = lines[:-1]
        for key, value in _PARAM.findall(last):
            value = value.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            params[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return {
        "prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
        "params": params,
    }


def png_with_infotext(image: Any, infotext: str) -> bytes:
    """Encode a PIL image as PNG with the infotext in the ``parameters`` text chunk (deterministic bytes)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_infotext(png: bytes) -> str | None:
    """The ``parameters`` chunk of PNG bytes, or None."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return img.info.get("parameters")
