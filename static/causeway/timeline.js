/* Causal timeline: draws the figure built by traces/timeline.py and redraws it when a lane
 * or subtree is collapsed or clock skew is adjusted. build() mirrors figure_build() in
 * traces/timeline.py: keep the two in step. Everything comes from the JSON sent with the
 * page; a click never makes a request. */
(function () {
  "use strict";
  var holder = document.getElementById("timeline-data");
  var chart = document.getElementById("tl-chart");
  if (!holder || !chart) return;
  if (!window.Plotly) { chart.textContent = "plotly.js did not load."; return; }

  performance.mark("timeline:start");
  var data = JSON.parse(holder.textContent);
  performance.mark("timeline:parsed");
  var fig = data.figure;
  delete data.figure;
  var S = data.spans, lanes = data.lanes, n = S.id.length;
  var LANE_GAP = 0.6, ROW_PX = 30, ANNOTATED_EDGES_MAX = 150, LABELS_MAX = 1500;
  var EDGE_COLORS = {rpc: "#334155", link: "#7c3aed", reads_from: "#0f766e", lock: "#b45309",
                     evidence: "#b91c1c", late: "#64748b"};
  var PLAIN_EDGES = {rpc: 1, link: 1, reads_from: 1, lock: 1}, EVIDENCE_EDGES = {evidence: 1, late: 1};
  var CAT_NAMES = ["span", "critical path", "finding", "acknowledged finding"];  // traces.timeline.CATEGORIES
  var config = {responsive: true, displaylogo: false, scrollZoom: true,
                modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"]};
  var panel = document.getElementById("tl-panel");
  var statusLine = document.getElementById("tl-status");
  var traceIndex = {};
  fig.data.forEach(function (t, i) { traceIndex[t.name] = i; });

  var state = {
    lanes: new Set(data.collapsed ? lanes.map(function (_, i) { return i; }) : []),
    spans: new Set(),      // spans whose subtree is collapsed
    skew: !!data.skew_adjust,  // ?skew=1: the figure came adjusted and the box ticked
    critical: true,        // the critical path outlined
    allEdges: data.mode !== "key",  // a key's history: only the edges that touch a finding, unless asked
    selected: [],          // span indexes ringed on the chart
    finding: null
  };
  var byId = {};
  for (var k = 0; k < n; k++) byId[S.id[k]] = k;
  var findingsOf = {};
  data.findings.forEach(function (f) {
    f.spans.forEach(function (i) { (findingsOf[i] = findingsOf[i] || []).push(f); });
  });
  var criticalSet = new Set(data.critical);
  var children = null;
  /* Each span's children in its own lane: the tree a lane folds (lane_children() in Python). */
  function kids() {
    if (!children) {
      children = {};
      for (var i = 0; i < n; i++) {
        var p = S.parent[i];
        if (p >= 0 && S.lane[p] === S.lane[i]) (children[p] = children[p] || []).push(i);
      }
    }
    return children;
  }

  /* The spans not drawn, and how many each folded span hides (_hidden_by_subtree() in Python). */
  function hiddenSpans() {
    var hidden = new Set(), counts = {};
    state.spans.forEach(function (r) {
      var below = descendants(r);
      counts[r] = below.length;
      below.forEach(function (i) { hidden.add(i); });
    });
    return {spans: hidden, counts: counts};
  }

  function descendants(root) {
    var ch = kids(), seen = new Set(), todo = (ch[root] || []).slice();
    while (todo.length) {
      var i = todo.pop();
      if (seen.has(i) || i === root) continue;
      seen.add(i);
      (ch[i] || []).forEach(function (c) { todo.push(c); });
    }
    return Array.from(seen);
  }

  function toggleFold(i) {
    if (state.spans.has(i)) state.spans.delete(i); else state.spans.add(i);
    return redraw();
  }

  /* Span text as Plotly must be given it to draw it as typed: plotly_text() in traces/timeline.py. */
  function esc(text) {
    text = String(text);
    return /[&<>]/.test(text) ? text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;") : text;
  }

  function tick(lane, collapsed) {
    var text = esc(lane.label);
    if (lane.skewed) text = "⚠ " + text + " (" + (lane.skew_ms >= 0 ? "+" : "") + lane.skew_ms.toFixed(0) + " ms)";
    if (collapsed) text = "▸ " + text + " [" + lane.count + "]";
    return text;
  }

  function fmt(v) { return v.toFixed(3); }

  /* The figure for the current state: same geometry as figure_build() in Python. */
  function build() {
    var base = [], y = 0, collapsed = state.lanes;
    lanes.forEach(function (ln, li) { base.push(y); y += (collapsed.has(li) ? 1 : ln.rows) + LANE_GAP; });
    var total = Math.max(y - LANE_GAP, 1);
    var shift = lanes.map(function (ln) { return state.skew ? ln.skew_ms : 0; });
    var folds = hiddenSpans(), hidden = folds.spans, folded = folds.counts;
    var segs = CAT_NAMES.map(function () { return [[], []]; });
    var hx = [], hy = [], hc = [], ht = [];
    var ypos = new Float64Array(n).fill(NaN);
    for (var i = 0; i < n; i++) {
      if (hidden.has(i)) continue;
      var li = S.lane[i], c = S.cat[i], yy;
      if (collapsed.has(li)) {
        if (c === 0) { ypos[i] = base[li]; continue; }
        yy = base[li];
      } else {
        yy = base[li] + S.row[i];
      }
      ypos[i] = yy;
      var a = S.x0[i] - shift[li], b = S.x1[i] - shift[li];
      segs[c][0].push(a, b, null);
      segs[c][1].push(yy, yy, null);
      hx.push((a + b) / 2); hy.push(yy); hc.push(i);
      ht.push(esc(S.name[i]) + "<br>" + fmt(S.x1[i] - S.x0[i]) + " ms");
    }
    var sx = [], sy = [];
    Array.from(collapsed).sort(function (p, q) { return p - q; }).forEach(function (li) {
      var ln = lanes[li];
      if (!ln.count) return;
      var a = ln.x0 - shift[li], b = ln.x1 - shift[li];
      sx.push(a, b, null); sy.push(base[li], base[li], null);
      hx.push((a + b) / 2); hy.push(base[li]); hc.push(-1 - li);
      ht.push(ln.count + " spans of " + esc(ln.agent) + "<br>click to expand the lane");
    });
    var plotPx = Math.min(Math.max(total * ROW_PX, 200), 1400);
    var rowPx = plotPx / (total + 1);
    var width = Math.max(2, Math.min(14, rowPx * 0.6));

    var cx = [], cy = [];
    if (state.critical) {
      data.critical.forEach(function (i) {
        var li = S.lane[i];
        if (isNaN(ypos[i]) || (collapsed.has(li) && !S.cat[i])) return;
        cx.push(S.x0[i] - shift[li], S.x1[i] - shift[li], null); cy.push(ypos[i], ypos[i], null);
      });
    }
    var drawn = data.edges.filter(function (e) {
      var a = e[0], b = e[1];
      return !isNaN(ypos[a]) && !isNaN(ypos[b]) &&
        (!collapsed.has(S.lane[a]) || !collapsed.has(S.lane[b]) || S.cat[a] || S.cat[b]) &&
        (state.allEdges || S.cat[a] >= 2 || S.cat[b] >= 2);
    });
    // The clicked finding's evidence (traces.explain), wherever its ends are drawn.
    selectedEvidence().forEach(function (e) {
      if (!isNaN(ypos[e[0]]) && !isNaN(ypos[e[1]])) drawn.push(e);
    });
    var plain = drawn.filter(function (e) { return PLAIN_EDGES[e[2]]; }).length;
    var ex = [], ey = [], headX = [], headY = [], annotations = [], gx = [], gy = [];
    drawn.forEach(function (e) {
      var a = e[0], b = e[1], kind = e[2];
      if (kind === "no_path") {
        gx.push((S.x0[a] + S.x1[a]) / 2 - shift[S.lane[a]], (S.x0[b] + S.x1[b]) / 2 - shift[S.lane[b]], null);
        gy.push(ypos[a], ypos[b], null);
        return;
      }
      var fromEnd = kind === "reads_from" || kind === "lock" || EVIDENCE_EDGES[kind];
      var xa = (fromEnd ? S.x1[a] : S.x0[a]) - shift[S.lane[a]];
      var xb = S.x0[b] - shift[S.lane[b]];
      if (EVIDENCE_EDGES[kind] || plain <= ANNOTATED_EDGES_MAX) {
        var strong = kind === "evidence";
        annotations.push({x: xb, y: ypos[b], ax: xa, ay: ypos[a], xref: "x", yref: "y", axref: "x", ayref: "y",
                          showarrow: true, arrowhead: 2, arrowsize: strong ? 1.1 : 1.2, arrowwidth: strong ? 3 : 1.4,
                          arrowcolor: EDGE_COLORS[kind] || "#334155", text: "", standoff: 2, hovertext: kind});
      } else {
        ex.push(xa, xb, null); ey.push(ypos[a], ypos[b], null);
        headX.push(xb); headY.push(ypos[b]);
      }
    });
    var lx = [], ly = [], lt = [];
    if (S.label.length) {
      var everything = hc.filter(function (c) { return c >= 0; }).length <= LABELS_MAX;
      for (var j = 0; j < n; j++) {
        if (isNaN(ypos[j]) || !S.label[j]) continue;
        var lj = S.lane[j];
        if (collapsed.has(lj) && !S.cat[j]) continue;
        if (!everything && !S.cat[j]) continue;
        lx.push(S.x0[j] - shift[lj]); ly.push(ypos[j] - 0.32);
        lt.push(esc(S.label[j]) + (folded[j] !== undefined ? " · " + folded[j] + " hidden" : ""));
      }
    }
    var fx = [], fy = [], fc = [], ft = [], fs = [], ch = kids();
    Object.keys(ch).forEach(function (key) {
      var i = Number(key), li = S.lane[i];
      if (isNaN(ypos[i]) || collapsed.has(li)) return;
      var isFolded = folded[i] !== undefined;
      fx.push(S.x0[i] - shift[li]); fy.push(ypos[i]); fc.push(i);
      ft.push(isFolded ? "unfold: show " + folded[i] + " hidden spans" : "fold: hide the spans under " + esc(S.name[i]));
      fs.push(isFolded ? "triangle-right" : "triangle-down");
    });
    var sel = {x: [], y: []};
    state.selected.forEach(function (i) {
      if (isNaN(ypos[i])) return;
      var li = S.lane[i];
      sel.x.push((S.x0[i] + S.x1[i]) / 2 - shift[li]); sel.y.push(ypos[i]);
    });

    var set = function (name, cols) { Object.assign(fig.data[traceIndex[name]], cols); };
    set("collapsed lane", {x: sx, y: sy, line: Object.assign({}, fig.data[traceIndex["collapsed lane"]].line, {width: width})});
    CAT_NAMES.forEach(function (name, c) {
      if (c === 1) return;  // the critical path is an outline, below
      set(name, {x: segs[c][0], y: segs[c][1], line: Object.assign({}, fig.data[traceIndex[name]].line, {width: width})});
    });
    set("critical path", {x: cx, y: cy, showlegend: cx.length > 0,
                          line: Object.assign({}, fig.data[traceIndex["critical path"]].line, {width: width + 5})});
    set("causal edge", {x: ex, y: ey, showlegend: ex.length > 0});
    if (traceIndex["no happens-before path"] !== undefined) set("no happens-before path", {x: gx, y: gy, showlegend: gx.length > 0});
    set("edge heads", {x: headX, y: headY});
    set("labels", {x: lx, y: ly, text: lt});
    set("handles", {x: hx, y: hy, customdata: hc, text: ht,
                    marker: Object.assign({}, fig.data[traceIndex.handles].marker, {size: Math.max(6, width)})});
    set("fold toggles", {x: fx, y: fy, customdata: fc, text: ft,
                         marker: Object.assign({}, fig.data[traceIndex["fold toggles"]].marker, {symbol: fs})});
    if (traceIndex.selected === undefined) {
      traceIndex.selected = fig.data.length;
      fig.data.push({type: "scattergl", name: "selected", mode: "markers", showlegend: false, hoverinfo: "skip",
                     marker: {symbol: "circle-open", size: 16, color: "#111827", line: {width: 2}}});
    }
    set("selected", sel);

    var L = fig.layout;
    L.height = Math.round(plotPx + 110);
    L.yaxis.tickvals = base;
    L.yaxis.ticktext = lanes.map(function (ln, li) { return tick(ln, collapsed.has(li)); });
    L.yaxis.range = [total + 0.1, -0.8];
    L.yaxis.uirevision = "rows" + total;
    L.shapes = lanes.map(function (ln, li) {
      return {type: "rect", xref: "paper", yref: "y", x0: 0, x1: 1, y0: base[li] - 0.5,
              y1: base[li] + (collapsed.has(li) ? 1 : ln.rows) - 0.5, line: {width: 0},
              fillcolor: ln.skewed ? "#fef2f2" : (li % 2 === 0 ? "#f1f5f9" : "#ffffff"), layer: "below"};
    });
    L.annotations = annotations;
  }

  function redraw() {
    build();
    renderLanes();
    return Plotly.react(chart, fig.data, fig.layout, config);
  }

  /* ---- side panel ---- */

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "class") node.className = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function value(v) { return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v); }

  function kvTable(obj, className) {
    var keys = Object.keys(obj || {}).sort();
    if (!keys.length) return el("p", {class: "muted"}, "none");
    var table = el("table", {class: "tl-kv " + (className || "")});
    keys.forEach(function (key) {
      var tr = el("tr");
      tr.appendChild(el("th", null, key));
      tr.appendChild(el("td", null, value(obj[key])));
      table.appendChild(tr);
    });
    return table;
  }

  function when(i) {
    if (data.x_kind === "date") return new Date(S.x0[i]).toISOString().replace("T", " ").replace("Z", " UTC");
    return "+" + fmt(S.x0[i]) + " ms";
  }

  function spanLink(i, text) {
    var a = el("a", {href: "#", class: "tl-span-link"}, text || S.name[i]);
    a.addEventListener("click", function (ev) { ev.preventDefault(); selectSpan(i); });
    return a;
  }

  function traceHref(traceId) { return data.trace_url ? data.trace_url + traceId + "/" : null; }

  function spanSection(i, full) {
    var d = data.details[i], sec = el("div", {class: "tl-span-detail", "data-span": S.id[i]});
    var h = el("h3");
    h.appendChild(el("span", null, S.name[i]));
    sec.appendChild(h);
    var dl = el("dl");
    var rows = [
      ["span", S.id[i]],
      ["agent", lanes[S.lane[i]].label],
      ["kind · status", d.kind + " · " + d.status + (d.status_message ? " (" + d.status_message + ")" : "")],
      ["start", when(i)],
      ["duration", fmt(S.x1[i] - S.x0[i]) + " ms"]
    ];
    if (data.mode === "key" && S.label[i]) rows.push(["access", S.label[i]]);
    if (criticalSet.has(i)) rows.push(["critical path", "yes"]);
    if (lanes[S.lane[i]].skewed) rows.push(["clock", "⚠ offset " + lanes[S.lane[i]].skew_ms + " ms"]);
    rows.forEach(function (r) { dl.appendChild(el("dt", null, r[0])); dl.appendChild(el("dd", null, r[1])); });
    dl.appendChild(el("dt", null, "trace"));
    var dd = el("dd"), href = traceHref(d.trace_id);
    if (href && data.mode !== "trace") dd.appendChild(el("a", {href: href}, d.trace_id)); else dd.textContent = d.trace_id;
    dl.appendChild(dd);
    if (S.parent[i] >= 0) {
      dl.appendChild(el("dt", null, "parent"));
      var pd = el("dd"); pd.appendChild(spanLink(S.parent[i])); dl.appendChild(pd);
    }
    sec.appendChild(dl);
    sec.appendChild(el("h4", null, "Attributes"));
    sec.appendChild(kvTable(d.attributes, "tl-attributes"));
    if (!full) return sec;
    sec.appendChild(el("h4", null, "Events (" + d.events.length + ")"));
    if (!d.events.length) sec.appendChild(el("p", {class: "muted"}, "none"));
    d.events.forEach(function (e) {
      var box = el("div", {class: "tl-event"});
      var offset = e.time_ns !== undefined && data.x_kind === "ms" ? " +" + fmt((e.time_ns - data.t0_ns) / 1e6) + " ms" : "";
      box.appendChild(el("strong", null, e.name + offset));
      box.appendChild(kvTable(e.attributes));
      sec.appendChild(box);
    });
    sec.appendChild(el("h4", null, "Links (" + d.links.length + ")"));
    if (!d.links.length) sec.appendChild(el("p", {class: "muted"}, "none"));
    var ul = el("ul");
    d.links.forEach(function (l) {
      var li = el("li"), j = byId[l[1]];
      if (j !== undefined) li.appendChild(spanLink(j, S.name[j] + " (" + l[1] + ")"));
      else li.textContent = l[0] + " / " + l[1];
      ul.appendChild(li);
    });
    sec.appendChild(ul);
    return sec;
  }

  function openPanel(title) {
    panel.hidden = false;
    panel.replaceChildren();
    var head = el("div", {class: "tl-panel-head"});
    head.appendChild(el("h2", null, title));
    var close = el("button", {type: "button", class: "secondary", "aria-label": "close"}, "×");
    close.addEventListener("click", function () {
      panel.hidden = true; state.selected = []; markFinding(null); redraw();
    });
    head.appendChild(close);
    panel.appendChild(head);
  }

  function showPanel() {
    // Beside the chart the side column may be scrolled down its findings; below the chart (a narrow
    // window) the panel may be off screen: bring it in, moving as little as possible.
    panel.scrollTop = 0;
    panel.scrollIntoView({block: "nearest"});
  }

  function button(text, onClick) {
    var b = el("button", {type: "button", class: "secondary"}, text);
    b.addEventListener("click", onClick);
    return b;
  }

  function selectSpan(i) {
    state.selected = [i];
    markFinding(null);
    openPanel("Span");
    var actions = el("div", {class: "tl-actions"});
    if ((kids()[i] || []).length) {
      var folded = state.spans.has(i);
      actions.appendChild(button(folded ? "Expand subtree" : "Collapse subtree (" + countBelow(i) + ")", function () {
        toggleFold(i); selectSpan(i);
      }));
    }
    var li = S.lane[i];
    actions.appendChild(button(state.lanes.has(li) ? "Expand lane" : "Collapse lane", function () { toggleLane(li); selectSpan(i); }));
    panel.appendChild(actions);
    (findingsOf[i] || []).forEach(function (f) {
      var p = el("p", {class: "tl-in-finding"});
      p.appendChild(el("span", {class: "tl-kind"}, f.kind));
      p.appendChild(document.createTextNode(" " + f.detail));
      panel.appendChild(p);
    });
    panel.appendChild(spanSection(i, true));
    showPanel();
    redraw();
  }

  function countBelow(i) { return descendants(i).length; }

  function selectedEvidence() {
    if (state.finding === null) return [];
    var f = data.findings.find(function (x) { return String(x.id) === String(state.finding); });
    return (f && f.evidence) || [];
  }

  /* What the drawn evidence means, and where the rest of it is. */
  function evidenceNote(f) {
    var box = el("div", {class: "tl-evidence"}), ev = f.evidence || [];
    var count = function (kind) { return ev.filter(function (e) { return e[2] === kind; }).length; };
    var path = count("evidence"), gaps = count("no_path"), late = count("late");
    var parts = [];
    if (path) parts.push(path + " happens-before step" + (path > 1 ? "s" : "") + " (thick red arrows)");
    if (gaps) parts.push(gaps + " pair" + (gaps > 1 ? "s" : "") + " with no path between them (dashed red)");
    if (late) parts.push(late + " edge" + (late > 1 ? "s" : "") + " that came too late to order them (grey arrows)");
    box.appendChild(el("p", null, parts.length ? "Evidence drawn on this trace: " + parts.join(", ") + "."
                                               : "No evidence can be drawn on this trace alone."));
    var away = (f.sides_elsewhere || 0) + (f.evidence_elsewhere || 0);
    if (away && f.url) {
      var p = el("p", {class: "tl-evidence-elsewhere"});
      p.appendChild(document.createTextNode((f.sides_elsewhere ? f.sides_elsewhere + " of its spans" : "Part of its evidence") +
                                            " on other traces: "));
      p.appendChild(el("a", {href: f.url}, "the finding page draws both sides"));
      box.appendChild(p);
    }
    return box;
  }

  function markFinding(id) {
    state.finding = id;
    document.querySelectorAll(".tl-finding").forEach(function (node) {
      node.classList.toggle("selected", String(id) === node.getAttribute("data-finding"));
    });
  }

  function selectFinding(id, zoom) {
    var f = data.findings.find(function (x) { return String(x.id) === String(id); });
    if (!f) return;
    markFinding(f.id);
    state.selected = f.spans.slice();
    openPanel("Finding");
    var head = el("p");
    head.appendChild(el("span", {class: "tl-kind"}, f.kind));
    if (f.key) {
      head.appendChild(document.createTextNode(" on "));
      head.appendChild(f.key_url ? el("a", {href: f.key_url}, f.key) : el("code", null, f.key));
    }
    panel.appendChild(head);
    panel.appendChild(el("p", {class: "tl-detail"}, f.detail));
    panel.appendChild(el("p", {class: "muted"}, "agents: " + f.agents.join(", ") + " · " + f.status));
    if (f.evidence) panel.appendChild(evidenceNote(f));
    if (f.url) {
      var page = el("p");
      page.appendChild(el("a", {href: f.url, class: "tl-finding-page"},
                           f.trace_ids.length > 1 ? "Open the finding page: both sides, across " + f.trace_ids.length + " traces, and why"
                                                   : "Open the finding page: the evidence and why"));
      panel.appendChild(page);
    }
    var others = f.trace_urls;
    if (others.length > 1 || data.mode !== "trace") {
      var ul = el("ul", {class: "tl-trace-links"});
      others.forEach(function (t) { var li = el("li"); li.appendChild(el("a", {href: t[1]}, "trace " + t[0])); ul.appendChild(li); });
      panel.appendChild(ul);
    }
    if (!f.spans.length) panel.appendChild(el("p", {class: "muted"}, "Its spans are not in this view."));
    f.spans.forEach(function (i) { panel.appendChild(spanSection(i, false)); });
    showPanel();
    redraw().then(function () {
      if (zoom && f.spans.length) {
        var lo = Infinity, hi = -Infinity;
        var shown = f.spans.concat.apply(f.spans, (f.evidence || []).map(function (e) { return [e[0], e[1]]; }));
        shown.forEach(function (i) {
          var s = state.skew ? lanes[S.lane[i]].skew_ms : 0;
          lo = Math.min(lo, S.x0[i] - s); hi = Math.max(hi, S.x1[i] - s);
        });
        var pad = Math.max((hi - lo) * 0.5, 1);
        Plotly.relayout(chart, {"xaxis.range": [lo - pad, hi + pad]});
      }
    });
  }

  /* The accesses table beside a key's chart lists what the chart shows: zooming or brushing
   * hides the rows outside the range. */
  function filterTable() {
    var rows = document.querySelectorAll("#kh-table tbody tr[data-x]");
    if (!rows.length) return;
    var r = chart._fullLayout.xaxis.range, lo = r[0], hi = r[1];
    var ms = function (v) { return typeof v === "string" ? Date.parse(v.replace(" ", "T") + "Z") : v; };
    if (data.x_kind === "date") { lo = ms(lo); hi = ms(hi); }
    var shown = 0;
    rows.forEach(function (tr) {
      var x = Number(tr.getAttribute("data-x")), inside = x >= lo && x <= hi;
      tr.hidden = !inside; if (inside) shown++;
    });
    var count = document.getElementById("kh-shown");
    if (count) count.textContent = shown + " in view";
  }

  function toggleLane(li) {
    if (state.lanes.has(li)) state.lanes.delete(li); else state.lanes.add(li);
    redraw();
  }

  function renderLanes() {
    var list = document.getElementById("tl-lane-list");
    if (!list) return;
    list.replaceChildren();
    lanes.forEach(function (ln, li) {
      var item = el("li", ln.skewed ? {class: "skewed"} : null);
      var b = el("button", {type: "button", class: "tl-lane-toggle", "aria-expanded": String(!state.lanes.has(li)),
                            title: state.lanes.has(li) ? "expand lane" : "collapse lane"},
                 state.lanes.has(li) ? "▸" : "▾");
      b.addEventListener("click", function () { toggleLane(li); });
      item.appendChild(b);
      item.appendChild(el("span", null, " " + (ln.skewed ? "⚠ " : "") + ln.label + " "));
      var extra = ln.count + " spans" + (ln.findings ? ", " + ln.findings + " in findings" : "") +
                  (ln.errors ? ", " + ln.errors + " errors" : "") +
                  (ln.skewed ? ", clock " + (ln.skew_ms >= 0 ? "+" : "") + ln.skew_ms + " ms" : "");
      item.appendChild(el("span", {class: "muted"}, extra));
      list.appendChild(item);
    });
  }

  document.querySelectorAll(".tl-finding").forEach(function (node) {
    var go = function (ev) {
      if (ev.target.closest("a")) return;
      selectFinding(node.getAttribute("data-finding"), true);
    };
    node.addEventListener("click", go);
    node.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); go(ev); } });
  });
  var skewBox = document.getElementById("tl-skew");
  if (skewBox) {
    if (!lanes.some(function (ln) { return ln.skew_ms; })) skewBox.disabled = true;
    skewBox.addEventListener("change", function () {
      state.skew = skewBox.checked;
      var note = document.getElementById("tl-skew-note");
      if (note) {
        var shifted = lanes.filter(function (ln) { return ln.skew_ms; }).map(function (ln) {
          return ln.agent + " (" + ln.clock + ") shifted by " + (-ln.skew_ms >= 0 ? "+" : "") + (-ln.skew_ms).toFixed(1) + " ms";
        });
        note.textContent = state.skew ? (shifted.length ? "Adjusted: " + shifted.join("; ") + "." : "No clock needed shifting.") : "";
      }
      redraw();
    });
  }
  var edgesBox = document.getElementById("tl-all-edges");
  if (edgesBox) edgesBox.addEventListener("change", function () { state.allEdges = edgesBox.checked; redraw(); });
  var criticalBox = document.getElementById("tl-critical");
  if (criticalBox) {
    if (!data.critical.length) { criticalBox.disabled = true; criticalBox.checked = false; state.critical = false; }
    criticalBox.addEventListener("change", function () { state.critical = criticalBox.checked; redraw(); });
  }
  var expandAll = document.getElementById("tl-expand-all"), collapseAll = document.getElementById("tl-collapse-all");
  if (expandAll) expandAll.addEventListener("click", function () { state.lanes.clear(); redraw(); });
  if (collapseAll) collapseAll.addEventListener("click", function () {
    lanes.forEach(function (_, li) { state.lanes.add(li); }); redraw();
  });

  chart.replaceChildren();
  renderLanes();
  Plotly.newPlot(chart, fig.data, fig.layout, config).then(function () {
    performance.mark("timeline:drawn");
    chart.setAttribute("data-ready", "1");
    chart.on("plotly_relayout", filterTable);
    chart.on("plotly_click", function (ev) {
      var points = ev.points || [];
      var fold = points.find(function (pt) { return pt.data.name === "fold toggles"; });
      if (fold) { toggleFold(fold.data.customdata[fold.pointNumber]); return; }
      var p = points.find(function (pt) { return pt.data.name === "handles"; });
      if (!p) return;
      var c = p.data.customdata[p.pointNumber];
      if (c < 0) toggleLane(-1 - c); else selectSpan(c);
    });
    var params = new URLSearchParams(location.search);
    if (params.get("finding")) selectFinding(params.get("finding"), true);
    else if (params.get("span") && byId[params.get("span")] !== undefined) selectSpan(byId[params.get("span")]);
    if (statusLine && data.collapsed) statusLine.textContent = n + " spans: lanes start collapsed (grey bars); click one to expand it.";
  });
})();
