"""No acknowledged span is lost and none is stored twice: the OpenTelemetry SDK's own OTLP/HTTP exporter,
16 at once, against gunicorn on PostgreSQL, while the web process is killed or the database restarted.

Causeway runs as production runs it, on services of this module's own (tests/services.py): a PostgreSQL
server initdb'd into a temporary directory on a free port, a migrated database that each test copies,
gunicorn in a process group of its own. So the tests run the same whatever database the suite runs on
(SQLite or PostgreSQL), never touch the suite's, and may restart the server; they need PostgreSQL 15's
binaries, as CI has.

An export that returns SUCCESS is an acknowledgement. The installed exporter
(opentelemetry-exporter-otlp-proto-http 1.45) retries a batch on 429, 502, 503 and 504 and on a failed
connection (at once for the first, a stale pooled connection), up to 6 attempts, waiting 1, 2, 4, 8 and
16 s (jittered by 20 %) or the answer's Retry-After, but all within its timeout: with the default 10 s a
batch meets a restart of more than a few seconds with FAILURE. These exporters get 60 s, as a deployment
that must ride out restarts should (OTEL_EXPORTER_OTLP_TIMEOUT).
"""

from __future__ import annotations

import os
import queue
import random
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from tests.services import PostgresServer, Web, manage, own_postgres_database, own_postgres_server, product_env

EXPORTERS = 16
SPANS_PER_BATCH = 500  # about what a BatchSpanProcessor exports at once (512 by default)
SPANS_PER_TRACE = 16  # does not divide a batch: traces straddle two batches, sent at once by two exporters
EXPORT_TIMEOUT_S = 60
RESTART_PAUSE_S = 2
OUTAGE_S = 7
AGENTS = [Resource.create({"service.name": name, "service.version": "1.0.0", "gen_ai.agent.id": name})
          for name in ("planner", "coder", "reviewer", "tester")]
SCOPE = InstrumentationScope("causeway.tests.reliability", "1.0.0")
DROPPED = 0  # the status noted for an attempt that got no answer: the connection failed or was cut


def batches_of(spans: int, seed: int) -> list[list[ReadableSpan]]:
    """`spans` finished spans of four agents, in traces of SPANS_PER_TRACE, cut into batches as the SDK's
    batch processor would: built before the clock starts, so the exporters do nothing but send."""
    rng = random.Random(seed)
    began = time.time_ns()
    made = []
    for number in range(spans // SPANS_PER_TRACE):
        trace_id = rng.getrandbits(128) | 1
        root = SpanContext(trace_id, rng.getrandbits(64) | 1, is_remote=False, trace_flags=TraceFlags.SAMPLED)
        start = began + number * 1_000_000
        for position in range(SPANS_PER_TRACE):
            context = root if position == 0 else SpanContext(trace_id, rng.getrandbits(64) | 1, is_remote=False,
                                                             trace_flags=TraceFlags.SAMPLED)
            made.append(ReadableSpan(
                name="plan task" if position == 0 else f"step {position}", context=context,
                parent=None if position == 0 else root, resource=AGENTS[position % len(AGENTS)],
                attributes={"thread.id": f"worker-{position % 3}", "task.number": number},
                kind=SpanKind.SERVER if position == 0 else SpanKind.INTERNAL, instrumentation_scope=SCOPE,
                start_time=start + position * 1000, end_time=start + 900_000 - position * 1000))
    return [made[at:at + SPANS_PER_BATCH] for at in range(0, len(made), SPANS_PER_BATCH)]


def ids_of(batch: list[ReadableSpan]) -> set[tuple[str, str]]:
    return {(format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")) for span in batch}


@dataclass
class Attempt:
    at: float  # time.monotonic()
    status: int  # DROPPED when no answer came
    retry_after: bool


class NotingSession(requests.Session):
    """The exporter's own HTTP session (its `session` option), noting what each attempt got back."""

    def __init__(self, attempts: list[Attempt]):
        super().__init__()
        self.attempts = attempts

    def request(self, *args, **kwargs):
        try:
            response = super().request(*args, **kwargs)
        except requests.RequestException:
            self.attempts.append(Attempt(time.monotonic(), DROPPED, False))
            raise
        self.attempts.append(Attempt(time.monotonic(), response.status_code, "Retry-After" in response.headers))
        return response


@dataclass
class Fault:
    """`strike` run once `at` (a fraction) of the batches are answered, while the exporters keep exporting."""

    at: float
    strike: Callable[[], None]
    answered_before: int = 0
    began: float = 0.0  # time.monotonic()
    over: float = 0.0


@dataclass
class Delivery:
    """What the exporters were told: the batches acknowledged (SUCCESS) and failed, and every attempt."""

    batches: list[list[ReadableSpan]]
    faults: list[Fault]
    acknowledged: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    def answered(self) -> int:
        return len(self.acknowledged) + len(self.failed)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        return Counter(attempt.status for attempt in self.attempts if since <= attempt.at <= until)

    def summary(self) -> str:
        struck = ", ".join(f"{fault.answered_before} answered when a fault struck, over in {fault.over - fault.began:.1f} s"
                           for fault in self.faults)
        return (f"{len(self.batches)} batches in {self.seconds:.1f} s ({struck}); attempts by status "
                f"({DROPPED}: no answer): {dict(sorted(self.statuses().items()))}; "
                f"load average {os.getloadavg()[0]:.1f}")

    def acknowledged_spans(self) -> set[tuple[str, str]]:
        return set().union(*(ids_of(self.batches[index]) for index in self.acknowledged))


def exporter_for(url: str, key: str, attempts: list[Attempt]) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {key}"},
                            timeout=EXPORT_TIMEOUT_S, session=NotingSession(attempts))


def deliver(url: str, key: str, batches: list[list[ReadableSpan]], faults: list[Fault]) -> Delivery:
    """Exports the batches from EXPORTERS threads, an exporter each, striking each fault in turn."""
    delivery = Delivery(batches, faults)
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(batches)):
        pending.put(index)

    def export_until_none_left() -> None:
        exporter = exporter_for(url, key, delivery.attempts)
        while True:
            try:
                index = pending.get_nowait()
            except queue.Empty:
                break
            result = exporter.export(batches[index])
            (delivery.acknowledged if result is SpanExportResult.SUCCESS else delivery.failed).add(index)
        exporter.shutdown()

    threads = [threading.Thread(target=export_until_none_left) for _ in range(EXPORTERS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for fault in faults:
        while delivery.answered() < fault.at * len(batches) and any(thread.is_alive() for thread in threads):
            time.sleep(0.02)
        fault.answered_before, fault.began = delivery.answered(), time.monotonic()
        fault.strike()
        fault.over = time.monotonic()
    for thread in threads:
        thread.join()
    delivery.seconds = time.monotonic() - began
    return delivery


def replay(url: str, key: str, delivery: Delivery) -> None:
    """Exports every tenth acknowledged batch once more, as an exporter does when a fault cut the answer to a
    request that had been stored."""
    exporter = exporter_for(url, key, [])
    for index in sorted(delivery.acknowledged)[::10]:
        assert exporter.export(delivery.batches[index]) is SpanExportResult.SUCCESS
    exporter.shutdown()


@dataclass
class Stored:
    spans: set[tuple[str, str]]
    rows: int
    counted: int  # the traces' span_count, summed
    traces_miscounted: int  # traces whose span_count is not the number of their span rows


def stored_in(database_url: str) -> Stored:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT trace_id, span_id FROM traces_span").fetchall()
        counted = conn.execute("SELECT COALESCE(sum(span_count), 0) FROM traces_trace").fetchone()[0]
        miscounted = conn.execute(
            "SELECT count(*) FROM traces_trace AS t LEFT JOIN (SELECT project_id, trace_id, count(*) AS n "
            "FROM traces_span GROUP BY project_id, trace_id) AS s USING (project_id, trace_id) "
            "WHERE t.span_count <> COALESCE(s.n, 0)").fetchone()[0]
    return Stored(set(rows), len(rows), int(counted), miscounted)


def assert_stored_exactly_once(database_url: str, delivery: Delivery) -> None:
    """Every batch was acknowledged in the end, every acknowledged span is stored, and none twice, in rows
    or in its trace's span count."""
    # A batch fails when the exporter's 6 attempts (25 to 37 s of backoff) or its timeout run out first.
    assert not delivery.failed, f"{len(delivery.failed)} batches failed: {delivery.summary()}"
    stored = stored_in(database_url)
    acknowledged = delivery.acknowledged_spans()
    assert len(acknowledged) == sum(len(batch) for batch in delivery.batches)
    lost, unasked = len(acknowledged - stored.spans), len(stored.spans - acknowledged)
    assert (lost, unasked) == (0, 0), f"{lost} acknowledged spans lost, {unasked} stored that were never sent"
    assert stored.rows == len(stored.spans)  # the primary key holds this today; a partitioned table's may not
    assert stored.counted == stored.rows
    assert stored.traces_miscounted == 0


def assert_struck_mid_load(delivery: Delivery, fault: Fault, next_fault: Fault | None = None) -> None:
    """The fault struck with batches left to send, the exporters met it, and batches were acknowledged
    after it (before the next fault)."""
    assert 0 < fault.answered_before < len(delivery.batches)
    after = delivery.statuses(fault.over, next_fault.began if next_fault else float("inf"))
    assert after[200] > 0, "no batch was acknowledged after the fault: it struck after the load"


@contextmanager
def temporary_directory() -> Iterator[str]:
    # Not pytest's tmp_path: its parents are closed to the postgres user that runs the module's server.
    with tempfile.TemporaryDirectory(prefix="causeway-reliability-") as path:
        yield path


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own, which a test may restart: never the suite's."""
    with temporary_directory() as directory, own_postgres_server(directory) as server:
        yield server


@pytest.fixture(scope="module")
def migrated(server) -> Iterator[tuple[str, str]]:
    """(name, ingest key) of a migrated database holding an ingest key, which each test copies: migrating
    takes longer than a test's load."""
    with temporary_directory() as directory, own_postgres_database("causeway_migrated", server.url) as url:
        env = product_env(directory, url, None)
        manage(env, "migrate", "-v0")
        yield urllib.parse.urlsplit(url).path.lstrip("/"), manage(env, "create_ingest_key", "reliability").strip()


@pytest.fixture
def product(server, migrated) -> Iterator[tuple[Web, str, str]]:
    """(gunicorn, its database URL, an ingest key) on a copy of the migrated database."""
    template, key = migrated
    with temporary_directory() as directory, \
            own_postgres_database("causeway_reliability", server.url, template) as database_url:
        web = Web(product_env(directory, database_url, None), directory)
        web.start()
        try:
            yield web, database_url, key
        finally:
            if web.process.poll() is None:
                web.sigkill()  # nothing is left to finish, and a graceful stop takes seconds


def test_spans_acknowledged_while_gunicorn_is_killed_and_stopped_mid_load_are_all_stored_once(product):
    web, database_url, key = product

    def restart_after(stop: Callable[[], None]) -> Callable[[], None]:
        def strike():
            stop()
            time.sleep(RESTART_PAUSE_S)
            web.start()  # on the same port: the exporters' retries find it there
        return strike

    # SIGKILL of the process group (master and workers), as a container kill or the OOM killer does it; then
    # SIGTERM of the master, a graceful stop: the workers finish the requests in hand.
    kill, stop = Fault(1 / 4, restart_after(web.sigkill)), Fault(2 / 3, restart_after(web.sigterm))
    delivery = deliver(web.url, key, batches_of(200_000, seed=1), [kill, stop])
    replay(web.url, key, delivery)
    print(delivery.summary())

    assert_struck_mid_load(delivery, kill, stop)
    assert_struck_mid_load(delivery, stop)
    for fault in (kill, stop):
        assert delivery.statuses(fault.began, fault.over)[DROPPED] > 0, "no export met the stopped server"
    assert set(delivery.statuses()) <= {200, DROPPED}
    assert_stored_exactly_once(database_url, delivery)


def test_spans_sent_while_the_database_restarts_get_503_with_retry_after_and_are_all_stored_once(server, product):
    web, database_url, key = product

    def restart_database():
        server.stop("fast")  # open transactions are aborted, connections cut
        time.sleep(OUTAGE_S)
        server.start()

    outage = Fault(1 / 3, restart_database)
    delivery = deliver(web.url, key, batches_of(60_000, seed=2), [outage])
    replay(web.url, key, delivery)
    print(delivery.summary())

    assert_struck_mid_load(delivery, outage)
    unavailable = [attempt for attempt in delivery.attempts if attempt.status == 503]
    assert unavailable, "no export met the database outage"
    assert all(attempt.retry_after for attempt in unavailable)
    assert set(delivery.statuses()) <= {200, 503}
    assert_stored_exactly_once(database_url, delivery)
