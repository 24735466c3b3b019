"""Preview images of a LoRA: a file beside it, or an image embedded in its header metadata.

File names are matched case-insensitively, first match wins, in the order of :data:`PREVIEW_SUFFIXES`
(Civitai Helper / CB+ ``.preview.*`` first, then A1111's plain ``<base>.<ext>``, then SD.Next's
``.thumb.*``). Without a file, the first ``ssmd_cover_images`` entry (kohya additional-networks)
or ``modelspec.thumbnail`` (SAI model spec, a data URI) is used if it decodes to an image.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from workbench.files._header import HeaderError, parse_header, read_raw_header
from workbench.files._paths import is_inside, printable
from workbench.files._sidecars import sibling_names

PREVIEW_SUFFIXES = (
    ".preview.png",
    ".preview.jpg",
    ".preview.jpeg",
    ".preview.webp",
    ".preview.gif",
    ".preview.mp4",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".mp4",
    ".webm",
    ".thumb.jpg",
    ".thumb.png",
)

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def find_preview_file(path: Path, siblings: Mapping[str, str] | None = None) -> Path | None:
    """The preview file beside ``path`` (case-insensitive, first match wins), or None."""
    path = Path(path)
    if siblings is None:
        siblings = sibling_names(path.parent)
    stem = path.stem.lower()
    for suffix in PREVIEW_SUFFIXES:
        real = siblings.get(stem + suffix)
        if real is not None:
            return path.with_name(real)
    return None


def preview_problem(preview: Path, roots: tuple[str, ...] | None = None) -> str | None:
    """Why the preview file ``preview`` may not be used (a link outside ``roots``, not a regular file), or None.

    ``roots`` default to the preview's own folder. Only ``stat`` is called: nothing is opened here.
    """
    resolved = os.path.realpath(preview)
    if roots is None:
        roots = (os.path.realpath(os.path.dirname(os.path.abspath(preview))),)
    name = printable(Path(preview).name)[:200]
    if not is_inside(resolved, roots):
        return f"preview {name}: links outside the library root (to {printable(resolved)[:200]}); not used"
    try:
        mode = os.stat(resolved).st_mode
    except OSError as err:
        return f"preview {name}: cannot read ({err.strerror or err}); not used"
    if not stat.S_ISREG(mode):
        return f"preview {name}: not a regular file; not used"
    return None


def _looks_like_image(data: bytes) -> bool:
    if data.startswith(_IMAGE_MAGIC):
        return True
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def decode_image_payload(value: Any) -> bytes | None:
    """Bytes of a base64 image given bare or as a ``data:image/…;base64,`` URI; None if invalid."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _looks_like_image(data) else None


def embedded_preview(metadata: Mapping[str, Any]) -> bytes | None:
    """The embedded preview image from raw header metadata (values still JSON strings), or None."""
    covers = metadata.get("ssmd_cover_images")
    if isinstance(covers, str) and covers.strip().startswith("["):
        try:
            covers = orjson.loads(covers)
        except orjson.JSONDecodeError:
            covers = None
    if isinstance(covers, list) and covers:
        data = decode_image_payload(covers[0])
        if data is not None:
            return data
    return decode_image_payload(metadata.get("modelspec.thumbnail"))


def extract_embedded_preview(path: Path) -> bytes | None:
    """Re-read the header of ``path`` and return its embedded preview bytes (for the thumbnail cache)."""
    try:
        head = read_raw_header(path)
        metadata, _ = parse_header(head.raw)
    except HeaderError:
        return None
    return embedded_preview(metadata)


def preview_source(row: Mapping[str, Any]) -> str | None:
    """The file that shows a catalogued LoRA: its preview image, else the LoRA file itself when its header
    embeds a cover (``row``: a catalog row with ``preview_path``, ``preview_embedded`` and ``path``)."""
    preview = row.get("preview_path")
    if isinstance(preview, str) and preview:
        return preview
    embedded = row.get("preview_embedded")
    path = row.get("path")
    if isinstance(path, str) and path and embedded is not None and embedded == embedded and bool(embedded):
        return path
    return None
