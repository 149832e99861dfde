"""Writes people make on SLOs, alert rules, alerts, silences and channels.

Every change checks the person's role and writes an audit record in the same transaction:
viewers read; operators acknowledge alerts, silence them and send test notifications;
approvers and admins define SLOs, alert rules and channels.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.models import Project, Role
from governance.services import audit_record, role_require
from governance.slo.core.alerts import OPS, check_labels, matchers_clean
from governance.slo.core.burn import check_objective, check_window, tiers_clean
from governance.slo.core.openslo import check_name, dump_openslo, parse_openslo
from governance.slo.core.sli import Sli as CoreSli
from governance.slo.models import Alert, AlertRule, Channel, Silence, Sli, Slo
from governance.slo.transports import webhook_url_problem

DEFINE_ROLE = Role.APPROVER  # SLOs, alert rules, channels
RESPOND_ROLE = Role.OPERATOR  # acknowledge, silence, test a channel
MAX_RULE_WINDOW_SECONDS = 7 * 86400
RESERVED_LABELS = ("alertname", "project", "slo", "severity", "tier")


class SloConflict(Exception):
    """The change names something that exists already, or lost a race (HTTP 409)."""


# --- SLIs ------------------------------------------------------------------------------------------------


def sli_get_or_create(*, project: Project, spec: dict, compiled: CoreSli | None = None) -> Sli:
    """The project's SLI for this definition (equal definitions share one, and its rollups). A new one
    is counted over the stored past by a task queued when the transaction commits."""
    compiled = compiled or CoreSli.parse(spec)
    sli, created = Sli.objects.get_or_create(project=project, key=compiled.key,
                                             defaults={"kind": compiled.kind.name, "definition": compiled.document()})
    if created:
        from governance.slo.tasks import sli_backfill_task  # the tasks module imports services

        transaction.on_commit(lambda: sli_backfill_task.delay(sli.pk))
    return sli


# --- SLOs -------------------------------------------------------------------------------------------------


def slo_clean(data: dict) -> tuple[dict, CoreSli]:
    """An SLO's fields checked: {name, display_name, description, service, labels, objective,
    window_seconds, tiers, sli}. Raises ValueError saying what is wrong."""
    compiled = CoreSli.parse(data.get("sli"))
    compiled.check_slo()
    clean = {
        "name": check_name(data.get("name"), what="name"),
        "display_name": str(data.get("display_name") or "")[:200],
        "description": str(data.get("description") or "")[:2000],
        "service": str(data.get("service") or "")[:200],
        "labels": _user_labels(data.get("labels")),
        "objective": check_objective(data.get("objective")),
        "window_seconds": check_window(int(data.get("window_seconds") or 0)),
        "tiers": tiers_clean(data.get("tiers")),
    }
    return clean, compiled


def _user_labels(labels) -> dict:
    labels = check_labels(labels)
    taken = [name for name in labels if name in RESERVED_LABELS]
    if taken:
        raise ValueError(f"labels: {taken[0]} is set by Causeway ({', '.join(RESERVED_LABELS)} are)")
    return labels


def _sli_based_create(*, model, project: Project, clean: dict, compiled: CoreSli, actor, address, action: str,
                      detail, what: str, via: dict | None = None):
    """Create an SLO or an alert rule on its (shared) SLI, audited; a taken name is SloConflict. The caller
    checked the role (before the data, so a viewer is told 403, not what is wrong with the data)."""
    try:
        with transaction.atomic():
            sli = sli_get_or_create(project=project, spec=compiled.document(), compiled=compiled)
            obj = model.objects.create(project=project, sli=sli, created_by=actor, **clean)
            audit_record(project=project, actor=actor, action=action, obj_type=action.split(".")[0], obj_id=obj.pk,
                         detail={**detail(obj), **(via or {})}, address=address)
    except IntegrityError:
        raise SloConflict(f"project {project.slug} already has {what} named {clean['name']!r}") from None
    return obj


def _sli_based_update(*, obj, clean: dict, compiled: CoreSli, actor, address, action: str, detail, what: str,
                      via: dict | None = None):
    """Replace the definition of an SLO or alert rule under a row lock, audited with before and after."""
    project = obj.project
    try:
        with transaction.atomic():
            locked = type(obj).objects.select_for_update().get(pk=obj.pk)
            before = detail(locked)
            locked.sli = sli_get_or_create(project=project, spec=compiled.document(), compiled=compiled)
            for field, value in clean.items():
                setattr(locked, field, value)
            locked.save()
            audit_record(project=project, actor=actor, action=action, obj_type=action.split(".")[0], obj_id=obj.pk,
                         detail={"before": before, "after": detail(locked), **(via or {})}, address=address)
    except IntegrityError:
        raise SloConflict(f"project {project.slug} already has {what} named {clean['name']!r}") from None
    return locked


def slo_create(*, project: Project, data: dict, actor, address=None) -> Slo:
    role_require(user=actor, project=project, role=DEFINE_ROLE)
    return _sli_based_create(model=Slo, project=project, **_slo_definition(data), actor=actor, address=address,
                             action="slo.create")


def slo_update(*, slo: Slo, data: dict, actor, address=None) -> Slo:
    role_require(user=actor, project=slo.project, role=DEFINE_ROLE)
    return _sli_based_update(obj=slo, **_slo_definition(data), actor=actor, address=address, action="slo.update")


def _slo_definition(data: dict) -> dict:
    clean, compiled = slo_clean(data)
    return {"clean": clean, "compiled": compiled, "detail": _audit_detail, "what": "an SLO"}


def slo_delete(*, slo: Slo, actor, address=None) -> None:
    """Delete an SLO and its alerts (they resolve with it: nothing evaluates them any more)."""
    role_require(user=actor, project=slo.project, role=DEFINE_ROLE)
    with transaction.atomic():
        audit_record(project=slo.project, actor=actor, action="slo.delete", obj_type="slo", obj_id=slo.pk,
                     detail=_audit_detail(slo), address=address)
        Slo.objects.filter(pk=slo.pk).delete()


def _audit_detail(slo: Slo) -> dict:
    return {"name": slo.name, "objective": slo.objective, "window_seconds": slo.window_seconds,
            "sli": slo.sli.definition, "tiers": slo.tiers, "labels": slo.labels}


def slo_document(slo: Slo) -> dict:
    """The SLO in the shape of core.openslo (what an export writes and an import reads)."""
    return {"name": slo.name, "display_name": slo.display_name, "description": slo.description, "service": slo.service,
            "labels": slo.labels, "objective": slo.objective, "window_seconds": slo.window_seconds,
            "sli": slo.sli.definition, "tiers": slo.tiers}


def slos_import_openslo(*, project: Project, text: str, actor, address=None) -> dict:
    """Create or update (by name) the SLOs of an OpenSLO v1 upload, all or none.
    Returns {"ids": [in upload order], "created", "updated", "unchanged": [ids], "skipped": ["Kind/name"]}."""
    role_require(user=actor, project=project, role=DEFINE_ROLE)
    slos, skipped = parse_openslo(text)
    result = {"ids": [], "created": [], "updated": [], "unchanged": [], "skipped": skipped}
    with transaction.atomic():
        for data in slos:
            clean, compiled = slo_clean(data)
            existing = Slo.objects.select_for_update().filter(project=project, name=clean["name"]).first()
            if existing is not None and slo_document(existing) == {**clean, "sli": compiled.document()}:
                result["unchanged"].append(existing.pk)
                result["ids"].append(existing.pk)
                continue
            common = {"clean": clean, "compiled": compiled, "actor": actor, "address": address,
                      "detail": _audit_detail, "what": "an SLO", "via": {"via": "openslo"}}
            if existing is None:
                slo = _sli_based_create(model=Slo, project=project, action="slo.create", **common)
                result["created"].append(slo.pk)
            else:
                slo = _sli_based_update(obj=existing, action="slo.update", **common)
                result["updated"].append(slo.pk)
            result["ids"].append(slo.pk)
    return result


def slos_export_openslo(*, project: Project) -> str:
    return dump_openslo([slo_document(s) for s in Slo.objects.filter(project=project).select_related("sli")
                         .order_by("name")])


# --- alert rules -------------------------------------------------------------------------------------------


def rule_clean(data: dict) -> tuple[dict, CoreSli]:
    compiled = CoreSli.parse(data.get("sli"))
    metric = data.get("metric")
    compiled.check_metric(metric)
    if data.get("op") not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError("threshold must be a number")
    window = int(data.get("window_seconds") or 0)
    if not 60 <= window <= MAX_RULE_WINDOW_SECONDS or window % 60:
        raise ValueError("window must be whole minutes from 1m to 7d")
    for_seconds = int(data.get("for_seconds") or 0)
    if not 0 <= for_seconds <= 86400:
        raise ValueError("for must be from 0 to 1d")
    severity = str(data.get("severity") or "page")
    if not severity.replace("-", "").replace("_", "").isalnum() or len(severity) > 32:
        raise ValueError("severity is a short word such as page, ticket or info")
    return {"name": check_name(data.get("name"), what="name"), "description": str(data.get("description") or "")[:2000],
            "metric": metric, "op": data["op"], "threshold": float(threshold), "window_seconds": window,
            "for_seconds": for_seconds, "severity": severity, "labels": _user_labels(data.get("labels")),
            "enabled": bool(data.get("enabled", True))}, compiled


def _rule_detail(rule: AlertRule) -> dict:
    return {"name": rule.name, "metric": rule.metric, "op": rule.op, "threshold": rule.threshold,
            "window_seconds": rule.window_seconds, "for_seconds": rule.for_seconds, "severity": rule.severity,
            "labels": rule.labels, "enabled": rule.enabled, "sli": rule.sli.definition}


def rule_create(*, project: Project, data: dict, actor, address=None) -> AlertRule:
    role_require(user=actor, project=project, role=DEFINE_ROLE)
    return _sli_based_create(model=AlertRule, project=project, **_rule_definition(data), actor=actor, address=address,
                             action="alert_rule.create")


def rule_update(*, rule: AlertRule, data: dict, actor, address=None) -> AlertRule:
    role_require(user=actor, project=rule.project, role=DEFINE_ROLE)
    return _sli_based_update(obj=rule, **_rule_definition(data), actor=actor, address=address,
                             action="alert_rule.update")


def _rule_definition(data: dict) -> dict:
    clean, compiled = rule_clean(data)
    return {"clean": clean, "compiled": compiled, "detail": _rule_detail, "what": "an alert rule"}


def rule_delete(*, rule: AlertRule, actor, address=None) -> None:
    role_require(user=actor, project=rule.project, role=DEFINE_ROLE)
    with transaction.atomic():
        audit_record(project=rule.project, actor=actor, action="alert_rule.delete", obj_type="alert_rule",
                     obj_id=rule.pk, detail={"name": rule.name}, address=address)
        AlertRule.objects.filter(pk=rule.pk).delete()


# --- alerts ---------------------------------------------------------------------------------------------------


def alert_acknowledge(*, alert: Alert, comment: str, actor, address=None) -> bool:
    """Acknowledge a pending or firing alert for this episode (operator role and up): it is not repeated
    to channels until it fires again. False if it was already acknowledged; a resolved alert is a ValueError."""
    role_require(user=actor, project=alert.project, role=RESPOND_ROLE)
    comment = (comment or "").strip()[:500]
    with transaction.atomic():
        state, episode = Alert.objects.filter(pk=alert.pk).values_list("state", "episode").get()
        if state not in (Alert.State.PENDING, Alert.State.FIRING):
            raise ValueError(f"this alert is {state}: only pending or firing alerts are acknowledged")
        # The guard: nobody acknowledged this episode since we looked, and it did not change episode.
        changed = Alert.objects.filter(pk=alert.pk, episode=episode, state=state).exclude(
            acknowledged_at__isnull=False, acknowledged_episode=episode).update(
            acknowledged_by=actor, acknowledged_at=timezone.now(), acknowledged_episode=episode,
            acknowledge_comment=comment)
        if changed:
            audit_record(project=alert.project, actor=actor, action="alert.acknowledge", obj_type="alert",
                         obj_id=alert.pk, detail={"labels": alert.labels, "episode": episode, "comment": comment},
                         address=address)
    alert.refresh_from_db()
    return bool(changed)


# --- silences ---------------------------------------------------------------------------------------------------


def silence_create(*, project: Project, matchers, comment: str, ends_at: datetime, starts_at: datetime | None = None,
                   actor, address=None) -> Silence:
    """Silence alerts whose labels match every matcher, from starts_at (default now) to ends_at."""
    role_require(user=actor, project=project, role=RESPOND_ROLE)
    parsed = matchers_clean(matchers)
    now = timezone.now()
    starts_at = starts_at or now
    comment = (comment or "").strip()
    if not comment:
        raise ValueError("say why in a comment: whoever is paged next reads it")
    if ends_at <= starts_at or ends_at <= now:
        raise ValueError("a silence must end after it starts, and in the future")
    if ends_at - starts_at > timedelta(days=90):
        raise ValueError("a silence lasts at most 90 days")
    with transaction.atomic():
        silence = Silence.objects.create(project=project, matchers=[m.as_dict() for m in parsed], starts_at=starts_at,
                                         ends_at=ends_at, comment=comment[:500], created_by=actor)
        audit_record(project=project, actor=actor, action="silence.create", obj_type="silence", obj_id=silence.pk,
                     detail={"matchers": [str(m) for m in parsed], "starts_at": starts_at.isoformat(),
                             "ends_at": ends_at.isoformat(), "comment": silence.comment}, address=address)
    return silence


def silence_expire(*, silence: Silence, actor, address=None) -> bool:
    """End a silence now (operator role and up). False if it had ended already."""
    role_require(user=actor, project=silence.project, role=RESPOND_ROLE)
    now = timezone.now()
    with transaction.atomic():
        changed = Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(ends_at=now)
        if changed:
            audit_record(project=silence.project, actor=actor, action="silence.expire", obj_type="silence",
                         obj_id=silence.pk, detail={"matchers": silence.matchers}, address=address)
    silence.refresh_from_db()
    return bool(changed)


# --- channels -------------------------------------------------------------------------------------------------------


def channel_clean(data: dict) -> dict:
    kind = data.get("kind")
    if kind not in Channel.Kind.values:
        raise ValueError(f"kind must be one of {', '.join(Channel.Kind.values)}")
    clean = {"kind": kind, "url": "", "to": []}
    if kind == Channel.Kind.WEBHOOK:
        url = str(data.get("url") or "").strip()
        try:
            URLValidator(schemes=["http", "https"])(url)
        except DjangoValidationError:
            raise ValueError("url must be an http or https URL, e.g. https://alerts.example/hook") from None
        problem = webhook_url_problem(url, resolve=True)
        if problem:
            raise ValueError(problem)
        clean["url"] = url
    else:
        to = data.get("to")
        if isinstance(to, str):
            to = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
        if not isinstance(to, list) or not to or len(to) > 20:
            raise ValueError("to must list 1 to 20 e-mail addresses")
        for address in to:
            try:
                EmailValidator()(address)
            except DjangoValidationError:
                raise ValueError(f"{address!r} is not an e-mail address") from None
        clean["to"] = to
    group_by = data.get("group_by", ["alertname"])
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise ValueError("group_by must list label names")
    check_labels({g: "" for g in group_by}, what="group_by")
    clean["group_by"] = group_by
    repeat = int(data.get("repeat_interval_seconds") or 4 * 3600)
    if not 60 <= repeat <= 7 * 86400:
        raise ValueError("repeat interval must be from 1m to 7d")
    clean["repeat_interval_seconds"] = repeat
    clean["enabled"] = bool(data.get("enabled", True))
    name = str(data.get("name") or "").strip()
    clean["name"] = (name or (clean["url"].split("/")[2] if kind == Channel.Kind.WEBHOOK else clean["to"][0]))[:100]
    return clean


def channel_create(*, project: Project, data: dict, actor, address=None) -> Channel:
    role_require(user=actor, project=project, role=DEFINE_ROLE)
    clean = channel_clean(data)
    with transaction.atomic():
        channel = Channel.objects.create(project=project, created_by=actor, **clean)
        audit_record(project=project, actor=actor, action="channel.create", obj_type="channel", obj_id=channel.pk,
                     detail=_channel_detail(channel), address=address)
    return channel


def channel_delete(*, channel: Channel, actor, address=None) -> None:
    role_require(user=actor, project=channel.project, role=DEFINE_ROLE)
    with transaction.atomic():
        audit_record(project=channel.project, actor=actor, action="channel.delete", obj_type="channel",
                     obj_id=channel.pk, detail=_channel_detail(channel), address=address)
        Channel.objects.filter(pk=channel.pk).delete()


def _channel_detail(channel: Channel) -> dict:
    return {"name": channel.name, "kind": channel.kind, "url": channel.url, "to": channel.to,
            "group_by": channel.group_by, "repeat_interval_seconds": channel.repeat_interval_seconds}


def channel_test(*, channel: Channel, actor, address=None) -> str:
    """Send a test notification now (operator role and up), outside any transaction. Returns "" when it
    was delivered, else what went wrong (also kept on the channel)."""
    from governance.slo.transports import TransportError, test_payload, transport_for

    role_require(user=actor, project=channel.project, role=RESPOND_ROLE)
    audit_record(project=channel.project, actor=actor, action="channel.test", obj_type="channel", obj_id=channel.pk,
                 detail={"name": channel.name}, address=address)
    try:
        transport_for(channel).notify(test_payload(channel))
    except TransportError as exc:
        Channel.objects.filter(pk=channel.pk).update(last_error=f"test: {exc}", last_error_at=timezone.now())
        return str(exc)
    Channel.objects.filter(pk=channel.pk).update(last_sent_at=timezone.now())
    return ""
