"""Which catalog LoRAs a backend can run, and why not: asked before a job is queued, not learnt when it fails.

Only what is certain from the catalog counts (a missing file, an unreadable file, a LyCORIS network
the diffusers backend cannot apply, the tiny test pipeline that runs only its own LoRAs). A LoRA
for another base model than an A1111/ComfyUI server's loaded checkpoint is not flagged: the
workbench does not know which checkpoint the server has loaded.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from workbench.files import TINY_BASE_MODEL, base_model_family
from workbench.generate.backends._compat import diffusers_refusal


def incompatibility(choice: Any, row: dict[str, Any]) -> str | None:
    """Why the backend ``choice`` (a ``BackendChoice``) cannot run this catalog row, or None when it can.

    The diffusers rules are :func:`~workbench.generate.backends._compat.diffusers_refusal`, the same the
    backend applies before loading; the tiny pipeline's family is known from the choice itself.
    """
    if bool(row.get("missing")):
        return "its file is missing"
    if not row.get("path"):
        return "a catalog entry without a local file"
    if isinstance(row.get("error"), str) and row["error"]:
        return "its file cannot be read"
    if choice.kind != "diffusers":
        return None
    if row.get("format") not in (None, "safetensors"):
        return f"a {row['format']} (pickle) file, which is never loaded"
    family = base_model_family(row.get("base_model"))
    pipeline = TINY_BASE_MODEL if choice.random_weights else None  # a real model's family is known once loaded
    if pipeline and family is None:
        return "not made for the tiny pipeline, which runs only its own tiny LoRAs"
    return diffusers_refusal(row.get("network_type"), row.get("key_layout"), {family}, pipeline)


def _sort_name(name: str) -> str:
    """Names sort by their first letter or digit ("<script>…" files do not come first), as in the gallery."""
    lowered = name.lower()
    return re.sub(r"^[\W_]+", "", lowered) or lowered


def loras_for_backend(db: Any, choice: Any, limit: int = 5000) -> pd.DataFrame:
    """Catalog LoRAs as ``id, name, reason`` (None = runnable), runnable ones first, then by name."""
    frame = db.read_df(
        "SELECT v.id, v.name, v.path, v.base_model, v.network_type, v.key_layout, v.format, v.missing, v.error, "
        "v.usage_count FROM lora_view v ORDER BY v.usage_count DESC, lower(v.name) LIMIT ?",
        [int(limit)],
    )
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    rows: list[tuple[int, str, str | None]] = [
        (int(r["id"]), str(r["name"]), incompatibility(choice, r)) for r in records
    ]
    rows.sort(key=lambda r: (r[2] is not None, _sort_name(r[1])))
    return pd.DataFrame(rows, columns=["id", "name", "reason"])
