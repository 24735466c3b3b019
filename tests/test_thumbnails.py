"""Thumbnail cache: lazily built small WEBP files, keyed by path+size+mtime, never outside allowed roots."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora
from PIL import Image

from workbench.files import ThumbnailCache


def png_bytes(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "castle.png").write_bytes(png_bytes())
    return lib


def test_builds_small_webp_once_and_reads_it_back(home: Path, library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ThumbnailCache(home, [library])
    data = cache.get(library / "castle.png", 128)
    assert data is not None and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    with Image.open(io.BytesIO(data)) as image:
        assert max(image.size) == 128 and image.size == (128, 96)
    stored = list((home / "thumbnails").rglob("*.webp"))
    assert len(stored) == 1 and stored[0].read_bytes() == data

    monkeypatch.setattr("workbench.files._thumbnails._render", lambda *a: pytest.fail("cached thumbnail was rebuilt"))
    assert cache.get(library / "castle.png", 128) == data


def test_key_changes_with_size_and_mtime(home: Path, library: Path) -> None:
    cache = ThumbnailCache(home, [library])
    preview = library / "castle.png"
    first = cache.key(preview, 128)
    assert first != cache.key(preview, 256)
    preview.write_bytes(png_bytes(color=(0, 0, 255)))
    stat = preview.stat()
    os.utime(preview, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache.key(preview, 128) != first
    with Image.open(io.BytesIO(cache.get(preview, 128))) as image:
        assert image.convert("RGB").getpixel((10, 10))[2] > 200, "the edited preview is what is shown"


def test_refuses_files_outside_library_and_home(home: Path, library: Path, tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes())
    (library / "link.png").symlink_to(outside / "secret.png")
    cache = ThumbnailCache(home, [library])
    assert cache.get(outside / "secret.png") is None
    assert cache.get(library / "link.png") is None, "a symlink out of the library is followed and refused"
    assert cache.get(library / ".." / "private" / "secret.png") is None
    assert not (home / "thumbnails").exists()


def test_embedded_preview_from_safetensors_header(home: Path, library: Path) -> None:
    cover = base64.b64encode(png_bytes((300, 300), (10, 200, 10))).decode()
    lora = write_kohya_lora(library / "embedded.safetensors", metadata={"ssmd_cover_images": json.dumps([cover])})
    data = ThumbnailCache(home, [library]).get(lora, 64)
    assert data is not None
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 64)
        assert image.convert("RGB").getpixel((32, 32))[1] > 150


def test_bad_files_give_no_thumbnail(home: Path, library: Path) -> None:
    (library / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (library / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    # a PNG header that claims 60000 x 60000 pixels (decompression bomb)
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (library / "bomb.png").write_bytes(bomb)
    cache = ThumbnailCache(home, [library])
    for name in ("broken.png", "clip.mp4", "bomb.png", "absent.png"):
        assert cache.get(library / name) is None, name
    assert cache.get(None) is None
    assert write_kohya_lora(library / "plain.safetensors") and cache.get(library / "plain.safetensors") is None


def _streamed_png(width: int, height: int) -> bytes:
    """A real, fully decodable RGB PNG of ``width`` × ``height`` zeros, built without holding its pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_fifo_named_like_a_preview_never_hangs(home: Path, library: Path) -> None:
    import threading

    os.mkfifo(library / "x.preview.png")
    os.mkfifo(library / "y.safetensors")
    (library / "folder.png").mkdir()
    cache = ThumbnailCache(home, [library])
    results: dict[str, bytes | None] = {}

    def run() -> None:
        for name in ("x.preview.png", "y.safetensors", "folder.png"):
            results[name] = cache.get(library / name)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a hang detector, not a speed check: opening a FIFO for reading blocks forever
    assert not worker.is_alive(), "thumbnail code blocked on a FIFO"
    assert results == {"x.preview.png": None, "y.safetensors": None, "folder.png": None}


def test_the_probe_8000px_png_is_refused_without_decoding(home: Path, library: Path) -> None:
    (library / "huge.png").write_bytes(_streamed_png(7999, 8000))  # 64 M pixels: over the 4096² decode bound
    assert ThumbnailCache(home, [library]).get(library / "huge.png") is None


def test_large_images_are_reduced_before_conversion(home: Path, library: Path) -> None:
    """A big JPEG decodes at reduced scale, a big PNG is box-reduced; EXIF orientation still applies."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 10, 200)).save(buffer, format="PNG", exif=exif)
    (library / "wide_rotated.png").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 200, 10)).save(buffer, format="JPEG", quality=70)
    (library / "photo.jpg").write_bytes(buffer.getvalue())
    cache = ThumbnailCache(home, [library])
    with Image.open(io.BytesIO(cache.get(library / "wide_rotated.png", 256))) as image:
        assert image.size == (171, 256)  # portrait after the EXIF rotation
        assert image.convert("RGB").getpixel((80, 120))[2] > 150
    with Image.open(io.BytesIO(cache.get(library / "photo.jpg", 256))) as image:
        assert image.size == (256, 192)


def test_previews_with_undecodable_names_by_their_stored_path(home: Path, library: Path) -> None:
    from workbench.files import catalog_path

    preview = library / os.fsdecode(b"p\xff.preview.png")
    preview.write_bytes(png_bytes())
    stored = catalog_path(str(preview))
    assert stored != str(preview) and stored.encode("utf-8")
    cache = ThumbnailCache(home, [catalog_path(str(library))])
    assert cache.get(stored) is not None and cache.get(str(preview)) is not None
