"""Recipes from images: A1111 infotext and ComfyUI graphs in PNGs, LoRAs resolved by hash, missing ones listed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import workbench
from workbench.cli import main
from workbench.generate import RecipeError, build_infotext, format_lora_hashes, png_with_infotext


def _png(chunks: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.fixture
def wb(home: Path, tmp_path: Path):
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "ink_style_v2.safetensors", seed=1)  # renamed since the image was made
    write_kohya_lora(lib / "sdxl_lightning_4step_lora.safetensors", base="SDXL", seed=2)
    bench = workbench.open(home)
    bench.scan(lib, progress=False)
    bench.hash(progress=False)
    return bench


def test_a1111_png_resolves_loras_by_hash_and_lists_missing(wb, tmp_path: Path) -> None:
    tensor_hash = wb.catalog.query(text="ink_style_v2").iloc[0]["tensor_hash"]
    infotext = build_infotext(
        "a lighthouse at dusk, <lora:ink_style:0.7>, <lora:gone_lora:1.2>",
        "blurry",
        {
            "Steps": 24,
            "Sampler": "DPM++ 2M",
            "CFG scale": 6.5,
            "Seed": 1234,
            "Size": "512x768",
            "Lora hashes": format_lora_hashes({"ink_style": tensor_hash[:12], "gone_lora": "0123456789ab"}),
        },
    )
    path = tmp_path / "from_a1111.png"
    path.write_bytes(png_with_infotext(Image.new("RGB", (8, 8)), infotext))
    found = wb.recipes.import_image(path)
    assert found.source == "a1111"
    assert [(r["name"], r["catalog_name"], r["by"]) for r in found.resolved] == [("ink_style", "ink_style_v2", "hash")]
    assert found.missing == [{"name": "gone_lora", "hash": "0123456789ab", "weight": 1.2}]
    saved = wb.recipes.get("from_a1111")
    assert [(s.name, s.unet) for s in saved.loras] == [("ink_style_v2", 0.7)]
    assert saved.params["prompt"] == "a lighthouse at dusk"
    assert saved.params["negative_prompt"] == "blurry"
    assert (saved.params["steps"], saved.params["cfg_scale"], saved.params["seed"]) == (24, 6.5, 1234)
    assert (saved.params["width"], saved.params["height"], saved.params["sampler"]) == (512, 768, "DPM++ 2M")
    assert "gone_lora" in saved.description and "MISSING gone_lora" in found.summary()


def test_comfyui_png_with_a_real_api_graph(wb, shared_data: Path) -> None:
    graph = (shared_data / "api" / "comfyui" / "sdxl_lighting_4steps_api_workflow.json").read_text()
    found = wb.recipes.import_image(_png({"prompt": graph, "workflow": "{}"}), name="lightning")
    assert found.source == "comfyui" and found.missing == []
    assert [(r["catalog_name"], r["by"], r["weight"]) for r in found.resolved] == [
        ("sdxl_lightning_4step_lora", "name", 1.0)
    ]
    params = wb.recipes.get("lightning").params
    assert params["prompt"] == json.loads(graph)["6"]["inputs"]["text"]
    assert (params["steps"], params["cfg_scale"], params["sampler"]) == (4, 1.0, "euler")
    assert (params["width"], params["height"]) == (1024, 1024)
    assert "seed" not in params  # ComfyUI's 64-bit seed is outside what a recipe can replay; dropped, not wrapped


def test_comfyui_workflow_only_lists_loras(wb) -> None:
    workflow = {"nodes": [{"type": "LoraLoader", "widgets_values": ["styles\\unknown.safetensors", 0.6, 0.4]}]}
    found = wb.recipes.import_image(_png({"workflow": json.dumps(workflow)}), name="wf")
    assert found.missing == [{"name": "unknown", "hash": None, "weight": 0.6}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an image at all", "not a readable image"),
        (_png({}), "carries no generation parameters"),
        (_png({"prompt": "{not json"}), "not valid JSON"),
    ],
)
def test_bad_images_get_a_clear_error_and_save_nothing(wb, data: bytes, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        wb.recipes.import_image(data, name="bad")
    assert wb.recipes.names() == []


def test_cli_import_recipe(wb, tmp_path: Path, capsys) -> None:
    path = tmp_path / "img.png"
    path.write_bytes(png_with_infotext(Image.new("RGB", (8, 8)), "x <lora:nope:1>\nSteps: 5, Seed: 1, Size: 64x64"))
    assert main(["import-recipe", str(path), "--home", str(wb.home), "--name", "mine"]) == 0
    out = capsys.readouterr().out
    assert "MISSING nope" in out and "mine" in out
    assert main(["import-recipe", str(tmp_path / "absent.png"), "--home", str(wb.home)]) == 2
    assert "is not a file" in capsys.readouterr().err
