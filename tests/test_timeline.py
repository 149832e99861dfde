"""The causal timeline of a trace: lanes, edges, critical path, skew flags, and the pages that draw it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import api_as, served_from_here
from traces.ingest import spans_store
from traces.models import Finding, FindingSpan, member_text
from traces.records import KIND_CLIENT, KIND_CONSUMER, KIND_INTERNAL, KIND_PRODUCER, KIND_SERVER, Link, make_span
from traces.timeline import access_label, figure_build, graph_build, timeline_build

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_760_000_000_000_000_000
MS = 1_000_000

PLANNER = {"service.name": "planner", "service.instance.id": "planner-1", "gen_ai.agent.id": "planner"}
BOOKER = {"service.name": "booking", "service.instance.id": "booking-1", "gen_ai.agent.id": "booker"}
PAYER = {"service.name": "billing", "service.instance.id": "billing-1", "gen_ai.agent.id": "payer"}
BOOKER_AHEAD_MS = 200  # booking-1's clock reads 200 ms ahead


def span(span_id, name, start_ms, end_ms, resource, parent="", kind=KIND_INTERNAL, attributes=None, links=(),
         trace_id=TRACE, t0=T0):
    skew = BOOKER_AHEAD_MS * MS if resource is BOOKER else 0
    return make_span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                     start_ns=t0 + start_ms * MS + skew, end_ns=t0 + end_ms * MS + skew,
                     attributes=attributes or {}, resource_attributes=resource,
                     links=tuple(Link(trace_id, s) for s in links),
                     events=[{"name": "note", "time_ns": t0 + start_ms * MS, "attributes": {"n": 1}}])


def hand_trace(trace_id=TRACE, t0=T0, prefix="a"):
    """A planner calls a booker and a payer over RPC. Both write order/42 based on version 3
    (a lost update); the payer then reads the booker's version 4; the booker hands the payer a
    message (a span link)."""
    p = prefix
    return [
        span(f"{p}000000000000001", "plan", 0, 1000, PLANNER, kind=KIND_SERVER, trace_id=trace_id, t0=t0),
        span(f"{p}000000000000002", "call booker", 10, 400, PLANNER, f"{p}000000000000001", KIND_CLIENT,
             trace_id=trace_id, t0=t0),
        span(f"{p}000000000000003", "book", 15, 390, BOOKER, f"{p}000000000000002", KIND_SERVER,
             trace_id=trace_id, t0=t0),
        span(f"{p}000000000000004", "write order", 20, 100, BOOKER, f"{p}000000000000003",
             attributes={"state.key": "order/42", "state.op": "write", "state.version": 4, "state.base_version": 3,
                         "gen_ai.request.model": "gpt-4o"}, trace_id=trace_id, t0=t0),
        span(f"{p}000000000000005", "publish handoff", 110, 120, BOOKER, f"{p}000000000000003", KIND_PRODUCER,
             trace_id=trace_id, t0=t0),
        span(f"{p}000000000000006", "call payer", 410, 900, PLANNER, f"{p}000000000000001", KIND_CLIENT,
             trace_id=trace_id, t0=t0),
        span(f"{p}000000000000007", "pay", 415, 890, PAYER, f"{p}000000000000006", KIND_SERVER,
             trace_id=trace_id, t0=t0),
        span(f"{p}000000000000008", "write order", 420, 500, PAYER, f"{p}000000000000007",
             attributes={"state.key": "order/42", "state.op": "write", "state.version": 5, "state.base_version": 3,
                         "retries": 2}, trace_id=trace_id, t0=t0),
        span(f"{p}000000000000009", "consume handoff", 600, 700, PAYER, f"{p}000000000000007", KIND_CONSUMER,
             links=[f"{p}000000000000005"], trace_id=trace_id, t0=t0),
        span(f"{p}00000000000000a", "read order", 700, 800, PAYER, f"{p}000000000000007",
             attributes={"state.key": "order/42", "state.op": "read", "state.version": 4}, trace_id=trace_id, t0=t0),
    ]


def store_finding(project, spans, kind="lost_update", key="order/42", span_ids=("a000000000000004", "a000000000000008"),
                  detail="two writes of order/42 based on version 3 both took effect"):
    chosen = [s for s in spans if s.span_id in span_ids]
    finding = Finding.objects.create(
        project=project, kind=kind, key=key, trace_ids=sorted({s.trace_id for s in chosen}),
        span_ids=sorted(span_ids), agents=member_text(s.agent for s in chosen), detail=detail,
        fingerprint=f"{kind}-{key}-{'-'.join(span_ids)}-{project.pk}", first_ns=min(s.start_ns for s in chosen))
    FindingSpan.objects.bulk_create([
        FindingSpan(finding=finding, project=project, trace_id=s.trace_id, span_id=s.span_id) for s in chosen
    ])
    return finding


def index_of(data, name):
    return data["spans"]["name"].index(name)


def page_timeline_data(body: str) -> dict:
    """The timeline data a page sends along for its script."""
    return json.loads(body.split('<script id="timeline-data" type="application/json">')[1].split("</script>")[0])


# ---------------------------------------------------------------------------
# Timeline data, no database


def test_it_gives_one_lane_per_agent_grouped_by_service_and_process():
    data = timeline_build(hand_trace())
    assert [lane["label"] for lane in data["lanes"]] == [
        "billing / billing-1 / payer", "booking / booking-1 / booker", "planner / planner-1 / planner",
    ]
    assert [lane["count"] for lane in data["lanes"]] == [4, 3, 3]
    # the planner's root and its two client calls nest: two rows
    assert data["lanes"][2]["rows"] == 2
    lane = data["spans"]["lane"]
    assert {lane[i] for i, n in enumerate(data["spans"]["name"]) if n in ("pay", "read order", "consume handoff")} == {0}


def test_it_draws_causal_edges_that_cross_lanes():
    data = timeline_build(hand_trace())
    names = data["spans"]["name"]
    ids = data["spans"]["id"]
    edges = {(ids[a], ids[b], kind) for a, b, kind in data["edges"]}
    assert ("a000000000000002", "a000000000000003", "rpc") in edges
    assert ("a000000000000006", "a000000000000007", "rpc") in edges
    assert ("a000000000000005", "a000000000000009", "link") in edges
    assert ("a000000000000004", "a00000000000000a", "reads_from") in edges  # the payer read the booker's v4
    for a, b, _ in data["edges"]:
        assert data["spans"]["lane"][a] != data["spans"]["lane"][b], (names[a], names[b])


def test_it_lists_the_critical_path_root_first():
    data = timeline_build(hand_trace())
    path = [data["spans"]["id"][i] for i in data["critical"]]
    # The root ends after "call payer" (the last child to finish); in "pay", "read order" finishes
    # last; nothing else in "pay" finished before the read started... except "consume handoff",
    # which ends exactly when the read starts (not before), so the walk goes on to "write order".
    assert path[:5] == ["a000000000000001", "a000000000000006", "a000000000000007", "a00000000000000a",
                        "a000000000000008"]
    # An outline under the bars, not a fill: the bars keep their colour, so a finding stays red.
    assert {data["spans"]["cat"][i] for i in data["critical"]} == {0}
    figure = figure_build(data)
    names = [t["name"] for t in figure["data"]]
    outline, bars = figure["data"][names.index("critical path")], figure["data"][names.index("span")]
    assert names.index("critical path") < names.index("span")
    assert outline["line"]["width"] > bars["line"]["width"]
    assert len([x for x in outline["x"] if x is not None]) == 2 * len(data["critical"])
    assert not [x for x in figure_build(data, show_critical=False)["data"][names.index("critical path")]["x"]
                if x is not None]


def test_every_bar_of_a_trace_is_named():
    data = timeline_build(hand_trace())
    labels = next(t for t in figure_build(data)["data"] if t["name"] == "labels")
    assert sorted(labels["text"]) == sorted(data["spans"]["name"])


def test_it_flags_a_lane_whose_clock_is_beyond_the_tolerance():
    data = timeline_build(hand_trace())
    flags = {lane["agent"]: (lane["skewed"], lane["skew_ms"]) for lane in data["lanes"]}
    assert flags["booker"][0] is True
    assert flags["booker"][1] == pytest.approx(BOOKER_AHEAD_MS, abs=10)
    assert flags["planner"] == (False, 0.0)
    assert flags["payer"] == (False, 0.0)
    figure = figure_build(data)
    assert any(t.startswith("⚠ booking / booking-1 / booker") for t in figure["layout"]["yaxis"]["ticktext"])


def test_skew_adjustment_moves_the_skewed_lane_back():
    data = timeline_build(hand_trace())
    book = index_of(data, "book")
    plain = figure_build(data)
    adjusted = figure_build(data, skew_adjust=True)
    handles = next(t for t in plain["data"] if t["name"] == "handles")
    handles_adj = next(t for t in adjusted["data"] if t["name"] == "handles")
    pos = handles["customdata"].index(book)
    assert handles["x"][pos] - handles_adj["x"][pos] == pytest.approx(data["lanes"][1]["skew_ms"])


QUEUE_TRACE = "5eed" * 8
REPORTER = {"service.name": "reports", "service.instance.id": "reports-1", "gen_ai.agent.id": "reporter"}
REPORTER_BEHIND_MS = 3000  # reports-1's clock reads 3 s behind; no RPC reaches it


def queued_trace():
    """The planner queues a report; the reporter, in its own process, consumes the message 5 ms
    later (a span link, no parent) on a clock 3 s behind. The planner also calls the payer."""
    behind = -REPORTER_BEHIND_MS
    return [
        span("c000000000000001", "plan", 0, 1000, PLANNER, kind=KIND_SERVER, trace_id=QUEUE_TRACE),
        span("c000000000000002", "enqueue report", 100, 110, PLANNER, "c000000000000001", KIND_PRODUCER,
             trace_id=QUEUE_TRACE),
        span("c000000000000003", "render report", 105 + behind, 600 + behind, REPORTER, kind=KIND_CONSUMER,
             links=["c000000000000002"], trace_id=QUEUE_TRACE),
        span("c000000000000004", "store report", 200 + behind, 300 + behind, REPORTER, "c000000000000003",
             trace_id=QUEUE_TRACE),
        span("c000000000000005", "call payer", 300, 500, PLANNER, "c000000000000001", KIND_CLIENT,
             trace_id=QUEUE_TRACE),
        span("c000000000000006", "pay", 310, 490, PAYER, "c000000000000005", KIND_SERVER, trace_id=QUEUE_TRACE),
    ]


def test_it_flags_a_lane_whose_clock_only_a_message_shows_off():
    data = timeline_build(queued_trace())
    flags = {lane["agent"]: (lane["skewed"], lane["skew_ms"]) for lane in data["lanes"]}
    # the receive must start no earlier than its send: 3 s behind, less the 5 ms the message took
    assert flags == {"reporter": (True, -2995.0), "planner": (False, 0.0), "payer": (False, 0.0)}
    figure = figure_build(data)
    assert any(t.startswith("⚠ reports / reports-1 / reporter (-2995 ms)") for t in figure["layout"]["yaxis"]["ticktext"])
    # adjusted, the reporter's spans move 2995 ms later; the others stay
    handles = next(t for t in figure["data"] if t["name"] == "handles")
    adjusted = next(t for t in figure_build(data, skew_adjust=True)["data"] if t["name"] == "handles")
    moved = {data["spans"]["name"][i]: round(b - a, 3) for i, a, b in zip(handles["customdata"], handles["x"],
                                                                           adjusted["x"]) if i >= 0}
    assert moved == {"render report": 2995.0, "store report": 2995.0, "plan": 0, "enqueue report": 0,
                     "call payer": 0, "pay": 0}
    render, enqueue = data["spans"]["name"].index("render report"), data["spans"]["name"].index("enqueue report")
    x0 = data["spans"]["x0"]
    assert x0[render] < x0[enqueue] and x0[render] + 2995 == x0[enqueue]


def test_findings_paint_their_spans_red_in_one_trace():
    spans = hand_trace()
    finding = {"id": 7, "kind": "lost_update", "key": "order/42", "detail": "lost", "status": "open",
               "span_ids": ["a000000000000004", "a000000000000008"], "trace_ids": [TRACE], "agents": []}
    data = timeline_build(spans, findings=[finding])
    assert sorted(data["spans"]["id"][i] for i in data["findings"][0]["spans"]) == [
        "a000000000000004", "a000000000000008"]
    figure = figure_build(data)
    red = next(t for t in figure["data"] if t["name"] == "finding")
    assert red["type"] == "scattergl" and red["line"]["color"] == "#dc2626"
    assert len([x for x in red["x"] if x is not None]) == 4  # two bars, start and end each
    names = [t["name"] for t in figure["data"]]
    assert names[:4] == ["collapsed lane", "critical path", "span", "finding"]


def test_acknowledged_findings_stay_drawn_but_pale():
    spans = hand_trace()
    acknowledged = {"id": 7, "kind": "lost_update", "key": "order/42", "detail": "", "status": "acknowledged",
                    "span_ids": ["a000000000000004", "a000000000000008"], "trace_ids": [TRACE], "agents": []}
    still_open = {"id": 8, "kind": "stale_read", "key": "order/42", "detail": "", "status": "open",
                  "span_ids": ["a000000000000008", "a00000000000000a"], "trace_ids": [TRACE], "agents": []}
    data = timeline_build(spans, findings=[acknowledged, still_open])
    cat = dict(zip(data["spans"]["id"], data["spans"]["cat"]))
    assert cat["a000000000000004"] == 3  # only in the acknowledged finding
    assert cat["a000000000000008"] == 2 and cat["a00000000000000a"] == 2  # an open finding wins
    by_name = {t["name"]: t for t in figure_build(data)["data"]}
    assert by_name["acknowledged finding"]["line"]["color"] == "#fca5a5"
    assert len([x for x in by_name["acknowledged finding"]["x"] if x is not None]) == 2
    assert len([x for x in by_name["finding"]["x"] if x is not None]) == 4
    assert sum(lane["findings"] for lane in data["lanes"]) == 3


def test_big_traces_start_with_lanes_collapsed_but_findings_still_drawn():
    spans = hand_trace()
    finding = {"id": 7, "kind": "lost_update", "key": "order/42", "detail": "", "status": "open",
               "span_ids": ["a000000000000004"], "trace_ids": [TRACE], "agents": []}
    data = timeline_build(spans, findings=[finding], collapse_over=5)
    assert data["collapsed"] is True
    figure = figure_build(data)
    by_name = {t["name"]: t for t in figure["data"]}
    assert len([x for x in by_name["collapsed lane"]["x"] if x is not None]) == 2 * 3  # one summary bar per lane
    assert by_name["span"]["x"] == []
    assert len([x for x in by_name["finding"]["x"] if x is not None]) == 2
    expanded = figure_build(data, collapsed_lanes=[])
    assert len([x for x in expanded["data"][1]["x"] if x is not None]) > 0


def test_collapsing_a_subtree_hides_its_descendants():
    data = timeline_build(hand_trace())
    pay = index_of(data, "pay")
    figure = figure_build(data, collapsed_spans=[pay])
    handles = next(t for t in figure["data"] if t["name"] == "handles")
    shown = {data["spans"]["name"][i] for i in handles["customdata"] if i >= 0}
    assert "pay" in shown and "consume handoff" not in shown
    assert len(handles["customdata"]) == len(data["spans"]["id"]) - 3


def test_key_accesses_are_labelled_with_versions():
    spans = hand_trace()
    labels = {s.span_id: access_label(s) for s in spans}
    assert labels["a000000000000004"] == "w v4←3"
    assert labels["a00000000000000a"] == "r v4"
    conflict = make_span(trace_id=TRACE, span_id="ff00000000000001", name="w", start_ns=1, end_ns=2,
                         attributes={"state.key": "k", "state.op": "write", "state.version": 9,
                                     "state.base_version": 8, "state.conflict": True})
    assert access_label(conflict) == "w ✗ conflict"


def test_the_graph_counts_calls_and_messages_between_agents():
    figure = graph_build(hand_trace())
    texts = next(t for t in figure["data"] if t.get("mode") == "text")["text"]
    assert sorted(texts) == ["1 call", "1 call", "1 message"]
    nodes = [n for t in figure["data"] if t.get("mode") == "markers+text" for n in t["text"]]
    assert sorted(nodes) == ["booker", "payer", "planner"]


# ---------------------------------------------------------------------------
# Pages and API


@pytest.fixture
def stored(acme):
    spans = hand_trace()
    spans_store(project_id=acme.pk, spans=spans)
    finding = store_finding(acme, spans)
    return spans, finding


def test_the_trace_page_is_the_timeline(client, alice, stored):
    client.force_login(alice)
    response = client.get(f"/p/acme/traces/{TRACE}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="tl-chart"' in body and 'id="timeline-data"' in body
    assert any(src.startswith("/assets/plotly.min.js?v=") for src in served_from_here(body))
    assert f'class="tl-finding status-open" data-finding="{stored[1].pk}"' in body
    data = page_timeline_data(body)
    assert len(data["lanes"]) == 3 and len(data["spans"]["id"]) == 10
    assert data["findings"][0]["key_url"] == "/p/acme/state/order/42/"
    assert {t["name"] for t in data["figure"]["data"]} >= {"span", "critical path", "finding", "handles"}


def test_the_trace_page_names_how_far_it_shifted_a_clock_only_a_message_shows_off(client, bob, acme):
    spans_store(project_id=acme.pk, spans=queued_trace())
    client.force_login(bob)
    body = client.get(f"/p/acme/traces/{QUEUE_TRACE}/").content.decode()
    assert '<li class="skewed">⚠ reports / reports-1 / reporter <span class="muted">2, clock -2995.0 ms</span>' in body
    assert 'id="tl-skew-note" aria-live="polite"></span>' in body  # nothing adjusted yet
    plain = page_timeline_data(body)

    response = client.get(f"/p/acme/traces/{QUEUE_TRACE}/?skew=1")
    assert response.status_code == 200
    body = response.content.decode()
    assert '<input type="checkbox" id="tl-skew" checked>' in body
    assert "Adjusted: reporter (reports-1) shifted by +2995.0 ms." in body
    adjusted = page_timeline_data(body)
    assert adjusted["skew_adjust"] is True
    render = adjusted["spans"]["name"].index("render report")

    def handles(data):
        return next(t for t in data["figure"]["data"] if t["name"] == "handles")

    pos = handles(plain)["customdata"].index(render)
    assert handles(adjusted)["x"][pos] - handles(plain)["x"][pos] == pytest.approx(2995.0)


def test_the_finding_page_flags_a_consumer_that_started_a_trace_of_its_own(client, bob, acme):
    from dataclasses import replace

    from traces.analysis import analyse

    # the reporter's spans in a trace of their own, its consumer linking back to the planner's trace
    spans = [replace(s, trace_id="feed" * 8, links=tuple(Link(QUEUE_TRACE, link.span_id) for link in s.links))
             if s.agent == "reporter" else s for s in queued_trace()]
    spans_store(project_id=acme.pk, spans=spans)
    [violation] = analyse(spans)
    finding = store_finding(acme, spans, kind="causality_violation", key="", span_ids=violation.span_ids,
                            detail=violation.detail)
    client.force_login(bob)
    body = client.get(f"/p/acme/findings/{finding.pk}/").content.decode()
    assert '<li class="skewed">⚠ reports / reports-1 / reporter <span class="muted">' in body
    assert "clock -2995.0 ms" in body
    # its own trace's page has no producer to measure the reporter against: nothing to flag there
    body = client.get("/p/acme/traces/" + "feed" * 8 + "/").content.decode()
    assert 'class="skewed"' not in body


def test_a_trace_of_another_project_is_not_found(client, charlie, stored):
    client.force_login(charlie)
    assert client.get(f"/p/acme/traces/{TRACE}/").status_code == 404
    assert client.get(f"/p/globex/traces/{TRACE}/").status_code == 404
    assert client.get(f"/p/globex/traces/{TRACE}/graph/").status_code == 404
    response = api_as(charlie).get(f"/api/v1/traces/{TRACE}/timeline/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_timeline_api_returns_the_data(alice, stored):
    response = api_as(alice).get(f"/api/v1/traces/{TRACE}/timeline/")
    assert response.status_code == 200
    data = response.json()
    assert "figure" not in data
    assert [f["id"] for f in data["findings"]] == [stored[1].pk]
    assert next(data["spans"]["id"][i] for i in data["critical"]) == "a000000000000001"
    with_figure = api_as(alice).get(f"/api/v1/traces/{TRACE}/timeline/?figure=1").json()
    assert with_figure["figure"]["data"]


def test_the_graph_page_renders(client, bob, stored):
    client.force_login(bob)
    response = client.get(f"/p/acme/traces/{TRACE}/graph/")
    assert response.status_code == 200
    assert b'id="graph-data"' in response.content and b"1 message" in response.content
    assert client.get(f"/p/acme/traces/{TRACE}/graph/?by=service").status_code == 200


def test_the_key_history_page_shows_every_access_with_versions(client, bob, acme, stored, clock):
    other = hand_trace(trace_id="1" * 32, prefix="b")
    spans_store(project_id=acme.pk, spans=other)
    client.force_login(bob)
    response = client.get("/p/acme/state/order/42/?last=30d&since=2025-01-01T00:00:00Z")
    assert response.status_code == 200
    body = response.content.decode()
    data = page_timeline_data(body)
    assert data["mode"] == "key" and data["x_kind"] == "date"
    assert sorted(data["spans"]["label"]) == sorted(["w v4←3", "w v5←3", "r v4"] * 2)
    assert {d["trace_id"] for d in data["details"]} == {TRACE, "1" * 32}
    assert [f["id"] for f in data["findings"]] == [stored[1].pk]
    # the default range is the last 24 hours: these spans are from 2025
    assert "0 accesses" in client.get("/p/acme/state/order/42/").content.decode()


def test_plotly_js_is_served_from_the_package_with_long_caching(client):
    response = client.get("/assets/plotly.min.js", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert "max-age=31536000" in response["Cache-Control"]
    assert client.get("/assets/plotly.min.js", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    plain = client.get("/assets/plotly.min.js")
    assert b"plotly" in plain.content[:2000].lower()


def test_a_findings_evidence_is_sent_as_span_indexes_where_both_ends_are_on_the_trace():
    from traces.explain import findings_evidence_edges

    spans = hand_trace()
    finding = {"id": 7, "kind": "lost_update", "span_ids": ["a000000000000004", "a000000000000008"],
               "trace_ids": [TRACE], "status": "open"}
    edges, elsewhere = findings_evidence_edges([finding], spans)[7]
    assert elsewhere == 0 and all(kind == "evidence" for *_, kind in edges)
    # one edge with an end on another trace: counted, not sent as an index
    finding["evidence_edges"] = [*edges, ("a000000000000008", "b000000000000001", "late")]
    data = timeline_build(spans, findings=[finding])
    sent = data["findings"][0]
    names = data["spans"]["name"]
    assert [(names[a], names[b]) for a, b, _ in sent["evidence"]] == [
        ("write order", "book"), ("book", "call booker"), ("call booker", "call payer"), ("call payer", "pay"),
        ("pay", "write order")]
    assert sent["evidence_elsewhere"] == 1
    assert "evidence_edges" not in sent
    # a page that gives no evidence (the finding page, the key history) sends none
    without = {k: v for k, v in finding.items() if k != "evidence_edges"}
    assert "evidence" not in timeline_build(spans, findings=[without])["findings"][0]
