"""Video previews get a poster frame (PyAV) and play in the detail panel; previews can be replaced."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from lora_factory import write_kohya_lora
from PIL import Image

import workbench
from workbench.catalog import CatalogError
from workbench.files import ThumbnailCache, video_poster
from workbench.views.detail import DetailWidget


def write_video(path: Path, codec: str = "libx264", frames: int = 6, color=(250, 20, 20)) -> Path:
    """A tiny real video (solid colour frames) encoded with FFmpeg through PyAV."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            array = np.zeros((48, 64, 3), dtype=np.uint8)
            array[:] = color
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".webm", "libvpx")])
def test_video_preview_gets_a_poster_frame(home: Path, tmp_path: Path, suffix: str, codec: str) -> None:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "clip_lora.safetensors")
    write_video(lib / f"clip_lora.preview{suffix}" if suffix == ".mp4" else lib / f"clip_lora{suffix}", codec)
    poster = video_poster(next(lib.glob("clip_lora*" + suffix)))
    with Image.open(io.BytesIO(poster)) as image:
        assert image.size == (64, 48)
        red, green, _ = image.convert("RGB").getpixel((32, 24))
        assert red > 200 and green < 80
    wb = workbench.open(home)
    wb.scan(lib, progress=False)
    row = wb.catalog.query().iloc[0]
    assert row["preview_path"].endswith(suffix)
    thumb = ThumbnailCache(home, [lib]).get(row["preview_path"])
    assert thumb is not None and thumb[:4] == b"RIFF"

    detail = DetailWidget(wb, int(row["id"]))
    assert detail.video[4:8] == b"ftyp" or detail.video[:4] == b"\x1a\x45\xdf\xa3"
    assert detail.video_type == ("video/mp4" if suffix == ".mp4" else "video/webm")
    assert detail.preview[:4] == b"RIFF"  # the poster shown before the video plays


def test_broken_video_gives_no_poster(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    assert video_poster(bad) is None


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_replaces_the_preview_without_touching_the_library(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "up.safetensors")
    (lib / "up.png").write_bytes(_png())
    wb = workbench.open(home)
    wb.scan(lib, progress=False)
    lora_id = int(wb.catalog.query().iloc[0]["id"])
    detail = DetailWidget(wb, lora_id)
    before = detail.preview
    detail.handle_message({"action": "set_preview", "id": lora_id}, [write_video(tmp_path / "v.mp4").read_bytes()])
    row = wb.catalog.query().iloc[0]
    assert row["preview_path"].startswith(str(home / "previews")) and detail.video
    assert detail.preview != before and detail.notice["text"] == "Preview replaced."
    assert (lib / "up.png").read_bytes() == _png()  # the other tool's preview is untouched
    wb.scan(lib, progress=False)  # survives a rescan
    assert wb.catalog.query().iloc[0]["preview_path"].startswith(str(home / "previews"))
    wb.catalog.undo()
    assert wb.catalog.query().iloc[0]["preview_path"] == str(lib / "up.png")

    detail.handle_message({"action": "set_preview", "id": lora_id}, [b"<svg onload=alert(1)>"])
    assert detail.notice["level"] == "error" and "not an image" in detail.notice["text"]
    detail.handle_message({"action": "set_preview", "id": lora_id + 99}, [_png()])  # not the open LoRA: dropped
    with pytest.raises(CatalogError, match="not in the catalog"):
        wb.set_preview(lora_id + 99, _png())
    with pytest.raises(CatalogError, match="no history image"):
        wb.set_preview(lora_id, result_id="abc")
    assert json.dumps(detail.record)  # still a plain record
