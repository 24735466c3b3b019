"""Comparison grids: LoRA × weight × seed (× prompt) with fixed seeds, run through the queue.

Every cell is an ordinary queued job, so it lands in history with its parameters and its PNG is
byte-for-byte the image the same request gives alone. The grid is one labelled PIL image (row and
column labels drawn with PIL's default font) saved under ``<home>/compare/``, together with a
DataFrame of its cells (axis values, job and result ids, image paths).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import itertools
import json
import pathlib
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from workbench.generate._recipes import Recipe
from workbench.generate._types import GenerationRequest, LoraSpec

AXES = ("lora", "weight", "seed", "prompt")
_PAD = 4
_MAX_LABEL = 48
NO_LORA = None
"""Put ``None`` in ``loras`` for a row/column without the compared LoRA (the base image)."""


@dataclasses.dataclass
class CompareResult:
    """A finished grid: the image, where it was saved, and one row per cell."""

    image: Any
    path: pathlib.Path
    cells: pd.DataFrame
    rows: tuple[str, ...]
    cols: tuple[str, ...]

    @property
    def result_ids(self) -> list[str]:
        return list(self.cells["result_id"])

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def _axis_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if name not in AXES:
            raise ValueError(f"unknown axis {name!r}; use one of {', '.join(AXES)}")
    return names


def _label(axis: str, value: Any) -> str:
    if axis == "lora":
        text = "no LoRA" if value is None else str(value)
    elif axis == "weight":
        text = f"w {value:g}"
    elif axis == "seed":
        text = f"seed {value}"
    else:
        text = str(value).replace("\n", " ")
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def plan_cells(
    base: GenerationRequest,
    loras: Sequence[str | None],
    weights: Sequence[float] = (0.0, 0.5, 1.0),
    seeds: Sequence[int] = (1,),
    prompts: Sequence[str] | None = None,
    rows: str | Sequence[str] | None = None,
    cols: str | Sequence[str] | None = "weight",
    te_weights: bool = True,
) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    """The cells of a grid as a DataFrame (one row per image, with its request) plus the row/column axes.

    Axes not given to ``rows``/``cols`` that have more than one value go to the rows, in the order
    lora, weight, seed, prompt. The compared LoRA is added to ``base``'s stack at the cell's weight
    (U-Net and, with ``te_weights``, text encoder; else the text encoder keeps weight 1).
    """
    values: dict[str, list] = {
        "lora": list(loras),
        "weight": [float(w) for w in weights],
        "seed": [int(s) for s in seeds],
        "prompt": list(prompts) if prompts else [base.prompt],
    }
    for axis, vals in values.items():
        if not vals:
            raise ValueError(f"the {axis} axis has no values")
        if len(set(map(str, vals))) != len(vals):
            raise ValueError(f"the {axis} axis repeats a value")
    if any(s < 0 for s in values["seed"]):
        raise ValueError("comparison grids need fixed seeds (>= 0)")
    cols_t, rows_t = _axis_tuple(cols), _axis_tuple(rows)
    if set(cols_t) & set(rows_t):
        raise ValueError("an axis cannot be both rows and columns")
    rows_t += tuple(a for a in AXES if a not in cols_t and a not in rows_t and len(values[a]) > 1)
    records = []
    row_keys = list(itertools.product(*(values[a] for a in rows_t))) or [()]
    col_keys = list(itertools.product(*(values[a] for a in cols_t))) or [()]
    fixed = {a: values[a][0] for a in AXES}
    for r, rkey in enumerate(row_keys):
        for c, ckey in enumerate(col_keys):
            cell = {**fixed, **dict(zip(rows_t, rkey)), **dict(zip(cols_t, ckey))}
            stack = [s for s in base.loras if s.name != cell["lora"]]
            if cell["lora"] is not None:
                stack.append(LoraSpec(cell["lora"], cell["weight"], None if te_weights else 1.0))
            request = dataclasses.replace(base, loras=stack, seed=cell["seed"], prompt=cell["prompt"])
            records.append(
                {
                    "row": r,
                    "col": c,
                    **cell,
                    "row_label": " · ".join(_label(a, v) for a, v in zip(rows_t, rkey)),
                    "col_label": " · ".join(_label(a, v) for a, v in zip(cols_t, ckey)),
                    "request": request,
                }
            )
    return pd.DataFrame.from_records(records), rows_t, cols_t


def assemble_grid(
    images: Sequence[Any], row_labels: Sequence[str], col_labels: Sequence[str], n_cols: int, title: str = ""
) -> Any:
    """One image: cells in row-major order, column labels on top, row labels on the left."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        return int(right - left), int(bottom - top)

    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    n_rows = (len(images) + n_cols - 1) // n_cols
    line_h = max([size(t)[1] for t in [*row_labels, *col_labels, title, "Ag"] if t] + [10]) + 2 * _PAD
    left = max([size(t)[0] for t in row_labels if t] + [0]) + (2 * _PAD if any(row_labels) else 0)
    top = (line_h if any(col_labels) else 0) + (line_h if title else 0)
    grid = Image.new("RGB", (left + n_cols * (cell_w + _PAD) + _PAD, top + n_rows * (cell_h + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((_PAD, _PAD), title, fill="black", font=font)
    for c, text in enumerate(col_labels[:n_cols]):
        w, _ = size(text)
        x = left + _PAD + c * (cell_w + _PAD) + max(0, (cell_w - w) // 2)
        draw.text((x, top - line_h + _PAD), text, fill="black", font=font)
    for r, text in enumerate(row_labels[:n_rows]):
        _, h = size(text)
        draw.text((_PAD, top + _PAD + r * (cell_h + _PAD) + max(0, (cell_h - h) // 2)), text, fill="black", font=font)
    for i, im in enumerate(images):
        r, c = divmod(i, n_cols)
        grid.paste(im.convert("RGB"), (left + _PAD + c * (cell_w + _PAD), top + _PAD + r * (cell_h + _PAD)))
    return grid


def compare(
    wb: Any,
    loras: Sequence[str | None],
    weights: Sequence[float] = (0.0, 0.5, 1.0),
    seeds: Sequence[int] = (1,),
    prompts: Sequence[str] | None = None,
    *,
    base: GenerationRequest | None = None,
    prompt: str = "",
    rows: str | Sequence[str] | None = None,
    cols: str | Sequence[str] | None = "weight",
    backend: str = "diffusers",
    backend_options: dict | None = None,
    te_weights: bool = True,
    timeout: float = 3600.0,
    progress: bool = True,
    title: str | None = None,
) -> CompareResult:
    """Run a comparison grid through ``wb.queue`` and return the labelled image with its cells.

    ``base`` holds the fixed parameters (steps, CFG, size, sampler, other LoRAs); ``prompt`` is a
    shortcut for ``base.prompt``. A cell whose job fails raises ``RuntimeError`` naming the cell.
    """
    from PIL import Image

    base = base or GenerationRequest(prompt=prompt)
    if prompt and base.prompt != prompt:
        base = dataclasses.replace(base, prompt=prompt)
    cells, rows_t, cols_t = plan_cells(base, loras, weights, seeds, prompts, rows, cols, te_weights)
    queue = wb.queue
    cells["job_id"] = [queue.submit(req, backend=backend, backend_options=backend_options) for req in cells["request"]]
    deadline = time.monotonic() + timeout
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc="compare", unit="image")
    states = []
    try:
        for jid in cells["job_id"]:
            states.append(queue.wait(jid, max(0.0, deadline - time.monotonic()), flush=False))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    failed = [(i, s) for i, s in enumerate(states) if s["state"] != "succeeded"]
    if failed:
        i, s = failed[0]
        cell = cells.iloc[i]
        raise RuntimeError(
            f"{len(failed)} of {len(cells)} cells failed; first: {cell['row_label']} / "
            f"{cell['col_label']}: {s['state']}: {s.get('error')}"
        )
    queue.flush()
    results = [queue.result(jid) for jid in cells["job_id"]]
    cells["result_id"] = [r["id"] for r in results]
    cells["path"] = [r["path"] for r in results]
    images = []
    for path in cells["path"]:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    n_cols = int(cells["col"].max()) + 1
    row_labels = list(cells.groupby("row")["row_label"].first())
    col_labels = list(cells.groupby("col")["col_label"].first())
    if title is None:
        title = f"{base.prompt[:80]} · {base.steps} steps · CFG {base.cfg_scale:g} · {base.sampler}"
    grid = assemble_grid(images, row_labels, col_labels, n_cols, title)
    path = _save(wb.home / "compare", grid, cells, rows_t, cols_t)
    return CompareResult(image=grid, path=path, cells=cells.drop(columns=["request"]), rows=rows_t, cols=cols_t)


def _save(
    folder: pathlib.Path, grid, cells: pd.DataFrame, rows: tuple[str, ...], cols: tuple[str, ...]
) -> pathlib.Path:
    """Write the grid PNG with the cell table in a ``workbench-compare`` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}.png"
    table = [
        {
            "row": int(r["row"]),
            "col": int(r["col"]),
            "lora": r["lora"],
            "weight": r["weight"],
            "seed": int(r["seed"]),
            "prompt": r["prompt"],
            "result_id": r["result_id"],
        }
        for r in cells.to_dict("records")
    ]
    info = PngInfo()
    info.add_text("workbench-compare", json.dumps({"rows": rows, "cols": cols, "cells": table}, ensure_ascii=False))
    tmp = path.with_suffix(".tmp")
    grid.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)
    return path


def compare_recipe(
    wb: Any, recipe: Recipe, lora: str, weights: Iterable[float], seeds: Sequence[int] = (1,), **kwargs: Any
) -> CompareResult:
    """Compare one LoRA of a recipe across weights (the rest of its stack and parameters stay fixed)."""
    recipe = wb.recipes.get(recipe) if isinstance(recipe, str) else recipe
    base = wb.recipes.request(recipe)
    return compare(
        wb, [lora], list(weights), seeds, base=base, backend=recipe.params.get("backend", "diffusers"), **kwargs
    )
