"""A LoRA's preview chosen by a person: a history image or an upload, kept in the workbench home.

The image is copied to ``<home>/previews/`` (the library folder may be read-only or shared, and
the file another tool put beside the LoRA is never overwritten) and its path becomes the user
field ``preview_override``, so the choice survives rescans and is undone like any other edit.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from workbench.catalog._catalog import Catalog, CatalogError
from workbench.files import video_poster

MAX_PREVIEW_BYTES = 64 * 1024 * 1024
_IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif"}


def _kind(data: bytes) -> str:
    """The file suffix for image or video bytes; CatalogError when they are neither."""
    if data[4:8] == b"ftyp":
        return ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            image.verify()
    except Exception:  # PIL raises many types for hostile input
        raise CatalogError("that file is not an image Pillow can read (PNG, JPEG, WEBP or GIF)") from None
    if fmt not in _IMAGE_FORMATS:
        raise CatalogError(f"{fmt} images are not accepted as previews (PNG, JPEG, WEBP or GIF)")
    return _IMAGE_FORMATS[fmt]


def set_preview(catalog: Catalog, home: Path, lora_id: int, image: bytes | str | os.PathLike[str]) -> Path:
    """Copy ``image`` (bytes or a file) into the home and make it LoRA ``lora_id``'s preview (undoable)."""
    if isinstance(image, (str, os.PathLike)):
        source = Path(image)
        if not source.is_file():
            raise CatalogError(f"{source} is not a file")
        if source.stat().st_size > MAX_PREVIEW_BYTES:
            raise CatalogError(f"a preview may be at most {MAX_PREVIEW_BYTES // 2**20} MiB")
        data = source.read_bytes()
    else:
        data = bytes(image)
    if not data:
        raise CatalogError("the preview file is empty")
    if len(data) > MAX_PREVIEW_BYTES:
        raise CatalogError(f"a preview may be at most {MAX_PREVIEW_BYTES // 2**20} MiB")
    suffix = _kind(data)
    lora_id = int(lora_id)
    if not len(catalog.query(ids=[lora_id])):
        raise CatalogError(f"LoRA {lora_id} is not in the catalog")
    folder = home / "previews"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{lora_id}-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if suffix in (".mp4", ".webm"):
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        ok = video_poster(tmp) is not None
        if not ok:
            tmp.unlink(missing_ok=True)
            raise CatalogError("that video has no frame that can be decoded")
        os.replace(tmp, target)
    else:
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    catalog.update(lora_id, preview_override=str(target))
    return target
