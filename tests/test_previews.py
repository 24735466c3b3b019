"""Preview files beside a LoRA and images embedded in its header."""

from __future__ import annotations

import base64
import io

import orjson
import pytest
from malformed_corpus import kohya_sd15_entries, write_safetensors
from PIL import Image

from workbench.files import (
    PREVIEW_SUFFIXES,
    decode_image_payload,
    extract_embedded_preview,
    find_preview_file,
    inspect_lora,
)


def _png(color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _lora(tmp_path, stem="p", metadata=None):
    return write_safetensors(tmp_path / f"{stem}.safetensors", kohya_sd15_entries(2, text_encoder=False), metadata)


def test_first_match_wins_in_documented_order(tmp_path):
    lora = _lora(tmp_path)
    for suffix in reversed(PREVIEW_SUFFIXES):
        (tmp_path / f"p{suffix}").write_bytes(b"x")
        assert find_preview_file(lora) == tmp_path / f"p{suffix}"
    assert PREVIEW_SUFFIXES[0] == ".preview.png" and PREVIEW_SUFFIXES[-1] == ".thumb.png"


def test_case_insensitive_and_real_name_returned(tmp_path):
    lora = _lora(tmp_path, "MyLora")
    (tmp_path / "mylora.Preview.PNG").write_bytes(b"x")
    row = inspect_lora(lora)
    assert row["preview_path"] == str(tmp_path / "mylora.Preview.PNG")
    assert row["preview_embedded"] is False


def test_other_stems_do_not_match(tmp_path):
    lora = _lora(tmp_path, "a")
    (tmp_path / "ab.png").write_bytes(b"x")
    (tmp_path / "a.safetensors.png").write_bytes(b"x")
    assert find_preview_file(lora) is None


def test_embedded_cover_image(tmp_path):
    png = _png()
    metadata = {"ssmd_cover_images": orjson.dumps([base64.b64encode(png).decode()]).decode()}
    lora = _lora(tmp_path, "cov", metadata)
    row = inspect_lora(lora)
    assert row["preview_path"] is None and row["preview_embedded"] is True
    assert "embedded image" in row["metadata"]["ssmd_cover_images"]  # payload not copied into the row
    assert extract_embedded_preview(lora) == png
    assert Image.open(io.BytesIO(extract_embedded_preview(lora))).size == (4, 4)


def test_modelspec_thumbnail_data_uri(tmp_path):
    png = _png((0, 0, 255))
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    lora = _lora(tmp_path, "thumb", {"modelspec.thumbnail": uri})
    row = inspect_lora(lora)
    assert row["preview_embedded"] is True
    assert extract_embedded_preview(lora) == png


def test_file_preview_beats_embedded(tmp_path):
    png = _png()
    lora = _lora(tmp_path, "both", {"ssmd_cover_images": orjson.dumps([base64.b64encode(png).decode()]).decode()})
    (tmp_path / "both.jpg").write_bytes(b"x")
    row = inspect_lora(lora)
    assert row["preview_path"].endswith("both.jpg") and row["preview_embedded"] is False


@pytest.mark.parametrize(
    "payload",
    [
        "not base64 at all!!",
        base64.b64encode(b"plain text, not an image").decode(),
        "data:image/png," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(),  # no ;base64 marker
        "",
        None,
        123,
    ],
)
def test_invalid_payloads_are_rejected(payload):
    assert decode_image_payload(payload) is None


def test_invalid_embedded_image_is_not_claimed(tmp_path):
    lora = _lora(tmp_path, "bad", {"ssmd_cover_images": '["@@@not-base64@@@"]', "modelspec.thumbnail": "nope"})
    row = inspect_lora(lora)
    assert row["preview_embedded"] is False and row["error"] is None
    assert extract_embedded_preview(lora) is None


def test_extract_from_broken_file_is_none(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 3)
    assert extract_embedded_preview(path) is None
