"""Chaos bench: faults against the real services under load, and what survived them.

    .venv/bin/python bench/chaos.py                       # every scenario
    .venv/bin/python bench/chaos.py --only database-restart --spans 50000
    .venv/bin/python bench/chaos.py --quick               # fewer spans, shorter waits

Run by hand, not by pytest (it takes minutes). Each scenario starts what it needs of its own and
stops only that: a PostgreSQL database with a unique name on the local server (bench/databases.py,
dropped at the end), or, where the database is restarted, a PostgreSQL server of its own (initdb into
a temporary directory, pg_ctl on a free port, trust authentication: the shared server on 5432 is never
restarted); gunicorn `governance.wsgi` on a free port in a process group of its own; where tasks run,
a redis-server on a free port and Celery worker and beat (tests/processes.py).

Load: bench/ingest.py's multi-agent OTLP/HTTP protobuf requests (500 spans each, random ids), posted by
16 senders, each keeping one connection. A sender retries like the OpenTelemetry exporters do: on
429/502/503/504 or a dropped connection, with exponential backoff from 1 s (jittered), honouring
Retry-After, until 120 s have passed for that request. It records which requests were acknowledged (2xx).

Scenarios:
  gunicorn-sigkill   the web process group (master and workers) killed with SIGKILL at a third of the
                     load, restarted on the same port 2 s later
  gunicorn-sigterm   the gunicorn master sent SIGTERM (graceful stop) at a third of the load, restarted
  database-restart   the scenario's own PostgreSQL server stopped (fast shutdown: open transactions
                     aborted) at a third of the load, started again after --outage seconds (7)
  redis-restart      the scenario's own Redis broker (no persistence) stopped at a third of the load and
                     started again 3 s later, with a Celery worker and beat running; afterwards every
                     trace must still be analysed (Trace.analysed_at), within --drain seconds
  webhook-flaky      a rollout's three notifications to a webhook receiver that answers each by timing out,
                     then 500, then 200: each must be delivered once, after the sender's retries and backoff
  rollout-tick-sigkill  the rollout tick held (the notification table locked) after it changed the rollout and
                     wrote its audit record; the worker's pool process killed with SIGKILL there, the lock let go:
                     the steps must advance once and each notification arrive once

Per scenario: spans sent, acknowledged, stored, lost (acknowledged but not stored: must be 0),
duplicated (span rows beyond one per (trace_id, span_id), plus the traces' span_count beyond the rows
stored: a retried request counted twice), stored without acknowledgement (a request that committed but
whose answer the fault cut: the retry then stored nothing more), the HTTP statuses seen and how many
503s carried Retry-After. In the gunicorn and database scenarios every tenth acknowledged request is
then posted once more (an exporter retrying a request whose answer was lost) before counting, so
"duplicated" also covers a replay of a request already stored. The two control-plane scenarios count
notifications instead: expected, stored, delivered, lost and duplicated at the receiver, send attempts and the
requests' answers, and the steps the rollout advanced. The last line is JSON: {"scenarios": {name: figures}}.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest import RETRYABLE, make_batches
from bench.pipeline import say
from tests.processes import CeleryProcess, RedisServer, beat, own_redis, running
from tests.processes import worker as celery_worker
from tests.receivers import webhook_receiver
from tests.services import Web, manage, own_postgres_database, own_postgres_server, web_on

SPANS_PER_REQUEST = 500
CONCURRENCY = 16
RETRY_FOR_SECONDS = 120  # how long a sender keeps retrying one request


# --- services of a scenario's own, that it can kill and restart --------------------------------------------------------


# --- load ---------------------------------------------------------------------------------------------------------------


@dataclass
class Load:
    bodies: list[bytes]
    spans: list[list[tuple[str, str]]]  # (trace_id, span_id) of each request's spans
    acknowledged: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    retry_after_503: int = 0
    next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.bodies):
                return None
            self.next += 1
            return self.next - 1

    def fraction_answered(self) -> float:
        with self.lock:
            return (len(self.acknowledged) + len(self.failed)) / len(self.bodies)


def build_load(spans: int, seed: int) -> Load:
    count = max(1, spans // SPANS_PER_REQUEST)
    bodies, _, _ = make_batches(count, SPANS_PER_REQUEST, 4, seed)
    ids = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        ids.append([(span.trace_id.hex(), span.span_id.hex()) for resource in request.resource_spans
                    for scope in resource.scope_spans for span in scope.spans])
    return Load(bodies, ids)


def sender(url: urllib.parse.SplitResult, key: str, load: Load) -> None:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    while (index := load.take()) is not None:
        give_up_at = time.monotonic() + RETRY_FOR_SECONDS
        delay = 1.0
        while True:
            try:
                conn.request("POST", "/v1/traces", body=load.bodies[index], headers=headers)
                response = conn.getresponse()
                response.read()
                status, retry_after = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnect on the next attempt
                status, retry_after = 0, None
            with load.lock:
                load.statuses[status] += 1
                load.retry_after_503 += status == 503 and retry_after is not None
            if 200 <= status < 300:
                with load.lock:
                    load.acknowledged.add(index)
                break
            if status not in RETRYABLE and status != 0 or time.monotonic() > give_up_at:
                with load.lock:
                    load.failed.add(index)
                break
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay * random.uniform(0.8, 1.2)
            time.sleep(wait)
            delay = min(delay * 2, 16)
    conn.close()


def send_with_fault(url: str, key: str, load: Load, fault: Callable[[], None], at: float = 1 / 3) -> float:
    """Sends the load from CONCURRENCY senders and runs `fault` once `at` of the requests are answered;
    returns the seconds it all took."""
    target = urllib.parse.urlsplit(url)
    threads = [threading.Thread(target=sender, args=(target, key, load)) for _ in range(CONCURRENCY)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    while load.fraction_answered() < at and any(thread.is_alive() for thread in threads):
        time.sleep(0.05)
    say(f"  fault at {load.fraction_answered():.0%} of the requests answered")
    fault()
    for thread in threads:
        thread.join()
    return time.monotonic() - began


def replay(url: str, key: str, load: Load) -> int:
    """Posts every tenth acknowledged request once more, as an exporter does when a fault cut the answer to
    a request that had committed; returns how many were replayed (each must store nothing new)."""
    target = urllib.parse.urlsplit(url)
    again = Load(load.bodies, load.spans)
    again.bodies = [load.bodies[index] for index in sorted(load.acknowledged)[::10]]
    sender(target, key, again)
    if again.failed:
        raise RuntimeError(f"replayed requests failed: {dict(again.statuses)}")
    return len(again.bodies)


# --- counting -----------------------------------------------------------------------------------------------------------


def figures(database_url: str, key: str, load: Load, seconds: float) -> dict:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        project = conn.execute("SELECT project_id FROM governance_ingestkey WHERE key_hash = %s",
                               (hashlib.sha256(key.encode()).hexdigest(),)).fetchone()[0]
        rows = conn.execute("SELECT trace_id, span_id FROM traces_span WHERE project_id = %s", (project,)).fetchall()
        counted = conn.execute("SELECT COALESCE(sum(span_count), 0) FROM traces_trace WHERE project_id = %s",
                               (project,)).fetchone()[0]
    stored = set(rows)
    acknowledged = {span for index in load.acknowledged for span in load.spans[index]}
    sent = sum(len(ids) for ids in load.spans)
    return {
        "sent": sent,
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "lost": len(acknowledged - stored),
        "duplicated": len(rows) - len(stored),
        "trace_span_count_excess": int(counted) - len(rows),
        "stored_unacknowledged": len(stored - acknowledged),
        "failed_requests": len(load.failed),
        "statuses": {str(status): count for status, count in sorted(load.statuses.items())},
        "503_with_retry_after": load.retry_after_503,
        "seconds": round(seconds, 1),
    }


# --- scenarios ----------------------------------------------------------------------------------------------------------


def gunicorn_kill(args, load: Load, how: str) -> dict:
    directory = tempfile.mkdtemp(prefix=f"causeway-chaos-gunicorn-{how}-")
    with own_postgres_database("causeway_chaos") as database_url, web_on(database_url, directory) as (web, _, key):
        def fault():
            web.sigkill() if how == "sigkill" else web.sigterm()
            say(f"  gunicorn stopped with {how.upper()}; restarting in 2 s")
            time.sleep(2)
            web.start()
            say("  gunicorn answering again")

        seconds = send_with_fault(web.url, key, load, fault)
        replayed = replay(web.url, key, load)
        result = figures(database_url, key, load, seconds) | {"replayed_requests": replayed}
    shutil.rmtree(directory, ignore_errors=True)
    return result


def database_restart(args, load: Load) -> dict:
    directory = tempfile.mkdtemp(prefix="causeway-chaos-database-")
    with own_postgres_server(directory) as server, \
            own_postgres_database("causeway_chaos", server.url) as database_url, \
            web_on(database_url, directory) as (web, _, key):
        def fault():
            server.stop("fast")
            say(f"  PostgreSQL stopped; starting it in {args.outage:.0f} s")
            time.sleep(args.outage)
            server.start()
            say("  PostgreSQL started")

        seconds = send_with_fault(web.url, key, load, fault)
        replayed = replay(web.url, key, load)
        result = figures(database_url, key, load, seconds) | {"replayed_requests": replayed}
    shutil.rmtree(directory, ignore_errors=True)
    return result


def traces_analysed(database_url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*), count(analysed_at) FROM traces_trace").fetchone()


@contextmanager
def pipeline_product(directory: str,
                     settings: dict | None = None) -> Iterator[tuple[RedisServer, str, Web, CeleryProcess, str]]:
    """(Redis, database URL, web, worker, ingest key): the whole product on services of its own; `settings`
    (environment variables) apply to the worker, beat and manage.py."""
    with ExitStack() as stack:
        redis = stack.enter_context(own_redis(directory))
        database_url = stack.enter_context(own_postgres_database("causeway_chaos"))
        web, env, key = stack.enter_context(web_on(database_url, directory, redis.url))
        env.update(settings or {})
        worker = celery_worker(env, directory, "chaos", stop_seconds=5)
        stack.enter_context(running(worker, beat(env, directory, loglevel="WARNING")))
        yield redis, database_url, web, worker, key
    say(f"  logs kept in {directory}")


def wait_for_analysis(database_url: str, seconds: float) -> dict:
    began = time.monotonic()
    deadline = began + seconds
    while True:
        traces, analysed = traces_analysed(database_url)
        if analysed == traces or time.monotonic() > deadline:
            break
        time.sleep(2)
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        findings, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (project_id, fingerprint)) FROM traces_finding").fetchone()
    return {"traces": traces, "traces_analysed": analysed, "analysis_waited_s": round(time.monotonic() - began),
            "findings": findings,
            "findings_duplicated": findings - distinct}


def redis_restart(args, load: Load) -> dict:
    directory = tempfile.mkdtemp(prefix="causeway-chaos-redis-")
    with pipeline_product(directory) as (redis, database_url, web, _, key):
        def fault():
            redis.stop()
            say("  Redis stopped; starting it in 3 s")
            time.sleep(3)
            redis.start()
            say("  Redis started")

        seconds = send_with_fault(web.url, key, load, fault)
        result = figures(database_url, key, load, seconds)
        result.update(wait_for_analysis(database_url, args.drain))
    return result


def analysis_running(database_url: str, seconds: float) -> tuple[int, int]:
    """Waits until the pipeline's analysis stage holds a batch under lease (a worker is in the middle of
    analysing it); returns (traces, traces analysed) at that moment."""
    import psycopg

    deadline = time.monotonic() + seconds
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM pipeline_stagebatch WHERE stage = 'analysis' AND state = 'running' "
                            "LIMIT 1").fetchone():
                break
            time.sleep(0.02)
        return conn.execute("SELECT count(*), count(analysed_at) FROM traces_trace").fetchone()


def worker_sigkill(args, load: Load) -> dict:
    """The load is sent whole; once a worker is in the middle of the analysis stage, it is killed
    (main and pool process) and restarted 2 s later. The killed task's message is acknowledged late
    and its batch's lease runs out, so the work is done again: once, by the new worker."""
    directory = tempfile.mkdtemp(prefix="causeway-chaos-worker-")
    with pipeline_product(directory) as (_, database_url, web, worker, key):
        seconds = send_with_fault(web.url, key, load, lambda: None, at=0)
        result = figures(database_url, key, load, seconds)
        traces, analysed = analysis_running(database_url, args.drain)
        worker.sigkill()
        say(f"  worker killed with SIGKILL during the analysis stage, {analysed} of {traces} traces analysed; "
            "restarting in 2 s")
        time.sleep(2)
        worker.start()
        result.update(traces_analysed_at_kill=analysed)
        result.update(wait_for_analysis(database_url, args.drain))
    return result


# --- control-plane scenarios: notifications and rollout ticks ----------------------------------------------------------

# The rollout's first tick makes three transitions at once (weight 10, weight 50, then waiting for approval), each
# notified on the one webhook channel.
ROLLOUT_STEPS = [{"kind": "set_weight", "weight": 10}, {"kind": "set_weight", "weight": 50}, {"kind": "approval"}]
ROLLOUT_TRANSITIONS = len(ROLLOUT_STEPS)
START_ROLLOUT = """
from django.contrib.auth import get_user_model
from governance.models import Membership, Project, Role
from governance.rollouts.services import rollout_create, rollout_start
from governance.slo.services import channel_create
project = Project.objects.get(slug="chaos")
person = get_user_model().objects.create_user(username="release-manager")
Membership.objects.create(user=person, project=project, role=Role.ADMIN)
channel_create(project=project, actor=person, data={"kind": "webhook", "url": %(url)r, "name": "releases"})
rollout = rollout_create(project=project, actor=person, name="chaos", service="chaos", baseline_version="1.0",
                         canary_version="1.1", flag_key="chaos-version", steps=%(steps)r)
rollout_start(rollout=rollout, actor=person)
"""
# The rollout ticks every second; sends time out after 1 s; retries due are queued by the alert tick every 2 s.
CONTROL_SETTINGS = {"ROLLOUT_TICK_SECONDS": "1", "ALERT_EVAL_INTERVAL_SECONDS": "2", "NOTIFY_TIMEOUT_SECONDS": "1",
                    "WEBHOOK_ALLOW_PRIVATE": "true"}


def control_figures(database_url: str, receiver, began: float) -> dict:
    """Notifications expected (one per transition), stored, delivered, lost and duplicated at the receiver; steps
    advanced (audit records of the tick's transitions) and the rollout's own count of changes."""
    import psycopg

    from tests.receivers import message_key

    with psycopg.connect(database_url, autocommit=True) as conn:
        transitions = conn.execute("SELECT count(*) FROM governance_auditrecord WHERE object_type = 'rollout' AND "
                                   "action IN ('rollout.step', 'rollout.pause')").fetchone()[0]
        steps = conn.execute("SELECT count(*) FROM governance_auditrecord WHERE action = 'rollout.step'").fetchone()[0]
        step_index, version = conn.execute("SELECT step_index, version FROM rollouts_rollout").fetchone()
        stored = conn.execute("SELECT count(*), COALESCE(sum(attempts), 0), count(*) FILTER (WHERE status = 'sent') "
                              "FROM slo_notification").fetchone()
    with receiver.lock:
        delivered = Counter(message_key(payload) for payload in receiver.received)
        answered = Counter(str(status) for status in receiver.answered)
    return {
        "notifications_expected": ROLLOUT_TRANSITIONS, "notifications_stored": stored[0],
        "notifications_sent": stored[2], "send_attempts": int(stored[1]),
        "notifications_delivered": len(delivered), "notifications_lost": ROLLOUT_TRANSITIONS - len(delivered),
        "notifications_duplicated": sum(delivered.values()) - len(delivered),
        "requests_answered": dict(sorted(answered.items())),
        "steps_expected": ROLLOUT_TRANSITIONS - 1, "steps_advanced": steps, "transitions": transitions,
        "rollout_step_index": step_index, "rollout_version": version, "seconds": round(time.monotonic() - began, 1),
    }


def wait_for_delivery(database_url: str, receiver, seconds: float) -> None:
    """Until every expected notification reached the receiver and none is left to send, then 3 s more (a
    duplicate would show), or `seconds`."""
    import psycopg

    deadline = time.monotonic() + seconds
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            left = conn.execute("SELECT count(*) FROM slo_notification WHERE status IN ('pending', 'sending')").fetchone()[0]
            if len(receiver.received) >= ROLLOUT_TRANSITIONS and not left:
                time.sleep(3)
                return
            time.sleep(0.5)


def webhook_flaky(args, load) -> dict:
    """A rollout's three notifications to a receiver that answers each of them first by timing out, then 500 four
    times, then 200: one send (three quick tries) fails, the notification backs off 30 s and the next send
    gets through. Each must be delivered once."""
    from tests.receivers import TIMEOUT

    directory = tempfile.mkdtemp(prefix="causeway-chaos-webhook-")
    with webhook_receiver() as receiver, pipeline_product(directory, CONTROL_SETTINGS) as (_, database_url, _, worker, _):
        receiver.hold_seconds = 3
        receiver.each_message = [TIMEOUT, 500, 500, 500]
        began = time.monotonic()
        manage(worker.env, "shell", "-c", START_ROLLOUT % {"url": receiver.url, "steps": ROLLOUT_STEPS})
        say("  rollout started; the receiver times out, then answers 500, for every notification")
        wait_for_delivery(database_url, receiver, args.drain)
        return control_figures(database_url, receiver, began)


def held_tick_backend(conn) -> int | None:
    conn.execute("SELECT pg_stat_clear_snapshot()")  # read afresh
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
                       "'Lock' AND query LIKE 'INSERT INTO \"slo_notification\"%'").fetchone()
    return row[0] if row else None


def rollout_tick_sigkill(args, load) -> dict:
    """A rollout started while the notification table is locked: beat's tick locks and changes the rollout row,
    writes its audit record, then waits to write the notification. The worker's pool process running it is killed
    with SIGKILL there; the message, acknowledged late, comes back from the broker; the lock is let go. The step
    must advance once and each notification reach the receiver once."""
    import psycopg

    directory = tempfile.mkdtemp(prefix="causeway-chaos-tick-")
    with webhook_receiver() as receiver, \
            pipeline_product(directory, CONTROL_SETTINGS) as (_, database_url, _, worker, _):
        began = time.monotonic()
        with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as watcher:
            holder.execute("LOCK TABLE slo_notification IN EXCLUSIVE MODE")
            manage(worker.env, "shell", "-c", START_ROLLOUT % {"url": receiver.url, "steps": ROLLOUT_STEPS})
            deadline = time.monotonic() + 60
            while held_tick_backend(watcher) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            held = held_tick_backend(watcher) is not None
            worker.sigkill_pool()
            say(f"  tick {'held on the notification table' if held else 'NOT seen waiting'}: its pool process "
                "killed with SIGKILL; letting go of the table in 1 s")
            time.sleep(1)
            holder.rollback()
        wait_for_delivery(database_url, receiver, args.drain)
        return control_figures(database_url, receiver, began) | {"tick_held_when_killed": held}


SCENARIOS = {
    "gunicorn-sigkill": lambda args, load: gunicorn_kill(args, load, "sigkill"),
    "gunicorn-sigterm": lambda args, load: gunicorn_kill(args, load, "sigterm"),
    "database-restart": database_restart,
    "redis-restart": redis_restart,
    "worker-sigkill": worker_sigkill,
    "webhook-flaky": webhook_flaky,
    "rollout-tick-sigkill": rollout_tick_sigkill,
}
WITHOUT_LOAD = {"webhook-flaky", "rollout-tick-sigkill"}  # no spans: they count notifications and steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run this scenario (repeatable)")
    parser.add_argument("--spans", type=int, help="spans sent per scenario (default 100,000; 20,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer spans and a shorter drain")
    parser.add_argument("--outage", type=float, default=7, help="seconds the database stays down")
    parser.add_argument("--drain", type=float, help="seconds to wait for the pipeline to analyse every trace (redis-restart, worker-sigkill)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    args.spans = args.spans or (20_000 if args.quick else 100_000)
    args.drain = args.drain or (90 if args.quick else 300)
    results = {}
    for name in args.only or SCENARIOS:
        if name in WITHOUT_LOAD:
            load = None
            say(f"{name}: load average {os.getloadavg()[0]:.1f}")
        else:
            load = build_load(args.spans, args.seed)
            say(f"{name}: {len(load.bodies)} requests of {SPANS_PER_REQUEST} spans, {CONCURRENCY} senders; "
                f"load average {os.getloadavg()[0]:.1f}")
        results[name] = SCENARIOS[name](args, load)
        say(f"  {json.dumps(results[name])}")
    for name, result in results.items():
        if name in WITHOUT_LOAD:
            print(f"{name:20} notifications expected {result['notifications_expected']}  delivered "
                  f"{result['notifications_delivered']}  lost {result['notifications_lost']}  duplicated "
                  f"{result['notifications_duplicated']}  send attempts {result['send_attempts']}  steps advanced "
                  f"{result['steps_advanced']} of {result['steps_expected']}")
            continue
        print(f"{name:18} sent {result['sent']:>8}  acknowledged {result['acknowledged']:>8}  "
              f"stored {result['stored']:>8}  lost {result['lost']:>4}  duplicated {result['duplicated']:>4}  "
              f"count excess {result['trace_span_count_excess']:>4}")
    print(json.dumps({"scenarios": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
