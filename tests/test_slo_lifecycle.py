"""An alert's whole life with a real Celery worker on the configured broker (Redis in CI), spans sent
over OTLP/HTTP to a live server, and a real local webhook receiver.

The beat tasks are sent as beat sends them (by name, on the broker); the clock is stopped, and
moved on by the test, so `for` durations and windows pass without waiting.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from datetime import timedelta

import pytest
import requests
from celery.signals import task_postrun
from django.test import override_settings
from django.utils import timezone

from governance.celery import app
from governance.pipeline.models import StageBatch
from governance.slo.models import Alert, Notification
from governance.slo.services import channel_create, rule_create, silence_create, silence_expire
from tests.otlp_builders import export_request
from tests.test_slo_rollups import a_span

_traces = itertools.count(5000)


def run_on_worker(task_name: str, *args, seconds: float = 60):
    """Send a task by name, as beat does, and wait until the worker has run it; returns its result."""
    task_id, done, outcome = uuid.uuid4().hex, threading.Event(), {}

    def finished(task_id=None, retval=None, state=None, **_):
        if task_id == expected:
            outcome.update(retval=retval, state=state)
            done.set()

    expected = task_id
    task_postrun.connect(finished, weak=False)
    try:
        app.send_task(task_name, args=args, task_id=task_id)
        assert done.wait(seconds), f"the worker did not run {task_name} within {seconds} s"
    finally:
        task_postrun.disconnect(finished)
    assert outcome["state"] == "SUCCESS", outcome
    return outcome["retval"]


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {seconds} s for {what}"
        time.sleep(0.05)


def sent_all() -> bool:
    return not Notification.objects.exclude(status__in=["sent", "failed"]).exists()


def agents_send(live_server, key: str, count: int, *, error: bool) -> None:
    """`count` billing calls, each its own trace, exported over OTLP/HTTP as an SDK would."""
    spans = [a_span(next(_traces), 0, 0.05, error=error) for _ in range(count)]
    response = requests.post(f"{live_server.url}/v1/traces", data=export_request(spans).SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
                             timeout=30)
    assert response.status_code == 200, response.text


def pipeline() -> None:
    """What beat does between ticks: hand quiet traces on; the worker then runs the pipeline's stages
    (analysis, policies, SLI rollups) one after the other, each queued when the one before commits."""
    run_on_worker("pipeline.sweep")
    wait_for(lambda: not StageBatch.objects.exists(), "the pipeline's stages, SLI rollups last", seconds=60)


@pytest.mark.django_db(transaction=True)
@override_settings(TRACE_QUIET_SECONDS=0.0)
def test_errors_page_once_resolve_once_and_a_silence_keeps_them_quiet(
        live_server, acme, acme_key, alice, receiver, celery_worker, clock):
    channel_create(project=acme, actor=alice, data={"kind": "webhook", "url": receiver.url, "name": "oncall"})
    rule_create(project=acme, actor=alice, data={
        "name": "billing-errors", "sli": {"kind": "success", "match": {"service": "billing"}},
        "metric": "bad_ratio", "op": ">", "threshold": 0.5, "window_seconds": 300, "for_seconds": 60})

    # Errors arrive: the alert waits out its `for` as pending, then fires, and the receiver is told once.
    agents_send(live_server, acme_key, 6, error=True)
    pipeline()
    run_on_worker("slo.evaluate")
    assert Alert.objects.get().state == "pending" and receiver.received == []
    clock.shift(timedelta(seconds=60))
    run_on_worker("slo.evaluate")
    wait_for(lambda: len(receiver.received) == 1 and sent_all(), "the firing notification")
    run_on_worker("slo.evaluate")  # a tick that finds nothing new
    run_on_worker("slo.evaluate")
    assert sent_all() and [p["status"] for p in receiver.received] == ["firing"]
    assert receiver.received[0]["alerts"][0]["labels"]["alertname"] == "billing-errors"

    # The errors stop: the alert resolves, and the receiver is told once.
    clock.shift(timedelta(seconds=30))
    agents_send(live_server, acme_key, 12, error=False)
    pipeline()
    clock.shift(timedelta(minutes=5))
    run_on_worker("slo.evaluate")
    wait_for(lambda: len(receiver.received) == 2 and sent_all(), "the resolved notification")
    run_on_worker("slo.evaluate")
    assert [p["status"] for p in receiver.received] == ["firing", "resolved"]
    assert Alert.objects.get().state == "resolved"

    # Errors again under a silence: the alert fires, nobody is told until the silence ends.
    silence = silence_create(project=acme, actor=alice, matchers=['alertname="billing-errors"'],
                             comment="billing deploy", ends_at=timezone.now() + timedelta(hours=1))
    agents_send(live_server, acme_key, 6, error=True)
    pipeline()
    run_on_worker("slo.evaluate")
    clock.shift(timedelta(seconds=60))
    run_on_worker("slo.evaluate")
    assert Alert.objects.get().state == "firing" and Alert.objects.get().episode == 2
    assert sent_all() and len(receiver.received) == 2
    silence_expire(silence=silence, actor=alice)
    run_on_worker("slo.evaluate")
    wait_for(lambda: len(receiver.received) == 3 and sent_all(), "the firing notification after the silence")
    assert [p["status"] for p in receiver.received] == ["firing", "resolved", "firing"]
    assert Notification.objects.filter(status="sent").count() == 3
