"""The evaluation tick: SLOs and alert rules from the rollups, alert states, notifications.

One tick at a time holds the "slo-evaluate" lease (a guarded update), so a run that overlaps
the previous one does nothing. Within a tick every alert moves by a guarded update on its
version, and a channel is told of a state change in the transaction that records it was told
(a guarded update on ChannelAlertState) and writes the notification; so even two evaluators at
once write one notification per state change. Notifications are sent after that, outside any
transaction, by whoever claims them first (`notification_send`).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from governance import metrics
from governance.models import Project
from governance.slo.core.alerts import FIRING, RESOLVED, AlertPhase, alert_next, fingerprint, threshold_holds
from governance.slo.core.burn import slo_status, windows_needed
from governance.slo.core.durations import format_duration
from governance.slo.core.sli import QUANTILE_METRICS, Sli, metric_value
from governance.slo.models import Alert, AlertRule, Channel, ChannelAlertState, Notification, Slo
from governance.slo.rollups import lease_claim, lease_release
from governance.slo.selectors import active_silences, minute_of, silence_of, window_examples, window_hist, window_sums
from governance.slo.transports import TransportError, transport_for

log = logging.getLogger(__name__)

TICK_LEASE = "slo-evaluate"
TICK_LEASE_SECONDS = 300  # longer than the task's time limit: a tick that died frees it this late
RESOLVED_NOTICE_DAYS = 1  # a resolution is told at most this long after it happened
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


@dataclass
class Condition:
    """What one alert's condition says at this tick."""

    labels: dict
    annotations: dict
    active: bool
    for_seconds: int
    value: float | None
    sli_id: int
    window_minutes: int
    slo: Slo | None = None
    tier: str = ""
    rule: AlertRule | None = None


@dataclass
class TickResult:
    projects: int = 0
    transitions: list = field(default_factory=list)  # (fingerprint, old state, new state)
    notifications: list = field(default_factory=list)  # ids written


def evaluate_tick(*, now: datetime | None = None) -> TickResult | None:
    """Evaluate every project's SLOs and rules and write the notifications due; None when another
    tick holds the lease."""
    now = now or timezone.now()
    holder = uuid.uuid4().hex
    if not lease_claim(TICK_LEASE, seconds=TICK_LEASE_SECONDS, holder=holder, now=now):
        return None
    try:
        result = TickResult()
        project_ids = (set(Slo.objects.values_list("project_id", flat=True))
                       | set(AlertRule.objects.filter(enabled=True).values_list("project_id", flat=True))
                       | set(Alert.objects.filter(state__in=[Alert.State.PENDING, Alert.State.FIRING])
                             .values_list("project_id", flat=True)))
        for project_id in sorted(project_ids):
            project = Project.objects.get(pk=project_id)
            result.transitions += alerts_update(project=project, conditions=conditions_of(project=project, now=now),
                                                now=now)
            result.notifications += notifications_write(project=project, now=now)
            result.projects += 1
        return result
    finally:
        lease_release(TICK_LEASE, holder=holder)


# --- conditions -------------------------------------------------------------------------------------------


def _url(project: Project, path: str) -> str:
    return f"{settings.EXTERNAL_URL}/p/{project.slug}/{path}"


def conditions_of(*, project: Project, now: datetime) -> list[Condition]:
    """Every alert condition of the project at `now`; stores each SLO's and rule's status on the way."""
    slos = list(Slo.objects.filter(project=project).select_related("sli"))
    rules = list(AlertRule.objects.filter(project=project, enabled=True).select_related("sli"))
    now_minute = minute_of(now)
    needs: dict[int, set[int]] = defaultdict(set)
    for slo in slos:
        needs[slo.sli_id] |= windows_needed(slo.window_seconds)
    for rule in rules:
        needs[rule.sli_id].add(rule.window_seconds // 60)
    sums = window_sums(needs, now_minute=now_minute)
    conditions = []
    for slo in slos:
        by_window = {w: (s.good, s.total) for w, s in sums[slo.sli_id].items()}
        status = slo_status(objective=slo.objective, window_seconds=slo.window_seconds, tiers=slo.tiers, sums=by_window)
        slo.status, slo.evaluated_at = status.as_dict(), now
        for tier in status.tiers:
            if not tier.enabled:
                continue
            window = f"{format_duration(tier.long_minutes * 60)} and {format_duration(tier.short_minutes * 60)}"
            labels = {**slo.labels, "alertname": "ErrorBudgetBurn", "project": project.slug, "slo": slo.name,
                      "severity": tier.severity, "tier": tier.name}
            annotations = {
                "summary": f"{slo.display_name or slo.name} is burning its error budget {tier.long_rate:.1f}x over "
                           f"{format_duration(tier.long_minutes * 60)} and {tier.short_rate:.1f}x over "
                           f"{format_duration(tier.short_minutes * 60)} (threshold {tier.factor:g}x on both)",
                "description": (f"SLI {status.sli:.4%} " if status.sli is not None else "No events ") +
                               f"over {format_duration(slo.window_seconds)}, objective {slo.objective:.3%}; "
                               f"{status.budget_remaining:.0%} of the error budget left ({tier.name}: {window}).",
                "slo": _url(project, f"slos/{slo.pk}/"),
            }
            conditions.append(Condition(labels=labels, annotations=annotations, active=tier.active,
                                        for_seconds=slo.tiers.get(tier.name, {}).get("for_seconds", 0),
                                        value=min(tier.long_rate, tier.short_rate), sli_id=slo.sli_id,
                                        window_minutes=tier.long_minutes, slo=slo, tier=tier.name))
    Slo.objects.bulk_update(slos, ["status", "evaluated_at"], batch_size=500)
    for rule in rules:
        minutes = rule.window_seconds // 60
        window_sum = sums[rule.sli_id][minutes]
        if rule.metric in QUANTILE_METRICS:
            window_sum.hist = window_hist(rule.sli_id, minutes=minutes, now_minute=now_minute)
        value = metric_value(rule.metric, window_sum, minutes)
        active = threshold_holds(value, rule.op, rule.threshold)
        rule.status, rule.evaluated_at = {"value": value, "active": active}, now
        shown = "no data" if value is None else f"{value:.4g}"
        annotations = {"summary": f"{rule.name}: {rule.metric} {shown} {rule.op} {rule.threshold:g} over "
                                  f"{format_duration(rule.window_seconds)}",
                       "description": rule.description or Sli.parse(rule.sli.definition).describe()}
        kind = rule.sli.definition.get("kind")
        match = rule.sli.definition.get("match", {})
        if kind == "findings":
            annotations["findings"] = _url(project, "findings/" + (f"?kind={match['finding_kind'][0]}"
                                                                   if len(match.get("finding_kind", [])) == 1 else ""))
        elif kind == "violations":
            annotations["violations"] = _url(project, "violations/?last=24h")
        conditions.append(Condition(labels={**rule.labels, "alertname": rule.name, "project": project.slug,
                                            "severity": rule.severity},
                                    annotations=annotations, active=active, for_seconds=rule.for_seconds, value=value,
                                    sli_id=rule.sli_id, window_minutes=minutes, rule=rule))
    AlertRule.objects.bulk_update(rules, ["status", "evaluated_at"], batch_size=500)
    return conditions


# --- alert states -------------------------------------------------------------------------------------------


def _phase(alert: Alert | None) -> AlertPhase:
    if alert is None:
        return AlertPhase()
    return AlertPhase(state=alert.state, active_since=alert.active_since, fired_at=alert.fired_at,
                      resolved_at=alert.resolved_at, episode=alert.episode)


def alerts_update(*, project: Project, conditions: list[Condition], now: datetime) -> list[tuple]:
    """Move each alert one step on its condition. An alert whose condition is gone (a tier turned off, a
    rule disabled) is taken as false, so it resolves. Returns the transitions made."""
    by_fingerprint = {fingerprint(c.labels): c for c in conditions}
    alerts = {a.fingerprint: a for a in Alert.objects.filter(
        Q(fingerprint__in=list(by_fingerprint)) | Q(state__in=[Alert.State.PENDING, Alert.State.FIRING]),
        project=project)}
    transitions = []
    for fp in sorted(set(by_fingerprint) | set(alerts)):
        condition, alert = by_fingerprint.get(fp), alerts.get(fp)
        active = condition is not None and condition.active
        if alert is None and not active:
            continue  # inactive alerts are not stored
        before = _phase(alert)
        after = alert_next(before, active=active, now=now, for_seconds=condition.for_seconds if condition else 0)
        if after == before:
            continue
        fields = {"state": after.state, "active_since": after.active_since, "fired_at": after.fired_at,
                  "resolved_at": after.resolved_at, "episode": after.episode, "changed_at": now}
        if condition is not None:
            fields["value"] = condition.value
            if after.state != RESOLVED:
                fields["annotations"] = condition.annotations
        if after.state == FIRING and condition is not None:
            fields["evidence"] = window_examples(condition.sli_id, minutes=condition.window_minutes,
                                                 now_minute=minute_of(now))
            if fields["evidence"]:
                fields["annotations"] = {**fields["annotations"], "traces": " ".join(
                    _url(project, f"traces/{t}/?span={s}") for t, s in fields["evidence"])}
        if alert is None:
            try:
                with transaction.atomic():
                    Alert.objects.create(project=project, fingerprint=fp, labels=condition.labels, slo=condition.slo,
                                         tier=condition.tier, rule=condition.rule, version=1, **fields)
            except IntegrityError:
                continue  # another evaluator stored it first; it moves it
        elif not Alert.objects.filter(pk=alert.pk, version=alert.version).update(version=F("version") + 1, **fields):
            continue  # another evaluator moved it meanwhile
        transitions.append((fp, before.state, after.state))
    return transitions


# --- notifications ---------------------------------------------------------------------------------------------


def rfc3339(moment: datetime | None) -> str:
    if moment is None:
        return ZERO_TIME
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def group_key(group_labels: dict) -> str:
    """Alertmanager's groupKey: the route (here the root, {}) and the group's labels."""
    return "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"


def _common(items: list[dict]) -> dict:
    if not items:
        return {}
    common = dict(items[0])
    for item in items[1:]:
        common = {k: v for k, v in common.items() if item.get(k) == v}
    return common


def webhook_payload(*, channel: Channel, group_labels: dict, alerts: list[dict]) -> dict:
    """The Alertmanager webhook payload (version 4) for a group of alerts given as dicts with
    status, labels, annotations, startsAt, endsAt (datetimes or None), generatorURL and fingerprint."""
    shaped = [{"status": a["status"], "labels": a["labels"], "annotations": a["annotations"],
               "startsAt": rfc3339(a["startsAt"]), "endsAt": rfc3339(a["endsAt"]) if a["status"] == RESOLVED else ZERO_TIME,
               "generatorURL": a["generatorURL"], "fingerprint": a["fingerprint"]} for a in alerts]
    return {"version": "4", "groupKey": group_key(group_labels), "truncatedAlerts": 0,
            "status": FIRING if any(a["status"] == FIRING for a in alerts) else RESOLVED,
            "receiver": channel.name, "groupLabels": group_labels,
            "commonLabels": _common([a["labels"] for a in alerts]),
            "commonAnnotations": _common([a["annotations"] for a in alerts]),
            "externalURL": settings.EXTERNAL_URL, "alerts": shaped}


def _as_payload_alert(alert: Alert, project: Project) -> dict:
    return {"status": FIRING if alert.state == FIRING else RESOLVED, "labels": alert.labels,
            "annotations": alert.annotations, "startsAt": alert.fired_at, "endsAt": alert.resolved_at,
            "generatorURL": _url(project, f"alerts/?fingerprint={alert.fingerprint}"),
            "fingerprint": alert.fingerprint}


def _needs_telling(alert: Alert, told: tuple | None) -> bool:
    if alert.state == FIRING:
        return told != (FIRING, alert.episode)
    # A resolution is told only to a channel that was told this episode fired.
    return alert.state == RESOLVED and told == (FIRING, alert.episode)


class _Lost(Exception):
    """Another evaluator told the channel first."""


def _mark_told(channel: Channel, alert: Alert, told: tuple | None) -> None:
    if told is None:
        try:
            with transaction.atomic():
                ChannelAlertState.objects.create(channel=channel, alert=alert, state=alert.state, episode=alert.episode)
        except IntegrityError:
            raise _Lost from None
    elif not ChannelAlertState.objects.filter(channel=channel, alert=alert, state=told[0], episode=told[1]).update(
            state=alert.state, episode=alert.episode):
        raise _Lost


def notifications_write(*, project: Project, now: datetime) -> list[int]:
    """For each enabled channel, group the alerts that are not silenced by the channel's group_by labels
    and write a notification for each group with a state change, or with unacknowledged firing alerts
    not notified for the repeat interval. Returns the notifications written."""
    alerts = list(Alert.objects.filter(Q(state=Alert.State.FIRING) | Q(
        state=Alert.State.RESOLVED, changed_at__gte=now - timedelta(days=RESOLVED_NOTICE_DAYS)), project=project))
    channels = list(Channel.objects.filter(project=project, enabled=True))
    if not alerts or not channels:
        return []
    silences = active_silences(project_id=project.pk, now=now)
    audible = [a for a in alerts if silence_of(a.labels, silences) is None]
    written = []
    for channel in channels:
        told = {alert_id: (state, episode) for alert_id, state, episode in ChannelAlertState.objects.filter(
            channel=channel, alert__in=audible).values_list("alert_id", "state", "episode")}
        groups: dict[tuple, list[Alert]] = defaultdict(list)
        for alert in audible:
            groups[tuple((g, alert.labels.get(g, "")) for g in channel.group_by)].append(alert)
        for key, members in groups.items():
            changed = [a for a in members if _needs_telling(a, told.get(a.pk))]
            reminded = [a for a in members if a.state == FIRING and not a.acknowledged and a not in changed]
            group_labels = {k: v for k, v in key if v}
            gk = group_key(group_labels)
            if not changed:
                last = Notification.objects.filter(channel=channel, group_key=gk).aggregate(at=Max("created_at"))["at"]
                if not reminded or (last is not None and now - last < timedelta(seconds=channel.repeat_interval_seconds)):
                    continue
            payload = webhook_payload(channel=channel, group_labels=group_labels,
                                      alerts=[_as_payload_alert(a, project) for a in changed + reminded])
            try:
                with transaction.atomic():
                    for alert in changed:
                        _mark_told(channel, alert, told.get(alert.pk))
                    notification = Notification.objects.create(
                        channel=channel, group_key=gk, payload=payload, next_attempt_at=now, created_at=now,
                        repeat=not changed)
            except _Lost:
                continue
            written.append(notification.pk)
    return written


def notifications_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Notifications to send now: new ones, retries whose backoff is over, and those a worker claimed and
    lost (its claim ran out: it died, or the message was lost)."""
    now = now or timezone.now()
    Notification.objects.filter(status=Notification.Status.SENDING, claimed_until__lt=now).update(
        status=Notification.Status.PENDING, claimed_until=None)
    return list(Notification.objects.filter(status=Notification.Status.PENDING, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])


def retry_delay(attempts: int) -> timedelta:
    """Backoff between attempts of one notification: 30 s, 1 min, 2 min, ... at most an hour."""
    return timedelta(seconds=min(30 * 2 ** max(0, attempts - 1), 3600))


def notification_send(*, notification_id: int) -> str:
    """Claim one notification and send it, outside any transaction. Returns what happened: sent, retry,
    failed, or not-claimed (someone else has it, or it is not due)."""
    now = timezone.now()
    claim_seconds = settings.NOTIFY_TIMEOUT_SECONDS * 4 + 60
    if not Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING,
                                       next_attempt_at__lte=now).update(
            status=Notification.Status.SENDING, attempts=F("attempts") + 1,
            claimed_until=now + timedelta(seconds=claim_seconds)):
        return "not-claimed"
    notification = Notification.objects.select_related("channel").get(pk=notification_id)
    ours = Notification.objects.filter(pk=notification.pk, status=Notification.Status.SENDING,
                                       attempts=notification.attempts)
    channel = notification.channel
    try:
        transport_for(channel).notify(notification.payload)
    except TransportError as exc:
        done = timezone.now()
        if exc.permanent or notification.attempts >= settings.NOTIFY_MAX_ATTEMPTS:
            ours.update(status=Notification.Status.FAILED, last_error=str(exc), claimed_until=None)
            metrics.NOTIFICATIONS_FAILED.labels(channel_kind=channel.kind, final="true").inc()
            Channel.objects.filter(pk=channel.pk).update(last_error=str(exc), last_error_at=done)
            log.warning("notification %s to %s failed for good: %s", notification.pk, channel.name, exc)
            return "failed"
        ours.update(status=Notification.Status.PENDING, last_error=str(exc), claimed_until=None,
                    next_attempt_at=done + retry_delay(notification.attempts))
        metrics.NOTIFICATIONS_FAILED.labels(channel_kind=channel.kind, final="false").inc()
        return "retry"
    done = timezone.now()
    ours.update(status=Notification.Status.SENT, sent_at=done, claimed_until=None, last_error="")
    metrics.NOTIFICATIONS_SENT.labels(channel_kind=channel.kind).inc()
    Channel.objects.filter(pk=channel.pk).update(last_sent_at=done)
    return "sent"
