"""The overview's Plotly figures, built in Python like every chart of Causeway.

They are written as the figure JSON plotly.js draws (data and layout) rather than through
plotly.graph_objects: the graph objects validate every property on construction, which cost
about 120 ms a figure here, most of the page's time budget, for two small bar charts."""

from __future__ import annotations

from datetime import UTC, datetime

from governance.overview.selectors import Activity, FindingKindRow

# plotly.js has no named templates of its own: the parts of plotly_white these charts show.
WHITE = {"plot_bgcolor": "white", "paper_bgcolor": "white",
         "xaxis": {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8"},
         "yaxis": {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8"}}


def _layout(**extra) -> dict:
    layout = {"margin": {"l": 50, "r": 10, "t": 10, "b": 50}, "height": 240, "showlegend": False,
              "plot_bgcolor": WHITE["plot_bgcolor"], "paper_bgcolor": WHITE["paper_bgcolor"]}
    layout.update(extra)
    for axis in ("xaxis", "yaxis"):
        layout[axis] = {**WHITE[axis], **layout.get(axis, {})}
    return layout


def spans_per_minute_figure(activity: Activity) -> dict:
    minutes = range(activity.first_minute, activity.last_minute + 1)
    x = [datetime.fromtimestamp(m * 60, tz=UTC).isoformat() for m in minutes]
    y = [activity.per_minute.get(m, 0) for m in minutes]
    return {"data": [{"type": "bar", "x": x, "y": y, "marker": {"color": "#2456c9"},
                      "hovertemplate": "%{x|%H:%M} UTC<br>%{y} spans<extra></extra>"}],
            "layout": _layout(yaxis={"title": {"text": "spans / min"}, "rangemode": "tozero"})}


def findings_trend_figure(rows: list[FindingKindRow], days: list[datetime]) -> dict:
    """New findings per 24 hours (ending at each x), stacked by kind."""
    x = [d.isoformat() for d in days]
    data = [{"type": "bar", "x": x, "y": row.per_day, "name": row.kind,
             "hovertemplate": f"{row.kind}<br>%{{x}}: %{{y}}<extra></extra>"} for row in rows]
    return {"data": data, "layout": _layout(showlegend=True, height=260, barmode="stack",
                                            legend={"orientation": "h", "y": -0.25},
                                            yaxis={"title": {"text": "new findings / 24 h"}})}
