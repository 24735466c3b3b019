""" "Similar" by weights, shaped like the Recommender's results: the LoRAs whose weight changes (ΔW) point the same
way as this one's, per the weight-space analysis (``wb.weights.similar``: same base-model family, exact cosines).

Why here: the Recommend panel's "similar" offers description-based and weight-based neighbours with the same cards
(name, base model, reason, thumbnail, trigger words), so both come back as the same kind of frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


def similar_by_weights(
    wb: Any, lora_id: int, k: int = 10, exclude: Iterable[int] = (), include_missing: bool = True
) -> pd.DataFrame:
    """The ``k`` LoRAs closest to ``lora_id`` by the cosine of their weight deltas, as catalog rows plus ``score``
    (= ``cosine``), ``estimate``, ``reason`` and ``why``. Raises LookupError when ``lora_id`` has no valid
    analysis; an empty frame (``attrs["empty_reason"]`` says why) when no other LoRA of its family has one."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    skip = {int(i) for i in exclude} | {int(lora_id)}
    try:
        found = wb.weights.similar(int(lora_id), k=k + len(skip))
    except LookupError:
        if wb.weights.get(int(lora_id)) is not None:
            raise  # analysed, but the file could not be read: that error says why
        raise LookupError(
            f"LoRA {int(lora_id)} has not been analysed yet: press 'Analyse weights' on its card in the Library "
            f"or in the Weights tab (or run wb.weights.analyze([{int(lora_id)}]))"
        ) from None
    found = found[~found["id"].isin(skip)]
    ids = [int(i) for i in found["id"]]
    rows = wb.catalog.query(ids=ids, limit=None) if ids else wb.catalog.query(ids=[int(lora_id)], limit=0)
    if not include_missing and len(rows):
        rows = rows[~rows["missing"].astype(bool)]
    cosines = dict(zip(found["id"].astype(int), found["cosine"].astype(float)))
    estimates = dict(zip(found["id"].astype(int), found["estimate"].astype(float)))
    out = rows.copy()
    out["cosine"] = [cosines[int(i)] for i in out["id"]]
    out["estimate"] = [estimates[int(i)] for i in out["id"]]
    out["score"] = out["cosine"]
    out["reason"] = [f"its weight changes point the same way: cosine {c:.3f}" for c in out["cosine"]]
    out["why"] = [
        f"cosine of the weight deltas ΔW over their common modules {c:.4f} (signature estimate {e:.3f})"
        for c, e in zip(out["cosine"], out["estimate"])
    ]
    out = out.sort_values("cosine", ascending=False).head(k).reset_index(drop=True)
    out.attrs["by"] = "weights"
    if not len(out):
        out.attrs["empty_reason"] = (
            "no other LoRA of its base-model family has a weight analysis yet (analyse the library first)"
        )
    return out
