"""Rollouts through their services, the tick and the API: steps, analysis, gates, guards, notifications,
roles and conflicts. The clock is stopped and moved on by the tests."""

from __future__ import annotations

from datetime import timedelta

import pytest

from governance.models import AuditRecord, Role
from governance.rollouts import services
from governance.rollouts.canary import canary_minutes_update
from governance.rollouts.models import AnalysisRun, CanaryMinute, Rollout
from governance.slo.evaluation import notification_send
from governance.slo.models import Alert, Notification
from governance.slo.services import channel_create, rule_create
from tests.conftest import api_as, make_user
from tests.rollout_worlds import agents_work

PLAN = [{"kind": "set_weight", "weight": 20}, {"kind": "analysis", "count": 1, "interval_seconds": 60},
        {"kind": "approval"}, {"kind": "set_weight", "weight": 100}]


@pytest.fixture(autouse=True)
def _stopped_clock(clock):
    """Spans are dated from the stopped clock; the tests move it on past pauses and analysis intervals."""


@pytest.fixture
def approver(acme):
    return make_user("dana", acme, Role.APPROVER)


@pytest.fixture
def operator(acme):
    return make_user("otto", acme, Role.OPERATOR)


def a_rollout(project, actor, steps=PLAN, **extra) -> Rollout:
    fields = {"name": "billing 1.1", "service": "billing", "baseline_version": "1.0.0", "canary_version": "1.1.0",
              "flag_key": "billing-version", "steps": steps, **extra}
    return services.rollout_create(project=project, actor=actor, **fields)


def agents_work_for_a_minute(clock, project, **work) -> None:
    """Agents work for the 30 s after the step began; then the clock passes the analysis interval."""
    clock.shift(timedelta(seconds=40))
    agents_work(project, **work)
    clock.shift(timedelta(seconds=30))


def fresh(rollout) -> Rollout:
    return Rollout.objects.get(pk=rollout.pk)


def test_the_canary_stage_counts_each_version_per_minute_and_a_second_run_changes_nothing(acme, approver):
    services.rollout_start(rollout=a_rollout(acme, approver), actor=approver)
    trace_ids = agents_work(acme, count=50, canary_errors=0.5)
    rows = {(r.version, r.minute): (r.spans, r.errors) for r in CanaryMinute.objects.all()}
    assert sum(s for (v, _), (s, _) in rows.items() if v == "1.1.0") == 50
    assert sum(s for (v, _), (s, _) in rows.items() if v == "1.0.0") == 50
    assert sum(e for (v, _), (_, e) in rows.items() if v == "1.1.0") > 15
    canary_minutes_update(project_id=acme.pk, trace_ids=trace_ids)
    assert {(r.version, r.minute): (r.spans, r.errors) for r in CanaryMinute.objects.all()} == rows


def test_the_stage_counts_nothing_for_services_without_an_active_rollout(acme, approver):
    a_rollout(acme, approver)  # pending: not active yet
    agents_work(acme, count=10)
    assert not CanaryMinute.objects.exists()


def test_a_healthy_canary_passes_analysis_waits_for_approval_and_is_promoted(acme, approver, clock, receiver):
    channel_create(project=acme, actor=approver, data={"kind": "webhook", "url": receiver.url, "name": "releases"})
    rollout = services.rollout_start(rollout=a_rollout(acme, approver), actor=approver)
    assert services.rollouts_tick() == 1  # weight 20; the analysis then waits out its interval
    assert fresh(rollout).weight == 20 and fresh(rollout).step_index == 1
    agents_work_for_a_minute(clock, acme)
    services.rollouts_tick()
    rollout = fresh(rollout)
    assert (rollout.state, rollout.pause_reason, rollout.step_index) == ("paused", "awaiting_approval", 2)
    run = AnalysisRun.objects.get()
    assert run.verdict == "successful" and run.score == 100.0
    assert {m["name"]: m["verdict"] for m in run.results}["error_rate"] == "passed"
    assert services.rollouts_tick() == 0  # waiting for a person: nothing to do

    services.rollout_approve(rollout=rollout, actor=approver, reason="looks good")
    services.rollouts_tick()
    rollout = fresh(rollout)
    assert (rollout.state, rollout.weight, rollout.known_good_version) == ("promoted", 100, "1.1.0")
    events = [n.payload["alerts"][0]["labels"]["event"] for n in Notification.objects.order_by("pk")]
    assert events == ["step_completed", "step_completed", "paused_for_approval", "step_completed", "step_completed",
                      "promoted"]
    # Sent through the alert channels' sender, once each however often a worker is asked to send one.
    for notification in Notification.objects.order_by("pk"):
        assert notification_send(notification_id=notification.pk) == "sent"
        assert notification_send(notification_id=notification.pk) == "not-claimed"
    told = [p["alerts"][0]["labels"]["alertname"] for p in receiver.received]
    assert told == ["RolloutStepCompleted", "RolloutStepCompleted", "RolloutAwaitingApproval", "RolloutStepCompleted",
                    "RolloutStepCompleted", "RolloutPromoted"]
    assert receiver.received[-1]["alerts"][0]["generatorURL"].endswith(f"/p/acme/rollouts/{rollout.pk}/")
    actors = set(AuditRecord.objects.filter(object_type="rollout").values_list("actor_name", flat=True))
    assert actors == {"dana", "system"}


def test_a_regressed_canary_fails_analysis_and_is_rolled_back_to_the_known_good_version(acme, approver, clock):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver), actor=approver)
    services.rollouts_tick()
    agents_work_for_a_minute(clock, acme, canary_errors=0.4)
    services.rollouts_tick()
    rollout = fresh(rollout)
    assert (rollout.state, rollout.weight, rollout.known_good_version) == ("rolled_back", 0, "1.0.0")
    run = AnalysisRun.objects.get()
    assert run.verdict == "failed" and "error_rate" in run.reason
    record = AuditRecord.objects.filter(action="rollout.rollback").get()
    assert record.actor_name == "system" and "analysis failed" in record.detail["reason"]


def test_a_failed_analysis_set_to_pause_waits_for_a_person(acme, approver, clock):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, analysis={"on_failure": "pause"}),
                                     actor=approver)
    services.rollouts_tick()
    agents_work_for_a_minute(clock, acme, canary_ms=40.0)  # four times slower
    services.rollouts_tick()
    assert (fresh(rollout).state, fresh(rollout).pause_reason, fresh(rollout).weight) == ("paused", "analysis_failed", 20)


def test_too_little_data_is_inconclusive_and_pauses_for_a_person_who_may_retry(acme, approver, operator, clock):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver), actor=approver)
    services.rollouts_tick()
    agents_work_for_a_minute(clock, acme, count=5)
    services.rollouts_tick()
    assert (fresh(rollout).state, fresh(rollout).pause_reason) == ("paused", "inconclusive_analysis")
    services.rollout_retry(rollout=rollout, actor=operator)
    agents_work_for_a_minute(clock, acme, count=120)
    services.rollouts_tick()
    assert fresh(rollout).pause_reason == "awaiting_approval"
    assert sorted(AnalysisRun.objects.values_list("attempt", "verdict")) == [(1, "inconclusive"), (2, "successful")]


def test_a_tick_run_twice_advances_a_step_once(acme, approver, clock):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, steps=[
        {"kind": "pause", "seconds": 60}, {"kind": "pause", "seconds": 60}, {"kind": "approval"}]), actor=approver)
    clock.shift(timedelta(seconds=61))
    assert services.rollouts_tick() == 1
    assert services.rollouts_tick() == 0  # the redelivered tick: the second pause has just begun
    assert fresh(rollout).step_index == 1
    assert AuditRecord.objects.filter(action="rollout.step").count() == 1


def test_a_firing_guard_set_to_pause_pauses_once_and_a_person_may_retry(acme, approver, operator):
    rule = rule_create(project=acme, actor=approver, data={
        "name": "billing-errors", "sli": {"kind": "success", "match": {"service": "billing"}},
        "metric": "bad_ratio", "op": ">", "threshold": 0.5, "window_seconds": 300})
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, guards={"alert_rules": [rule.pk],
                                                                               "action": "pause"}), actor=approver)
    Alert.objects.create(project=acme, fingerprint="f" * 16, labels={"alertname": "billing-errors"}, rule=rule,
                         state=Alert.State.FIRING)
    assert services.rollouts_tick() == 1
    assert services.rollouts_tick() == 0  # paused already: the firing alert changes nothing more
    assert (fresh(rollout).state, fresh(rollout).pause_reason) == ("paused", "guard_firing")
    Alert.objects.update(state=Alert.State.RESOLVED)
    services.rollout_retry(rollout=rollout, actor=operator, reason="the alert resolved")
    services.rollouts_tick()
    assert (fresh(rollout).state, fresh(rollout).weight) == ("progressing", 20)


def test_a_firing_guard_rolls_the_rollout_back_whatever_step_it_is_on(acme, approver):
    rule = rule_create(project=acme, actor=approver, data={
        "name": "billing-errors", "sli": {"kind": "success", "match": {"service": "billing"}},
        "metric": "bad_ratio", "op": ">", "threshold": 0.5, "window_seconds": 300})
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, guards={"alert_rules": [rule.pk]}),
                                     actor=approver)
    services.rollouts_tick()
    Alert.objects.create(project=acme, fingerprint="f" * 16, labels={"alertname": "billing-errors"}, rule=rule,
                         state=Alert.State.FIRING)
    services.rollouts_tick()
    rollout = fresh(rollout)
    assert (rollout.state, rollout.weight) == ("rolled_back", 0)
    assert "guard billing-errors is firing" in AuditRecord.objects.get(action="rollout.rollback").detail["reason"]


def test_a_rollback_after_the_page_was_loaded_by_someone_who_approved_is_a_conflict(acme, approver, operator):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, steps=[{"kind": "approval"}]), actor=approver)
    services.rollouts_tick()
    seen = fresh(rollout).version
    services.rollout_approve(rollout=rollout, actor=approver, expected_version=seen)
    with pytest.raises(services.RolloutConflict) as lost:
        services.rollout_rollback(rollout=rollout, actor=operator, expected_version=seen)
    assert lost.value.rollout.state == "progressing"


# --- the API ---------------------------------------------------------------------------------------------------


def test_the_api_creates_from_a_template_starts_and_shows_state_step_weight_and_runs(acme, approver):
    client = api_as(approver)
    created = client.post("/api/v1/rollouts/?project=acme", {
        "name": "billing 1.1", "service": "billing", "baseline_version": "1.0.0", "canary_version": "1.1.0",
        "flag_key": "billing-version", "template": "quick"}, format="json")
    assert created.status_code == 201, created.content
    rid = created.json()["id"]
    assert created.json()["state"] == "pending" and created.json()["steps"][0] == {"kind": "set_weight", "weight": 20}
    started = client.post(f"/api/v1/rollouts/{rid}/start/", {"reason": "go"}, format="json")
    assert started.status_code == 200 and started.json()["state"] == "progressing"
    services.rollouts_tick()
    detail = client.get(f"/api/v1/rollouts/{rid}/").json()
    assert (detail["weight"], detail["step_index"], detail["current_step"]["kind"]) == (20, 1, "analysis")
    assert detail["runs"][0]["verdict"] == "running"
    listed = client.get("/api/v1/rollouts/?project=acme").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == rid


def test_an_action_the_state_does_not_allow_or_a_stale_version_is_409_with_the_current_state(acme, approver):
    rollout = a_rollout(acme, approver)
    client = api_as(approver)
    refused = client.post(f"/api/v1/rollouts/{rollout.pk}/approve/", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict" and refused.json()["error"]["rollout"]["state"] == "pending"
    stale = client.post(f"/api/v1/rollouts/{rollout.pk}/start/", {"version": rollout.version + 5}, format="json")
    assert stale.status_code == 409 and stale.json()["error"]["rollout"]["version"] == rollout.version


def test_a_viewer_cannot_approve_through_the_api_or_the_page(acme, approver, bob, client):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, steps=[{"kind": "approval"}]), actor=approver)
    services.rollouts_tick()
    assert api_as(bob).post(f"/api/v1/rollouts/{rollout.pk}/approve/", {}, format="json").status_code == 403
    client.force_login(bob)
    page = client.get(f"/p/acme/rollouts/{rollout.pk}/")
    assert page.status_code == 200 and b'id="action-approve"' not in page.content
    assert client.post(f"/p/acme/rollouts/{rollout.pk}/approve/", {"version": fresh(rollout).version}).status_code == 403
    assert fresh(rollout).pause_reason == "awaiting_approval"
    assert not AuditRecord.objects.filter(action="rollout.approve").exists()


def test_an_operator_rolls_back_but_cannot_create_or_promote(acme, approver, operator):
    rollout = services.rollout_start(rollout=a_rollout(acme, approver), actor=approver)
    client = api_as(operator)
    assert client.post(f"/api/v1/rollouts/{rollout.pk}/promote/", {}, format="json").status_code == 403
    assert client.post("/api/v1/rollouts/?project=acme", {"name": "x", "service": "s", "baseline_version": "1",
                                                          "canary_version": "2", "flag_key": "f", "template": "quick"},
                       format="json").status_code == 403
    back = client.post(f"/api/v1/rollouts/{rollout.pk}/rollback/", {"reason": "pager"}, format="json")
    assert back.status_code == 200 and (back.json()["state"], back.json()["weight"]) == ("rolled_back", 0)


@pytest.mark.parametrize("body, field", [
    ({"steps": [{"kind": "set_weight", "weight": 200}]}, "steps[0].weight"),
    ({"steps": [{"kind": "jump"}]}, "steps[0].kind"),
    ({"template": "quick", "metrics": [{"kind": "nope"}]}, "metrics[0].kind"),
    ({"template": "quick", "analysis": {"on_failure": "explode"}}, "on_failure"),
    ({"template": "quick", "guards": {"alert_rules": [999]}}, "guards.alert_rules"),
    ({"template": "quick", "canary_version": "1.0.0"}, "canary_version"),
    ({}, "steps"),
])
def test_bad_rollouts_are_400_saying_what_is_wrong(acme, approver, body, field):
    base = {"name": "b", "service": "billing", "baseline_version": "1.0.0", "canary_version": "1.1.0",
            "flag_key": "f"}
    answer = api_as(approver).post("/api/v1/rollouts/?project=acme", {**base, **body}, format="json")
    assert answer.status_code == 400 and field in answer.json()["error"]["message"]


def test_one_flag_has_one_unfinished_rollout(acme, approver):
    a_rollout(acme, approver)
    with pytest.raises(services.RolloutConflict):
        a_rollout(acme, approver)
