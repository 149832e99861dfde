"""Writes for rollouts: create, the actions of people (start, approve, promote, abort, roll back, retry)
and the tick that drives active rollouts through their steps.

Every transition locks the rollout row (`select_for_update`), checks the state allows it (and,
when the caller says which version of the rollout it saw, that nobody changed it since), and
writes with a guarded update (`filter(pk, version).update(version + 1)`, one row or a conflict),
an audit record with the actor (a person, or "system" for the tick) and the reason, and the
notifications of the event, all in one transaction. Two people clicking at once, or a click
racing the tick, make one transition; the loser gets RolloutConflict with the current state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from governance.converters import MAX_ID
from governance.models import Project, Role
from governance.rollouts.canary import version_sample
from governance.rollouts.core import judgement
from governance.rollouts.core.plan import (
    GUARD_ACTIONS,
    PlanError,
    analysis_parse,
    run_plan,
    scoring,
    step_text,
    steps_parse,
    template_steps,
)
from governance.rollouts.models import AnalysisRun, Rollout
from governance.services import audit_record, role_require
from governance.slo.evaluation import webhook_payload
from governance.slo.models import Alert, AlertRule, Channel, Notification, Slo

log = logging.getLogger(__name__)

CREATE_ROLE = Role.APPROVER  # create, start, approve, promote
OPERATE_ROLE = Role.OPERATOR  # abort, roll back, retry
SYSTEM = None  # the actor of the tick's transitions: audit records name it "system"
MAX_STEPS_PER_TICK = 20  # instant steps (weights) run on in one tick; this bounds a bad plan

State, Reason = Rollout.State, Rollout.PauseReason


class RolloutConflict(Exception):
    """The transition is not allowed in the rollout's current state, or lost a race (HTTP 409)."""

    def __init__(self, message: str, rollout: Rollout):
        super().__init__(message)
        self.rollout = rollout


# --- create -------------------------------------------------------------------------------------------------


def _guards_parse(project: Project, raw) -> dict:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict) or set(raw) - {"alert_rules", "slos", "action"}:
        raise PlanError("guards: {alert_rules: [ids], slos: [ids], action: rollback|pause}")
    clean = {"alert_rules": [], "slos": [], "action": raw.get("action", "rollback")}
    if clean["action"] not in GUARD_ACTIONS:
        raise PlanError(f"guards.action: one of {', '.join(GUARD_ACTIONS)}")
    for name, model in (("alert_rules", AlertRule), ("slos", Slo)):
        ids = raw.get(name, [])
        if not isinstance(ids, list) or len(ids) > 100 or not all(
                isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= MAX_ID for i in ids):
            raise PlanError(f"guards.{name}: a list of ids")
        known = set(model.objects.filter(project=project, pk__in=ids).values_list("pk", flat=True))
        missing = sorted(set(ids) - known)
        if missing:
            raise PlanError(f"guards.{name}: project {project.slug} has no {name[:-1].replace('_', ' ')} {missing[0]}")
        clean[name] = sorted(set(ids))
    return clean


def rollout_create(*, project: Project, name: str, service: str, baseline_version: str, canary_version: str,
                   flag_key: str, agent: str = "", steps: list | None = None, template: str = "",
                   metrics: list | None = None, analysis: dict | None = None, guards: dict | None = None,
                   actor, address=None) -> Rollout:
    """A pending rollout. Steps come from `steps` or a `template` (see core.plan.TEMPLATES)."""
    role_require(user=actor, project=project, role=CREATE_ROLE)
    for label, value in (("name", name), ("service", service), ("baseline_version", baseline_version),
                         ("canary_version", canary_version), ("flag_key", flag_key)):
        if not value.strip():
            raise PlanError(f"{label}: required")
    if baseline_version == canary_version:
        raise PlanError("canary_version: must differ from baseline_version")
    if steps is None and not template:
        raise PlanError("steps: give the steps or a template")
    clean_steps = steps_parse(steps if steps is not None else template_steps(template))
    clean_metrics = [m.as_dict() for m in judgement.metrics_parse(metrics)]
    with transaction.atomic():
        busy = Rollout.objects.filter(project=project, flag_key=flag_key,
                                      state__in=(State.PENDING, *Rollout.ACTIVE_STATES)).first()
        if busy is not None:
            raise RolloutConflict(f"flag {flag_key!r} is in rollout {busy.pk} ({busy.state}): end it first", busy)
        rollout = Rollout.objects.create(
            project=project, name=name, service=service, agent=agent, flag_key=flag_key,
            baseline_version=baseline_version, canary_version=canary_version, known_good_version=baseline_version,
            steps=clean_steps, metrics=clean_metrics, analysis=analysis_parse(analysis),
            guards=_guards_parse(project, guards), template=template if steps is None else "", created_by=actor)
        audit_record(project=project, actor=actor, action="rollout.create", obj_type="rollout", obj_id=rollout.pk,
                     detail={"name": name, "service": service, "baseline": baseline_version,
                             "canary": canary_version, "flag_key": flag_key, "steps": len(clean_steps)},
                     address=address)
    return rollout


# --- the guarded transition ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a transition sets, and how it is told: audit action, notification event, reason."""

    action: str
    reason: str
    fields: dict
    event: str = ""  # step_completed | paused_for_approval | aborted | rolled_back | promoted | "" (not notified)


def _locked(rollout_id: int, *, skip_locked: bool = False) -> Rollout | None:
    query = Rollout.objects.select_for_update(skip_locked=skip_locked).select_related("project").filter(pk=rollout_id)
    return query.first()


def _apply(locked: Rollout, change: Change, *, actor, address=None, now: datetime) -> Rollout:
    """Write one transition of a locked rollout, guarded by its version; audit and notify in the same
    transaction."""
    fields = {**change.fields, "version": F("version") + 1, "updated_at": now}
    if fields.get("state") in Rollout.FINAL_STATES:
        fields["ended_at"] = now
    if Rollout.objects.filter(pk=locked.pk, version=locked.version).update(**fields) != 1:
        raise RolloutConflict("the rollout changed meanwhile; reload and retry", Rollout.objects.get(pk=locked.pk))
    before = {"state": locked.state, "step": locked.step_index, "weight": locked.weight}
    locked.refresh_from_db()
    audit_record(project=locked.project, actor=actor, action=f"rollout.{change.action}", obj_type="rollout",
                 obj_id=locked.pk, address=address,
                 detail={"name": locked.name, "reason": change.reason, "from": before,
                         "to": {"state": locked.state, "step": locked.step_index, "weight": locked.weight},
                         "version": locked.version})
    if change.event:
        _notify(locked, change, now=now)
    return locked


def _transition(rollout: Rollout, *, action: str, actor, role: str, allowed, decide, expected_version: int | None,
                address=None) -> Rollout:
    """A person's action: role, lock, state check, version check, then the change `decide(locked)` gives."""
    role_require(user=actor, project=rollout.project, role=role)
    now = timezone.now()
    with transaction.atomic():
        locked = _locked(rollout.pk)
        if locked is None:
            raise RolloutConflict("the rollout is gone", rollout)
        if expected_version is not None and locked.version != expected_version:
            raise RolloutConflict(f"the rollout changed meanwhile (now {state_text(locked)}); reload and retry",
                                  locked)
        if not allowed(locked):
            raise RolloutConflict(f"cannot {action} a rollout that is {state_text(locked)}", locked)
        return _apply(locked, decide(locked, now), actor=actor, address=address, now=now)


def state_text(rollout: Rollout) -> str:
    if rollout.state == State.PAUSED and rollout.pause_reason:
        return f"paused ({Reason(rollout.pause_reason).label})"
    return rollout.state.replace("_", " ")


def _reason(reason: str, default: str) -> str:
    return (reason or "").strip()[:500] or default


# --- people's actions ----------------------------------------------------------------------------------------------


def rollout_start(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                  address=None) -> Rollout:
    return _transition(rollout, action="start", actor=actor, role=CREATE_ROLE, expected_version=expected_version,
                       address=address, allowed=lambda r: r.state == State.PENDING,
                       decide=lambda r, now: Change("start", _reason(reason, "started"), {
                           "state": State.PROGRESSING, "pause_reason": "", "step_index": 0, "step_started_at": now}))


def rollout_approve(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                    address=None) -> Rollout:
    """Past the gate it waits at: an approval step, or an analysis a person judges good enough."""
    approvable = (Reason.AWAITING_APPROVAL, Reason.INCONCLUSIVE, Reason.ANALYSIS_FAILED)
    return _transition(rollout, action="approve", actor=actor, role=CREATE_ROLE, expected_version=expected_version,
                       address=address, allowed=lambda r: r.state == State.PAUSED and r.pause_reason in approvable,
                       decide=lambda r, now: Change("approve", _reason(reason, f"approved {_step_label(r)}"), {
                           "state": State.PROGRESSING, "pause_reason": "", "step_index": r.step_index + 1,
                           "step_started_at": now}, event="step_completed"))


def rollout_promote(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                    address=None) -> Rollout:
    """Every agent on the canary now, which becomes the known-good version."""
    return _transition(rollout, action="promote", actor=actor, role=CREATE_ROLE, expected_version=expected_version,
                       address=address, allowed=lambda r: r.state in (State.PENDING, *Rollout.ACTIVE_STATES),
                       decide=lambda r, now: _promotion(r, _reason(reason, "promoted fully by a person")))


def rollout_abort(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                  address=None) -> Rollout:
    """Stop here: weight 0, every agent back on the known-good version; the rollout can be retried."""
    return _transition(rollout, action="abort", actor=actor, role=OPERATE_ROLE, expected_version=expected_version,
                       address=address, allowed=lambda r: r.state in (State.PENDING, *Rollout.ACTIVE_STATES),
                       decide=lambda r, now: Change("abort", _reason(reason, "aborted"), {
                           "state": State.ABORTED, "pause_reason": "", "weight": 0}, event="aborted"))


def rollout_rollback(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                     address=None) -> Rollout:
    """All traffic back to the known-good version, at the agents' next flag evaluation."""
    return _transition(rollout, action="rollback", actor=actor, role=OPERATE_ROLE, expected_version=expected_version,
                       address=address, allowed=lambda r: r.state in Rollout.ACTIVE_STATES,
                       decide=lambda r, now: _rollback(r, _reason(reason, "rolled back by a person")))


def rollout_retry(*, rollout: Rollout, actor, reason: str = "", expected_version: int | None = None,
                  address=None) -> Rollout:
    """Paused: run the current step again (a new analysis run). Aborted or rolled back: start again from the
    first step, as a new attempt."""
    def decide(r: Rollout, now):
        if r.state == State.PAUSED:
            return Change("retry", _reason(reason, f"retrying {_step_label(r)}"), {
                "state": State.PROGRESSING, "pause_reason": "", "step_started_at": now,
                "attempt": r.attempt + 1})
        return Change("retry", _reason(reason, "retrying from the first step"), {
            "state": State.PROGRESSING, "pause_reason": "", "step_index": 0, "step_started_at": now, "weight": 0,
            "attempt": r.attempt + 1, "ended_at": None})

    return _transition(rollout, action="retry", actor=actor, role=OPERATE_ROLE, expected_version=expected_version,
                       address=address, decide=decide,
                       allowed=retryable)


RETRYABLE_PAUSES = (Reason.INCONCLUSIVE, Reason.ANALYSIS_FAILED, Reason.GUARD_FIRING)


def retryable(rollout: Rollout) -> bool:
    """A step that stopped on its own (an analysis, a guard) can run again; an ended rollout can start over.
    A gate waiting for approval is approved, not retried."""
    if rollout.state == State.PAUSED:
        return rollout.pause_reason in RETRYABLE_PAUSES
    return rollout.state in (State.ABORTED, State.ROLLED_BACK)


def _promotion(rollout: Rollout, reason: str) -> Change:
    return Change("promote", reason, {"state": State.PROMOTED, "pause_reason": "", "weight": 100,
                                      "step_index": len(rollout.steps), "known_good_version": rollout.canary_version},
                  event="promoted")


def _rollback(rollout: Rollout, reason: str) -> Change:
    return Change("rollback", reason, {"state": State.ROLLED_BACK, "pause_reason": "", "weight": 0},
                  event="rolled_back")


def _step_label(rollout: Rollout) -> str:
    if rollout.step_index >= len(rollout.steps):
        return "the last step"
    return f"step {rollout.step_index + 1} ({step_text(rollout.steps[rollout.step_index])})"


# --- the tick ------------------------------------------------------------------------------------------------------


def rollouts_due() -> list[int]:
    return list(Rollout.objects.filter(state__in=Rollout.ACTIVE_STATES).order_by("pk").values_list("pk", flat=True))


def rollouts_tick(*, now: datetime | None = None) -> int:
    """Drive every active rollout one tick on. Returns the transitions made."""
    return sum(rollout_tick(rollout_id=pk, now=now) for pk in rollouts_due())


def rollout_tick(*, rollout_id: int, now: datetime | None = None) -> int:
    """One rollout's tick: its guards, then its steps as far as they go without waiting. The row is claimed
    with SKIP LOCKED: a tick that finds it held (by another tick, or a person's click) leaves it to them.
    Each transition is guarded by the version, so a redelivered tick finds the step already advanced and
    waits out its new step. Returns the transitions made."""
    now = now or timezone.now()
    made = 0
    try:
        with transaction.atomic():
            rollout = _locked(rollout_id, skip_locked=True)
            if rollout is None or rollout.state not in Rollout.ACTIVE_STATES:
                return 0
            change = _guard_change(rollout)
            if change is not None:
                _apply(rollout, change, actor=SYSTEM, now=now)
                return 1
            for _ in range(MAX_STEPS_PER_TICK):
                if rollout.state != State.PROGRESSING:
                    break
                change = _step_change(rollout, now)
                if change is None:
                    break
                rollout = _apply(rollout, change, actor=SYSTEM, now=now)
                made += 1
    except RolloutConflict:
        # Lost to a person's click or another tick (SQLite has no row locks: the version guard decides);
        # everything this tick wrote is rolled back with it, and the next tick starts from what won.
        return 0
    return made


def _guard_change(rollout: Rollout) -> Change | None:
    """A firing alert of an attached rule or SLO rolls back or pauses the rollout, whatever step it is on."""
    guards = rollout.guards or {}
    rules, slos = guards.get("alert_rules") or [], guards.get("slos") or []
    if not rules and not slos:
        return None
    firing = Alert.objects.filter(project_id=rollout.project_id, state=Alert.State.FIRING)
    alert = (firing.filter(rule_id__in=rules) | firing.filter(slo_id__in=slos)).order_by("pk").first()
    if alert is None:
        return None
    what = alert.labels.get("alertname") or f"alert {alert.pk}"
    if guards.get("action") == "pause":
        if rollout.state == State.PAUSED and rollout.pause_reason == Reason.GUARD_FIRING:
            return None
        return Change("pause", f"guard {what} is firing", {"state": State.PAUSED, "pause_reason": Reason.GUARD_FIRING},
                      event="paused")
    return _rollback(rollout, f"guard {what} is firing")


def _step_change(rollout: Rollout, now: datetime) -> Change | None:
    """What the current step does now, or None while it waits."""
    if rollout.step_index >= len(rollout.steps):
        return _promotion(rollout, "every step done")
    step = rollout.steps[rollout.step_index]
    started = rollout.step_started_at or now
    label = _step_label(rollout)
    advance = {"step_index": rollout.step_index + 1, "step_started_at": now}
    kind = step["kind"]
    if kind == "set_weight":
        return Change("step", f"{label}: weight {step['weight']}%", {**advance, "weight": step["weight"]},
                      event="step_completed")
    if kind == "pause":
        if now < started + timedelta(seconds=step["seconds"]):
            return None
        return Change("step", f"{label}: paused {step['seconds']} s", advance, event="step_completed")
    if kind == "approval":
        return Change("pause", f"{label}: waiting for a person to approve",
                      {"state": State.PAUSED, "pause_reason": Reason.AWAITING_APPROVAL}, event="paused_for_approval")
    return _analysis_change(rollout, step, started, now, label, advance)


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def _analysis_change(rollout: Rollout, step: dict, started: datetime, now: datetime, label: str,
                     advance: dict) -> Change | None:
    plan = run_plan(step)
    run, _ = AnalysisRun.objects.get_or_create(rollout=rollout, attempt=rollout.attempt, step_index=rollout.step_index,
                                               defaults={"started_at": started})
    if run.verdict == AnalysisRun.Verdict.RUNNING:
        taken = len(run.measurements)
        if now < started + timedelta(seconds=plan.interval_seconds * (taken + 1)):
            return None
        _measure(rollout, run, started, now)
        verdict = judgement.run_verdict([m["verdict"] for m in run.measurements], plan)
        if verdict is None:
            return None
        reason = run.measurements[-1]["reason"]
        AnalysisRun.objects.filter(pk=run.pk).update(verdict=verdict, ended_at=now, reason=reason[:500])
    else:
        verdict, reason = run.verdict, run.reason
    if verdict == judgement.SUCCESSFUL:
        return Change("step", f"{label}: analysis successful ({reason})", advance, event="step_completed")
    if verdict == judgement.INCONCLUSIVE:
        return Change("pause", f"{label}: analysis inconclusive ({reason}); a person decides",
                      {"state": State.PAUSED, "pause_reason": Reason.INCONCLUSIVE}, event="paused")
    if (rollout.analysis or {}).get("on_failure") == "pause":
        return Change("pause", f"{label}: analysis failed ({reason})",
                      {"state": State.PAUSED, "pause_reason": Reason.ANALYSIS_FAILED}, event="paused")
    return _rollback(rollout, f"{label}: analysis failed ({reason})")


def _measure(rollout: Rollout, run: AnalysisRun, started: datetime, now: datetime) -> None:
    """One measurement over the step's interval so far: canary against baseline from the same minutes, the
    minute in progress included (both versions' spans of it are equally partial)."""
    first, last = minute_of(started), minute_of(now)
    baseline = version_sample(rollout, rollout.baseline_version, first, last)
    canary = version_sample(rollout, rollout.canary_version, first, last)
    metrics = judgement.metrics_parse(rollout.metrics)
    measured = judgement.judge(metrics, baseline, canary, scoring(rollout.analysis or {}))
    entry = {"at": now.isoformat(), "window": [first, last], "verdict": measured.verdict, "score": measured.score,
             "reason": measured.reason}
    run.measurements = [*run.measurements, entry]
    run.results = [m.as_dict() for m in measured.metrics]
    run.score = measured.score
    AnalysisRun.objects.filter(pk=run.pk).update(measurements=run.measurements, results=run.results, score=run.score)


# --- notifications ---------------------------------------------------------------------------------------------------

EVENT_TITLES = {
    "step_completed": "RolloutStepCompleted", "paused_for_approval": "RolloutAwaitingApproval",
    "paused": "RolloutPaused", "aborted": "RolloutAborted", "rolled_back": "RolloutRolledBack",
    "promoted": "RolloutPromoted",
}


def rollout_url(rollout: Rollout) -> str:
    return f"{settings.EXTERNAL_URL}/p/{rollout.project.slug}/rollouts/{rollout.pk}/"


def _notify(rollout: Rollout, change: Change, *, now: datetime) -> None:
    """One notification per enabled channel of the project, written with the transition it tells of (which
    happens once), and sent after the commit by the alert channels' sender."""
    channels = list(Channel.objects.filter(project_id=rollout.project_id, enabled=True))
    written = []
    for channel in channels:
        labels = {"alertname": EVENT_TITLES[change.event], "project": rollout.project.slug, "rollout": rollout.name,
                  "service": rollout.service, "event": change.event, "severity": "info"}
        alert = {"status": "firing", "labels": labels, "startsAt": now, "endsAt": None,
                 "annotations": {"summary": f"Rollout {rollout.name}: {change.event.replace('_', ' ')}",
                                 "description": f"{change.reason}. {rollout.baseline_version} -> "
                                                f"{rollout.canary_version}, weight {rollout.weight}%, "
                                                f"state {state_text(rollout)}."},
                 "generatorURL": rollout_url(rollout), "fingerprint": f"{rollout.pk:08x}{rollout.version:08x}"}
        payload = webhook_payload(channel=channel, group_labels={"alertname": labels["alertname"],
                                                                 "rollout": rollout.name}, alerts=[alert])
        notification = Notification.objects.create(
            channel=channel, group_key=f"rollout:{rollout.pk}:v{rollout.version}:{change.event}", payload=payload,
            next_attempt_at=now, created_at=now)
        written.append(notification.pk)
    if written:
        transaction.on_commit(lambda: _send(written))


def _send(notification_ids: list[int]) -> None:
    from governance.slo.tasks import notify

    for pk in notification_ids:
        try:
            notify.delay(pk)
        except Exception:
            log.warning("could not queue notification %s; the next alert tick sends it", pk, exc_info=True)
