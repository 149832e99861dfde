"""The evaluation tick: alert states from the rollups, notifications once per state change, silences,
acknowledgement, grouping, repeats, retries, and two evaluators at once."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from governance.slo.evaluation import evaluate_tick, notification_send, notifications_due
from governance.slo.models import Alert, Channel, Notification, Slo
from governance.slo.rollups import sli_rollups_update
from governance.slo.services import (
    alert_acknowledge,
    channel_create,
    rule_create,
    silence_create,
    silence_expire,
    slo_create,
    slo_update,
)
from tests.receivers import TIMEOUT
from tests.test_slo_rollups import a_span
from traces.ingest import spans_store

_traces = itertools.count(1000)


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans, windows, `for` durations and repeat intervals all run on the stopped clock."""


def calls(project, count: int, *, error: bool, seconds_ago: float = 5, name: str = "charge", service="billing"):
    """`count` calls, each its own trace, counted into the rollups as the pipeline would."""
    spans = [a_span(next(_traces), 0, seconds_ago / 60, name=name, service=service, error=error) for _ in range(count)]
    spans_store(project_id=project.pk, spans=spans)
    sli_rollups_update(project_id=project.pk, trace_ids=[s.trace_id for s in spans])


def tick():
    """One evaluation tick, then every notification due sent (as the beat task and its sends do)."""
    result = evaluate_tick()
    return result, [notification_send(notification_id=n) for n in notifications_due()]


ERRORS = {"name": "billing-errors", "sli": {"kind": "success", "match": {"service": "billing"}},
          "metric": "bad_ratio", "op": ">", "threshold": 0.5, "window_seconds": 300, "for_seconds": 60}


@pytest.fixture
def webhook(acme, alice, receiver):
    return channel_create(project=acme, actor=alice, data={"kind": "webhook", "url": receiver.url, "name": "oncall"})


def alert_states():
    return list(Alert.objects.order_by("pk").values_list("labels__alertname", "state"))


def test_a_rule_goes_pending_then_fires_once_then_resolves_once(acme, alice, webhook, receiver, clock):
    rule_create(project=acme, actor=alice, data=ERRORS)
    calls(acme, 6, error=True)
    tick()
    assert alert_states() == [("billing-errors", "pending")] and receiver.received == []
    clock.shift(timedelta(seconds=30))
    tick()
    assert alert_states() == [("billing-errors", "pending")], "the `for` is one minute"
    clock.shift(timedelta(seconds=30))
    tick()
    tick()
    assert alert_states() == [("billing-errors", "firing")]
    (firing,) = receiver.received
    assert firing["status"] == "firing" and firing["receiver"] == "oncall"
    assert firing["groupLabels"] == {"alertname": "billing-errors"}
    assert firing["groupKey"] == '{}:{alertname="billing-errors"}'
    (alert,) = firing["alerts"]
    assert alert["labels"] == {"alertname": "billing-errors", "project": "acme", "severity": "page"}
    assert alert["annotations"]["summary"] == "billing-errors: bad_ratio 1 > 0.5 over 5m"
    assert alert["startsAt"] == timezone.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and len(alert["fingerprint"]) == 16
    assert alert["generatorURL"].endswith(f"/p/acme/alerts/?fingerprint={alert['fingerprint']}")
    assert "/p/acme/traces/" in alert["annotations"]["traces"], "it links to the traces that caused it"

    calls(acme, 20, error=False, seconds_ago=-200)  # the errors stop; good calls follow
    clock.shift(timedelta(minutes=5))
    tick()
    tick()
    assert alert_states() == [("billing-errors", "resolved")]
    assert [p["status"] for p in receiver.received] == ["firing", "resolved"]
    resolved = receiver.received[1]["alerts"][0]
    assert resolved["endsAt"] == timezone.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert Notification.objects.filter(status="sent").count() == 2


def test_an_slo_pages_when_its_budget_burns_fast_on_both_windows(acme, alice, webhook, receiver):
    slo_create(project=acme, actor=alice, data={
        "name": "billing-success", "objective": 0.999, "window_seconds": 30 * 86400, "labels": {"team": "payments"},
        "sli": {"kind": "success", "match": {"service": "billing"}}, "tiers": {"page-slow": False, "ticket": False}})
    for minutes_ago in range(60, 0, -5):
        calls(acme, 10, error=False, seconds_ago=minutes_ago * 60)
    tick()
    assert alert_states() == []
    calls(acme, 3, error=True)  # 3 bad of 113 in the last hour (burn rate 26.5), and all of the last 5 minutes
    tick()
    assert alert_states() == [("ErrorBudgetBurn", "firing")], "page-fast has no `for`"
    (payload,) = receiver.received
    (alert,) = payload["alerts"]
    assert alert["labels"] == {"alertname": "ErrorBudgetBurn", "project": "acme", "slo": "billing-success",
                               "severity": "page", "tier": "page-fast", "team": "payments"}
    assert alert["annotations"]["summary"] == ("billing-success is burning its error budget 26.5x over 1h and "
                                               "1000.0x over 5m (threshold 14.4x on both)")
    assert alert["annotations"]["slo"].endswith(f"/p/acme/slos/{Slo.objects.get().pk}/")
    slo = Slo.objects.get()
    assert slo.status["budget_remaining"] == pytest.approx(1 - 3 / (0.001 * 123))
    assert [t["active"] for t in slo.status["tiers"]] == [True, False, False], "the other tiers are off"

    # Turning the tier off resolves its alert (nothing evaluates it any more).
    slo_update(slo=slo, actor=alice, data={"name": slo.name, "objective": 0.999, "window_seconds": 30 * 86400,
                                           "labels": {"team": "payments"}, "sli": slo.sli.definition,
                                           "tiers": {"page-fast": False, "page-slow": False, "ticket": False}})
    tick()
    assert alert_states() == [("ErrorBudgetBurn", "resolved")]
    assert [p["status"] for p in receiver.received] == ["firing", "resolved"]


def test_a_silence_keeps_an_alert_quiet_and_its_end_while_firing_notifies(acme, alice, webhook, receiver, clock):
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    silence = silence_create(project=acme, actor=alice, matchers=['alertname="billing-errors"'], comment="deploy",
                             ends_at=timezone.now() + timedelta(minutes=30))
    calls(acme, 4, error=True)
    tick()
    assert alert_states() == [("billing-errors", "firing")] and receiver.received == []
    clock.shift(timedelta(minutes=1))
    calls(acme, 4, error=True)
    tick()
    assert receiver.received == [], "still silenced"
    silence_expire(silence=silence, actor=alice)
    tick()
    assert [p["status"] for p in receiver.received] == ["firing"]


def test_a_firing_group_is_repeated_after_the_interval_unless_acknowledged(acme, alice, webhook, receiver, clock):
    Channel.objects.filter(pk=webhook.pk).update(repeat_interval_seconds=3600)
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0, "window_seconds": 7 * 86400})
    calls(acme, 4, error=True)
    tick()
    clock.shift(timedelta(minutes=59))
    tick()
    assert len(receiver.received) == 1
    clock.shift(timedelta(minutes=1))
    tick()
    assert len(receiver.received) == 2 and receiver.received[1]["status"] == "firing"
    assert Notification.objects.filter(repeat=True).count() == 1
    alert_acknowledge(alert=Alert.objects.get(), comment="on it", actor=alice)
    clock.shift(timedelta(hours=2))
    tick()
    assert len(receiver.received) == 2, "an acknowledged alert is not repeated"


def test_alerts_sharing_the_group_labels_go_in_one_notification(acme, alice, webhook, receiver):
    Channel.objects.filter(pk=webhook.pk).update(group_by=["severity"])
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    rule_create(project=acme, actor=alice, data={**ERRORS, "name": "shipping-errors", "for_seconds": 0,
                                                 "sli": {"kind": "success", "match": {"service": "shipping"}}})
    calls(acme, 3, error=True)
    calls(acme, 3, error=True, service="shipping")
    tick()
    (payload,) = receiver.received
    assert payload["groupLabels"] == {"severity": "page"}
    assert sorted(a["labels"]["alertname"] for a in payload["alerts"]) == ["billing-errors", "shipping-errors"]
    assert payload["commonLabels"] == {"project": "acme", "severity": "page"}


def test_a_transient_failure_is_retried_with_backoff_and_a_permanent_one_is_kept_on_the_channel(
        acme, alice, webhook, receiver, clock):
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    receiver.answers = [503, 503, 503]  # one send: three quick attempts
    _, outcomes = tick()
    assert outcomes == ["retry"] and receiver.received == []
    notification = Notification.objects.get()
    assert notification.status == "pending" and "answered 503" in notification.last_error
    assert notification.next_attempt_at > timezone.now()
    assert tick()[1] == [], "not before its backoff is over"
    clock.shift(timedelta(seconds=31))
    assert tick()[1] == ["sent"] and len(receiver.received) == 1

    rule_create(project=acme, actor=alice, data={**ERRORS, "name": "billing-errors-2", "for_seconds": 0})
    receiver.answers = [410]
    assert tick()[1] == ["failed"]
    assert "answered 410" in Channel.objects.get().last_error


@override_settings(NOTIFY_TIMEOUT_SECONDS=0.5)
def test_a_receiver_that_times_out_then_fails_then_recovers_gets_the_notification_once(
        acme, alice, webhook, receiver, clock):
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    receiver.hold_seconds = 1.5  # longer than the sender waits
    receiver.answers = [TIMEOUT, 500, 500, 500]
    _, outcomes = tick()
    assert outcomes == ["retry"] and receiver.answered == [TIMEOUT, 500, 500], "one send: three quick tries"
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("pending", 1)
    assert notification.last_error.endswith("answered 500: receiver says no")
    assert notification.next_attempt_at == timezone.now() + timedelta(seconds=30), "then it backs off"
    clock.shift(timedelta(seconds=29))
    assert tick()[1] == [] and len(receiver.answered) == 3, "not before its backoff is over"
    clock.shift(timedelta(seconds=2))
    assert tick()[1] == ["sent"] and receiver.answered[3:] == [500, 200]
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.last_error) == ("sent", 2, "")
    clock.shift(timedelta(minutes=2))  # the alert still firing, the sends that failed are not sent again
    tick()
    assert len(receiver.received) == 1, "delivered once in the end"
    assert receiver.received[0]["alerts"][0]["labels"]["alertname"] == "billing-errors"


def test_a_notification_delivered_twice_to_workers_is_sent_once(acme, alice, webhook, receiver):
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    evaluate_tick()
    (notification_id,) = notifications_due()
    # As a broker redelivers a task whose acknowledgement was lost, or two ticks queue the same send.
    assert [notification_send(notification_id=notification_id) for _ in range(3)] == ["sent", "not-claimed",
                                                                                       "not-claimed"]
    assert len(receiver.received) == 1 and notifications_due() == []


def test_an_email_channel_gets_the_firing_alerts(acme, alice):
    channel_create(project=acme, actor=alice, data={"kind": "email", "to": ["oncall@example.com"]})
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    tick()
    (message,) = mail.outbox
    assert message.subject == "[FIRING:1] alertname=billing-errors"
    assert "billing-errors: bad_ratio 1 > 0.5 over 5m" in message.body and "/p/acme/traces/" in message.body


def test_a_finding_rule_fires_and_links_to_the_findings(acme, alice, webhook, receiver):
    from traces.services import findings_update

    rule_create(project=acme, actor=alice, data={
        "name": "orders-lost-updates", "sli": {"kind": "findings", "match": {"finding_kind": "lost_update"}},
        "metric": "count", "op": ">", "threshold": 0, "window_seconds": 300})

    def access(trace, index, op, version, base=None):
        attributes = {"state.key": "orders/42", "state.op": op, "state.version": version}
        if base is not None:
            attributes["state.base_version"] = base
        return a_span(trace, index, 0.1 + index / 1000, name=f"{op} order", service=f"orders-{trace}",
                      agent=f"agent-{trace}", **attributes)

    spans = [access(1, 2, "read", 3), access(1, 1, "write", 4, 3), access(2, 2, "read", 3), access(2, 1, "write", 5, 3)]
    spans_store(project_id=acme.pk, spans=spans)
    trace_ids = sorted({s.trace_id for s in spans})
    assert findings_update(project_id=acme.pk, trace_ids=trace_ids) == 1
    sli_rollups_update(project_id=acme.pk, trace_ids=trace_ids)
    tick()
    annotations = receiver.received[0]["alerts"][0]["annotations"]
    assert annotations["findings"].endswith("/p/acme/findings/?kind=lost_update")
    assert annotations["summary"] == "orders-lost-updates: count 1 > 0 over 5m"


def test_a_tick_that_overlaps_another_does_nothing(acme, alice):
    from governance.slo.rollups import lease_claim, lease_release

    assert lease_claim("slo-evaluate", seconds=60, holder="other")
    assert evaluate_tick() is None
    lease_release("slo-evaluate", holder="other")
    assert evaluate_tick() is not None


@override_settings(ALERT_EVAL_INTERVAL_SECONDS=7.0)
def test_beat_runs_the_tick_at_its_configured_interval():
    from celery import Celery

    from governance.celery import _slo_schedule

    app = Celery("probe")
    _slo_schedule(app)
    schedule = app.conf.beat_schedule
    assert schedule["slo-evaluate"] == {"task": "slo.evaluate", "schedule": 7.0}
    assert "slo-rollup-recent" not in schedule, "rollups are a pipeline stage, not a beat task"


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent evaluators need PostgreSQL's row locks")
def test_evaluators_running_at_once_write_one_notification_per_state_change(acme, alice, webhook):
    from governance.slo.evaluation import alerts_update, conditions_of, notifications_write

    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    barrier, results = threading.Barrier(6), []

    def evaluate():
        # Past the tick's lease, as two hosts' beats would be if the lease were missing.
        try:
            barrier.wait()
            conditions = conditions_of(project=acme, now=timezone.now())
            results.append(len(alerts_update(project=acme, conditions=conditions, now=timezone.now())))
            results.append(len(notifications_write(project=acme, now=timezone.now())))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=evaluate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert alert_states() == [("billing-errors", "firing")]
    assert Notification.objects.count() == 1
