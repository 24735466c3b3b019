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


# --- the report for people who do not read code ----------------------------------------------------

#: Human labels of :func:`summary`'s keys (the report and the CLI show these, never the snake_case keys).
SUMMARY_LABELS = {
    "loras": "LoRAs in the catalog",
    "local_files": "LoRA files on disk",
    "catalog_only": "Catalog-only entries (from Civitai, no file)",
    "total_gib": "Disk space (GiB)",
    "with_errors": "Files that cannot be read",
    "missing": "Files missing since the last scan",
    "unhashed": "Files not hashed yet",
    "duplicate_files": "Duplicate files (among hashed files)",
    "favorites": "Favorites",
    "with_preview": "With a preview image",
}


def _count(value: Any) -> str:
    return f"{int(value):,}"


def summary_table(wb: Workbench) -> pd.DataFrame:
    """:func:`summary` as a two-column table with human labels and whole numbers (GiB to two decimals)."""
    facts = summary(wb)
    rows = [
        (SUMMARY_LABELS[key], f"{value:,.2f}" if key == "total_gib" else _count(value)) for key, value in facts.items()
    ]
    return pd.DataFrame(rows, columns=["What", "How many"])


def job_stats(wb: Workbench, days: int = 30) -> dict[str, Any]:
    """Generation jobs of the last ``days`` days: counts per state, success rate, durations, images.

    The one home of these figures for the report and the dashboard's Analytics tab. The success rate
    is succeeded / (succeeded + failed): a cancelled job is the user's choice, not a failure, and the
    same rule drives `job_outcomes`' daily rate.
    """
    frame = _job_frame(wb, days)
    by_state = {str(k): int(v) for k, v in frame["state"].value_counts().items()} if len(frame) else {}
    ok, bad = by_state.get("succeeded", 0), by_state.get("failed", 0)
    done = frame.loc[frame["state"] == "succeeded", "seconds"].dropna()
    images = wb.db.read_df(
        "SELECT count(*) AS n FROM results WHERE NOT deleted "
        "AND created_at >= current_timestamp - to_days(CAST(? AS INTEGER))",
        [int(days)],
    )["n"].iloc[0]
    return {
        "total": int(len(frame)),
        "by_state": by_state,
        "success_rate": ok / (ok + bad) if ok + bad else None,
        "median_seconds": float(done.median()) if len(done) else None,
        "p90_seconds": float(done.quantile(0.9)) if len(done) else None,
        "images": int(images),
    }


def job_table(wb: Workbench, days: int = 30) -> pd.DataFrame:
    """Jobs per state over the period, with human labels (empty when nothing was generated)."""
    stats = job_stats(wb, days)
    labels = {
        "succeeded": "Finished",
        "failed": "Failed",
        "cancelled": "Cancelled",
        "queued": "Waiting",
        "running": "Running",
    }
    rows = [(labels.get(state, state), _count(n)) for state, n in sorted(stats["by_state"].items())]
    return pd.DataFrame(rows, columns=["Jobs", "How many"])


def summary_sentences(wb: Workbench, days: int = 30) -> list[str]:
    """A few plain sentences a manager can read first: size of the library, health, what is unknown, usage."""
    facts = summary(wb)
    base = composition(wb, "base_model")
    jobs = job_stats(wb, days)
    out = [
        f"The library holds {_count(facts['loras'])} LoRAs ({_count(facts['local_files'])} files, "
        f"{facts['total_gib']:,.2f} GiB on disk)."
    ]
    known = base[base["base_model"] != "unknown"]
    if len(known):
        top = known.iloc[0]
        share = 100 * int(top["count"]) / max(facts["loras"], 1)
        out.append(f"Most are for {top['base_model']} ({_count(top['count'])}, {share:.0f}%).")
    problems = []
    if facts["with_errors"]:
        problems.append(f"{_count(facts['with_errors'])} cannot be read")
    if facts["missing"]:
        problems.append(f"{_count(facts['missing'])} went missing")
    out.append(("Of the files, " + " and ".join(problems) + ".") if problems else "Every file could be read.")
    if facts["unhashed"]:
        out.append(
            f"{_count(facts['unhashed'])} files are not hashed yet, so duplicates among them are not known "
            "(run 'workbench hash' or the report with --hash)."
        )
    elif facts["duplicate_files"]:
        out.append(f"{_count(facts['duplicate_files'])} files are duplicates of another file.")
    else:
        out.append("No file is a duplicate of another.")
    if jobs["total"]:
        rate = (
            f", {100 * jobs['success_rate']:.0f}% of finished jobs succeeded"
            if jobs["success_rate"] is not None
            else ""
        )
        typical = f", typically in {jobs['median_seconds']:.1f} s" if jobs["median_seconds"] is not None else ""
        out.append(f"In the last {days} days {_count(jobs['total'])} generation jobs ran{rate}{typical}.")
    else:
        out.append(f"Nothing was generated in the last {days} days.")
    return out


def table_html(frame: pd.DataFrame, empty: str = "Nothing yet.") -> str:
    """A small escaped HTML table (no index, blanks for missing values), or ``empty`` as a sentence."""
    import html

    if frame is None or frame.empty:
        return f"<p><i>{html.escape(empty)}</i></p>"
    clean = frame.astype(object).where(frame.notna(), "")
    return clean.to_html(index=False, escape=True, border=0, classes="wb-report-table")


def bars_html(frame: pd.DataFrame, label: str, value: str, title: str, top: int = 15) -> str:
    """A horizontal bar chart in plain HTML (no JavaScript, a few KB): the report's charts."""
    import html

    if frame is None or frame.empty:
        return f"<h4>{html.escape(title)}</h4><p><i>Nothing yet.</i></p>"
    rows = frame.head(top)
    peak = max(float(rows[value].max()), 1.0)
    lines = []
    for _, row in rows.iterrows():
        width = 100.0 * float(row[value]) / peak
        lines.append(
            "<tr>"
            f"<td style='padding:1px 8px 1px 0;white-space:nowrap'>{html.escape(str(row[label]))}</td>"
            f"<td style='width:60%'><div style='background:#4c78a8;height:12px;width:{width:.1f}%'></div></td>"
            f"<td style='padding-left:6px'>{_count(row[value])}</td></tr>"
        )
    return f"<h4>{html.escape(title)}</h4><table style='border-collapse:collapse'>{''.join(lines)}</table>"


# -- jobs and usage over time (the dashboard's Analytics tab draws these) ---------------------------
def usage_over_time(wb: Workbench, days: int = 90, freq: str = "D") -> pd.DataFrame:
    """Generations that used LoRAs, per period (``freq``: D, W or M): columns period, uses, loras."""
    if freq not in ("D", "W", "M"):
        raise ValueError("usage_over_time(freq=) takes 'D', 'W' or 'M'")
    unit = {"D": "day", "W": "week", "M": "month"}[freq]
    return wb.db.read_df(
        f"SELECT date_trunc('{unit}', created_at) AS period, count(*) AS uses, count(DISTINCT lora_id) AS loras "
        "FROM usage_events WHERE created_at >= current_timestamp - to_days(CAST(? AS INTEGER)) "
        "GROUP BY 1 ORDER BY 1",
        [int(days)],
    )


def _job_frame(wb: Workbench, days: int) -> pd.DataFrame:
    return wb.db.read_df(
        "SELECT id, backend, state, error, attempts, created_at, started_at, finished_at, "
        "date_diff('millisecond', started_at, finished_at) / 1000.0 AS seconds "
        "FROM jobs WHERE created_at >= current_timestamp - to_days(CAST(? AS INTEGER))",
        [int(days)],
    )


def job_outcomes(wb: Workbench, days: int = 30) -> pd.DataFrame:
    """Jobs per day and final state, with each day's success rate among finished jobs.

    Columns: day, state, jobs, success_rate (succeeded / (succeeded + failed) that day; NaN if none).
    """
    frame = _job_frame(wb, days)
    if frame.empty:
        return pd.DataFrame(columns=["day", "state", "jobs", "success_rate"])
    frame["day"] = pd.to_datetime(frame["created_at"]).dt.normalize()
    counts = frame.groupby(["day", "state"]).size().rename("jobs").reset_index()
    wide = counts.pivot(index="day", columns="state", values="jobs").fillna(0)
    ok, bad = wide.get("succeeded", 0), wide.get("failed", 0)
    total = ok + bad
    rate = (ok / total).where(total > 0)
    counts["success_rate"] = counts["day"].map(rate)
    return counts.sort_values(["day", "state"]).reset_index(drop=True)


def job_durations(wb: Workbench, days: int = 30) -> pd.DataFrame:
    """Run time of each finished job (seconds from start to finish), with its backend and state."""
    frame = _job_frame(wb, days)
    frame = frame[frame["state"].isin(["succeeded", "failed", "cancelled"]) & frame["seconds"].notna()]
    return frame[["id", "backend", "state", "created_at", "seconds"]].reset_index(drop=True)


def error_breakdown(wb: Workbench, days: int = 30, top: int = 10) -> pd.DataFrame:
    """Failed jobs grouped by the kind of error (its first clause, ids and numbers blanked), most frequent first."""
    frame = _job_frame(wb, days)
    failed = frame[frame["state"] == "failed"]
    if failed.empty:
        return pd.DataFrame(columns=["error", "jobs", "example"])
    kinds = (
        failed["error"]
        .fillna("no reason recorded")
        .astype(str)
        .str.split(r"[;\n]", n=1, regex=True)
        .str[0]
        .str.replace(r"\b[0-9a-f]{8,}\b", "…", regex=True)
        .str.replace(r"\d+(\.\d+)?", "N", regex=True)
        .str.strip()
        .str.slice(0, 160)
    )
    grouped = (
        failed.assign(kind=kinds)
        .groupby("kind")
        .agg(jobs=("id", "size"), example=("error", "first"))
        .reset_index()
        .rename(columns={"kind": "error"})
        .sort_values(["jobs", "error"], ascending=[False, True])
    )
    return grouped.head(int(top)).reset_index(drop=True)


def unused_loras(wb: Workbench, limit: int | None = 200) -> pd.DataFrame:
    """Local LoRAs no generation has used, largest first (what to review when disk runs short)."""
    sql = (
        "SELECT v.id, v.name, v.base_model, v.size_bytes, v.rating, v.favorite, v.path FROM lora_view v "
        "WHERE v.path <> '' AND NOT coalesce(v.missing, false) "
        "AND v.id NOT IN (SELECT lora_id FROM usage_events WHERE lora_id IS NOT NULL) "
        "ORDER BY v.size_bytes DESC NULLS LAST, v.name"
    )
    args: list[Any] = []
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return wb.db.read_df(sql, args)
