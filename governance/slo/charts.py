"""Plotly figures of an SLO: its SLI over time, the error budget burning down, the burn rate on each
alert window. Built in Python (as every chart of Causeway) and drawn by plotly.js on the page."""

from __future__ import annotations

from datetime import UTC, datetime

import plotly.graph_objects as go

from governance.slo.core.burn import TIER_BY_NAME
from governance.slo.core.durations import format_duration

LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "height": 300, "template": "plotly_white",
          "legend": {"orientation": "h", "y": -0.2}}
NICE_BUCKETS = (1, 5, 15, 60, 360, 1440)


def bucket_minutes(window_minutes: int, points: int = 700) -> int:
    """The finest of a few readable bucket sizes that keeps a window under `points` points."""
    return next((b for b in NICE_BUCKETS if window_minutes / b <= points), NICE_BUCKETS[-1])


def _at(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, tz=UTC).isoformat()


def sli_figure(series: list[dict], *, objective: float | None, title: str) -> dict:
    x = [_at(b["start"]) for b in series]
    y = [None if not b["total"] else 100 * b["good"] / b["total"] for b in series]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 80 else "lines", name="SLI",
                               connectgaps=False, line={"color": "#2456c9"},
                               hovertemplate="%{x}<br>%{y:.3f} %<extra></extra>"))
    if objective is not None and x:
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[100 * objective] * 2, mode="lines", name="objective",
                                 line={"color": "#c62828", "dash": "dash"}, hoverinfo="skip"))
    fig.update_layout(**LAYOUT, title=title, yaxis={"title": "good events (%)", "ticksuffix": " %"})
    return fig.to_plotly_json()


def counts_figure(series: list[dict], *, title: str) -> dict:
    """Events per bucket, for SLIs that are counts (throughput, findings, violations)."""
    fig = go.Figure(go.Bar(x=[_at(b["start"]) for b in series], y=[b["total"] for b in series], name="events",
                           marker={"color": "#2456c9"}))
    fig.update_layout(**LAYOUT, title=title, yaxis={"title": "events"})
    return fig.to_plotly_json()


def burndown_figure(series: list[dict], *, objective: float) -> dict:
    """The budget left over the window: bad events so far against the budget of every event it saw."""
    total = sum(b["total"] for b in series)
    budget = (1 - objective) * total
    spent, x, y = 0, [], []
    for b in series:
        spent += b["total"] - b["good"]
        x.append(_at(b["start"]))
        y.append(100.0 if budget <= 0 else 100 * (1 - spent / budget))
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name="budget left", fill="tozeroy",
                               line={"color": "#15803d"}, hovertemplate="%{x}<br>%{y:.1f} % left<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#c62828", "width": 1})
    fig.update_layout(**LAYOUT, title="Error budget burn-down", yaxis={"title": "budget left (%)", "ticksuffix": " %"})
    return fig.to_plotly_json()


def burn_rates_figure(status: dict) -> dict:
    """The current burn rate on each tier's long and short window, against the tier's factor. The axis is
    logarithmic: rates run from fractions of the budget to a thousand times it."""
    tiers = status.get("tiers", [])
    names = [f"{t['name']} ({TIER_BY_NAME[t['name']].severity})" for t in tiers]

    def shown(rate):
        return rate if rate > 0 else None  # no bar for 0 on a log axis

    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[shown(t["long_rate"]) for t in tiers], name="long window",
                         text=[format_duration(t["long_minutes"] * 60) for t in tiers], marker={"color": "#2456c9"},
                         hovertemplate="%{text}: %{y:.3g}x<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=[shown(t["short_rate"]) for t in tiers], name="short window",
                         text=[format_duration(t["short_minutes"] * 60) for t in tiers], marker={"color": "#93c5fd"},
                         hovertemplate="%{text}: %{y:.3g}x<extra></extra>"))
    fig.add_trace(go.Scatter(x=names, y=[t["factor"] for t in tiers], mode="markers", name="fires above both",
                             marker={"symbol": "line-ew-open", "size": 70, "color": "#c62828",
                                     "line": {"width": 3, "color": "#c62828"}},
                             hovertemplate="fires above %{y}x<extra></extra>"))
    fig.update_layout(**LAYOUT, title="Burn rate on each alert window", barmode="group",
                      yaxis={"title": "burn rate (x budget)", "type": "log"})
    return fig.to_plotly_json()
