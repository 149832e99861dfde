"""Traces turn quiet, are handed on to the pipeline and analysed by a real Celery worker, and expire."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from governance.pipeline.tasks import sweep
from tests.conftest import at_fixed_instants
from traces.ingest import spans_store
from traces.models import Finding, Span, Trace
from traces.records import make_span
from traces.services import quiet_traces_claim
from traces.tasks import retention


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans are dated from the clock, and quiet periods and retention are measured back from it."""


def access(trace_id, span_id, agent, instance, op, version, base=None, start=0):
    attributes = {"state.key": "order/42", "state.op": op, "state.version": version}
    if base is not None:
        attributes["state.base_version"] = base
    now_ns = time.time_ns()
    return make_span(trace_id=trace_id, span_id=span_id, name=f"{op} order", start_ns=now_ns + start,
                     end_ns=now_ns + start + 1000, attributes=attributes,
                     resource_attributes={"service.name": "orders", "service.instance.id": instance, "gen_ai.agent.id": agent})


def lost_update_spans():
    """The spec's example: A and B both read v3 and write with base 3, in different processes."""
    return [
        access("a" * 32, "a1" * 8, "A", "proc-a", "read", 3, start=0),
        access("a" * 32, "a2" * 8, "A", "proc-a", "write", 4, base=3, start=2000),
        access("b" * 32, "b1" * 8, "B", "proc-b", "read", 3, start=0),
        access("b" * 32, "b2" * 8, "B", "proc-b", "write", 5, base=3, start=2000),
    ]


def age_traces(seconds):
    Trace.objects.update(last_received_at=timezone.now() - timedelta(seconds=seconds))


def test_it_claims_only_traces_that_have_been_quiet(acme, clock):
    spans_store(project_id=acme.pk, spans=lost_update_spans())
    assert quiet_traces_claim(quiet_seconds=60, limit=10) == []
    age_traces(120)
    claimed = quiet_traces_claim(quiet_seconds=60, limit=10)
    assert sorted((q.project_id, q.trace_id) for q in claimed) == [(acme.pk, "a" * 32), (acme.pk, "b" * 32)]
    assert set(Trace.objects.values_list("state", flat=True)) == {Trace.State.COMPLETE}
    assert quiet_traces_claim(quiet_seconds=60, limit=10) == [], "a trace is handed on once"


def test_a_late_span_reopens_a_complete_trace(acme, clock):
    spans_store(project_id=acme.pk, spans=lost_update_spans()[:1])
    age_traces(120)
    quiet_traces_claim(quiet_seconds=60, limit=10)
    spans_store(project_id=acme.pk, spans=lost_update_spans()[1:2])
    trace = Trace.objects.get(trace_id="a" * 32)
    assert trace.state == Trace.State.OPEN and trace.span_count == 2


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {seconds} s for {what}"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
@override_settings(TRACE_QUIET_SECONDS=0.0)
def test_a_real_worker_analyses_quiet_traces_and_stores_the_finding_once(acme, celery_worker):
    spans_store(project_id=acme.pk, spans=lost_update_spans())
    sweep.delay()
    wait_for(lambda: not Trace.objects.exclude(state=Trace.State.ANALYSED).exists(), "both traces analysed")
    assert Trace.objects.filter(state=Trace.State.ANALYSED, analysed_at__isnull=False).count() == 2
    finding = Finding.objects.get()
    assert finding.kind == "lost_update" and finding.key == "order/42"
    assert sorted(finding.span_ids) == ["a2" * 8, "b2" * 8]
    assert finding.agent_list == ["A", "B"]
    # A late span reopens trace a: the pipeline analyses it again and stores nothing twice.
    spans_store(project_id=acme.pk, spans=[access("a" * 32, "a3" * 8, "A", "proc-a", "read", 4, start=5000)])
    sweep.delay()
    wait_for(lambda: Trace.objects.get(trace_id="a" * 32).state == Trace.State.ANALYSED, "trace a analysed again")
    assert list(Finding.objects.values_list("pk", flat=True)) == [finding.pk]


@at_fixed_instants
def test_retention_deletes_old_spans_and_keeps_recent_ones(acme, globex):
    # globex keeps its spans 14 days, so on PostgreSQL the old span's day is not past every retention and
    # not dropped whole (tests/test_partitions_pg.py): acme's spans are deleted row by row, as on SQLite.
    acme.retention_days = 1
    acme.save()
    old = [access("c" * 32, "c1" * 8, "A", "proc-a", "read", 1, start=-3 * 86400 * 10**9)]
    spans_store(project_id=acme.pk, spans=old + lost_update_spans())
    Trace.objects.filter(trace_id="c" * 32).update(state=Trace.State.COMPLETE)
    assert retention() == 1
    assert not Span.objects.filter(trace_id="c" * 32).exists()
    assert not Trace.objects.filter(trace_id="c" * 32).exists()
    assert Span.objects.count() == 4


@at_fixed_instants
def test_retention_keeps_a_trace_row_while_its_old_spans_are_not_all_deleted(acme, globex):
    # (globex: as in the test above, so that no partition is dropped whole.)
    # Ingest skips the stored-span check for a trace without a row, so no span may outlive its trace.
    acme.retention_days = 1
    acme.save()
    old = [access("c" * 32, "c1" * 8, "A", "proc-a", "read", 1, start=-3 * 86400 * 10**9)]
    spans_store(project_id=acme.pk, spans=old)
    Trace.objects.update(state=Trace.State.COMPLETE)
    assert retention(max_seconds=0) == 0  # out of time before any batch
    assert Trace.objects.filter(trace_id="c" * 32).exists()
    assert spans_store(project_id=acme.pk, spans=old) == 0  # a retried batch still stores nothing twice
    assert retention() == 1
    assert not Trace.objects.filter(trace_id="c" * 32).exists()
