"""The explanation core, without Django: the happens-before path edge by edge for ordered pairs, its
absence (and the edges that came too late) for concurrent ones, and the key's version chain.

    .venv/bin/pytest -p no:django tests/test_explain.py
"""

from __future__ import annotations

from traces.explain import LINK, PROGRAM_ORDER, READS_FROM, explain, step_text
from traces.records import KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, Link, make_span

MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def span(trace, sid, name, agent, start, end, parent="", thread="1", kind=0, links=(), **attributes):
    attributes = {key.replace("_", ".", 1): value for key, value in attributes.items()}
    return make_span(trace_id=trace * 32, span_id=sid * 16, parent_span_id=parent * 16 if parent else "", name=name,
                     kind=kind, start_ns=T0 + start * MS, end_ns=T0 + end * MS, links=links,
                     attributes={"thread.id": thread, **attributes},
                     resource_attributes={"service.name": "svc", "service.instance.id": f"proc-{agent}",
                                          "gen_ai.agent.id": agent})


def hand_off(with_link: bool):
    """A writes order/1 then publishes; B consumes (linked or not), then writes order/1 blind."""
    link = (Link("a" * 32, "3" * 16),) if with_link else ()
    return [
        span("a", "1", "turn", "agent-a", 0, 20, kind=KIND_SERVER),
        span("a", "2", "write order", "agent-a", 1, 4, parent="1", state_key="order/1", state_op="write",
             state_version=2, state_base_version=1),
        span("a", "3", "publish", "agent-a", 5, 6, parent="1", kind=KIND_PRODUCER),
        span("b", "4", "consume", "agent-b", 8, 30, kind=KIND_CONSUMER, links=link),
        span("b", "5", "read order", "agent-b", 9, 10, parent="4", state_key="order/1", state_op="read",
             state_version=1),
        span("b", "6", "write order", "agent-b", 12, 14, parent="4", state_key="order/1", state_op="write",
             state_version=3),
        span("b", "7", "read order", "agent-b", 40, 41, state_key="order/1", state_op="read", state_version=2,
             thread="2"),
    ]


def test_an_ordered_pair_is_shown_edge_by_edge():
    spans = hand_off(with_link=True)
    ex = explain(kind="stale_read", key="order/1", span_ids=["5" * 16, "2" * 16], trace_ids=["a" * 32, "b" * 32],
                 detail="", spans=spans)
    [ev] = ex.evidence
    assert ev.ordered and ev.first.name == "write order" and ev.second.name == "read order"
    assert [s.reason for s in ev.path] == [PROGRAM_ORDER, LINK, "parent/child"]
    assert step_text(ev.path[1]) == "publish (agent-a) → message link → consume (agent-b)"
    assert ("2" * 16, "3" * 16, "evidence") in ex.evidence_edges


def test_a_concurrent_pair_shows_no_path_and_the_edge_that_came_too_late():
    spans = hand_off(with_link=False)
    ex = explain(kind="write_race", key="order/1", span_ids=["2" * 16, "6" * 16], trace_ids=["a" * 32, "b" * 32],
                 detail="", spans=spans)
    [ev] = ex.evidence
    assert not ev.ordered and not ev.path
    assert "No chain of edges" in ev.summary
    late, steps = ev.near[0]
    assert "read order (agent-b)" in late and "too late" in late
    assert [s.reason for s in steps] == [READS_FROM]
    assert ("2" * 16, "6" * 16, "no_path") in ex.evidence_edges
    assert "neither saw" not in ex.what and "nothing orders the two writes" in ex.what
    assert ex.docs_anchor == "write_race"


def test_the_version_chain_says_who_read_and_wrote_which_version():
    ex = explain(kind="write_race", key="order/1", span_ids=["2" * 16, "6" * 16], trace_ids=["a" * 32, "b" * 32],
                 detail="", spans=hand_off(with_link=False))
    rows = [(r.span.agent, r.op, r.version, r.base, r.in_finding) for r in ex.versions]
    assert rows == [("agent-b", "read", 1, None, False), ("agent-a", "write", 2, 1, True),
                    ("agent-b", "read", 2, None, False), ("agent-b", "write", 3, None, True)]


def test_a_causality_violation_names_the_edge_the_clocks_contradict():
    spans = [span("a", "1", "send", "agent-a", 500, 501, kind=KIND_PRODUCER),
             span("b", "2", "receive", "agent-b", 0, 5, kind=KIND_CONSUMER, links=(Link("a" * 32, "1" * 16),))]
    ex = explain(kind="causality_violation", key="", span_ids=["2" * 16, "1" * 16], trace_ids=["a" * 32, "b" * 32],
                 detail="", spans=spans)
    assert "receive (agent-b) starts before send (agent-a)" in ex.what and "500.000 ms" in ex.what
    [ev] = ex.evidence
    assert ev.ordered and [s.reason for s in ev.path] == [LINK] and "500.000 ms earlier" in ev.summary
