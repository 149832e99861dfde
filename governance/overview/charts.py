"""The overview's Plotly figures, built in Python like every chart of Causeway."""

from __future__ import annotations

from datetime import UTC, datetime

import plotly.graph_objects as go

from governance.overview.selectors import Activity, FindingKindRow

LAYOUT = {"margin": {"l": 50, "r": 10, "t": 10, "b": 30}, "height": 220, "template": "plotly_white",
          "showlegend": False}


def spans_per_minute_figure(activity: Activity) -> dict:
    minutes = range(activity.first_minute, activity.last_minute + 1)
    x = [datetime.fromtimestamp(m * 60, tz=UTC).isoformat() for m in minutes]
    y = [activity.per_minute.get(m, 0) for m in minutes]
    fig = go.Figure(go.Bar(x=x, y=y, marker={"color": "#2456c9"},
                           hovertemplate="%{x|%H:%M} UTC<br>%{y} spans<extra></extra>"))
    fig.update_layout(**LAYOUT, yaxis={"title": "spans / min", "rangemode": "tozero"})
    return fig.to_plotly_json()


def findings_trend_figure(rows: list[FindingKindRow], days: list[datetime]) -> dict:
    """New findings per 24 hours (ending at each x), stacked by kind."""
    x = [d.isoformat() for d in days]
    fig = go.Figure([go.Bar(x=x, y=row.per_day, name=row.kind,
                            hovertemplate=f"{row.kind}<br>%{{x}}: %{{y}}<extra></extra>") for row in rows])
    fig.update_layout(**{**LAYOUT, "showlegend": True, "height": 240}, barmode="stack",
                      legend={"orientation": "h", "y": -0.25}, yaxis={"title": "new findings / day"})
    return fig.to_plotly_json()
