"""Comparison grids on the real tiny pipeline, through the real queue and catalog."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import workbench
from tests.fake_servers import shared_tiny, tiny_request
from workbench.generate import GenerationRequest, LoraSpec, RetryPolicy, assemble_grid, compare, plan_cells


@pytest.fixture(scope="module")
def wb(tmp_path_factory):
    backend, lora_dir = shared_tiny()
    w = workbench.open(tmp_path_factory.mktemp("compare") / "home")
    w.scan([lora_dir], progress=False, workers=1)
    w.queue.set_backend("diffusers", backend)
    w.queue.retry = RetryPolicy(max_attempts=1)
    yield w
    w.queue.close()


def _cell_pixels(grid: Image.Image, cells, row: int, col: int, size: int = 64) -> np.ndarray:
    """Cut one cell back out of the grid (the layout assemble_grid documents)."""
    n_cols = int(cells["col"].max()) + 1
    n_rows = int(cells["row"].max()) + 1
    left = grid.width - n_cols * (size + 4) - 4
    top = grid.height - n_rows * (size + 4) - 4
    x, y = left + 4 + col * (size + 4), top + 4 + row * (size + 4)
    return np.asarray(grid.crop((x, y, x + size, y + size)))


def test_grid_cells_equal_individual_generations_and_weight_zero_is_base(wb):
    backend, _ = shared_tiny()
    base = tiny_request()
    result = compare(wb, ["tiny_watercolor"], weights=[0.0, 0.8], seeds=[3, 4], base=base, progress=False)
    cells = result.cells
    assert len(cells) == 4 and list(result.cols) == ["weight"] and list(result.rows) == ["seed"]
    # the image: 2 rows x 2 columns of 64 px cells plus labels and a title
    assert result.image.width >= 2 * 64 + 3 * 4 and result.image.height >= 2 * 64 + 3 * 4
    assert result.image.width < 2 * 64 + 200 and result.image.height < 2 * 64 + 80
    assert result.path.is_file() and result.path.is_relative_to(wb.home / "compare")
    meta = json.loads(Image.open(result.path).info["workbench-compare"])
    assert [c["result_id"] for c in meta["cells"]] == result.result_ids
    for cell in cells.to_dict("records"):
        request = GenerationRequest.from_dict(
            {**base.to_dict(), "seed": cell["seed"], "loras": [{"name": "tiny_watercolor", "unet": cell["weight"]}]}
        )
        alone = backend.submit(request).png
        stored = wb.history.png(cell["result_id"])
        assert stored == alone  # same seed + stack -> same bytes
        pixels = np.asarray(Image.open(io.BytesIO(alone)).convert("RGB"))
        assert (_cell_pixels(result.image, cells, cell["row"], cell["col"]) == pixels).all()
        if cell["weight"] == 0.0:
            base_png = backend.submit(
                base.with_seed(cell["seed"])
            ).png  # weight 0 == no LoRA (pixels; infotext differs)
            assert (np.asarray(Image.open(io.BytesIO(base_png)).convert("RGB")) == pixels).all()
    # the LoRA changed the image; the seeds differ
    w0, w8 = (wb.history.png(cells[(cells.seed == 3) & (cells.weight == w)]["result_id"].iloc[0]) for w in (0.0, 0.8))
    assert w0 != w8
    assert set(wb.history.list(limit=50)["id"]) >= set(result.result_ids)  # cells are ordinary history entries


def test_axes_are_configurable_and_checked():
    base = tiny_request(loras=[LoraSpec("other", 0.5)])
    cells, rows, cols = plan_cells(
        base, ["a", "b"], weights=[0.5, 1.0], seeds=[1, 2], rows="weight", cols=("lora", "seed")
    )
    assert rows == ("weight",) and cols == ("lora", "seed") and len(cells) == 8
    first = cells.iloc[0]
    assert first["col_label"] == "a · seed 1" and first["row_label"] == "w 0.5"
    assert [s.name for s in first["request"].loras] == ["other", "a"]  # the compared LoRA joins the fixed stack
    cells, rows, cols = plan_cells(base, ["a", None], weights=[1.0], prompts=["a cat", "a dog"])
    assert rows == ("lora", "prompt") and cols == ("weight",)
    assert [s.name for s in cells[cells.lora.isna()]["request"].iloc[0].loras] == ["other"]
    with pytest.raises(ValueError, match="unknown axis"):
        plan_cells(base, ["a"], cols="colour")
    with pytest.raises(ValueError, match="fixed seeds"):
        plan_cells(base, ["a"], seeds=[-1])
    with pytest.raises(ValueError, match="both rows and columns"):
        plan_cells(base, ["a"], rows="weight", cols="weight")


def test_labels_are_drawn_and_hostile_text_is_only_pixels():
    cells = [Image.new("RGB", (32, 32), (200, 0, 0)) for _ in range(4)]
    grid = assemble_grid(cells, ["<script>alert(1)</script>", "row 2"], ["w 0", "w 1"], 2, title="t")
    arr = np.asarray(grid)
    left = grid.width - 2 * 36 - 4
    assert left > 20  # room for the row labels
    assert (arr[:, :left] < 128).any()  # dark label pixels left of the cells
    top = grid.height - 2 * 36 - 4
    assert (arr[:top, left:] < 128).any()  # and column labels above them


def test_cli_compare_writes_the_grid(tmp_path, capsys):
    from workbench import cli

    _, lora_dir = shared_tiny()
    home = tmp_path / "home"
    workbench.open(home).scan([lora_dir], progress=False, workers=1)
    code = cli.main(
        [
            "compare",
            "--home",
            str(home),
            "--lora",
            "tiny_watercolor",
            "--lora",
            "tiny_pixelart",
            "--weights",
            "0,1",
            "--seeds",
            "5",
            "--prompt",
            "a fox",
            "--steps",
            "3",
            "--size",
            "64x64",
            "--sampler",
            "DDIM",
            "--out",
            str(tmp_path / "grid.png"),
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "RANDOM WEIGHTS" in printed.out and "tiny_pixelart" in printed.out
    grid = Image.open(tmp_path / "grid.png")
    assert len(json.loads(grid.info["workbench-compare"])["cells"]) == 4
    assert grid.width >= 2 * 64 and grid.height >= 2 * 64


def test_compare_view_shows_block_norms_of_analysed_loras_side_by_side(wb):
    from workbench.views.compare import CompareView

    view = CompareView(wb)
    view.loras.value = ("tiny_watercolor", "tiny_neon_unet_only")
    assert view.block_norms() is None and view.norms_figure.outputs == ()
    assert "Not analysed yet" in view.norms_status.value and "tiny_neon_unet_only" in view.norms_status.value
    frame = wb.catalog.query(limit=None)
    wb.weights.analyze([int(i) for i, n in zip(frame["id"], frame["name"]) if n == "tiny_watercolor"], progress=False)
    figure = view.block_norms()  # one analysed: shown, the other named as not analysed
    assert list(figure.data[0].y) == ["tiny_watercolor"] and "tiny_neon_unet_only" in view.norms_status.value
    wb.weights.analyze(progress=False)
    view.norms_button.click()
    (output,) = view.norms_figure.outputs
    heat = output["data"]["application/vnd.plotly.v1+json"]["data"][0]
    assert heat["type"] == "heatmap" and list(heat["y"]) == ["tiny_watercolor", "tiny_neon_unet_only"]
    assert view.norms_status.value == ""
    shares = [sum(v for v in row if v is not None) for row in heat["z"]]
    assert all(abs(s - 1) < 1e-6 for s in shares)  # each row: that LoRA's energy by block
    assert heat["z"][1][0] is None  # the U-Net-only LoRA leaves the text encoder (first column) untouched
