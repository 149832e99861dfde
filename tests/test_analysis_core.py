"""The analysis core on small hand-built traces: every finding kind, with and without the bug.

Runs without Django: `.venv/bin/pytest -p no:django tests/test_analysis_core.py`.
"""

from __future__ import annotations

from traces.analysis import (
    KINDS,
    Finding,
    analyse,
    causal_edges,
    clock_skew,
    critical_path,
    spans_between,
)
from traces.records import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, STATUS_ERROR, Link, make_span

MS = 1_000_000
T0 = 1_700_000_000_000 * MS
RACE_KINDS = {"lost_update", "write_race", "stale_read"}


# --- named helpers -----------------------------------------------------------


def trace_id(name: str) -> str:
    return name.encode().hex().ljust(32, "0")[:32]


def span(agent: str, span_id: str, start_ms: float, end_ms: float, *, trace: str | None = None, parent: str = "",
         process: str | None = None, thread: str | None = None, kind: int = 1, status: int = 0,
         links: tuple[Link, ...] = (), **attributes) -> object:
    """A span by `agent` in its own process (`<agent>-1` unless told), times in ms from T0."""
    attrs = {"gen_ai.agent.id": agent}
    if thread is not None:
        attrs["thread.id"] = thread
    attrs.update({k.replace("__", "."): v for k, v in attributes.items()})
    return make_span(
        trace_id=trace_id(trace or agent),
        span_id=span_id,
        parent_span_id=parent,
        name=span_id,
        kind=kind,
        status_code=status,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        attributes=attrs,
        resource_attributes={"service.name": agent, "service.instance.id": process or f"{agent}-1"},
        links=links,
    )


def read(agent, span_id, key, version, start_ms, end_ms, **kw):
    return span(agent, span_id, start_ms, end_ms, state__key=key, state__op="read", state__version=version, **kw)


def write(agent, span_id, key, version, start_ms, end_ms, *, base=None, conflict=False, **kw):
    extra = {"state__base_version": base} if base is not None else {}
    if conflict:
        extra["state__conflict"] = True
    return span(agent, span_id, start_ms, end_ms, state__key=key, state__op="write", state__version=version,
                **extra, **kw)


def locked(agent, span_id, lock, start_ms, end_ms, *, token=None, **kw):
    extra = {"lock__fencing_token": token} if token is not None else {}
    return span(agent, span_id, start_ms, end_ms, lock__name=lock, **extra, **kw)


def action(agent, span_id, key, outcome, start_ms, end_ms, **kw):
    return span(agent, span_id, start_ms, end_ms, idempotency__key=key, idempotency__outcome=outcome, **kw)


def link_to(s) -> Link:
    return Link(trace_id=s.trace_id, span_id=s.span_id)


def shifted(spans, process: str, by_ms: float):
    """The same spans with one process's clock shifted."""
    out = []
    for s in spans:
        if s.instance_id == process:
            s = make_span(trace_id=s.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id, name=s.name,
                          kind=s.kind, status_code=s.status_code, start_ns=s.start_ns + int(by_ms * MS),
                          end_ns=s.end_ns + int(by_ms * MS), attributes=s.attributes,
                          resource_attributes=s.resource_attributes, links=s.links)
        out.append(s)
    return out


def summary(findings):
    return [(f.kind, f.key, f.span_ids, f.agents) for f in findings]


def races(findings):
    return [(f.kind, f.key, f.span_ids) for f in findings if f.kind in RACE_KINDS]


def spec_example(*, b_uses_compare_and_set: bool = False):
    """Spec example: A and B both read order/42 at v3; A writes v4, B writes v5, both on base 3."""
    return [
        span("alice", "a-turn", 0, 10),
        read("alice", "a-read", "order/42", 3, 1, 2, parent="a-turn"),
        write("alice", "a-write", "order/42", 4, 3, 4, base=3, parent="a-turn"),
        span("bob", "b-turn", 1, 12),
        read("bob", "b-read", "order/42", 3, 2, 3, parent="b-turn"),
        write("bob", "b-write", "order/42", 5, 5, 6, base=3, conflict=b_uses_compare_and_set, parent="b-turn"),
    ]


# --- lost_update ----------------------------------------------------------------


def test_it_reports_exactly_one_lost_update_for_the_spec_example():
    assert summary(analyse(spec_example())) == [
        ("lost_update", "order/42", ("a-write", "b-write"), ("alice", "bob")),
    ]


def test_it_reports_nothing_when_b_used_compare_and_set():
    assert analyse(spec_example(b_uses_compare_and_set=True)) == []


def test_it_reports_a_lost_update_even_when_the_writes_are_ordered():
    spans = [
        read("alice", "a-read", "cart/1", 3, 0, 1),
        write("alice", "a-write", "cart/1", 4, 2, 3, base=3),
        write("alice", "a-write-2", "cart/1", 5, 4, 5, base=3),
    ]
    assert summary(analyse(spans)) == [("lost_update", "cart/1", ("a-write", "a-write-2"), ("alice",))]


def test_it_reports_each_pair_of_three_writes_on_one_base():
    spans = [write(agent, f"{agent}-w", "k", v, 0, 1, base=1) for agent, v in (("a", 2), ("b", 3), ("c", 4))]
    assert [f.span_ids for f in analyse(spans)] == [("a-w", "b-w"), ("a-w", "c-w"), ("b-w", "c-w")]


def test_it_ignores_a_write_with_status_error():
    spans = spec_example()
    spans[-1] = write("bob", "b-write", "order/42", 5, 5, 6, base=3, parent="b-turn", status=STATUS_ERROR)
    assert analyse(spans) == []


def test_it_finds_no_bug_in_compare_and_set_with_many_conflicts_and_retries():
    spans, store = [], {"version": 0}
    agents = ["alice", "bob", "carol", "dave"]
    pending = {a: 3 for a in agents}
    t, attempt = 0.0, 0
    while any(pending.values()):
        racing = [a for a in agents if pending[a]]
        seen = {}
        for i, agent in enumerate(racing):  # everyone reads the current version
            attempt += 1
            spans.append(read(agent, f"{agent}-r{attempt}", "doc/9", store["version"], t + i * 0.1, t + i * 0.1 + 0.05,
                              thread="main"))
            seen[agent] = store["version"]
        for i, agent in enumerate(racing):  # then tries compare-and-set, in turn
            start = t + 1 + i
            base = seen[agent]
            if base == store["version"]:
                store["version"] += 1
                spans.append(write(agent, f"{agent}-w{attempt}-{i}", "doc/9", store["version"], start, start + 0.5,
                                   base=base, thread="main"))
                pending[agent] -= 1
            else:
                spans.append(write(agent, f"{agent}-w{attempt}-{i}", "doc/9", None, start, start + 0.5,
                                   base=base, conflict=True, thread="main"))
        t += 10
    assert sum(1 for s in spans if s.state_conflict) > 5
    assert analyse(spans) == []


# --- write_race --------------------------------------------------------------------


def blind_writes(*, under_lock: bool = False, token: bool = True):
    """Two processes overwrite inventory/7 without a base version, maybe inside one lock."""
    if not under_lock:
        return [write("alice", "a-w", "inventory/7", 1, 0, 1), write("bob", "b-w", "inventory/7", 2, 5, 6)]
    return [
        locked("alice", "a-lock", "inventory-lock", 0, 2, token=1 if token else None),
        write("alice", "a-w", "inventory/7", 1, 0.5, 1, parent="a-lock"),
        locked("bob", "b-lock", "inventory-lock", 4, 7, token=2 if token else None),
        write("bob", "b-w", "inventory/7", 2, 5, 6, parent="b-lock"),
    ]


def test_it_reports_a_write_race_for_blind_writes_from_two_processes():
    assert summary(analyse(blind_writes())) == [
        ("write_race", "inventory/7", ("a-w", "b-w"), ("alice", "bob")),
    ]


def test_it_keeps_apart_two_traces_that_reuse_span_ids():
    # Agents that number their spans deterministically reuse span ids across traces. A span
    # is (trace_id, span_id): bob's write is not inside alice's critical section.
    spans = [
        locked("alice", "turn", "L", 0, 10),
        write("alice", "w", "inventory/7", 1, 2, 3, parent="turn"),
        span("bob", "turn", 0, 10),
        write("bob", "w", "inventory/7", 2, 2, 3, parent="turn"),
    ]
    findings = analyse(spans + spans[2:])  # bob's spans arrive twice
    assert summary(findings) == [("write_race", "inventory/7", ("w", "w"), ("alice", "bob"))]
    assert findings[0].trace_ids == (trace_id("alice"), trace_id("bob"))


def test_it_reports_no_write_race_for_writes_under_one_lock():
    assert analyse(blind_writes(under_lock=True)) == []
    assert analyse(blind_writes(under_lock=True, token=False)) == []


def test_it_orders_blind_writes_of_one_thread_by_program_order():
    spans = [write("alice", "a-w1", "k", 1, 0, 1), write("alice", "a-w2", "k", 2, 2, 3)]
    assert analyse(spans) == []


def test_it_reports_a_write_race_between_overlapping_writes_of_one_process():
    spans = [write("alice", "a-w1", "k", 1, 0, 2), write("alice", "a-w2", "k", 2, 1, 3)]
    assert summary(analyse(spans)) == [("write_race", "k", ("a-w1", "a-w2"), ("alice",))]


def message_hand_off(*, linked: bool = True):
    """Alice writes, then publishes a message; Bob consumes it and writes."""
    produce = span("alice", "a-produce", 2, 3, kind=KIND_PRODUCER)
    return [
        write("alice", "a-w", "ticket/3", 1, 0, 1),
        produce,
        span("bob", "b-consume", 10, 20, kind=KIND_CONSUMER, links=(link_to(produce),) if linked else ()),
        write("bob", "b-w", "ticket/3", 2, 11, 12, parent="b-consume"),
    ]


def test_it_finds_nothing_in_a_hand_off_ordered_by_a_message_link():
    assert analyse(message_hand_off()) == []


def test_it_reports_the_hand_off_as_a_race_without_the_link():
    assert races(analyse(message_hand_off(linked=False))) == [("write_race", "ticket/3", ("a-w", "b-w"))]


def test_it_orders_an_rpc_through_its_synchronous_server_child():
    spans = [
        span("alice", "a-call", 0, 10, kind=KIND_CLIENT),
        span("tool", "t-serve", 1, 9, trace="alice", parent="a-call", kind=KIND_SERVER),
        write("tool", "t-w", "k", 1, 2, 3, trace="alice", parent="t-serve"),
        write("alice", "a-w", "k", 2, 11, 12),
    ]
    assert analyse(spans) == []


# --- stale_read --------------------------------------------------------------------


def stale_hand_off(*, linked: bool = True):
    """Alice writes v4 and v5, then tells Bob, who reads v3."""
    produce = span("alice", "a-produce", 4, 5, kind=KIND_PRODUCER)
    return [
        write("alice", "a-w4", "order/42", 4, 0, 1, base=3),
        write("alice", "a-w5", "order/42", 5, 2, 3, base=4),
        produce,
        span("bob", "b-consume", 10, 20, kind=KIND_CONSUMER, links=(link_to(produce),) if linked else ()),
        read("bob", "b-read", "order/42", 3, 11, 12, parent="b-consume"),
    ]


def test_it_reports_a_stale_read_naming_the_newest_write_before_it():
    assert summary(analyse(stale_hand_off())) == [
        ("stale_read", "order/42", ("b-read", "a-w5"), ("alice", "bob")),
    ]


def test_it_accepts_a_read_that_runs_concurrently_with_newer_writes():
    assert analyse(stale_hand_off(linked=False)) == []


def test_it_accepts_a_read_of_the_newest_version():
    spans = stale_hand_off()
    spans[-1] = read("bob", "b-read", "order/42", 5, 11, 12, parent="b-consume")
    assert analyse(spans) == []


# --- duplicate_side_effect -----------------------------------------------------------


def test_it_reports_one_duplicate_side_effect_per_idempotency_key():
    spans = [
        action("alice", "a-refund", "refund/7", "executed", 0, 1),
        action("bob", "b-refund", "refund/7", "executed", 0, 1),
        action("carol", "c-refund", "refund/7", "executed", 2, 3),
    ]
    assert summary(analyse(spans)) == [
        ("duplicate_side_effect", "refund/7", ("a-refund", "b-refund", "c-refund"), ("alice", "bob", "carol")),
    ]


def test_it_accepts_a_deduplicated_replay_and_a_failed_attempt():
    spans = [
        action("alice", "a-refund", "refund/7", "executed", 0, 1),
        action("bob", "b-refund", "refund/7", "deduplicated", 2, 3),
        action("carol", "c-refund", "refund/7", "executed", 4, 5, status=STATUS_ERROR),
    ]
    assert analyse(spans) == []


# --- lock_overlap -------------------------------------------------------------------


def test_it_reports_a_fencing_token_granted_twice():
    spans = [locked("alice", "a-lock", "payout", 0, 5, token=7), locked("bob", "b-lock", "payout", 10, 15, token=7)]
    assert summary(analyse(spans)) == [("lock_overlap", "payout", ("a-lock", "b-lock"), ("alice", "bob"))]


def test_it_reports_overlapping_untokened_sections_on_one_clock():
    spans = [
        locked("alice", "a-lock", "payout", 0, 5, process="p1", thread="1"),
        locked("bob", "b-lock", "payout", 4, 8, process="p1", thread="2"),
    ]
    assert summary(analyse(spans)) == [("lock_overlap", "payout", ("a-lock", "b-lock"), ("alice", "bob"))]


def test_it_accepts_sections_in_turn_or_on_different_clocks_or_nested():
    spans = [
        locked("alice", "a-lock", "payout", 0, 5, process="p1", thread="1"),
        locked("bob", "b-lock", "payout", 5, 8, process="p1", thread="2"),
        locked("carol", "c-lock", "payout", 0, 8, process="p2"),
        locked("carol", "c-inner", "payout", 1, 2, process="p2", trace="carol", parent="c-lock"),
        locked("dave", "d-lock", "payout", 0, 5, token=1),
        locked("erin", "e-lock", "payout", 2, 6, token=2),
    ]
    assert analyse(spans) == []


# --- causality_violation and clock skew ---------------------------------------------------


def rpc_scenario():
    """Alice calls a tool in another process; the tool writes; Bob races with a blind write."""
    return spec_example() + [
        span("alice", "a-call", 20, 30, kind=KIND_CLIENT),
        span("tool", "t-serve", 21, 29, trace="alice", parent="a-call", kind=KIND_SERVER),
        write("tool", "t-w", "order/42", 6, 22, 23, trace="alice", parent="t-serve"),
        write("bob", "b-blind", "order/42", 7, 25, 26),
        read("alice", "a-read-again", "order/42", 5, 31, 32),
    ]


def test_it_reports_causality_violation_for_a_child_starting_before_its_parent_on_one_clock():
    spans = [span("alice", "a-root", 10, 20), span("alice", "a-child", 9.5, 12, parent="a-root")]
    assert summary(analyse(spans)) == [("causality_violation", "", ("a-child", "a-root"), ("alice",))]
    assert analyse(spans, same_clock_tolerance_ms=1) == []


def test_it_tolerates_skew_across_clocks_up_to_the_tolerance():
    spans = rpc_scenario()
    assert [f.kind for f in analyse(shifted(spans, "tool-1", -40))] == [f.kind for f in analyse(spans)]
    violations = [f for f in analyse(shifted(spans, "tool-1", -60)) if f.kind == "causality_violation"]
    assert summary(violations) == [("causality_violation", "", ("t-serve", "a-call"), ("alice", "tool"))]


def test_it_reports_a_link_whose_timestamps_run_backwards():
    spans = shifted(message_hand_off(), "bob-1", -100)
    assert summary(f for f in analyse(spans) if f.kind == "causality_violation") == [
        ("causality_violation", "", ("b-consume", "a-produce"), ("alice", "bob")),
    ]


def test_it_decides_no_race_finding_by_timestamps_of_another_clock():
    spans = rpc_scenario()
    expected = races(analyse(spans))
    assert {kind for kind, _, _ in expected} == {"lost_update", "write_race", "stale_read"}
    for process in ("alice-1", "bob-1", "tool-1"):
        for by_ms in (-10_000, -35, 0.5, 50_000):
            assert races(analyse(shifted(spans, process, by_ms))) == expected


# --- orphan_span ------------------------------------------------------------------


def test_it_reports_an_orphan_whose_parent_is_missing():
    spans = [span("alice", "a-child", 0, 1, parent="gone")]
    assert summary(analyse(spans)) == [("orphan_span", "", ("a-child",), ("alice",))]
    assert analyse(spans, report_orphans=False) == []


# --- the listing ----------------------------------------------------------------------


def test_it_lists_findings_in_kind_order_as_json():
    findings = analyse(spec_example() + blind_writes() + [span("alice", "x", 0, 1, parent="gone")])
    assert [f.kind for f in findings] == ["lost_update", "write_race", "orphan_span"]
    assert {f.kind for f in findings} <= set(KINDS)
    assert findings[0].as_json() == {
        "kind": "lost_update",
        "key": "order/42",
        "trace_ids": [trace_id("alice"), trace_id("bob")],
        "span_ids": ["a-write", "b-write"],
        "agents": ["alice", "bob"],
        "detail": findings[0].detail,
    }
    assert isinstance(findings[0], Finding) and findings[0].detail


def test_it_gives_the_same_findings_for_duplicated_and_reordered_spans():
    spans = rpc_scenario()
    assert analyse(list(reversed(spans)) + spans[:3]) == analyse(spans)


# --- critical path, clock skew, causal edges, scope ----------------------------------------


def test_it_walks_the_critical_path_back_from_the_root_end():
    spans = [
        span("alice", "root", 0, 100),
        span("alice", "plan", 0, 30, parent="root"),
        span("alice", "search", 10, 20, parent="plan"),
        span("alice", "side", 5, 25, parent="root"),
        span("alice", "act", 40, 90, parent="root"),
        span("alice", "tool", 50, 80, parent="act"),
    ]
    assert critical_path(spans) == ["root", "act", "tool", "plan", "search"]


def test_the_critical_path_starts_at_the_sender_when_a_consumer_root_reads_earlier():
    # The reporter's clock runs 3 s behind: its root (started by the planner's message) reads earliest.
    enqueue = span("planner", "enqueue", 3000, 3010, trace="plan", parent="plan", kind=KIND_PRODUCER)
    spans = [
        span("planner", "plan", 2900, 3900, trace="plan"),
        enqueue,
        span("planner", "pay", 3100, 3800, trace="plan", parent="plan"),
        span("reporter", "render", 0, 500, trace="plan", kind=KIND_CONSUMER, links=(link_to(enqueue),)),
    ]
    assert critical_path(spans)[0] == "plan"


def test_it_estimates_a_callee_clock_running_ahead():
    spans = [
        span("alice", "a-call", 0, 100, kind=KIND_CLIENT),
        span("tool", "t-serve", 510, 590, trace="alice", parent="a-call", kind=KIND_SERVER),
        span("tool", "t-work", 520, 580, trace="alice", parent="t-serve"),
    ]
    assert clock_skew(spans) == {"alice-1": 0, "tool-1": 500 * MS}
    fitting = [spans[0], span("tool", "t-serve", 10, 90, trace="alice", parent="a-call", kind=KIND_SERVER)]
    assert clock_skew(fitting) == {"alice-1": 0, "tool-1": 0}


def queue_hand_off(*, worker_behind_ms: float, as_child: bool = False, delay_ms: float = 5):
    """Alice (the trace's origin) publishes a message; a worker in another process consumes it
    `delay_ms` later, on a clock `worker_behind_ms` behind Alice's. No RPC joins them."""
    produce = span("alice", "a-produce", 10, 11, trace="alice", parent="a-root", kind=KIND_PRODUCER)
    at = 10 + delay_ms - worker_behind_ms
    return [
        span("alice", "a-root", 0, 100),
        produce,
        span("worker", "w-consume", at, at + 50, trace="alice", kind=KIND_CONSUMER,
             parent="a-produce" if as_child else "", links=() if as_child else (link_to(produce),)),
        span("worker", "w-work", at + 10, at + 40, trace="alice", parent="w-consume"),
    ]


def test_it_estimates_a_consumer_clock_behind_its_producer_from_the_message():
    for as_child in (False, True):  # a root of its own linked to the producer, or the producer's child
        spans = queue_hand_off(worker_behind_ms=3000, as_child=as_child)
        skew = clock_skew(spans)
        assert skew["alice-1"] == 0
        # the smallest shift that puts the receive after the send: 3 s less the 5 ms the message took
        assert skew["worker-1"] == -2995 * MS
        assert clock_skew(list(reversed(spans)) + spans[:2]) == skew  # any order, repeats
        # the same pair is what causality_violation reports
        assert [f.kind for f in analyse(spans)] == ["causality_violation"]


def test_a_message_that_contradicts_nothing_shifts_no_clock():
    assert clock_skew(queue_hand_off(worker_behind_ms=0))["worker-1"] == 0
    # a worker clock ahead of its producer's is not proven off by a message it received
    assert clock_skew(queue_hand_off(worker_behind_ms=-3000))["worker-1"] == 0
    # nor is one clock, nor two clocks with no edge between them
    assert clock_skew([span("alice", "a", 0, 1)]) == {"alice-1": 0}
    assert clock_skew([span("alice", "a", 0, 1), span("bob", "b", -5000, -4000)]) == {"alice-1": 0, "bob-1": 0}


def test_the_largest_contradiction_bounds_a_clock_that_received_several_messages():
    spans = queue_hand_off(worker_behind_ms=3000)
    second = span("alice", "a-produce-2", 50, 51, trace="alice", parent="a-root", kind=KIND_PRODUCER)
    # consumed 1 ms after it was sent: a tighter bound than the first message's 5 ms
    spans += [second, span("worker", "w-consume-2", 51 - 3000, 60 - 3000, trace="alice", links=(link_to(second),))]
    assert clock_skew(spans)["worker-1"] == -2999 * MS


def test_a_sender_whose_message_is_received_before_it_was_sent_reads_ahead():
    # Alice hands work to the worker (whose clock is 3 s ahead: nothing contradicts that yet),
    # and the worker's reply is consumed by Alice "before" it was sent.
    produce = span("alice", "a-produce", 10, 11, trace="alice", parent="a-root", kind=KIND_PRODUCER)
    reply = span("worker", "w-reply", 3030, 3031, trace="alice", parent="w-consume", kind=KIND_PRODUCER)
    spans = [
        span("alice", "a-root", 0, 100),
        produce,
        span("worker", "w-consume", 3015, 3040, trace="alice", parent="a-produce", kind=KIND_CONSUMER),
        reply,
        span("alice", "a-got-reply", 32, 33, trace="alice", parent="a-root", kind=KIND_CONSUMER,
             links=(link_to(reply),)),
    ]
    assert clock_skew(spans)["worker-1"] == 2998 * MS  # at least 3 s less the 2 ms the reply took


def test_a_clock_placed_by_a_message_places_the_clocks_it_sends_to():
    spans = queue_hand_off(worker_behind_ms=3000)
    relay = span("worker", "w-relay", 20 - 3000, 21 - 3000, trace="alice", parent="w-consume", kind=KIND_PRODUCER)
    # a printer 1 s behind the worker, so 4 s behind Alice: judged against the worker's adjusted clock
    spans += [relay, span("printer", "p-print", 22 - 4000, 30 - 4000, trace="alice", links=(link_to(relay),))]
    skew = clock_skew(spans)
    assert skew["worker-1"] == -2995 * MS
    assert skew["printer-1"] == skew["worker-1"] - 998 * MS


def test_messages_leave_every_rpc_estimate_as_it_was():
    rpc = [
        span("alice", "a-call", 0, 100, kind=KIND_CLIENT),
        span("tool", "t-serve", 510, 590, trace="alice", parent="a-call", kind=KIND_SERVER),
        span("tool", "t-publish", 520, 521, trace="alice", parent="t-serve", kind=KIND_PRODUCER),
    ]
    # the tool's message is consumed by Alice "before" it was sent: the RPC estimate still rules the tool
    consume = span("alice", "a-consume", 30, 40, trace="alice", parent="a-call", kind=KIND_CONSUMER,
                   links=(link_to(rpc[2]),))
    assert clock_skew(rpc + [consume]) == clock_skew(rpc) == {"alice-1": 0, "tool-1": 500 * MS}


def test_it_draws_causal_edges_between_agents():
    hand_off = message_hand_off()
    rpc = [
        span("alice", "a-call", 20, 30, kind=KIND_CLIENT),
        span("tool", "t-serve", 21, 29, trace="alice", parent="a-call", kind=KIND_SERVER),
    ]
    versions = [write("alice", "a-v1", "k", 1, 0, 1), read("bob", "b-r1", "k", 1, 2, 3)]
    locks = [locked("alice", "a-lock", "L", 0, 1, token=1), locked("bob", "b-lock", "L", 2, 3, token=2)]
    assert causal_edges(hand_off + rpc + versions + locks) == [
        ("a-call", "t-serve", "rpc"),
        ("a-lock", "b-lock", "lock"),
        ("a-produce", "b-consume", "link"),
        ("a-v1", "b-r1", "reads_from"),
    ]


def test_it_names_the_spans_on_the_path_that_orders_two_writes():
    spans = message_hand_off()
    key = {s.span_id: (s.trace_id, s.span_id) for s in spans}
    every = list(key.values())
    assert spans_between(spans, key["a-w"], key["b-w"], every) == sorted([key["a-produce"], key["b-consume"]])
    assert spans_between(spans, key["b-w"], key["a-w"], every) == sorted([key["a-produce"], key["b-consume"]])
    assert spans_between(spans, key["a-w"], key["b-w"], [key["b-consume"]]) == [key["b-consume"]]
    assert spans_between(message_hand_off(linked=False), key["a-w"], key["b-w"], every) == []
