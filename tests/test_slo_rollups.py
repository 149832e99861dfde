"""SLI rollups from stored spans, findings and violations: equal to counting the raw events, idempotent,
late spans counted when their trace is counted again, window sums over hours and minutes, and run by
the pipeline as its stage after analysis and policies."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest
from django.utils import timezone

from governance.slo.core.sli import NS_PER_MINUTE, Sli, WindowSums, recoveries
from governance.slo.models import SliRollup
from governance.slo.rollups import sli_backfill, sli_rollups_recompute, sli_rollups_update
from governance.slo.selectors import minute_of, window_sums
from governance.slo.services import sli_get_or_create
from policies.services import policy_create, policy_version_activate, violations_record
from traces.ingest import spans_store
from traces.models import Finding, Trace
from traces.records import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_OK, make_span
from traces.services import findings_update


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans are dated back from the stopped clock, and windows end at it."""


SLIS = {
    "success": {"kind": "success", "match": {"service": "billing"}},
    "latency": {"kind": "latency", "match": {"name": ["charge", "refund"]}, "threshold_ms": 40},
    "idempotency": {"kind": "idempotency", "match": {"agent": "billing-*"}},
    "conflict": {"kind": "conflict", "match": {}},
    "server": {"kind": "success", "match": {"span_kind": "server", "attributes": {"tier": {"equals": "gold"}}}},
    "throughput": {"kind": "throughput", "match": {"service": "shipping"}},
    "findings": {"kind": "findings", "match": {"finding_kind": "duplicate_side_effect"}},
    "violations": {"kind": "violations", "match": {"policy": "ledger"}},
    "recovery": {"kind": "recovery", "match": {"service": "billing", "name": "charge"}, "threshold_ms": 120_000},
}

LEDGER = """\
policy: ledger
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent
"""


def a_span(trace: int, index: int, minutes_ago: float, *, name="charge", service="billing", agent="billing-agent",
           error=False, ms=10.0, kind=KIND_SERVER, **attributes):
    start = time.time_ns() - int(minutes_ago * NS_PER_MINUTE)
    return make_span(trace_id=f"{trace:032x}", span_id=f"{trace:08x}{index:08x}", name=name, kind=kind,
                     start_ns=start, end_ns=start + int(ms * 1e6), status_code=STATUS_ERROR if error else STATUS_OK,
                     attributes={"gen_ai.agent.id": agent, **attributes},
                     resource_attributes={"service.name": service, "service.instance.id": f"{service}-1"})


def world(seed: int = 7, traces: int = 60) -> list:
    """Three hours of billing, shipping and ledger work with errors, slow calls, retried and repeated
    idempotent actions, conflicting writes and writes by an agent the ledger policy forbids."""
    rng = random.Random(seed)
    spans = []
    for t in range(1, traces + 1):
        at = rng.uniform(1, 180)
        for i in range(rng.randint(1, 6)):
            when = at - i * rng.uniform(0, 0.4)
            roll = rng.random()
            if roll < 0.35:
                spans.append(a_span(t, i, when, name=rng.choice(["charge", "refund"]), error=rng.random() < 0.2,
                                    ms=rng.choice([5, 30, 45, 400]), tier=rng.choice(["gold", "silver"])))
            elif roll < 0.55:
                key = f"pay/{rng.randint(1, 12)}"
                spans.append(a_span(t, i, when, name="pay", error=rng.random() < 0.1, **{
                    "idempotency.key": key, "idempotency.outcome": rng.choice(["executed", "executed", "deduplicated"])}))
            elif roll < 0.75:
                agent = rng.choice(["ledger-agent", "ledger-agent", "intruder"])
                spans.append(a_span(t, i, when, name="state.write", agent=agent, service="ledger", **{
                    "state.key": f"ledger/{rng.randint(1, 3)}", "state.op": "write",
                    "state.conflict": rng.random() < 0.3}))
            else:
                spans.append(a_span(t, i, when, name="ship", service="shipping", agent="courier", kind=KIND_CLIENT))
    return spans


def slis_of(project) -> dict[str, int]:
    return {name: sli_get_or_create(project=project, spec=spec).pk for name, spec in SLIS.items()}


def stored(project, spans) -> list[str]:
    """Store the spans and analyse them as the pipeline would: findings, then policy violations."""
    spans_store(project_id=project.pk, spans=spans)
    trace_ids = sorted({s.trace_id for s in spans})
    findings_update(project_id=project.pk, trace_ids=trace_ids)
    violations_record(project_id=project.pk, trace_ids=trace_ids)
    return trace_ids


@pytest.fixture
def ledger_policy(acme, alice):
    policy = policy_create(project=acme, source=LEDGER, actor=alice)
    policy_version_activate(policy=policy, version=policy.versions.get(), actor=alice)
    return policy


def rows(sli_id: int, width: int = 1) -> dict[int, tuple]:
    return {r.start: (r.good, r.total, round(r.value_sum, 6)) for r in SliRollup.objects.filter(sli_id=sli_id, width=width)}


def oracle(name: str, spans, project) -> dict[int, tuple]:
    """The per-minute (good, total) of an SLI, counted straight from the events by hand."""
    minute = lambda ns: ns // NS_PER_MINUTE
    out: dict[int, list] = defaultdict(lambda: [0, 0, 0.0])

    def add(ns, good, value=0.0):
        out[minute(ns)][0] += good
        out[minute(ns)][1] += 1
        out[minute(ns)][2] += value

    duplicates = set()
    for finding in Finding.objects.filter(project=project, kind="duplicate_side_effect", status="open"):
        members = sorted((s.start_ns, s.span_id) for s in spans if s.span_id in finding.span_ids)
        duplicates.update(span_id for _, span_id in members[1:])
    for s in spans:
        ms = (s.end_ns - s.start_ns) / 1e6
        if name == "success" and s.service_name == "billing":
            add(s.start_ns, s.status_code != STATUS_ERROR)
        elif name == "latency" and s.name in ("charge", "refund"):
            add(s.start_ns, ms <= 40, ms)
        elif name == "idempotency" and s.agent.startswith("billing-") and s.idempotency_key:
            add(s.start_ns, s.status_code != STATUS_ERROR and s.span_id not in duplicates)
        elif name == "conflict" and s.state_op == "write":
            add(s.start_ns, not s.state_conflict)
        elif name == "server" and s.kind == KIND_SERVER and s.attributes.get("tier") == "gold":
            add(s.start_ns, s.status_code != STATUS_ERROR)
        elif name == "throughput" and s.service_name == "shipping":
            add(s.start_ns, True)
    if name == "findings":
        for f in Finding.objects.filter(project=project, kind="duplicate_side_effect", status="open"):
            add(f.first_ns, False)
    if name == "violations":
        from policies.models import Violation

        for v in Violation.objects.filter(project=project):
            add(v.start_ns, False)
    return {m: (g, t, round(v, 6)) for m, (g, t, v) in out.items()}


def test_rollups_equal_the_raw_computation_over_the_same_spans(acme, ledger_policy):
    spans = world()
    trace_ids = stored(acme, spans)
    ids = slis_of(acme)
    assert Finding.objects.filter(kind="duplicate_side_effect").exists(), "the world has repeated executions"
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids)

    for name in SLIS:
        if name == "recovery":
            expected = {m: (c.good, c.total, round(c.value_sum, 6))
                        for m, c in recoveries(Sli.parse(SLIS[name]), spans, horizon_ns=360 * NS_PER_MINUTE).items()}
            assert expected, "the world has recoveries"
        else:
            expected = oracle(name, spans, acme)
            assert expected, f"the world has {name} events"
        assert rows(ids[name]) == expected, name
        hours = defaultdict(lambda: [0, 0, 0.0])
        for m, (g, t, v) in expected.items():
            hours[m // 60 * 60][0] += g
            hours[m // 60 * 60][1] += t
            hours[m // 60 * 60][2] += v
        assert {h: (g, t, round(v, 6)) for h, (g, t, v) in rows(ids[name], 60).items()} == \
            {h: (g, t, round(v, 6)) for h, (g, t, v) in hours.items()}, f"{name} hours"


def test_window_sums_over_hours_and_minutes_equal_the_sum_of_their_minutes(acme, ledger_policy):
    trace_ids = stored(acme, world(seed=11))
    ids = slis_of(acme)
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids)
    now_minute = minute_of(timezone.now())
    windows = {1, 5, 28, 56, 60, 61, 119, 125, 336, 1440, 4032}
    sums = window_sums({ids["success"]: windows, ids["latency"]: windows | {7}}, now_minute=now_minute)
    for name in ("success", "latency"):
        minutes = rows(ids[name])
        for w in windows:
            part = [v for m, v in minutes.items() if now_minute - w < m <= now_minute]
            got = sums[ids[name]][w]
            assert (got.good, got.total) == (sum(p[0] for p in part), sum(p[1] for p in part)), (name, w)
            assert got.value_sum == pytest.approx(sum(p[2] for p in part))
    assert isinstance(sums[ids["latency"]][7], WindowSums)


def test_running_the_rollup_twice_changes_nothing(acme, ledger_policy):
    trace_ids = stored(acme, world(seed=3))
    ids = slis_of(acme)
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids)
    first = {name: (rows(pk), rows(pk, 60)) for name, pk in ids.items()}
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids)
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids[:5])
    assert {name: (rows(pk), rows(pk, 60)) for name, pk in ids.items()} == first


def test_a_late_span_is_counted_when_its_trace_is_counted_again(acme):
    ids = slis_of(acme)
    early = [a_span(1, 0, 30), a_span(1, 1, 30, error=True), a_span(2, 0, 90)]
    spans_store(project_id=acme.pk, spans=early)
    sli_rollups_update(project_id=acme.pk, trace_ids=[f"{1:032x}", f"{2:032x}"])
    minute = early[0].start_ns // NS_PER_MINUTE
    other = early[2].start_ns // NS_PER_MINUTE
    assert rows(ids["success"])[minute][:2] == (1, 2)
    late = a_span(1, 2, 30, error=True)
    spans_store(project_id=acme.pk, spans=[late])
    assert rows(ids["success"])[minute][:2] == (1, 2), "not counted before its trace is counted again"
    sli_rollups_update(project_id=acme.pk, trace_ids=[f"{1:032x}"])
    assert rows(ids["success"])[minute][:2] == (1, 3)
    assert rows(ids["success"])[other][:2] == (1, 1)
    assert rows(ids["success"], 60)[minute // 60 * 60][:2] == (1 + (other // 60 == minute // 60), 3 + (other // 60 == minute // 60))


def test_a_minute_whose_events_are_gone_loses_its_row(acme):
    ids = slis_of(acme)
    spans = [a_span(1, 0, 30)]
    spans_store(project_id=acme.pk, spans=spans)
    sli_rollups_update(project_id=acme.pk, trace_ids=[f"{1:032x}"])
    minute = spans[0].start_ns // NS_PER_MINUTE
    assert minute in rows(ids["success"])
    from traces.models import Span

    Span.objects.filter(project=acme).delete()
    sli_rollups_recompute(project_id=acme.pk, minutes={minute})
    assert rows(ids["success"]) == {} and rows(ids["success"], 60) == {}


def test_minutes_past_retention_keep_their_counts_when_their_spans_are_gone(acme):
    from governance.slo.rollups import rollups_expire
    from traces.tasks import retention

    ids = slis_of(acme)
    old = [a_span(1, 0, 20 * 1440), a_span(2, 0, 20 * 1440, error=True)]  # 20 days ago; retention is 14
    spans_store(project_id=acme.pk, spans=old)
    sli_rollups_recompute(project_id=acme.pk, minutes={old[0].start_ns // NS_PER_MINUTE}, sli_ids=[ids["success"]])
    assert rows(ids["success"]) == {}, "a minute past retention is not counted from spans: it may hold some of them"
    minute = old[0].start_ns // NS_PER_MINUTE
    SliRollup.objects.create(sli_id=ids["success"], width=1, start=minute, good=1, total=2)
    Trace.objects.update(state=Trace.State.COMPLETE)
    retention()
    sli_rollups_update(project_id=acme.pk, trace_ids=[s.trace_id for s in old])
    assert rows(ids["success"]) == {minute: (1, 2, 0.0)}, "its counts outlive its spans"
    SliRollup.objects.create(sli_id=ids["success"], width=1, start=minute - 100 * 1440, good=1, total=1)
    assert rollups_expire() == 1 and list(rows(ids["success"])) == [minute]


def test_the_pipeline_counts_quiet_traces_into_the_slis_after_their_analysis_and_policies(acme, ledger_policy):
    from governance.pipeline.models import StageBatch
    from governance.pipeline.services import quiet_traces_hand_on, stage_run
    from governance.pipeline.stages import STAGES

    names = [stage.name for stage in STAGES]
    assert names.index("analysis") < names.index("policies") < names.index("sli_rollups")
    ids = slis_of(acme)
    spans = world(seed=5, traces=20)
    spans_store(project_id=acme.pk, spans=spans)
    quiet_traces_hand_on(quiet_seconds=0)
    for stage in STAGES:
        assert stage_run(stage=stage, project_id=acme.pk) >= 0
    assert not StageBatch.objects.exists()
    assert set(Trace.objects.values_list("state", flat=True)) == {Trace.State.ANALYSED}
    for name in ("success", "findings", "violations"):
        assert rows(ids[name]) == oracle(name, spans, acme), f"{name}: counted after the findings and violations"
    assert oracle("violations", spans, acme), "the world breaks the ledger policy"


def test_a_new_sli_is_counted_over_the_stored_past_as_far_as_its_slo_looks(acme, alice):
    from governance.slo.services import slo_create

    spans = [a_span(t, 0, minutes_ago) for t, minutes_ago in enumerate([5, 70, 200, 1000], start=1)]
    spans_store(project_id=acme.pk, spans=spans)
    slo = slo_create(project=acme, actor=alice, data={"name": "billing", "objective": 0.99, "window_seconds": 12 * 3600,
                                                      "sli": SLIS["success"]})
    assert sli_backfill(sli_id=slo.sli_id, seconds=0) is False, "out of time before the first hour"
    assert sli_backfill(sli_id=slo.sli_id) is True
    assert sum(t for _, t, _ in rows(slo.sli_id).values()) == 3, "the span 1000 minutes ago is older than 12 hours"
