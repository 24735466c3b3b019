"""Library composition and usage as DataFrames and plotly figures (for notebooks and the report).

Everything here reads the catalog through its public queries or read-only SQL written here;
plotly is imported only when a figure is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from workbench._workbench import Workbench


def summary(wb: Workbench) -> dict[str, Any]:
    """Headline numbers: how many LoRAs, how much disk, how many broken, missing, duplicated, unhashed."""
    frame = wb.catalog.query()
    local = frame[frame["path"] != ""]
    dupes = wb.catalog.duplicates("sha256")
    return {
        "loras": int(len(frame)),
        "local_files": int(len(local)),
        "catalog_only": int(len(frame) - len(local)),
        "total_gib": round(float(local["size_bytes"].fillna(0).sum()) / 2**30, 3),
        "with_errors": int(frame["error"].notna().sum()),
        "missing": int(frame["missing"].fillna(False).astype(bool).sum()),
        "unhashed": int((local["sha256"].isna() & local["error"].isna()).sum()),
        "duplicate_files": int(len(dupes) - dupes["hash"].nunique()) if len(dupes) else 0,
        "favorites": int(frame["favorite"].sum()),
        "with_preview": int(frame["has_preview"].sum()),
    }


def composition(wb: Workbench, by: str = "base_model") -> pd.DataFrame:
    """Count and size of LoRAs grouped by one catalog column (base_model, network_type, format, folder, ...)."""
    allowed = {"base_model", "network_type", "format", "folder", "key_layout", "rank", "creator", "origin"}
    if by not in allowed:
        raise ValueError(f"composition(by=) takes one of {sorted(allowed)}")
    frame = wb.catalog.query()
    if frame.empty:
        return pd.DataFrame(columns=[by, "count", "size_gib"])
    grouped = (
        frame.assign(**{by: frame[by].astype("object").where(frame[by].notna(), "unknown")})
        .groupby(by, dropna=False)
        .agg(count=("id", "size"), size_gib=("size_bytes", lambda s: round(float(s.fillna(0).sum()) / 2**30, 3)))
        .reset_index()
        .sort_values(["count", by], ascending=[False, True])
    )
    return grouped.reset_index(drop=True)


def top_tags(wb: Workbench, n: int = 30) -> pd.DataFrame:
    """The most used tags across the library."""
    facets = wb.catalog.facets()["tags"][:n]
    return pd.DataFrame(facets, columns=["tag", "count"])


def usage(wb: Workbench, days: int = 90) -> pd.DataFrame:
    """Generations per day and LoRA over the last `days` days (from recorded usage events)."""
    return wb.db.read_df(
        "SELECT CAST(e.created_at AS DATE) AS day, e.lora_id, v.name, count(*) AS uses "
        "FROM usage_events e LEFT JOIN lora_view v ON v.id = e.lora_id "
        "WHERE e.created_at >= current_timestamp - to_days(CAST(? AS INTEGER)) "
        "GROUP BY ALL ORDER BY day, uses DESC",
        [int(days)],
    )


def most_used(wb: Workbench, n: int = 20) -> pd.DataFrame:
    """LoRAs ranked by how often generations used them."""
    frame = wb.catalog.query(sort="usage", descending=True, limit=n)
    return frame[frame["usage_count"] > 0][["id", "name", "base_model", "usage_count", "rating", "favorite"]]


def figures(wb: Workbench) -> dict[str, Any]:
    """Plotly figures of the library's composition (base models, network types, ranks, top tags)."""
    import plotly.express as px

    out: dict[str, Any] = {}
    base = composition(wb, "base_model")
    out["base_models"] = px.bar(base, x="base_model", y="count", title="LoRAs per base model")
    types = composition(wb, "network_type")
    out["network_types"] = px.pie(types, names="network_type", values="count", title="Network types")
    ranks = wb.catalog.query()[["rank", "base_model"]].dropna()
    out["ranks"] = px.histogram(ranks, x="rank", color="base_model", title="Ranks", log_x=False)
    tags = top_tags(wb, 20)
    out["top_tags"] = px.bar(tags, x="count", y="tag", orientation="h", title="Top tags")
    return out
