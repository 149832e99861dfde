"""Properties of the analysis core over generated multi-agent scenarios.

- the findings are a function of the set of spans (any order, any batch split, repeats);
- shifting one process's clock changes no lost_update, write_race or stale_read finding;
- the race findings equal those of a brute-force reading of the spec (every edge listed
  pair by pair, transitive closure by search), and so do the lock overlaps;
- the clock skew estimate is a function of the set of spans too, and where messages alone
  place a clock, never overshoots its true offset and leaves every message running forward.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.analysis import analyse, clock_skew
from traces.records import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    Link,
    make_span,
)

MS = 1_000_000
T0 = 1_700_000_000_000 * MS
RACES = ("lost_update", "write_race", "stale_read")
PROCESSES = ("p1", "p2", "p3")


@st.composite
def scenarios(draw, max_spans: int = 24):
    """Small multi-agent worlds: processes with threads, traces with parents, shared keys with
    versions (right and wrong), locks with and without tokens, links, idempotent actions.
    Times are coarse so that ties, zero-length spans and backwards clocks happen."""
    n = draw(st.integers(1, max_spans))
    spans = []
    for i in range(n):
        process = draw(st.sampled_from(PROCESSES))
        thread = draw(st.sampled_from([None, "1", "2"]))
        agent = f"agent-{process}" if draw(st.booleans()) else f"agent-{process}-{thread}"
        trace = f"{draw(st.integers(0, 3)):032x}"
        same_trace = [s for s in spans if s.trace_id == trace]
        parent = ""
        choice = draw(st.integers(0, 4))
        if choice <= 2 and same_trace:
            parent = draw(st.sampled_from(same_trace)).span_id
        elif choice == 3:
            parent = "ffffffffffffffff"  # missing
        start = draw(st.integers(0, 40))
        end = start + draw(st.integers(0, 12))
        attrs = {"gen_ai.agent.id": agent}
        if thread:
            attrs["thread.id"] = thread
        op = draw(st.sampled_from(["", "", "read", "write", "write"]))
        if op:
            attrs["state.key"] = draw(st.sampled_from(["k1", "k2"]))
            attrs["state.op"] = op
            if draw(st.integers(0, 9)):
                attrs["state.version"] = draw(st.integers(0, 5))
            if op == "write":
                if draw(st.booleans()):
                    attrs["state.base_version"] = draw(st.integers(0, 5))
                if not draw(st.integers(0, 5)):
                    attrs["state.conflict"] = True
        if not draw(st.integers(0, 3)):
            attrs["lock.name"] = draw(st.sampled_from(["L", "M"]))
            if draw(st.booleans()):
                attrs["lock.fencing_token"] = draw(st.integers(1, 3))
        if not draw(st.integers(0, 5)):
            attrs["idempotency.key"] = "pay/1"
            attrs["idempotency.outcome"] = draw(st.sampled_from(["executed", "deduplicated"]))
        links = ()
        if spans and not draw(st.integers(0, 4)):
            target = draw(st.sampled_from(spans))
            links = (Link(trace_id=target.trace_id, span_id=target.span_id),)
        spans.append(make_span(
            trace_id=trace,
            span_id=f"{i:016x}",
            parent_span_id=parent,
            name=f"s{i}",
            kind=draw(st.sampled_from([KIND_INTERNAL, KIND_INTERNAL, KIND_CLIENT, KIND_SERVER])),
            status_code=draw(st.sampled_from([STATUS_OK, STATUS_OK, STATUS_OK, STATUS_ERROR])),
            start_ns=T0 + start * MS,
            end_ns=T0 + end * MS,
            attributes=attrs,
            resource_attributes={"service.name": "svc", "service.instance.id": process},
            links=links,
        ))
    return spans


def shift(spans, process: str, by_ns: int):
    return [
        make_span(trace_id=s.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id, name=s.name,
                  kind=s.kind, status_code=s.status_code, start_ns=s.start_ns + by_ns, end_ns=s.end_ns + by_ns,
                  attributes=s.attributes, resource_attributes=s.resource_attributes, links=s.links)
        if s.instance_id == process else s
        for s in spans
    ]


def races(findings):
    return [(f.kind, f.key, f.span_ids) for f in findings if f.kind in RACES]


# --- the spec, read literally ---------------------------------------------------------


def brute_force(spans):
    """Race findings and lock overlaps by listing every HB edge of the spec, pair by pair."""
    n = len(spans)
    idx = {(s.trace_id, s.span_id): i for i, s in enumerate(spans)}
    edges = defaultdict(set)  # node 2i = start(i), 2i+1 = end(i)

    def parent(i):
        s = spans[i]
        return idx.get((s.trace_id, s.parent_span_id), -1) if s.parent_span_id else -1

    for i, s in enumerate(spans):
        edges[2 * i].add(2 * i + 1)
        p = parent(i)
        if p >= 0 and p != i:
            q = spans[p]
            edges[2 * p].add(2 * i)
            if (q.kind == KIND_CLIENT and s.kind == KIND_SERVER) or (q.clock == s.clock and s.end_ns <= q.end_ns):
                edges[2 * i + 1].add(2 * p + 1)
        for link in s.links:
            p = idx.get((link.trace_id, link.span_id), -1)
            if p >= 0 and p != i:
                edges[2 * p].add(2 * i)
    for a, b in itertools.permutations(range(n), 2):
        sa, sb = spans[a], spans[b]
        if sa.chain == sb.chain and sa.end_ns <= sb.start_ns:
            edges[2 * a + 1].add(2 * b)
        if sa.state_op == "write" and sa.write_took_effect and sa.state_version is not None and sa.state_key == sb.state_key:
            observed = sb.state_version if sb.state_op == "read" else sb.state_base_version if sb.state_op == "write" else None
            if observed == sa.state_version:
                edges[2 * a + 1].add(2 * b)
        if sa.lock_name and sa.lock_name == sb.lock_name:
            ta, tb = sa.lock_fencing_token, sb.lock_fencing_token
            if ta is not None and tb is not None:
                larger = sorted({s.lock_fencing_token for s in spans if s.lock_name == sa.lock_name
                                 and s.lock_fencing_token is not None and s.lock_fencing_token > ta})
                if larger and tb == larger[0]:
                    edges[2 * a + 1].add(2 * b)
            elif sa.clock == sb.clock and sa.end_ns <= sb.start_ns:
                edges[2 * a + 1].add(2 * b)

    reach = {}
    for u in range(2 * n):
        seen, todo = set(), [u]
        while todo:
            for v in edges[todo.pop()]:
                if v not in seen:
                    seen.add(v)
                    todo.append(v)
        reach[u] = seen

    def hb(a, b):
        return 2 * b in reach[2 * a + 1]

    def locks(i):
        names, seen = set(), set()
        while i >= 0 and i not in seen:
            seen.add(i)
            if spans[i].lock_name:
                names.add(spans[i].lock_name)
            i = parent(i)
        return names

    def ancestor(a, b):
        seen, j = set(), parent(b)
        while j >= 0 and j not in seen:
            if j == a:
                return True
            seen.add(j)
            j = parent(j)
        return False

    def pair(a, b):
        return tuple(s.span_id for s in sorted((spans[a], spans[b]), key=lambda s: (s.trace_id, s.span_id)))

    found = set()
    writes = [i for i, s in enumerate(spans) if s.state_key and s.write_took_effect]
    for a, b in itertools.combinations(writes, 2):
        sa, sb = spans[a], spans[b]
        if sa.state_key != sb.state_key:
            continue
        if sa.state_base_version is not None and sa.state_base_version == sb.state_base_version:
            found.add(("lost_update", sa.state_key, pair(a, b)))
        elif not hb(a, b) and not hb(b, a) and not (locks(a) & locks(b)):
            found.add(("write_race", sa.state_key, pair(a, b)))
    for r, s in enumerate(spans):
        if s.state_op != "read" or not s.state_key or s.state_version is None:
            continue
        newer = [w for w in writes if spans[w].state_key == s.state_key and spans[w].state_version is not None
                 and spans[w].state_version > s.state_version and hb(w, r)]
        if newer:
            w = min(newer, key=lambda w: (-spans[w].state_version, spans[w].trace_id, spans[w].span_id))
            found.add(("stale_read", s.state_key, (s.span_id, spans[w].span_id)))
    overlaps = set()
    for a, b in itertools.combinations(range(n), 2):
        sa, sb = spans[a], spans[b]
        if not sa.lock_name or sa.lock_name != sb.lock_name or ancestor(a, b) or ancestor(b, a):
            continue
        ta, tb = sa.lock_fencing_token, sb.lock_fencing_token
        same_token = ta is not None and ta == tb
        overlap = ((ta is None or tb is None) and sa.clock == sb.clock
                   and sa.start_ns < sb.end_ns and sb.start_ns < sa.end_ns)
        if same_token or overlap:
            overlaps.add(("lock_overlap", sa.lock_name, pair(a, b)))
    return found, overlaps


# --- properties --------------------------------------------------------------------


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shuffled_copy(spans, rnd) -> list:
    shuffled = list(spans)
    rnd.shuffle(shuffled)
    return shuffled


@FAST
@given(scenarios(), st.randoms(use_true_random=False))
def test_it_gives_the_same_findings_in_any_order_split_or_repeat(spans, rnd):
    expected = analyse(spans)
    shuffled = shuffled_copy(spans, rnd)
    assert analyse(shuffled) == expected
    cut = rnd.randint(0, len(spans))
    batches = (shuffled[:cut], shuffled[cut:], shuffled[: rnd.randint(0, len(spans))])
    assert analyse(itertools.chain.from_iterable(batches)) == expected


@FAST
@given(scenarios(), st.sampled_from(PROCESSES), st.integers(-10**12, 10**12))
def test_it_decides_races_by_causality_not_by_another_clock(spans, process, by_ns):
    assert races(analyse(shift(spans, process, by_ns))) == races(analyse(spans))


@FAST
@given(scenarios())
def test_it_agrees_with_the_spec_read_literally(spans):
    findings = analyse(spans)
    expected_races, expected_overlaps = brute_force(spans)
    assert set(races(findings)) == expected_races
    assert len(races(findings)) == len(expected_races)
    assert {(f.kind, f.key, f.span_ids) for f in findings if f.kind == "lock_overlap"} == expected_overlaps


@FAST
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_clock_skew_estimate_is_the_same_in_any_order_or_repeat(spans, rnd):
    shuffled = shuffled_copy(spans, rnd)
    assert clock_skew(shuffled + shuffled[: rnd.randint(0, len(spans))]) == clock_skew(spans)


@st.composite
def message_worlds(draw):
    """An origin process p0 (its clock true) hands messages to and from workers p1..p3 whose
    clocks are off by a drawn amount; no RPC. Each message takes no negative real time, so only
    the clocks make a receive start before its send. (spans, true offsets in ns)"""
    truth = {"p0": 0} | {p: draw(st.integers(-5000, 5000)) * MS for p in ("p1", "p2", "p3")}
    trace = "ab" * 16
    spans = []

    def add(process, span_id, real_ms, kind, parent="", links=()):
        at = T0 + real_ms * MS + truth[process]
        spans.append(make_span(trace_id=trace, span_id=span_id, parent_span_id=parent, name=span_id, kind=kind,
                               start_ns=at, end_ns=at + MS, attributes={},
                               resource_attributes={"service.name": "svc", "service.instance.id": process},
                               links=links))
        return spans[-1]

    add("p0", "0" * 16, 0, KIND_INTERNAL)
    for i in range(draw(st.integers(1, 8))):
        worker = draw(st.sampled_from(("p1", "p2", "p3")))
        sender, receiver = ("p0", worker) if draw(st.booleans()) else (worker, "p0")
        sent = draw(st.integers(0, 900))
        send = add(sender, f"{2 * i + 1:016x}", sent, KIND_PRODUCER, parent="0" * 16)
        as_child = sender == "p0" and draw(st.booleans())
        add(receiver, f"{2 * i + 2:016x}", sent + draw(st.integers(0, 50)), KIND_CONSUMER,
            parent=send.span_id if as_child else "0" * 16 if receiver == "p0" or draw(st.booleans()) else "",
            links=() if as_child else (Link(trace_id=trace, span_id=send.span_id),))
    return spans, truth


@FAST
@given(message_worlds())
def test_messages_place_a_clock_no_further_than_its_true_offset(world):
    spans, truth = world
    skew = clock_skew(spans)
    assert skew["p0"] == 0
    for process, offset in skew.items():
        assert min(0, truth[process]) <= offset <= max(0, truth[process]), (process, offset, truth)
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        for a in [by_id.get(s.parent_span_id)] + [by_id[link.span_id] for link in s.links]:
            if a is not None:
                assert s.start_ns - skew[s.clock] >= a.start_ns - skew[a.clock], (a.span_id, s.span_id)


def test_it_agrees_with_the_spec_on_busier_seeded_worlds():
    """Larger worlds than Hypothesis explores comfortably, from a seeded generator."""
    for seed in range(15):
        rnd = random.Random(seed)
        spans = _random_world(rnd, 70)
        found = analyse(spans)
        expected_races, expected_overlaps = brute_force(spans)
        assert set(races(found)) == expected_races
        assert {(f.kind, f.key, f.span_ids) for f in found if f.kind == "lock_overlap"} == expected_overlaps


def _random_world(rnd: random.Random, n: int):
    spans = []
    for i in range(n):
        process = rnd.choice(PROCESSES)
        thread = rnd.choice([None, "1", "2", "3"])
        trace = f"{rnd.randint(0, 6):032x}"
        same = [s for s in spans if s.trace_id == trace]
        parent = rnd.choice(same).span_id if same and rnd.random() < 0.6 else ""
        start = rnd.randint(0, 200)
        end = start + rnd.randint(0, 30)
        attrs = {"gen_ai.agent.id": f"agent-{process}"}
        if thread:
            attrs["thread.id"] = thread
        if rnd.random() < 0.5:
            attrs["state.key"] = rnd.choice(["k1", "k2", "k3"])
            attrs["state.op"] = rnd.choice(["read", "write"])
            attrs["state.version"] = rnd.randint(0, 8)
            if attrs["state.op"] == "write" and rnd.random() < 0.7:
                attrs["state.base_version"] = rnd.randint(0, 8)
        if rnd.random() < 0.15:
            attrs["lock.name"] = "L"
            if rnd.random() < 0.5:
                attrs["lock.fencing_token"] = rnd.randint(1, 4)
        links = ()
        if spans and rnd.random() < 0.2:
            target = rnd.choice(spans)
            links = (Link(trace_id=target.trace_id, span_id=target.span_id),)
        spans.append(make_span(
            trace_id=trace, span_id=f"{i:016x}", parent_span_id=parent, name=f"s{i}",
            kind=rnd.choice([KIND_INTERNAL, KIND_CLIENT, KIND_SERVER]),
            start_ns=T0 + start * MS, end_ns=T0 + end * MS, attributes=attrs,
            resource_attributes={"service.name": "svc", "service.instance.id": process}, links=links,
        ))
    return spans


# --- revising only what late spans can change (the live pipeline, docs/concurrency.md) --------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), turns=st.integers(2, 12), late_share=st.floats(0.05, 0.6))
def test_findings_that_late_spans_change_all_touch_a_span_they_reach(seed, turns, late_share):
    """What the pipeline relies on to revise only part of the stored findings: every finding that
    appears or disappears when late spans join the others is among those analyse_revised reports
    (appearing) or has a span among those it says the late spans reach (disappearing), and it
    reports nothing the full analysis does not."""
    from tests.worlds import agent_world
    from traces.analysis import analyse_revised

    rng = random.Random(seed)
    spans = agent_world(rng, turns=turns, agents=3, keys=2)
    late = [s for s in spans if rng.random() < late_share]
    early = [s for s in spans if s not in late]

    def ident(f):
        return (f.kind, f.key, f.span_ids)

    before = {ident(f): f for f in analyse(early)}
    after = {ident(f): f for f in analyse(spans)}
    revised, touched, _ = analyse_revised(spans, [(s.trace_id, s.span_id) for s in late])
    touched_ids = {span_id for _, span_id in touched}
    late_keys = {s.idempotency_key for s in late if s.idempotency_key}
    assert {ident(f) for f in revised} <= set(after)
    assert set(after) - set(before) <= {ident(f) for f in revised}
    for gone in set(before) - set(after):
        f = before[gone]
        assert touched_ids & set(f.span_ids) or (f.kind == "duplicate_side_effect" and f.key in late_keys), f


# --- the window the live pipeline keeps between runs ------------------------------------------------------------------


def _split(spans, rnd: random.Random, groups: int) -> list[list]:
    """The spans in `groups` arrivals at random, some spans sent twice (a retried export)."""
    arrivals = [[] for _ in range(groups)]
    for s in spans:
        arrivals[rnd.randrange(groups)].append(s)
        if rnd.random() < 0.1:
            arrivals[rnd.randrange(groups)].append(s)
    return arrivals


def _fed_and_checked(arrivals: list[list]):
    """A window fed the arrivals one by one; after each, what it revises must be what a fresh analysis of
    everything so far revises. Returns the window."""
    from traces.analysis import Window, analyse_revised

    window = Window()
    held = []
    for arrival in arrivals:
        window.add(arrival)
        held += arrival
        revised_by = [(s.trace_id, s.span_id) for s in arrival]
        fresh = analyse_revised(held, revised_by)
        kept = window.revise(revised_by)
        assert (kept.found, kept.touched) == (fresh.found, fresh.touched)
    return window


@FAST
@given(scenarios(), st.randoms(use_true_random=False), st.integers(1, 5))
def test_a_window_fed_arrival_by_arrival_revises_as_a_fresh_analysis_does(spans, rnd, groups):
    """A live worker keeps one `Window` and adds each run's spans to it: after every arrival, what it
    revises (findings and the spans reached) is what analysing all the spans so far from scratch
    gives, and once everything is there it reports what `analyse` does."""
    window = _fed_and_checked(_split(spans, rnd, groups))
    everything = [(s.trace_id, s.span_id) for s in spans]
    assert window.revise(everything).found == analyse(spans)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), turns=st.integers(5, 40), groups=st.integers(2, 6))
def test_a_window_fed_busier_worlds_out_of_order_revises_as_a_fresh_analysis_does(seed, turns, groups):
    """The same on the pipeline tests' agent worlds (messages, fenced locks, versions), with whole
    traces arriving out of order, as quiet traces do."""
    from tests.worlds import agent_world

    rng = random.Random(seed)
    spans = agent_world(rng, turns=turns, agents=4, keys=3)
    arrival_of = {t: rng.randrange(groups) for t in sorted({s.trace_id for s in spans})}
    _fed_and_checked([[s for s in spans if arrival_of[s.trace_id] == group] for group in range(groups)])


@settings(deadline=None)
@given(st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4 * n),
    st.integers(0, n - 1), st.integers(0, n - 1))))
def test_the_spans_named_between_two_accesses_are_those_on_a_path_from_one_to_the_other(graph):
    # What names the later spans that ordered a withdrawn finding's accesses; cycles included, as
    # malformed timestamps make them.
    from traces.analysis import _csr, _kernels

    nodes, edges, a, b = graph
    successors = defaultdict(set)
    for u, v in edges:
        successors[u].add(v)

    def reached_from(origin: int) -> set[int]:
        seen, todo = {origin}, [origin]
        while todo:
            for v in successors[todo.pop()] - seen:
                seen.add(v)
                todo.append(v)
        return seen

    expected = {u for u in reached_from(a) if b in reached_from(u)}
    offsets, targets = _csr(nodes, np.array([u for u, _ in edges], np.int64), np.array([v for _, v in edges], np.int64))
    assert set(np.flatnonzero(_kernels().on_paths(offsets, targets, a, b)).tolist()) == expected
