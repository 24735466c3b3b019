"""Thumbnail cache: small WEBP images of LoRA previews under ``<home>/thumbnails/``.

Thumbnails are built lazily, the first time a view asks for one, and keyed by the
preview's resolved path, the requested size and the preview's mtime and size, so an
edited preview gets a fresh thumbnail and a stale one is simply never read again.

Only files under the allowed roots (library roots and the workbench home) are ever
read: the gallery sends thumbnail bytes to browsers, so this is the one place that
decides which files may leave the machine.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from workbench.files._paths import fs_path
from workbench.files._taxonomy import TENSOR_SUFFIXES

log = logging.getLogger(__name__)

#: Pixel edge of gallery thumbnails (the longest side).
DEFAULT_SIZE = 256
#: Largest edge a caller may ask for (detail panel previews).
MAX_SIZE = 1024
#: Preview files larger than this are not decoded (bytes).
MAX_SOURCE_BYTES = 64 * 1024 * 1024
#: Images declaring more pixels than this are refused (decompression bombs).
MAX_SOURCE_PIXELS = 64_000_000
#: Images decoded at full size (everything but JPEG, which decodes at 1/2..1/8 scale) may have at most
#: this many pixels (4096²): 16 M pixels × 4 bytes = 64 MB is the largest buffer one thumbnail may cost.
#: Civitai previews are ≤ 2048² and 4K frames 8 M pixels; larger previews get no thumbnail.
MAX_DECODE_PIXELS = 4096 * 4096

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv"}
#: Video previews larger than this get no poster frame (bytes; only the first frames are decoded).
MAX_VIDEO_BYTES = 1024 * 1024 * 1024


class ThumbnailCache:
    """Builds and reads cached thumbnails of preview images.

    Args:
        home: workbench home; thumbnails live in ``home / "thumbnails"``.
        allowed_roots: folders a preview may come from. The home is always allowed.
    """

    def __init__(self, home: os.PathLike | str, allowed_roots: Iterable[os.PathLike | str] = ()) -> None:
        self.home = Path(home)
        self.folder = self.home / "thumbnails"
        roots = [self.home, *(Path(fs_path(r)) for r in allowed_roots)]
        self.allowed_roots = [_resolve(r) for r in roots]

    def is_allowed(self, path: os.PathLike | str) -> bool:
        """True when ``path`` (as the catalog stores it) resolves, symlinks followed, inside an allowed root."""
        resolved = _resolve(Path(fs_path(path)))
        return any(resolved == root or root in resolved.parents for root in self.allowed_roots)

    def key(self, preview_path: os.PathLike | str, size: int = DEFAULT_SIZE) -> str | None:
        """Cache key of a preview at a size, or None if the preview cannot be read."""
        path = _resolve(Path(fs_path(preview_path)))
        try:
            st = path.stat()
        except OSError:
            return None
        raw = f"{path}\0{size}\0{st.st_mtime_ns}\0{st.st_size}".encode("utf-8", "surrogateescape")
        return hashlib.sha1(raw).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the thumbnail with this key is (or will be) stored."""
        return self.folder / key[:2] / f"{key}.webp"

    def get(self, preview_path: os.PathLike | str | None, size: int = DEFAULT_SIZE) -> bytes | None:
        """WEBP bytes of the preview's thumbnail, built on first use; None when there is none.

        ``preview_path`` may be an image or a ``.safetensors`` file whose metadata embeds
        a cover image (``ssmd_cover_images`` / ``modelspec.thumbnail``). Never raises for
        bad or missing files, and never blocks: a FIFO or device named like an image is skipped.
        ``preview_path`` is a file-system path or the catalog's stored form (see ``workbench.files._paths``).
        """
        if not preview_path:
            return None
        preview_path = fs_path(preview_path)
        size = max(16, min(int(size), MAX_SIZE))
        if not self.is_allowed(preview_path):
            log.warning("thumbnail refused for a path outside the library roots: %r", str(preview_path))
            return None
        key = self.key(preview_path, size)
        if key is None:
            return None
        cached = self.path_for(key)
        try:
            return cached.read_bytes()
        except OSError:
            pass
        data = _render(Path(preview_path), size)
        if data is None:
            return None
        _write_atomic(cached, data)
        return data

    def get_many(self, previews: dict[int, str | None], size: int = DEFAULT_SIZE) -> dict[int, bytes]:
        """Thumbnails for ``{lora_id: preview_path}``; ids without a usable preview are left out."""
        out: dict[int, bytes] = {}
        for lora_id, preview in previews.items():
            data = self.get(preview, size)
            if data is not None:
                out[lora_id] = data
        return out


def _resolve(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _source_bytes(path: Path) -> bytes | None:
    suffix = path.suffix.lower()
    if suffix in TENSOR_SUFFIXES:
        try:
            from workbench.files._previews import extract_embedded_preview
        except ImportError:
            return None
        try:
            return extract_embedded_preview(path)
        except Exception:  # a malformed file must not break the gallery
            log.debug("no embedded preview in %s", path, exc_info=True)
            return None
    if suffix in VIDEO_SUFFIXES:
        return video_poster(path)
    if suffix not in _IMAGE_SUFFIXES:
        return None
    return read_regular_file(path, MAX_SOURCE_BYTES)


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else None.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before any read: a FIFO named
    ``x.preview.png`` returns None at once instead of blocking the gallery forever.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def video_poster(path: Path) -> bytes | None:
    """PNG bytes of the first decodable frame of a video preview (Civitai's mp4/webm), via PyAV (FFmpeg).

    None when PyAV is not installed, the file is too large or not a video, or its frames are over the
    pixel cap. Only the first frame is decoded.
    """
    try:
        import av
    except ImportError:
        log.info("PyAV is not installed: video previews get no poster frame (pip install av)")
        return None
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_VIDEO_BYTES:
            return None  # a FIFO or device named .mp4 is never opened
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if (stream.width or 0) * (stream.height or 0) > MAX_SOURCE_PIXELS:
                return None
            frame = next(container.decode(stream), None)
            if frame is None or frame.width * frame.height > MAX_SOURCE_PIXELS:
                return None
            buffer = io.BytesIO()
            frame.to_image().save(buffer, format="PNG")
            return buffer.getvalue()
    except Exception:  # av raises many FFmpeg error types for hostile input
        log.debug("no poster frame for %s", path, exc_info=True)
    return None


def _render(path: Path, size: int) -> bytes | None:
    source = _source_bytes(path)
    if not source:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source)) as image:
            width, height = image.size
            if width * height > MAX_SOURCE_PIXELS:
                return None
            image.seek(0)
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale
            width, height = image.size
            if width * height > MAX_DECODE_PIXELS:
                log.debug("preview %s too large to decode (%dx%d)", path, width, height)
                return None
            orientation = image.getexif().get(0x0112)
            mode = "RGBA" if _has_alpha(image) else "RGB"
            frame = image if image.mode == mode else image.convert(mode)
            factor = min(width, height) // (2 * size)
            if factor >= 2:  # integer box reduction first: the full-size copy is dropped at once
                frame = frame.reduce(factor)
            frame.thumbnail((size, size), Image.Resampling.LANCZOS)
            frame = _apply_exif_orientation(frame, orientation)
            buffer = io.BytesIO()
            frame.save(buffer, format="WEBP", quality=80, method=4)
            return buffer.getvalue()
    except Exception:  # PIL raises many types for hostile input
        log.debug("cannot make a thumbnail of %s", path, exc_info=True)
        return None


def _apply_exif_orientation(frame, orientation: int | None):
    """What ``ImageOps.exif_transpose`` does, on the already reduced frame (never a full-size copy)."""
    from PIL import Image

    t = Image.Transpose
    method = {
        2: t.FLIP_LEFT_RIGHT,
        3: t.ROTATE_180,
        4: t.FLIP_TOP_BOTTOM,
        5: t.TRANSPOSE,
        6: t.ROTATE_270,
        7: t.TRANSVERSE,
        8: t.ROTATE_90,
    }.get(orientation or 0)
    return frame if method is None else frame.transpose(method)


def _has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _write_atomic(target: Path, data: bytes) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        log.debug("cannot store thumbnail %s", target, exc_info=True)
