"""Causal timeline and trace graph: the data the pages draw and their Plotly figures.

No view logic and no database: plain functions over `SpanRecord`s and finding dicts,
so the trace page, the key history page and the timeline API share them.

The timeline data (``timeline_build``) is sent once with the page as JSON:

- ``lanes``: one per agent, sorted by (service, instance, agent): label
  "service / instance / agent", the lane's process clock, its clock offset against
  the trace root's clock (``skew_ms``, from ``analysis.clock_skew``: from the RPCs as
  Jaeger's, else from the messages it sent or received) and ``skewed`` when
  that is beyond the tolerance, ``rows`` (nesting depth of the agent's own spans,
  capped), ``count``, and the lane's extent ``x0``/``x1``.
- ``spans``: parallel columns (``id``, ``parent`` index or -1, ``lane``, ``row``,
  ``x0``/``x1`` in ms since ``t0_ns`` or epoch ms, ``name``, ``cat`` 0 normal / 1
  critical path / 2 in an open finding / 3 only in acknowledged findings, ``err``, ``label``), and ``details`` per span
  (kind, status, attributes, events, links) for the side panel.
- ``edges``: ``[from, to, kind]`` span indexes of the causal edges that cross
  lanes (``analysis.causal_edges``: link, reads_from, lock, rpc).
- ``critical``: span indexes of the critical path, root first.
- ``findings``: the stored findings on these spans, each with its span indexes, and when
  given its ``evidence_edges`` (traces.explain) their ``evidence`` ``[from, to, kind]`` drawn
  here and ``evidence_elsewhere``, the count with an end on another trace.

``figure_build`` turns that data and a view state (collapsed lanes, hidden
subtrees, skew adjustment) into a Plotly figure; static/causeway/timeline.js
mirrors it to redraw after a click, so both must keep the same geometry. Bars
are thick WebGL line segments, one trace per category with None separators, so a
50,000-span trace is a handful of traces, not 50,000 shapes.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import orjson
import plotly.graph_objects as go
import plotly.io as pio

from traces.analysis import causal_edges, clock_skew, critical_path
from traces.records import KIND_NAMES, STATUS_ERROR, STATUS_NAMES, SpanRecord

COLLAPSE_OVER = 2000  # beyond this many spans, lanes start collapsed to a summary bar
MAX_ROWS = 8  # nesting rows drawn per lane; deeper spans share the last row
LANE_GAP = 0.6  # blank rows between lanes
ROW_PX = 30  # a row's height, room for a bar and its name above it
ANNOTATED_EDGES_MAX = 150  # up to this many edges get real arrows; beyond, lines with a head marker
EDGE_KINDS = ("rpc", "link", "reads_from", "lock")
# The finding page adds its evidence: the happens-before path ("evidence"), the edges that came
# too late to order a concurrent pair ("late"), and the absence itself ("no_path", dashed).
EVIDENCE_KINDS = ("evidence", "late")
EDGE_COLORS = {"rpc": "#334155", "link": "#7c3aed", "reads_from": "#0f766e", "lock": "#b45309",
               "evidence": "#b91c1c", "late": "#64748b"}
NO_PATH_COLOR = "#b91c1c"
LABELS_MAX = 1500  # beyond this many bars drawn, only findings' bars carry their name (SVG text is slow)
LABEL_CHARS = 28
# Span categories, drawn in this order (later on top): one WebGL trace each. An
# acknowledged finding stays visible but pale, as a silenced alert does in Alertmanager.
# Category 1 is unused by bars: the critical path is an outline drawn under them (CRITICAL_COLOR),
# so it never hides a finding's red.
CATEGORIES = (("span", "#60a5fa"), ("critical path", "#f59e0b"), ("finding", "#dc2626"),
              ("acknowledged finding", "#fca5a5"))
CRITICAL_COLOR = "#f59e0b"
OPEN_FINDING, ACKNOWLEDGED_FINDING = 2, 3
FINDING_CATEGORIES = (OPEN_FINDING, ACKNOWLEDGED_FINDING)
SUMMARY_COLOR = "#94a3b8"
OPEN_SYMBOL, FOLDED_SYMBOL, FOLD_SIZE = "triangle-down", "triangle-right", 11  # a bar's fold caret


def plotly_text(value: str) -> str:
    """Text from a span as Plotly must be given it to draw it as typed. Plotly draws a subset
    of HTML in every label, tick, legend and hover text (<a href>, <b>, <span style>, <br>)
    and decodes entities, so a service named <a href=...>svc</a> would become a link.
    static/causeway/timeline.js escapes the same way (esc) when it redraws."""
    return html.escape(value, quote=False)


def _lane_label(service: str, instance: str, agent: str) -> str:
    return f"{service or '?'} / {instance or '–'} / {agent or '?'}"


def access_label(s: SpanRecord) -> str:
    """How the key history labels one access: "r v3", "w v4←3", "w ✗ conflict"."""
    if s.state_key and s.state_op == "read":
        return f"r v{s.state_version}" if s.state_version is not None else "r"
    if s.state_key and s.state_op == "write":
        if s.state_conflict:
            return "w ✗ conflict"
        if s.status_code == STATUS_ERROR:
            return "w ✗ error"
        version = f"v{s.state_version}" if s.state_version is not None else "v?"
        return f"w {version}←{s.state_base_version}" if s.state_base_version is not None else f"w {version} blind"
    if s.idempotency_key:
        return "exec" if s.idempotency_outcome == "executed" else s.idempotency_outcome or "idem"
    if s.lock_name:
        return f"lock t{s.lock_fencing_token}" if s.lock_fencing_token is not None else "lock"
    return ""


def short_name(name: str) -> str:
    """A bar's label: its span name, cut to fit (the hover shows it whole)."""
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "…"


def _rows(parent: list[int], lane: list[int]) -> list[int]:
    """Each span's row in its lane: how many of its ancestors are in the same lane (capped)."""
    n = len(parent)
    row = [-1] * n
    for i in range(n):
        if row[i] >= 0:
            continue
        path = []
        j = i
        base = -1
        while True:
            path.append(j)
            row[j] = -2  # on the walk: a parent cycle ends it
            p = parent[j]
            if p < 0 or lane[p] != lane[j] or row[p] == -2:
                break
            if row[p] >= 0:
                base = row[p]
                break
            j = p
        for k in reversed(path):
            base = min(base + 1, MAX_ROWS - 1)
            row[k] = base
    return row


def timeline_build(spans: Iterable[SpanRecord], *, mode: str = "trace", title: str = "",
                   findings: Sequence[dict] = (), tolerance_ms: float = 50.0,
                   collapse_over: int = COLLAPSE_OVER, critical: bool = True, causal: bool = True,
                   extra_edges: Sequence[tuple[str, str, str]] = ()) -> dict:
    """The timeline data for one trace (mode "trace": x in ms since the first start, critical
    path and clock skew) or one key's accesses (mode "key": x in epoch ms, access labels).
    `extra_edges` are (from span id, to span id, kind) drawn whatever their lanes (the finding
    page's evidence); `critical=False` leaves the critical path out (a slice of several traces),
    `causal=False` the causal edges (only `extra_edges` are drawn)."""
    want_critical = critical
    spans = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
    n = len(spans)
    trace_mode = mode == "trace"
    t0 = spans[0].start_ns if spans else 0
    index = {(s.trace_id, s.span_id): i for i, s in enumerate(spans)}
    by_span_id = {s.span_id: i for i, s in enumerate(spans)}

    lane_keys = sorted({(s.service_name, s.instance_id, s.agent) for s in spans})
    lane_of = {k: i for i, k in enumerate(lane_keys)}
    lane = [lane_of[(s.service_name, s.instance_id, s.agent)] for s in spans]
    get = index.get
    parent = [get((s.trace_id, s.parent_span_id), -1) if s.parent_span_id else -1 for s in spans]
    row = _rows(parent, lane)

    if trace_mode:
        scale, offset, digits = 1e-6, t0, 4
    else:
        scale, offset, digits = 1e-6, 0, 3
    x0 = [round((s.start_ns - offset) * scale, digits) for s in spans]
    x1 = [round((s.end_ns - offset) * scale, digits) for s in spans]

    critical = []
    skew: dict[str, int] = {}
    if trace_mode and spans:
        if want_critical:
            critical = [by_span_id[i] for i in critical_path(spans) if i in by_span_id]
        skew = clock_skew(spans)
    cat = [0] * n

    found = []
    for f in findings:
        idxs = sorted({by_span_id[s] for s in f.get("span_ids", ()) if s in by_span_id})
        acknowledged = f.get("status") == "acknowledged"
        for i in idxs:
            if not acknowledged:
                cat[i] = OPEN_FINDING
            elif cat[i] != OPEN_FINDING:
                cat[i] = ACKNOWLEDGED_FINDING
        shown = {k: v for k, v in f.items() if k != "evidence_edges"}
        if "evidence_edges" in f:
            # The finding's evidence (traces.explain) where both ends are drawn here, as span indexes:
            # the page draws it when the finding is clicked. What is elsewhere is counted, not drawn.
            here = [[by_span_id[a], by_span_id[b], kind] for a, b, kind in f["evidence_edges"]
                    if a in by_span_id and b in by_span_id]
            shown |= {"evidence": here, "evidence_elsewhere": len(f["evidence_edges"]) - len(here)}
        found.append({**shown, "spans": idxs})

    edges = []
    for a, b, kind in causal_edges(spans) if n > 1 and causal else ():
        i, j = by_span_id.get(a), by_span_id.get(b)
        if i is not None and j is not None and lane[i] != lane[j]:
            edges.append([i, j, kind])
    for a, b, kind in extra_edges:
        i, j = by_span_id.get(a), by_span_id.get(b)
        if i is not None and j is not None:
            edges.append([i, j, kind])

    lanes = []
    for li, (service, instance, agent) in enumerate(lane_keys):
        lanes.append({"label": _lane_label(service, instance, agent), "service": service, "instance": instance,
                      "agent": agent, "clock": "", "skew_ms": 0.0, "skewed": False, "rows": 1, "count": 0,
                      "x0": math.inf, "x1": -math.inf, "errors": 0, "findings": 0})
    for i, s in enumerate(spans):
        ln = lanes[lane[i]]
        ln["count"] += 1
        ln["rows"] = max(ln["rows"], row[i] + 1)
        ln["x0"] = min(ln["x0"], x0[i])
        ln["x1"] = max(ln["x1"], x1[i])
        if s.status_code == STATUS_ERROR:
            ln["errors"] += 1
        if cat[i] in FINDING_CATEGORIES:
            ln["findings"] += 1
        if not ln["clock"]:
            ln["clock"] = s.clock
    for ln in lanes:
        off = skew.get(ln["clock"], 0) / 1e6
        ln["skew_ms"] = round(off, 3)
        ln["skewed"] = abs(off) > tolerance_ms

    kinds, statuses = KIND_NAMES, STATUS_NAMES
    details = [{
        "trace_id": s.trace_id,
        "kind": kinds[s.kind] if 0 <= s.kind < len(kinds) else str(s.kind),
        "status": statuses[s.status_code] if 0 <= s.status_code < len(statuses) else str(s.status_code),
        "status_message": s.status_message,
        "version": s.service_version,
        "thread": s.thread_id,
        "attributes": s.attributes,
        "events": s.events,
        "links": [[link.trace_id, link.span_id] for link in s.links],
    } for s in spans]

    return {
        "mode": mode,
        "title": title,
        "x_kind": "ms" if trace_mode else "date",
        "t0_ns": t0 if trace_mode else 0,
        "collapsed": n > collapse_over,
        "tolerance_ms": tolerance_ms,
        "lanes": lanes,
        "spans": {
            "id": [s.span_id for s in spans],
            "parent": parent,
            "lane": lane,
            "row": row,
            "x0": x0,
            "x1": x1,
            "name": [s.name for s in spans],
            "cat": cat,
            "err": [1 if s.status_code == STATUS_ERROR else 0 for s in spans],
            "label": [access_label(s) for s in spans] if not trace_mode else [short_name(s.name) for s in spans],
        },
        "details": details,
        "edges": edges,
        "critical": critical,
        "findings": found,
    }


def skew_note(lanes: Sequence[dict]) -> str:
    """What "Adjust for clock skew" says it did: each process moved and by how much (the
    negated offset: a clock reading 3 s behind is moved +3000 ms). static/causeway/timeline.js
    writes the same note when the box is ticked."""
    shifted = [f"{ln['agent']} ({ln['clock']}) shifted by {-ln['skew_ms']:+.1f} ms" for ln in lanes if ln["skew_ms"]]
    return f"Adjusted: {'; '.join(shifted)}." if shifted else "No clock needed shifting."


def lane_children(parent: list[int], lane: list[int]) -> dict[int, list[int]]:
    """Each span's children in its own lane: the tree a lane folds, as Jaeger's waterfall does.
    A child in another lane (an RPC's server side) is that lane's root, not folded with it."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parent):
        if p >= 0 and lane[p] == lane[i]:
            children.setdefault(p, []).append(i)
    return children


def _hidden_by_subtree(children: dict[int, list[int]],
                       collapsed_spans: Iterable[int]) -> tuple[set[int], dict[int, int]]:
    """(the spans not drawn, {folded span: how many of its descendants in its lane it hides}).
    The folded spans themselves stay visible, unless folded away under another."""
    hidden: set[int] = set()
    counts: dict[int, int] = {}
    for root in collapsed_spans:
        below: set[int] = set()  # a set, so a corrupt parent cycle ends the walk
        todo = list(children.get(root, ()))
        while todo:
            i = todo.pop()
            if i not in below and i != root:
                below.add(i)
                todo.extend(children.get(i, ()))
        counts[root] = len(below)
        hidden |= below
    return hidden, counts


def figure_build(data: dict, *, collapsed_lanes: Iterable[int] | None = None, collapsed_spans: Iterable[int] = (),
                 skew_adjust: bool = False, show_critical: bool = True, all_edges: bool | None = None) -> dict:
    """The Plotly figure (as its JSON dict) for timeline data in one view state. Without
    `collapsed_lanes`, every lane is collapsed when the data says so, else none. A key's history
    draws only the edges that touch a finding unless `all_edges` (thousands of reads-from arrows
    are a tangle); a trace draws them all unless told otherwise."""
    if all_edges is None:
        all_edges = data["mode"] != "key"
    lanes, S = data["lanes"], data["spans"]
    if collapsed_lanes is None:
        collapsed = set(range(len(lanes))) if data["collapsed"] else set()
    else:
        collapsed = set(collapsed_lanes)
    children = lane_children(S["parent"], S["lane"])
    hidden, folded = _hidden_by_subtree(children, collapsed_spans)
    base, y = [], 0.0
    for li, ln in enumerate(lanes):
        base.append(y)
        y += (1 if li in collapsed else ln["rows"]) + LANE_GAP
    total = max(y - LANE_GAP, 1)
    shift = [ln["skew_ms"] if skew_adjust else 0.0 for ln in lanes]

    lane_col, row_col, x0, x1, cat, name = S["lane"], S["row"], S["x0"], S["x1"], S["cat"], S["name"]
    segs = [([], []) for _ in CATEGORIES]
    hx, hy, hc, ht = [], [], [], []
    ypos: dict[int, float] = {}
    for i in range(len(lane_col)):
        if i in hidden:
            continue
        li = lane_col[i]
        c = cat[i]
        if li in collapsed:
            if c == 0:
                ypos[i] = base[li]
                continue
            yy = base[li]
        else:
            yy = base[li] + row_col[i]
        ypos[i] = yy
        a, b = x0[i] - shift[li], x1[i] - shift[li]
        xs, ys = segs[c]
        xs += (a, b, None)
        ys += (yy, yy, None)
        hx.append((a + b) / 2)
        hy.append(yy)
        hc.append(i)
        ht.append(f"{plotly_text(name[i])}<br>{x1[i] - x0[i]:.3f} ms")
    sx, sy = [], []
    for li in sorted(collapsed):
        ln = lanes[li]
        if ln["count"]:
            a, b = ln["x0"] - shift[li], ln["x1"] - shift[li]
            sx += (a, b, None)
            sy += (base[li], base[li], None)
            hx.append((a + b) / 2)
            hy.append(base[li])
            hc.append(-1 - li)
            ht.append(f"{ln['count']} spans of {plotly_text(ln['agent'])}<br>click to expand the lane")

    plot_px = min(max(total * ROW_PX, 200), 1400)
    row_px = plot_px / (total + 1)
    width = max(2.0, min(14.0, row_px * 0.6))

    crit_x, crit_y = [], []
    if show_critical:
        for i in data["critical"]:
            li = lane_col[i]
            if i in ypos and (li not in collapsed or cat[i]):
                crit_x += (x0[i] - shift[li], x1[i] - shift[li], None)
                crit_y += (ypos[i], ypos[i], None)

    edge_x, edge_y, head_x, head_y, annotations = [], [], [], [], []
    gap_x, gap_y = [], []
    # An edge between two collapsed lanes is drawn only when it touches a highlighted span:
    # thousands of arrows between summary bars say nothing and cost the browser seconds.
    drawn = [(a, b, k) for a, b, k in data["edges"] if a in ypos and b in ypos
             and (lane_col[a] not in collapsed or lane_col[b] not in collapsed or cat[a] or cat[b])
             and (all_edges or cat[a] in FINDING_CATEGORIES or cat[b] in FINDING_CATEGORIES)]
    plain = sum(1 for *_, k in drawn if k in EDGE_KINDS)
    for a, b, kind in drawn:
        if kind == "no_path":  # the absence of a path, drawn between the two bars' middles
            gap_x += ((x0[a] + x1[a]) / 2 - shift[lane_col[a]], (x0[b] + x1[b]) / 2 - shift[lane_col[b]], None)
            gap_y += (ypos[a], ypos[b], None)
            continue
        xa = (x1[a] if kind in ("reads_from", "lock", "evidence", "late") else x0[a]) - shift[lane_col[a]]
        xb = x0[b] - shift[lane_col[b]]
        if kind in EVIDENCE_KINDS or plain <= ANNOTATED_EDGES_MAX:
            strong = kind == "evidence"
            annotations.append({"x": xb, "y": ypos[b], "ax": xa, "ay": ypos[a], "xref": "x", "yref": "y",
                                "axref": "x", "ayref": "y", "showarrow": True, "arrowhead": 2,
                                "arrowsize": 1.1 if strong else 1.2, "arrowwidth": 3 if strong else 1.4,
                                "arrowcolor": EDGE_COLORS.get(kind, "#334155"), "text": "",
                                "standoff": 2, "hovertext": kind})
        else:
            edge_x += (xa, xb, None)
            edge_y += (ypos[a], ypos[b], None)
            head_x.append(xb)
            head_y.append(ypos[b])

    labels_x, labels_y, labels_t = [], [], []
    if S["label"]:
        everything = len(ypos) <= LABELS_MAX
        for i, yy in ypos.items():
            li = lane_col[i]
            if S["label"][i] and (li not in collapsed or cat[i]) and (everything or cat[i]):
                labels_x.append(x0[i] - shift[li])
                labels_y.append(yy - 0.32)
                label = plotly_text(S["label"][i])
                labels_t.append(f"{label} · {folded[i]} hidden" if i in folded else label)

    # A fold toggle at the start of each bar with children in its lane: ▾ open, ▸ folded.
    fold_x, fold_y, fold_c, fold_t, fold_s = [], [], [], [], []
    for i in children:
        li = lane_col[i]
        if i in ypos and li not in collapsed:
            fold_x.append(x0[i] - shift[li])
            fold_y.append(ypos[i])
            fold_c.append(i)
            fold_t.append(f"unfold: show {folded[i]} hidden spans" if i in folded else
                          f"fold: hide the spans under {plotly_text(name[i])}")
            fold_s.append(FOLDED_SYMBOL if i in folded else OPEN_SYMBOL)

    # The skeleton goes through graph_objects (validated); the long columns are filled in
    # afterwards, since validating 50,000-element lists costs more than everything else.
    fig = go.Figure(layout=go.Layout(
                height=int(plot_px + 110),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        hovermode="closest",
        hoverdistance=30,
        dragmode="zoom",
        uirevision="timeline",
        showlegend=True,
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        xaxis={"title": {"text": "ms since trace start" if data["x_kind"] == "ms" else "time (UTC)"},
               "type": "linear" if data["x_kind"] == "ms" else "date", "zeroline": False, "showgrid": True,
               # A key's history spans hours: a brush under the chart to pick the stretch to read.
               "rangeslider": {"visible": data["mode"] == "key", "thickness": 0.08}},
        yaxis={"tickmode": "array", "tickvals": base, "ticktext": [_tick(ln, li in collapsed) for li, ln in
                                                                   enumerate(lanes)],
               "range": [total + 0.1, -0.8], "showgrid": False, "zeroline": False, "automargin": True},
        shapes=[{"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": base[li] - 0.5,
                 "y1": base[li] + (1 if li in collapsed else ln["rows"]) - 0.5, "line": {"width": 0},
                 "fillcolor": "#fef2f2" if ln["skewed"] else ("#f1f5f9" if li % 2 == 0 else "#ffffff"),
                 "layer": "below"} for li, ln in enumerate(lanes)],
    ))
    fig.add_trace(go.Scattergl(name="collapsed lane", mode="lines", line={"color": SUMMARY_COLOR, "width": width},
                               hoverinfo="skip", connectgaps=False))
    # The critical path: an outline, drawn under the bars.
    fig.add_trace(go.Scattergl(name=CATEGORIES[1][0], mode="lines", line={"color": CRITICAL_COLOR, "width": width + 5},
                               hoverinfo="skip", connectgaps=False, showlegend=bool(crit_x)))
    for c, (label, color) in enumerate(CATEGORIES):
        if c == 1:
            continue
        # A finding's bar also gets a dot at each end, so a 1 ms write stays visible in a 10 s trace.
        fig.add_trace(go.Scattergl(name=label, mode="lines+markers" if c in FINDING_CATEGORIES else "lines",
                                   line={"color": color, "width": width}, marker={"color": color, "size": 9},
                                   hoverinfo="skip", connectgaps=False))
    fig.add_trace(go.Scattergl(name="causal edge", mode="lines", line={"color": "rgba(71,85,105,0.45)", "width": 1},
                               hoverinfo="skip", connectgaps=False, showlegend=bool(edge_x)))
    fig.add_trace(go.Scattergl(name="edge heads", mode="markers", showlegend=False, hoverinfo="skip",
                               marker={"color": "rgba(71,85,105,0.7)", "size": 5, "symbol": "diamond"}))
    fig.add_trace(go.Scatter(name="no happens-before path", mode="lines", hoverinfo="skip",
                             line={"color": NO_PATH_COLOR, "width": 2, "dash": "dash"}, showlegend=bool(gap_x)))
    # SVG, not WebGL: WebGL text is placed in float32, which cannot tell epoch milliseconds apart.
    fig.add_trace(go.Scatter(name="labels", mode="text", showlegend=False, hoverinfo="skip",
                               textposition="top right", textfont={"size": 10, "color": "#1e293b"}))
    fig.add_trace(go.Scattergl(name="handles", mode="markers", showlegend=False,
                               marker={"size": max(6.0, width), "color": "#000000", "opacity": 0},
                               hovertemplate="%{text}<extra></extra>"))
    # Over the handles, so a click on a caret folds rather than selects.
    fig.add_trace(go.Scattergl(name="fold toggles", mode="markers", showlegend=False,
                               marker={"size": FOLD_SIZE, "color": "#1e293b", "line": {"color": "#ffffff", "width": 1}},
                               hovertemplate="%{text}<extra></extra>"))
    out = fig.to_plotly_json()
    columns = [
        {"x": sx, "y": sy},
        {"x": crit_x, "y": crit_y},
        *({"x": xs, "y": ys} for c, (xs, ys) in enumerate(segs) if c != 1),
        {"x": edge_x, "y": edge_y},
        {"x": head_x, "y": head_y},
        {"x": gap_x, "y": gap_y},
        {"x": labels_x, "y": labels_y, "text": labels_t},
        {"x": hx, "y": hy, "customdata": hc, "text": ht},
        {"x": fold_x, "y": fold_y, "customdata": fold_c, "text": fold_t, "marker": {"symbol": fold_s}},
    ]
    for trace, cols in zip(out["data"], columns):
        marker = cols.pop("marker", None)
        trace.update(cols)
        if marker:
            trace["marker"].update(marker)
    out["layout"]["annotations"] = annotations
    out["layout"]["template"] = _white_template()
    return out


@lru_cache(maxsize=1)
def _white_template() -> dict:
    """plotly_white as JSON, built once: validating the template is most of a small figure's cost."""
    return pio.templates["plotly_white"].to_plotly_json()


def _tick(lane: dict, collapsed: bool) -> str:
    text = plotly_text(lane["label"])
    if lane["skewed"]:
        text = f"⚠ {text} ({lane['skew_ms']:+.0f} ms)"
    if collapsed:
        text = f"▸ {text} [{lane['count']}]"
    return text


def timeline_json(data: dict) -> str:
    """Compact JSON safe inside <script type="application/json"> (as json_script escapes it).
    orjson: for a 10,000-span trace the standard json module took about 140 ms of the page."""
    text = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    return text.replace("<", "\\u003C").replace(">", "\\u003E").replace("&", "\\u0026")


# ---------------------------------------------------------------------------
# The trace as a graph: agents (or services) and what passed between them


def graph_build(spans: Sequence[SpanRecord], *, by: str = "agent") -> dict:
    """A network figure: one node per agent (or service), one edge per direction and kind
    with its count: "call" (a span whose parent is another node's) and "message" (a span
    link to another node's span)."""
    node_of = (lambda s: s.agent or s.service_name or "?") if by == "agent" else (lambda s: s.service_name or "?")
    by_id = {s.span_id: s for s in spans}
    sizes = Counter(node_of(s) for s in spans)
    service_of = {}
    for s in spans:
        service_of.setdefault(node_of(s), s.service_name or "?")
    counts: Counter = Counter()
    for s in spans:
        p = by_id.get(s.parent_span_id) if s.parent_span_id else None
        if p is not None and node_of(p) != node_of(s):
            counts[(node_of(p), node_of(s), "call")] += 1
        for link in s.links:
            q = by_id.get(link.span_id)
            if q is not None and node_of(q) != node_of(s):
                counts[(node_of(q), node_of(s), "message")] += 1
    nodes = sorted(sizes)
    pos = {}
    for k, node in enumerate(nodes):
        angle = 2 * math.pi * k / max(len(nodes), 1) + math.pi / 2
        pos[node] = (0.0, 0.0) if len(nodes) == 1 else (math.cos(angle), math.sin(angle))
    services = sorted(set(service_of.values()))
    palette = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d", "#475569"]
    colour = {svc: palette[i % len(palette)] for i, svc in enumerate(services)}

    fig = go.Figure(layout=go.Layout(
        template="plotly_white", height=640, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=True,
        xaxis={"visible": False, "range": [-1.5, 1.5]}, yaxis={"visible": False, "range": [-1.3, 1.3],
                                                                 "scaleanchor": "x"},
        hovermode="closest",
    ))
    annotations, label_x, label_y, label_t = [], [], [], []
    pairs = Counter((a, b) for a, b, _ in counts)
    for kind, color, dash in (("call", "#334155", "solid"), ("message", "#7c3aed", "dash")):
        xs, ys = [], []
        for (a, b, k), count in sorted(counts.items()):
            if k != kind:
                continue
            (xa, ya), (xb, yb) = pos[a], pos[b]
            # Two directions (or kinds) between one pair are bent apart a little.
            bend = 0.08 * (1 if (a < b) == (kind == "call") else -1) if pairs[(a, b)] + pairs[(b, a)] > 1 else 0
            mx, my = (xa + xb) / 2 - (yb - ya) * bend, (ya + yb) / 2 + (xb - xa) * bend
            xs += (xa, mx, xb, None)
            ys += (ya, my, yb, None)
            annotations.append({"x": xb * 0.9 + mx * 0.1, "y": yb * 0.9 + my * 0.1, "ax": mx, "ay": my,
                                "xref": "x", "yref": "y", "axref": "x", "ayref": "y", "showarrow": True,
                                "arrowhead": 2, "arrowsize": 1.3, "arrowwidth": 1.5, "arrowcolor": color,
                                "text": ""})
            label_x.append(mx)
            label_y.append(my)
            label_t.append(f"{count} {kind}{'s' if count != 1 else ''}")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{kind}s", hoverinfo="skip",
                                 line={"color": color, "width": 1.5, "dash": dash}))
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="text", text=label_t, showlegend=False, hoverinfo="skip",
                             textfont={"size": 11, "color": "#0f172a"}))
    for svc in services:
        members = [n for n in nodes if service_of[n] == svc]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in members], y=[pos[n][1] for n in members], mode="markers+text",
            name=plotly_text(svc), text=[plotly_text(n) for n in members], textposition="bottom center",
            marker={"size": [14 + 6 * math.log10(sizes[n] + 1) for n in members], "color": colour[svc],
                    "line": {"width": 1, "color": "#fff"}},
            hovertext=[f"{plotly_text(n)} ({plotly_text(svc)})<br>{sizes[n]} spans" for n in members],
            hoverinfo="text",
        ))
    fig.update_layout(annotations=annotations)
    return fig.to_plotly_json()
