"""Faults in the control plane, with the real processes: a worker killed with SIGKILL in the middle of a rollout
tick, and the broker (Redis) restarted under ingestion. The clock is real here (every process keeps its own);
nothing asserted depends on the date.

"In the middle" is made certain from outside the product: the test holds the notification table's lock, which the
tick needs after it has locked and changed the rollout row and written its audit record, and waits until
PostgreSQL shows the worker waiting on it.
SQLite has one write lock for the whole database, which a transaction holds from BEGIN IMMEDIATE to its end, so
nothing from outside can stop a tick between two of its writes: there the worker is killed while it waits for
that lock, after the task began and before its transaction did.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from django.db import connection

from governance.models import AuditRecord, Role
from governance.rollouts.models import Rollout
from governance.rollouts.services import rollout_create, rollout_start
from governance.rollouts.tasks import tick
from governance.slo.models import Notification
from governance.slo.services import channel_create
from tests.conftest import make_key, make_user, production_env
from tests.gunicorn import gunicorn_serving
from tests.otlp_builders import export_request
from tests.processes import beat, celery_env, own_redis, running, wait_for, worker, writes_held
from traces.models import Trace
from traces.records import make_span

pytestmark = pytest.mark.django_db(transaction=True)

PLAN = [{"kind": "set_weight", "weight": 20}, {"kind": "approval"}, {"kind": "set_weight", "weight": 100}]


def blocked_on_the_notification_table() -> int | None:
    """The PostgreSQL backend (pid) of a worker whose insert waits for the notification table's lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # read afresh inside the transaction holding the lock
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
                       "'Lock' AND query LIKE %s", [f'INSERT INTO "{Notification._meta.db_table}"%'])
        row = cursor.fetchone()
    return row[0] if row else None


def backend_gone(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is None


def log_count(process, text: str) -> int:
    return process.log_path.read_text().count(text)


def ticks_done(process) -> int:
    return len(re.findall(r"rollouts\.tick\[[-0-9a-f]+\] succeeded", process.log_path.read_text()))


def test_a_worker_killed_in_the_middle_of_a_rollout_tick_advances_the_step_once_and_notifies_once(
        acme, receiver, tmp_path):
    approver = make_user("dana", acme, Role.APPROVER)
    channel_create(project=acme, actor=approver, data={"kind": "webhook", "url": receiver.url, "name": "releases"})
    rollout = rollout_create(project=acme, actor=approver, name="billing 1.1", service="billing",
                             baseline_version="1.0.0", canary_version="1.1.0", flag_key="billing-version", steps=PLAN)
    started = rollout_start(rollout=rollout, actor=approver)
    # The control queue only (ticks, notifications): on the embedded broker, analysis work other tests left
    # queued would otherwise come first and wait for the write lock this test holds.
    the_worker = worker(celery_env(WEBHOOK_ALLOW_PRIVATE="true", DEBUG="true"), tmp_path, "rollouts", queues="control")
    with running(the_worker):
        with writes_held(Notification):
            killed = tick.delay().id
            if connection.vendor == "postgresql":
                wait_for(blocked_on_the_notification_table, 60,
                         f"the tick to wait for the notification table ({tmp_path})")
                backend = blocked_on_the_notification_table()
            else:
                wait_for(lambda: log_count(the_worker, f"rollouts.tick[{killed}] received"), 60,
                         f"the worker to take the tick ({tmp_path})")
                time.sleep(1.0)  # its pool process runs the tick, which waits for SQLite's write lock
            the_worker.sigkill_pool()
            wait_for(lambda: log_count(the_worker, f"rollouts.tick[{killed}] received") == 2, 30,
                     f"the killed tick to come back from the broker ({tmp_path})")
        if connection.vendor == "postgresql":
            # The killed process's transaction had changed the rollout row: it is rolled back, not committed,
            # when its backend finds the client gone.
            wait_for(lambda: backend_gone(backend), 30, "the killed tick's database session to end")
        tick.delay()  # beat's next tick, whether or not the redelivered one found the row still locked
        wait_for(lambda: ticks_done(the_worker) >= 2 and len(receiver.received) >= 2 and not Notification.objects.exclude(status="sent").exists(),
                 60, f"the ticks to finish and the notifications to be sent ({tmp_path})")
        tick.delay()
        wait_for(lambda: ticks_done(the_worker) >= 3, 30,
                 f"one more tick ({tmp_path})")
    assert "SIGKILL" in the_worker.log_path.read_text(), "the pool process running the tick was killed"
    now = Rollout.objects.get(pk=rollout.pk)
    assert (now.state, now.pause_reason, now.step_index, now.weight) == ("paused", "awaiting_approval", 1, 20)
    assert now.version == started.version + 2, "two transitions: weight 20, then waiting for approval"
    actions = list(AuditRecord.objects.filter(object_type="rollout").order_by("pk").values_list("action", flat=True))
    assert actions == ["rollout.create", "rollout.start", "rollout.step", "rollout.pause"]
    told = [payload["alerts"][0]["labels"]["alertname"] for payload in receiver.received]
    assert told == ["RolloutStepCompleted", "RolloutAwaitingApproval"], "each told once"
    assert list(Notification.objects.values_list("attempts", flat=True)) == [1, 1]


def a_trace(number: int, service: str = "billing"):
    start = time.time_ns()
    return make_span(trace_id=f"{number:032x}", span_id=f"{number:016x}", name="charge", start_ns=start,
                     end_ns=start + 1_000_000, resource_attributes={"service.name": service})


def test_ingestion_goes_on_while_redis_restarts_and_every_trace_is_analysed_afterwards(acme, tmp_path):
    key = make_key(acme)
    with own_redis(tmp_path) as redis:
        # Traces are handed on as soon as they are stored; no SLO or rollout ticks in the way.
        env = celery_env(CELERY_BROKER_URL=redis.url, TRACE_QUIET_SECONDS="0", ALERT_EVAL_INTERVAL_SECONDS="3600",
                         ROLLOUT_TICK_SECONDS="3600", DEBUG="true")
        web_env = {**production_env(connection, tmp_path), "CELERY_BROKER_URL": redis.url}
        with gunicorn_serving(env=web_env, log_path=tmp_path / "gunicorn.log", options=("--workers", "2")) as (url, _), \
                running(worker(env, tmp_path), beat(env, tmp_path)):
            def post(numbers) -> set[int]:
                body = export_request([a_trace(n) for n in numbers]).SerializeToString()
                return {requests.post(f"{url}/v1/traces", data=body, timeout=30,
                                      headers={"Content-Type": "application/x-protobuf",
                                               "Authorization": f"Bearer {key}"}).status_code}

            def analysed() -> int:
                return Trace.objects.filter(state=Trace.State.ANALYSED).count()

            assert post(range(1, 11)) == {200}
            wait_for(lambda: analysed() == 10, 120, f"the pipeline to run on this Redis (logs in {tmp_path})", every=0.5)
            redis.stop()
            outage = [post(range(n, n + 10)) for n in range(11, 51, 10)]
            time.sleep(2)  # beat's sweep and the worker find the broker gone
            assert outage == [{200}] * 4, "ingestion does not need the broker"
            redis.start()
            assert post(range(51, 61)) == {200}
            wait_for(lambda: analysed() == 60, 120,
                     f"every trace to be analysed once Redis is back (logs in {tmp_path})", every=0.5)
    assert Trace.objects.count() == 60
