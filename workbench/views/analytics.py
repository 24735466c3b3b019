"""The Analytics tab: plotly figures over :mod:`workbench.analytics` (the numbers are computed there).

Figures go into ``Output`` widgets as plotly's JSON mimetype (rendered by the jupyterlab-plotly
extension Voilà loads), not as ``FigureWidget``: each FigureWidget loads a 5 MB module, and anywidget
gives up on a model that is not ready within 2 s, which a busy server misses. The unused-LoRA list
is an escaped HTML table. Refresh re-reads the catalog.
"""

from __future__ import annotations

import html
import json
from typing import Any

import ipywidgets as w

from workbench import analytics
from workbench.views._feedback import guarded

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PERIODS = [("7 days", 7), ("30 days", 30), ("90 days", 90), ("1 year", 365)]
_STATE_COLORS = {
    "succeeded": "#1e7e34",
    "failed": "#b00020",
    "cancelled": "#8a6d3b",
    "queued": "#666",
    "running": "#0b63c5",
}


def _empty_figure(title: str, note: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    fig.add_annotation(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def build_figures(wb: Any, days: int = 30) -> dict[str, Any]:
    """The tab's plotly figures (plain ``go.Figure``), from the core's DataFrames."""
    import plotly.express as px

    figs: dict[str, Any] = {}
    base = analytics.composition(wb, "base_model")
    figs["composition"] = (
        px.bar(base, x="base_model", y="count", hover_data=["size_gib"], title="Library by base model")
        if len(base)
        else _empty_figure("Library by base model", "the catalog is empty")
    )
    usage = analytics.usage_over_time(wb, days=days)
    usage["period"] = usage["period"].astype(str).str.slice(0, 10)  # whole days: a category axis, no clock ticks
    figs["usage"] = (
        px.bar(usage, x="period", y="uses", hover_data=["loras"], title="LoRA uses per day")
        if len(usage)
        else _empty_figure("LoRA uses per day", "no generation used a LoRA in this period")
    )
    outcomes = analytics.job_outcomes(wb, days=days)
    outcomes["day"] = outcomes["day"].astype(str).str.slice(0, 10)
    figs["outcomes"] = (
        px.bar(
            outcomes,
            x="day",
            y="jobs",
            color="state",
            color_discrete_map=_STATE_COLORS,
            title="Jobs per day by outcome",
        )
        if len(outcomes)
        else _empty_figure("Jobs per day by outcome", "no jobs in this period")
    )
    durations = analytics.job_durations(wb, days=days)
    figs["durations"] = (
        px.histogram(durations, x="seconds", color="backend", nbins=30, title="Job durations (s)")
        if len(durations)
        else _empty_figure("Job durations (s)", "no finished jobs in this period")
    )
    errors = analytics.error_breakdown(wb, days=days)
    figs["errors"] = (
        px.bar(errors, x="jobs", y="error", orientation="h", title="Why jobs failed", hover_data=["example"])
        if len(errors)
        else _empty_figure("Why jobs failed", "no failed jobs in this period")
    )
    for name in ("usage", "outcomes"):
        figs[name].update_xaxes(type="category")
    for fig in figs.values():
        fig.update_layout(height=320, margin={"l": 40, "r": 20, "t": 50, "b": 40})
    return figs


def _table(frame: Any, columns: list[str], limit: int = 50) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(c)}</th>" for c in columns)
    rows = []
    for record in frame.head(limit)[columns].to_dict("records"):
        cells = "".join(
            f"<td style='padding:2px 8px'>{html.escape('' if v is None or v != v else str(v))}</td>"
            for v in record.values()
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table class='wb-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure_output(fig: Any) -> w.Output:
    """An Output widget holding the figure as plotly's mimetype (plain JSON data, no HTML of ours)."""
    import plotly.io as pio

    out = w.Output(layout=w.Layout(width="50%", min_width="0"))
    spec = json.loads(pio.to_json(fig, validate=False))
    spec["config"] = {"displaylogo": False, "responsive": True}
    out.outputs = (
        {"output_type": "display_data", "data": {PLOTLY_MIME: spec, "text/plain": "plotly figure"}, "metadata": {}},
    )
    return out


class AnalyticsView(w.VBox):
    """Composition, usage over time, job outcomes, durations, error breakdown and unused LoRAs."""

    def __init__(self, wb: Any, days: int = 30, **kwargs: Any) -> None:
        self._wb = wb
        self.period = w.Dropdown(options=PERIODS, value=days, description="Period", layout=w.Layout(width="200px"))
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="110px"))
        self.headline = w.HTML()
        self.figures: dict[str, Any] = {}  # name -> plotly Figure shown
        self.charts = w.VBox(layout=w.Layout(width="100%"))
        self.unused = w.HTML()
        self.message = w.HTML()
        super().__init__(
            [
                w.HBox([self.period, self.refresh_button]),
                self.message,
                self.headline,
                self.charts,
                w.HTML("<h4>Never used in a generation (largest first)</h4>"),
                self.unused,
            ],
            **kwargs,
        )
        self.add_class("wb-analytics")
        self.period.observe(lambda _c: self.refresh(), names=["value"])
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.refresh()

    @guarded
    def refresh(self) -> None:
        """Recompute every figure and table from the catalog."""
        days = int(self.period.value)
        summary = analytics.summary(self._wb)
        jobs = analytics.job_stats(self._wb, days=days)
        rate = "–" if jobs["success_rate"] is None else f"{jobs['success_rate']:.0%}"
        median = "–" if jobs["median_seconds"] is None else f"{jobs['median_seconds']:.1f} s"
        self.headline.value = (
            f"<b>{summary['loras']:,}</b> LoRAs ({summary['total_gib']:.2f} GiB) · "
            f"{summary['unhashed']:,} unhashed · {summary['duplicate_files']:,} duplicate files · "
            f"<b>{jobs['total']:,}</b> jobs in {days} days · success {html.escape(rate)} · median {html.escape(median)}"
        )
        self.figures = build_figures(self._wb, days)
        outputs = [_figure_output(fig) for fig in self.figures.values()]
        self.charts.children = [
            w.HBox(outputs[i : i + 2], layout=w.Layout(width="100%")) for i in range(0, len(outputs), 2)
        ]
        unused = analytics.unused_loras(self._wb, limit=50)
        if len(unused):
            unused = unused.assign(size_mb=(unused["size_bytes"].fillna(0) / 2**20).round(1))
            self.unused.value = _table(unused, ["name", "base_model", "size_mb", "rating", "path"])
        else:
            self.unused.value = "<i>every local LoRA has been used</i>"
        self.message.value = ""

    def notify_error(self, message: str) -> None:
        self.message.value = f"<span style='color:#b00020'>{html.escape(message)}</span>"


def analytics_tab(wb: Any) -> AnalyticsView:
    """The dashboard's Analytics tab."""
    return AnalyticsView(wb)
