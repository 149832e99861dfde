"""The span table's day partitions on PostgreSQL: where spans land, retention dropping whole days, and the
maintenance task that keeps days ahead of the clock.

SQLite has no partitions (its span table is one plain table and the partition functions do nothing),
so these tests run on PostgreSQL only, as CI runs them.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from tests.otlp_builders import export_request
from traces import partitions
from traces.ingest import spans_store
from traces.models import Span, Trace
from traces.records import make_span
from traces.selectors import spans_of_trace, traces_search
from traces.tasks import retention, span_partitions

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="partitions are PostgreSQL's: set DATABASE_URL=postgres://... (CI does)")

DAY_NS = partitions.NS_PER_DAY
RESOURCE = {"service.name": "orders", "service.instance.id": "o-1", "gen_ai.agent.id": "planner"}


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Partitions are days of the clock, and retention is measured back from it."""


def now_ns() -> int:
    return int(timezone.now().timestamp()) * 10**9


def span_at(start_ns: int, trace: str = "a", span: str = "1"):
    return make_span(trace_id=trace * 32, span_id=span * 16, name="charge", start_ns=start_ns,
                     end_ns=start_ns + 1_000_000, resource_attributes=RESOURCE)


def partition_holding(project, trace: str, span: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM traces_span WHERE project_id = %s AND trace_id = %s "
                       "AND span_id = %s", [project.pk, trace * 32, span * 16])
        return cursor.fetchone()[0]


def day_partition(ns: int) -> str:
    return partitions.partition_of_day(partitions.day_of_ns(ns)).name


@pytest.mark.django_db
def test_spans_are_stored_in_the_partition_of_their_day(acme):
    span_partitions()
    today, in_three_days = now_ns(), now_ns() + 3 * DAY_NS
    spans_store(project_id=acme.pk, spans=[span_at(today, span="1"), span_at(in_three_days, span="2")])
    assert partition_holding(acme, "a", "1") == day_partition(today) == f"traces_span_p{timezone.now():%Y%m%d}"
    assert partition_holding(acme, "a", "2") == day_partition(in_three_days)


@pytest.mark.django_db
def test_a_retried_request_stores_nothing_twice_across_partitions(client, acme, acme_key):
    span_partitions()
    spans = [span_at(now_ns(), span="1"), span_at(now_ns() + 2 * DAY_NS, span="2"),
             span_at(now_ns() + 400 * DAY_NS, span="3")]  # the third in the DEFAULT partition
    body = export_request(spans).SerializeToString()
    for _ in range(2):
        response = client.post("/v1/traces", data=body, content_type="application/x-protobuf",
                               HTTP_AUTHORIZATION=f"Bearer {acme_key}")
        assert response.status_code == 200
    assert Span.objects.filter(project=acme).count() == 3
    assert Trace.objects.get(project=acme).span_count == 3


@pytest.mark.django_db
def test_retention_drops_the_days_past_every_retention_whole_and_deletes_shorter_retentions_by_row(acme, globex):
    acme.retention_days, globex.retention_days = 3, 1
    acme.save()
    globex.save()
    today = timezone.now().date()
    partitions.partitions_create([today - timedelta(days=n) for n in range(1, 10)])
    eight_days_ago, two_days_ago = now_ns() - 8 * DAY_NS, now_ns() - 2 * DAY_NS
    spans_store(project_id=acme.pk, spans=[span_at(eight_days_ago, span="1"), span_at(two_days_ago, span="2")])
    spans_store(project_id=globex.pk, spans=[span_at(two_days_ago, span="2")])

    assert retention() == 1  # globex's span, past its own retention: the acme span of 8 days went with its day

    left = {p.name for p in partitions.partitions_list()}
    assert day_partition(eight_days_ago) not in left
    assert day_partition(two_days_ago) in left
    assert {(s.project_id, s.span_id) for s in Span.objects.all()} == {(acme.pk, "2" * 16)}


@pytest.mark.django_db
def test_the_longest_retention_leaves_its_oldest_day_to_be_dropped_whole(acme):
    acme.retention_days = 3
    acme.save()
    partitions.partitions_create([timezone.now().date() - timedelta(days=n) for n in range(5)])
    oldest_day_start = partitions.day_start_ns(timezone.now().date() - timedelta(days=3))
    within_the_oldest_day_but_past_retention = oldest_day_start + 1
    assert within_the_oldest_day_but_past_retention < now_ns() - 3 * DAY_NS
    spans_store(project_id=acme.pk, spans=[span_at(within_the_oldest_day_but_past_retention)])

    assert retention() == 0
    assert Span.objects.filter(project=acme).count() == 1


@pytest.mark.django_db
def test_the_maintenance_task_creates_a_week_ahead_and_a_second_run_changes_nothing(acme):
    first = span_partitions()
    names = {p.name for p in partitions.partitions_list()}
    assert {partitions.partition_of_day(timezone.now().date() + timedelta(days=n)).name for n in range(8)} <= names
    assert span_partitions() == {"created": [], "dropped": []}
    assert {p.name for p in partitions.partitions_list()} == names
    assert set(first["created"]) <= names


@pytest.mark.django_db
def test_far_past_and_far_future_spans_go_to_the_default_partition_and_are_still_found(acme):
    span_partitions()
    long_ago, far_ahead = 10**9, now_ns() + 20 * 365 * DAY_NS  # 1970, and twenty years on
    spans_store(project_id=acme.pk, spans=[span_at(long_ago, trace="b"), span_at(far_ahead, trace="c")])
    assert partition_holding(acme, "b", "1") == partition_holding(acme, "c", "1") == partitions.DEFAULT_PARTITION
    assert [s.start_ns for s in spans_of_trace(project=acme, trace_id="b" * 32)] == [long_ago]
    assert [t.trace_id for t in traces_search(project=acme, name="charge")] == ["c" * 32, "b" * 32]


@pytest.mark.django_db
def test_a_day_created_later_takes_its_spans_from_the_default_partition(acme, clock):
    span_partitions()
    in_ten_days = now_ns() + 10 * DAY_NS  # beyond the week created ahead
    spans_store(project_id=acme.pk, spans=[span_at(in_ten_days)])
    assert partition_holding(acme, "a", "1") == partitions.DEFAULT_PARTITION

    clock.shift(timedelta(days=5))
    assert day_partition(in_ten_days) in span_partitions()["created"]
    assert partition_holding(acme, "a", "1") == day_partition(in_ten_days)
    assert spans_store(project_id=acme.pk, spans=[span_at(in_ten_days)]) == 0  # and is still found once


@pytest.mark.django_db(transaction=True)
def test_maintainers_running_at_once_create_each_day_once(acme):
    # Days of their own, far ahead, dropped at the end: a transactional test's tables outlive it.
    days = [timezone.now().date() + timedelta(days=3000 + n) for n in range(3)]
    barrier = threading.Barrier(4)
    results: list = [None] * 4

    def create(i):
        try:
            barrier.wait()
            results[i] = partitions.partitions_create(days)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sorted(name for r in results for name in r) == sorted(partitions.partition_of_day(d).name for d in days)
    finally:
        with connection.cursor() as cursor:
            for day in days:
                cursor.execute(f"DROP TABLE IF EXISTS {partitions.partition_of_day(day).name}")
