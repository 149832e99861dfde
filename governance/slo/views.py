"""SLO and alert pages: SLOs (list, detail with charts, the define-SLO-alert form with its live preview),
alert rules, alerts, silences and channels. Thin: forms become the services' dicts."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import plotly
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.models import Role
from governance.services import PermissionDenied, client_address
from governance.slo import charts, services
from governance.slo.core.alerts import Matcher
from governance.slo.core.burn import TIERS, default_tiers, tier_windows
from governance.slo.core.durations import format_duration, parse_duration
from governance.slo.core.sli import METRICS, SLI_KINDS, Sli, SliError
from governance.slo.models import Alert, Channel
from governance.slo.selectors import (
    active_silences,
    alerts_for_project,
    channels_for_project,
    minute_of,
    rules_for_project,
    silence_of,
    silences_for_project,
    sli_preview,
    sli_series,
    slos_for_project,
)
from governance.views import page_allows, page_project
from traces.records import KIND_NAMES
from traces.timeline import timeline_json

SLO_KINDS = [k for k, kind in SLI_KINDS.items() if kind.ratio]
WINDOWS = ["1h", "1d", "7d", "28d", "30d", "90d"]
PROBLEMS = (ValueError, PermissionDenied, services.SloConflict)


def _posted(rows, pk, what: str):
    """The row a form names among the project's, or 404."""
    row = rows.filter(pk=pk).first() if str(pk).isdigit() else None
    if row is None:
        raise Http404(f"no such {what}")
    return row


def _roles(request) -> dict:
    return {"can_define": page_allows(request, Role.APPROVER), "can_respond": page_allows(request, Role.OPERATOR)}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _names(text: str) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _key_values(text: str, what: str) -> dict[str, str]:
    pairs = {}
    for line in _lines(text):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: write one key=value a line, not {line!r}")
        pairs[key.strip()] = value.strip()
    return pairs


# --- the SLI part of the forms -----------------------------------------------------------------------------

SLI_FIELDS = ("sli_kind", "service", "agent", "span_name", "span_kind", "attributes", "finding_kind", "key", "policy",
              "rule", "enforced", "threshold_ms")


def sli_spec_from_form(form) -> dict:
    """The SLI definition a form describes (the same shape the API takes)."""
    kind = form.get("sli_kind", "")
    match: dict = {}
    for field, name in (("service", "service"), ("agent", "agent"), ("span_name", "name"), ("key", "key"),
                        ("policy", "policy"), ("rule", "rule")):
        if _names(form.get(field)):
            match[name] = _names(form.get(field))
    if form.get("span_kind"):
        match["span_kind"] = [form["span_kind"]]
    if form.get("finding_kind"):
        match["finding_kind"] = [form["finding_kind"]]
    if form.get("enforced"):
        match["enforced"] = True
    attributes = _key_values(form.get("attributes", ""), "attributes")
    if attributes:
        match["attributes"] = {k: {"equals": v} for k, v in attributes.items()}
    source = SLI_KINDS[kind].source if kind in SLI_KINDS else "spans"
    allowed = {"spans": ("service", "agent", "name", "span_kind", "attributes"),
               "findings": ("finding_kind", "key", "agent"),
               "violations": ("policy", "rule", "agent", "service", "enforced")}[source]
    spec = {"kind": kind, "match": {k: v for k, v in match.items() if k in allowed}}
    threshold = (form.get("threshold_ms") or "").strip()
    if threshold and kind in SLI_KINDS and SLI_KINDS[kind].threshold != "none":
        try:
            spec["threshold_ms"] = float(threshold)
        except ValueError:
            raise ValueError(f"threshold (ms) must be a number, not {threshold!r}") from None
    return spec


def sli_form_values(definition: dict) -> dict:
    match = definition.get("match", {})
    return {
        "sli_kind": definition.get("kind", ""), "service": ", ".join(match.get("service", [])),
        "agent": ", ".join(match.get("agent", [])), "span_name": ", ".join(match.get("name", [])),
        "span_kind": (match.get("span_kind") or [""])[0], "finding_kind": (match.get("finding_kind") or [""])[0],
        "key": ", ".join(match.get("key", [])), "policy": ", ".join(match.get("policy", [])),
        "rule": ", ".join(match.get("rule", [])), "enforced": match.get("enforced", False),
        "attributes": "\n".join(f"{k}={next(iter(c.values()))}" for k, c in match.get("attributes", {}).items()),
        "threshold_ms": "" if definition.get("threshold_ms") is None else f"{definition['threshold_ms']:g}",
    }


def _sli_choices(kinds) -> dict:
    from traces.analysis import KINDS

    return {"sli_kinds": [(k, SLI_KINDS[k].label, SLI_KINDS[k].source, SLI_KINDS[k].threshold) for k in kinds],
            "span_kinds": KIND_NAMES[1:], "finding_kinds": KINDS}


# --- SLOs ----------------------------------------------------------------------------------------------------


def _status_word(slo) -> str:
    status = slo.status or {}
    if not status or not status.get("total"):
        return "no data"
    if any(t["active"] for t in status.get("tiers", [])):
        return "burning"
    return "exhausted" if status["budget_remaining"] <= 0 else "ok"


@login_required
def slo_list(request, slug):
    project = page_project(request, slug)
    if request.method == "POST":
        try:
            result = services.slos_import_openslo(project=project, text=request.POST.get("openslo", ""), actor=request.user,
                                         address=client_address(request))
            messages.success(request, f"Imported: {len(result['created'])} created, {len(result['updated'])} updated, "
                                      f"{len(result['unchanged'])} unchanged.")
            return redirect("slo-list", slug=slug)
        except PROBLEMS as exc:
            messages.error(request, str(exc))
    slos = list(slos_for_project(project=project).prefetch_related("alerts"))
    for slo in slos:
        slo.word = _status_word(slo)
        slo.firing = sum(1 for a in slo.alerts.all() if a.state == Alert.State.FIRING)
        slo.window = format_duration(slo.window_seconds)
        slo.sli_text = Sli.parse(slo.sli.definition).describe()
        _percentages(slo)
    return render(request, "slo/list.html", {"project": project, "slos": slos, **_roles(request),
                                             "openslo_text": request.POST.get("openslo", "")})


def _percentages(slo) -> None:
    status = slo.status or {}
    slo.objective_pct = slo.objective * 100
    slo.sli_pct = None if status.get("sli") is None else status["sli"] * 100
    slo.budget_pct = None if not status else status["budget_remaining"] * 100
    slo.budget_bar = 0 if slo.budget_pct is None else max(0.0, min(100.0, slo.budget_pct))


def _slo(project, slo_id):
    slo = slos_for_project(project=project).filter(pk=slo_id).first()
    if slo is None:
        raise Http404("no such SLO")
    return slo


@login_required
def slo_detail(request, slug, slo_id):
    project = page_project(request, slug)
    slo = _slo(project, slo_id)
    window_minutes = slo.window_seconds // 60
    last = minute_of(timezone.now())
    bucket = charts.bucket_minutes(window_minutes)
    first = last - window_minutes + 1
    series = sli_series(slo.sli_id, first=first, last=last, bucket_minutes=bucket)
    figures = {
        "sli": charts.sli_figure(series, objective=slo.objective,
                                 title=f"SLI per {format_duration(bucket * 60)} over {format_duration(slo.window_seconds)}"),
        "burndown": charts.burndown_figure(series, objective=slo.objective),
        "burn": charts.burn_rates_figure(slo.status) if slo.status else None,
    }
    _percentages(slo)
    return render(request, "slo/detail.html", {
        "project": project, "slo": slo, "word": _status_word(slo), "window": format_duration(slo.window_seconds),
        "sli_text": Sli.parse(slo.sli.definition).describe(), "figures_json": timeline_json(figures),
        "alerts": alerts_for_project(project=project).filter(slo=slo)[:20], "plotly_version": plotly.__version__,
        "tiers": _tier_rows(slo.tiers, slo.window_seconds), **_roles(request),
    })


def _tier_rows(tiers: dict, window_seconds: int) -> list[dict]:
    rows = []
    for tier in TIERS:
        long_m, short_m = tier_windows(tier, window_seconds)
        settings = tiers.get(tier.name, {})
        rows.append({"name": tier.name, "severity": tier.severity, "enabled": settings.get("enabled", True),
                     "factor": settings.get("factor", tier.factor), "for": format_duration(settings.get("for_seconds", 0)),
                     "long": format_duration(long_m * 60), "short": format_duration(short_m * 60),
                     "budget": f"{tier.budget_share:.0%}"})
    return rows


def slo_data_from_form(form) -> dict:
    try:
        objective = float(form.get("objective_percent", "")) / 100
    except ValueError:
        raise ValueError("objective: give a percentage such as 99.9") from None
    tiers = {t.name: {"enabled": bool(form.get(f"tier_{t.name}"))} for t in TIERS}
    return {"name": form.get("name", "").strip(), "display_name": form.get("display_name", "").strip(),
            "description": form.get("description", "").strip(), "service": form.get("service_label", "").strip(),
            "labels": _key_values(form.get("labels", ""), "labels"), "objective": objective,
            "window_seconds": parse_duration(form.get("window", "").strip() or "0", what="window"),
            "sli": sli_spec_from_form(form), "tiers": tiers}


@login_required
def slo_edit(request, slug, slo_id=None):
    """The define-SLO-alert form: an SLI, an objective, a window and which burn-rate tiers alert."""
    project = page_project(request, slug)
    slo = _slo(project, slo_id) if slo_id else None
    if request.method == "POST":
        form = request.POST
        try:
            data = slo_data_from_form(form)
            if slo is None:
                slo = services.slo_create(project=project, data=data, actor=request.user, address=client_address(request))
                messages.success(request, f"SLO {slo.name} defined. Its past is being counted; alerts follow at the "
                                          "next tick.")
            else:
                slo = services.slo_update(slo=slo, data=data, actor=request.user, address=client_address(request))
                messages.success(request, f"SLO {slo.name} saved.")
            return redirect("slo-detail", slug=slug, slo_id=slo.pk)
        except PROBLEMS as exc:
            messages.error(request, str(exc))
        values = {k: form.get(k, "") for k in ("name", "display_name", "description", "service_label", "labels",
                                                "objective_percent", "window", *SLI_FIELDS)}
        values["enforced"] = bool(form.get("enforced"))
        tiers_on = {t.name for t in TIERS if form.get(f"tier_{t.name}")}
    elif slo is not None:
        values = {"name": slo.name, "display_name": slo.display_name, "description": slo.description,
                  "service_label": slo.service, "labels": "\n".join(f"{k}={v}" for k, v in slo.labels.items()),
                  "objective_percent": f"{slo.objective * 100:g}", "window": format_duration(slo.window_seconds),
                  **sli_form_values(slo.sli.definition)}
        tiers_on = {name for name, t in slo.tiers.items() if t.get("enabled")}
    else:
        values = {"objective_percent": "99.9", "window": "28d", "sli_kind": "success"}
        tiers_on = {name for name, t in default_tiers().items() if t["enabled"]}
    window_seconds = _window_or(values.get("window"), 28 * 86400)
    return render(request, "slo/edit.html", {
        "project": project, "slo": slo, "values": values, "windows": WINDOWS, "tiers_on": tiers_on,
        "tiers": _tier_rows(default_tiers(), window_seconds), "plotly_version": plotly.__version__,
        **_sli_choices(SLO_KINDS), **_roles(request),
    })


def _window_or(text, default: int) -> int:
    try:
        return parse_duration(text or "", what="window")
    except ValueError:
        return default


@login_required
@require_POST
def sli_preview_view(request, slug):
    """The live preview of the form's SLI (JSON): per hour over the last three days, from the stored spans."""
    project = page_project(request, slug)
    try:
        spec = sli_spec_from_form(request.POST)
        preview = sli_preview(project=project, spec=spec, hours=72)
    except (ValueError, SliError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    series = [{"start": minute_of(b["start"]), "good": b["good"], "total": b["total"]} for b in preview["buckets"]]
    objective = None
    try:
        objective = float(request.POST.get("objective_percent", "")) / 100
    except ValueError:
        pass
    kind = SLI_KINDS[spec["kind"]]
    figure = (charts.sli_figure(series, objective=objective, title="SLI per hour, last 3 days") if kind.ratio
              else charts.counts_figure(series, title="Events per hour, last 3 days"))
    events = sum(b["total"] for b in series)
    good = sum(b["good"] for b in series)
    return JsonResponse({"description": preview["description"], "figure": figure, "events": events,
                         "sli": good / events if events and kind.ratio else None, "truncated": preview["truncated"]})


@login_required
@require_POST
def slo_delete_view(request, slug, slo_id):
    project = page_project(request, slug)
    slo = _slo(project, slo_id)
    try:
        services.slo_delete(slo=slo, actor=request.user, address=client_address(request))
        messages.success(request, f"SLO {slo.name} deleted.")
    except PROBLEMS as exc:
        messages.error(request, str(exc))
        return redirect("slo-detail", slug=slug, slo_id=slo_id)
    return redirect("slo-list", slug=slug)


# --- alert rules ------------------------------------------------------------------------------------------------


def rule_data_from_form(form) -> dict:
    try:
        threshold = float(form.get("threshold", ""))
    except ValueError:
        raise ValueError("threshold must be a number") from None
    return {"name": form.get("name", "").strip(), "description": form.get("description", "").strip(),
            "sli": sli_spec_from_form(form), "metric": form.get("metric", ""), "op": form.get("op", ""),
            "threshold": threshold, "window_seconds": parse_duration(form.get("window", "").strip() or "0", what="window"),
            "for_seconds": parse_duration(form.get("for", "").strip() or "0", what="for"),
            "severity": form.get("severity", "").strip() or "page",
            "labels": _key_values(form.get("labels", ""), "labels")}


@login_required
def rule_list(request, slug):
    project = page_project(request, slug)
    values = {"sli_kind": "findings", "metric": "count", "op": ">", "threshold": "0", "window": "5m", "for": "0m",
              "severity": "page"}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in ("name", "description", "metric", "op", "threshold", "window",
                                                        "for", "severity", "labels", *SLI_FIELDS)}
        try:
            if request.POST.get("delete"):
                rule = _posted(rules_for_project(project=project), request.POST["delete"], "rule")
                services.rule_delete(rule=rule, actor=request.user, address=client_address(request))
                messages.success(request, f"Alert rule {rule.name} deleted.")
            else:
                rule = services.rule_create(project=project, data=rule_data_from_form(request.POST), actor=request.user,
                                   address=client_address(request))
                messages.success(request, f"Alert rule {rule.name} saved; it is evaluated from the next tick.")
            return redirect("alert-rule-list", slug=slug)
        except PROBLEMS as exc:
            messages.error(request, str(exc))
    rules = list(rules_for_project(project=project))
    for rule in rules:
        rule.sli_text = Sli.parse(rule.sli.definition).describe()
        rule.window = format_duration(rule.window_seconds)
        rule.for_text = format_duration(rule.for_seconds)
    return render(request, "slo/rules.html", {
        "project": project, "rules": rules, "values": values, "metrics": METRICS, "ops": [">", ">=", "<", "<=", "==", "!="],
        **_sli_choices(list(SLI_KINDS)), **_roles(request),
    })


# --- alerts -----------------------------------------------------------------------------------------------------------

ALERT_TABS = ("firing", "pending", "resolved", "")


@login_required
def alert_list(request, slug):
    project = page_project(request, slug)
    state = request.GET.get("state", "firing")
    if state not in ALERT_TABS:
        state = "firing"
    alerts = alerts_for_project(project=project, state=state, fingerprint=request.GET.get("fingerprint", "")[:16])
    page = Paginator(alerts, 50).get_page(request.GET.get("page"))
    silences = active_silences(project_id=project.pk, now=timezone.now())
    for alert in page:
        alert.silence = silence_of(alert.labels, silences)
        alert.evidence_urls = [(f"trace …{t[-8:]}", f"/p/{slug}/traces/{t}/?span={s}") for t, s in alert.evidence]
        alert.silence_url = "?".join([f"/p/{slug}/silences/", urlencode(
            {"matchers": "\n".join(str(Matcher(k, "=", v)) for k, v in sorted(alert.labels.items())
                                   if k not in ("project",))})])
        alert.extra_labels = {k: v for k, v in alert.labels.items() if k not in ("alertname", "project")}
    counts = {s: alerts_for_project(project=project, state=s).count() for s in ("firing", "pending")}
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "slo/alerts.html", {"project": project, "page": page, "state": state, "tabs": ALERT_TABS,
                                               "counts": counts, "query": query.urlencode(), **_roles(request)})


@login_required
@require_POST
def alert_acknowledge_view(request, slug, alert_id):
    project = page_project(request, slug)
    alert = alerts_for_project(project=project, state="").filter(pk=alert_id).first()
    if alert is None:
        raise Http404("no such alert")
    try:
        if services.alert_acknowledge(alert=alert, comment=request.POST.get("comment", ""), actor=request.user,
                             address=client_address(request)):
            messages.success(request, f"Acknowledged {alert.labels.get('alertname')}.")
    except PROBLEMS as exc:
        messages.error(request, str(exc))
    return redirect(request.POST.get("next") or f"/p/{slug}/alerts/")


# --- silences ------------------------------------------------------------------------------------------------------------


@login_required
def silence_list(request, slug):
    project = page_project(request, slug)
    values = {"matchers": request.GET.get("matchers", ""), "duration": "2h", "comment": ""}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in ("matchers", "duration", "comment")}
        try:
            if request.POST.get("expire"):
                silence = _posted(silences_for_project(project=project), request.POST["expire"], "silence")
                services.silence_expire(silence=silence, actor=request.user, address=client_address(request))
                messages.success(request, "Silence expired.")
            else:
                ends_at = timezone.now() + timedelta(seconds=parse_duration(values["duration"].strip() or "0",
                                                                            what="duration"))
                services.silence_create(project=project, matchers=_lines(values["matchers"]), comment=values["comment"],
                               ends_at=ends_at, actor=request.user, address=client_address(request))
                messages.success(request, "Silence created.")
            return redirect("silence-list", slug=slug)
        except PROBLEMS as exc:
            messages.error(request, str(exc))
    now = timezone.now()
    silences = list(silences_for_project(project=project)[:200])
    firing = list(alerts_for_project(project=project, state="firing"))
    for silence in silences:
        silence.status = "expired" if silence.ends_at <= now else "active" if silence.starts_at <= now else "pending"
        silence.matcher_texts = [str(Matcher(**m)) for m in silence.matchers]
        silence.muting = sum(1 for a in firing if silence_of(a.labels, [(silence, [Matcher(**m) for m in silence.matchers])]))
    return render(request, "slo/silences.html", {"project": project, "silences": silences, "values": values,
                                                 **_roles(request)})


# --- channels -------------------------------------------------------------------------------------------------------------


@login_required
def channel_list(request, slug):
    project = page_project(request, slug)
    values = {"kind": "webhook", "group_by": "alertname", "repeat_interval": "4h"}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in ("kind", "name", "url", "to", "group_by", "repeat_interval")}
        channel = None
        for action in ("test", "delete"):
            if request.POST.get(action):
                channel = _posted(channels_for_project(project=project), request.POST[action], "channel")
        try:
            if request.POST.get("test"):
                problem = services.channel_test(channel=channel, actor=request.user, address=client_address(request))
                if problem:
                    messages.error(request, f"The test notification to {channel.name} failed: {problem}")
                else:
                    messages.success(request, f"Test notification delivered to {channel.name}.")
            elif request.POST.get("delete"):
                services.channel_delete(channel=channel, actor=request.user, address=client_address(request))
                messages.success(request, f"Channel {channel.name} deleted.")
            else:
                channel = services.channel_create(project=project, actor=request.user, address=client_address(request), data={
                    "kind": values["kind"], "name": values["name"], "url": values["url"], "to": values["to"],
                    "group_by": _names(values["group_by"]),
                    "repeat_interval_seconds": parse_duration(values["repeat_interval"].strip() or "4h",
                                                              what="repeat interval")})
                messages.success(request, f"Channel {channel.name} added.")
            return redirect("channel-list", slug=slug)
        except PROBLEMS as exc:
            messages.error(request, str(exc))
    channels = list(channels_for_project(project=project))
    for channel in channels:
        channel.repeat = format_duration(channel.repeat_interval_seconds)
    return render(request, "slo/channels.html", {"project": project, "channels": channels, "values": values,
                                                 "kinds": Channel.Kind.values, **_roles(request)})
