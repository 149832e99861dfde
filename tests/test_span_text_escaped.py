"""Nothing from a span renders as markup: Plotly draws a subset of HTML (links, bold, italics,
styled spans) in labels, ticks, legends and hover text, so span text is escaped for it, on
the timeline (as drawn by the server and as redrawn in the browser) and on the graph."""

from __future__ import annotations

import pytest

from tests.conftest import log_in
from traces.ingest import spans_store
from traces.records import make_span
from traces.timeline import figure_build, graph_build, timeline_build

TRACE = "e" * 32
T0 = 1_700_000_000_000_000_000
SERVICE = '<a href="https://evil.example/x">svc</a>'
AGENT = "<b>agent</b>"
OTHER_AGENT = '<span style="font-size:80px">huge</span>'
NAME = '<i>plan</i> &amp; <a href="https://evil.example/y">go</a>'


def hostile_trace():
    """Two agents of a service whose names are markup; the second is called by the first."""
    def resource(agent):
        return {"service.name": SERVICE, "service.instance.id": "<sup>1</sup>", "gen_ai.agent.id": agent}

    return [
        make_span(trace_id=TRACE, span_id="1" * 16, name=NAME, start_ns=T0, end_ns=T0 + 5_000_000,
                  resource_attributes=resource(AGENT)),
        make_span(trace_id=TRACE, span_id="2" * 16, parent_span_id="1" * 16, name=NAME, start_ns=T0 + 1_000_000,
                  end_ns=T0 + 2_000_000, resource_attributes=resource(OTHER_AGENT)),
    ]


def plotly_strings(figure: dict) -> list[str]:
    """Every string Plotly would draw as text: trace names, texts, hover texts, tick texts."""
    texts = []
    for trace in figure["data"]:
        texts.append(trace.get("name") or "")
        for key in ("text", "hovertext"):
            value = trace.get(key)
            texts += value if isinstance(value, list) else [value or ""]
    texts += figure["layout"].get("yaxis", {}).get("ticktext", [])
    return [t for t in texts if t]


def test_the_figures_carry_span_text_escaped_for_plotly():
    spans = hostile_trace()
    timeline = figure_build(timeline_build(spans, mode="trace"))
    graph = graph_build(spans, by="agent")
    for figure in (timeline, graph):
        drawn = " ".join(plotly_strings(figure))
        assert "&lt;a href=" in drawn and "&lt;b&gt;agent&lt;/b&gt;" in drawn
        assert "<a" not in drawn and "<b>" not in drawn and "<span" not in drawn and "<i>" not in drawn
    # "&amp;" in a name is shown as typed, not as "&".
    assert "&lt;i&gt;plan&lt;/i&gt; &amp;amp; " in " ".join(plotly_strings(timeline))


CHART_MARKUP = """selector => {
    const chart = document.querySelector(selector);
    const styled = [...chart.querySelectorAll('tspan')].filter(t => /font-(weight|style|size)/.test(t.getAttribute('style') || ''));
    return {links: chart.querySelectorAll('a').length, styled: styled.length, text: chart.textContent};
}"""


def assert_drawn_as_text(page, selector: str):
    drawn = page.evaluate(CHART_MARKUP, selector)
    assert drawn["links"] == 0 and drawn["styled"] == 0
    assert SERVICE in drawn["text"] and AGENT in drawn["text"]
    return drawn


def show_hover(page):
    """Move the mouse onto the first hover handle of the timeline, found through the chart's own axes."""
    point = page.evaluate("""() => {
        const gd = document.getElementById('tl-chart'), h = gd.data.find(t => t.name === 'handles');
        const fl = gd._fullLayout, rect = gd.getBoundingClientRect();
        return {x: rect.left + fl._size.l + fl.xaxis.l2p(h.x[0]), y: rect.top + fl._size.t + fl.yaxis.l2p(h.y[0])};
    }""")
    page.mouse.move(point["x"] + 3, point["y"] + 3)
    page.mouse.move(point["x"], point["y"])
    page.wait_for_selector("#tl-chart .hoverlayer .hovertext", timeout=3000)


@pytest.mark.browser
def test_markup_in_span_names_shows_as_text_on_the_timeline_and_the_graph(transactional_db, live_server, page,
                                                                        acme, alice):
    spans_store(project_id=acme.pk, spans=hostile_trace())
    log_in(page, live_server, "alice")

    page.goto(f"{live_server.url}/p/acme/traces/{TRACE}/")
    page.wait_for_selector("#tl-chart[data-ready='1']", timeout=8000)
    assert_drawn_as_text(page, "#tl-chart")
    show_hover(page)
    hover = page.evaluate(CHART_MARKUP, "#tl-chart .hoverlayer")
    assert hover["links"] == 0 and hover["styled"] == 0 and "<i>plan</i> &amp; <a href=" in hover["text"]
    page.screenshot(path="/tmp/escaped-timeline.png")

    # Redrawn by timeline.js: collapse every lane, then hover a summary bar naming its agent.
    page.click("#tl-collapse-all")
    page.wait_for_function("() => document.getElementById('tl-chart').data.find(t => t.name === 'collapsed lane')"
                           ".x.length > 0")
    assert_drawn_as_text(page, "#tl-chart")
    show_hover(page)
    hover = page.evaluate(CHART_MARKUP, "#tl-chart .hoverlayer")
    assert hover["links"] == 0 and hover["styled"] == 0 and "spans of <" in hover["text"]

    page.goto(f"{live_server.url}/p/acme/traces/{TRACE}/graph/")
    page.wait_for_selector("#graph-chart .main-svg", timeout=8000)
    drawn = assert_drawn_as_text(page, "#graph-chart")
    assert OTHER_AGENT in drawn["text"]  # a node label
    page.screenshot(path="/tmp/escaped-graph.png")
