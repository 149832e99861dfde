"""Rollout pages: the list, the create form (from a template), and the detail page with its step bar,
canary-vs-baseline charts per metric, analysis runs, audit trail and action buttons. Thin."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import plotly
import plotly.graph_objects as go
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.models import AuditRecord, Role
from governance.rollouts import services
from governance.rollouts.canary import version_examples, version_series
from governance.rollouts.core.judgement import METRIC_KINDS, VersionSample, metrics_parse, quantile
from governance.rollouts.core.plan import TEMPLATES, step_text
from governance.rollouts.models import Rollout
from governance.rollouts.selectors import rollouts_for_project, step_label
from governance.services import PermissionDenied, client_address
from governance.slo.models import AlertRule, Slo
from governance.views import page_project
from traces.timeline import timeline_json

CHART_MINUTES = 360  # the charts show at most the last six hours of a rollout
LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "height": 260, "template": "plotly_white",
          "legend": {"orientation": "h", "y": -0.25}}
COLORS = {"baseline": "#2456c9", "canary": "#d97706"}

# What each action does, as the confirmation tells it; the role it needs.
ACTIONS = {
    "start": (services.rollout_start, Role.APPROVER, "Start rollout {name}: its first step ({first}) runs now."),
    "approve": (services.rollout_approve, Role.APPROVER,
                "Approve {step} of {name}: the rollout goes on to the next step ({next})."),
    "promote": (services.rollout_promote, Role.APPROVER,
                ("Promote {name} fully: every agent of {service} moves to {canary} at its next flag evaluation, "
                 "and {canary} becomes the known-good version.")),
    "abort": (services.rollout_abort, Role.OPERATOR,
              "Abort {name}: the canary weight goes to 0 and every agent returns to {known_good}."),
    "rollback": (services.rollout_rollback, Role.OPERATOR,
                 ("Roll back {name}: every agent of {service} returns to {known_good} at its next flag evaluation "
                  "(canary weight 0).")),
    "retry": (services.rollout_retry, Role.OPERATOR, "Retry {name}: {retry_what}."),
}


def _can(request, role) -> bool:
    return request.membership is not None and request.membership.allows(role)


def _rollout(project, rollout_id: int) -> Rollout:
    rollout = Rollout.objects.filter(project=project, pk=rollout_id).select_related("project", "created_by").first()
    if rollout is None:
        raise Http404(f"project {project.slug} has no rollout {rollout_id}")
    return rollout


@login_required
def rollout_list(request, slug):
    project = page_project(request, slug)
    rollouts = list(rollouts_for_project(project=project)[:200])
    for rollout in rollouts:
        rollout.step_label = step_label(rollout)
        rollout.state_text = services.state_text(rollout)
    return render(request, "rollouts/list.html", {"project": project, "rollouts": rollouts,
                                                  "can_create": _can(request, Role.APPROVER)})


@login_required
def rollout_new(request, slug):
    project = page_project(request, slug)
    form = request.POST if request.method == "POST" else {"template": "standard"}
    if request.method == "POST":
        try:
            guards = {"alert_rules": [int(i) for i in request.POST.getlist("guard_rules")],
                      "slos": [int(i) for i in request.POST.getlist("guard_slos")],
                      "action": request.POST.get("guard_action", "rollback")}
            steps = None
            if request.POST.get("steps", "").strip():
                try:
                    steps = json.loads(request.POST["steps"])
                except json.JSONDecodeError as exc:
                    raise ValueError(f"steps: not JSON ({exc.msg}, line {exc.lineno})") from None
            rollout = services.rollout_create(
                project=project, name=form.get("name", ""), service=form.get("service", ""),
                agent=form.get("agent", ""), baseline_version=form.get("baseline_version", ""),
                canary_version=form.get("canary_version", ""), flag_key=form.get("flag_key", ""),
                template=form.get("template", ""), steps=steps, guards=guards,
                analysis={"on_failure": form.get("on_failure", "rollback")}, actor=request.user,
                address=client_address(request))
            messages.success(request, f"Rollout {rollout.name} created; start it when ready.")
            return redirect("rollout-detail", slug=slug, rollout_id=rollout.pk)
        except (ValueError, PermissionDenied, services.RolloutConflict) as exc:
            messages.error(request, str(exc))
    return render(request, "rollouts/new.html", {
        "project": project, "form": form, "can_create": _can(request, Role.APPROVER),
        "templates": [(name, t["label"], json.dumps(t["steps"])) for name, t in TEMPLATES.items()],
        "rules": AlertRule.objects.filter(project=project).order_by("name"),
        "slos": Slo.objects.filter(project=project).order_by("name"),
    })


@login_required
def rollout_detail(request, slug, rollout_id):
    project = page_project(request, slug)
    rollout = _rollout(project, rollout_id)
    runs = list(rollout.runs.order_by("-attempt", "-step_index"))
    first, last = _chart_minutes(rollout, runs)
    baseline = version_series(rollout, rollout.baseline_version, first, last)
    canary = version_series(rollout, rollout.canary_version, first, last)
    metrics = metrics_parse(rollout.metrics)
    charts = [_metric_chart(m, baseline, canary, first, last) for m in metrics]
    links = _metric_links(rollout, metrics, first, last)
    audit = AuditRecord.objects.filter(project=project, object_type="rollout", object_id=str(rollout.pk)).order_by("-id")
    return render(request, "rollouts/detail.html", {
        "project": project, "rollout": rollout, "runs": runs, "steps": _step_bar(rollout),
        "charts": [{"id": f"chart-{i}", "title": c["layout"]["title"]["text"], "links": links[i]}
                   for i, c in enumerate(charts)],
        "figures_json": timeline_json({f"chart-{i}": c for i, c in enumerate(charts)}),
        "plotly_version": plotly.__version__, "audit": audit[:100], "actions": _actions(request, rollout),
        "state_text": services.state_text(rollout), "guards": _guard_names(rollout),
    })


def _guard_names(rollout: Rollout) -> list[str]:
    guards = rollout.guards or {}
    names = [f"alert rule {n}" for n in AlertRule.objects.filter(pk__in=guards.get("alert_rules") or [])
             .values_list("name", flat=True)]
    names += [f"SLO {n}" for n in Slo.objects.filter(pk__in=guards.get("slos") or []).values_list("name", flat=True)]
    return names


def _step_bar(rollout: Rollout) -> list[dict]:
    bar = []
    for i, step in enumerate(rollout.steps):
        if rollout.state == Rollout.State.PROMOTED or i < rollout.step_index:
            where = "done"
        elif i == rollout.step_index and rollout.state in Rollout.ACTIVE_STATES:
            where = "paused" if rollout.state == Rollout.State.PAUSED else "current"
        else:
            where = "todo"
        bar.append({"text": step_text(step), "kind": step["kind"], "where": where, "number": i + 1})
    return bar


def _chart_minutes(rollout: Rollout, runs) -> tuple[int, int]:
    end = rollout.ended_at or timezone.now()
    last = int(end.timestamp()) // 60
    began = min([r.started_at for r in runs] + [rollout.created_at])
    return max(int(began.timestamp()) // 60, last - CHART_MINUTES + 1), last


def _figure(metric, side: VersionSample) -> float | None:
    kind = metric.kind
    if kind in ("latency_p95_ratio", "latency_mann_whitney"):
        # The U test compares whole distributions; its chart shows their middle, the p95 chart their tail.
        q = 0.95 if kind == "latency_p95_ratio" else 0.5
        return quantile(side.durations_ms, q) if side.durations_ms else None
    if kind == "error_rate":
        return 100 * side.errors / side.spans if side.spans else None
    if kind == "idempotency_success":
        return 100 * side.idempotent_ok / side.idempotent if side.idempotent else None
    if kind == "conflict_rate":
        return 100 * side.conflicts / side.writes if side.writes else None
    if kind == "findings_per_1k":
        found = side.findings.get(metric.finding_kind, 0) if metric.finding_kind else sum(side.findings.values())
        return 1000 * found / side.spans if side.spans else None
    return 1000 * side.violations / side.spans if side.spans else None


UNITS = {"error_rate": "errors (%)", "latency_p95_ratio": "p95 (ms)", "latency_mann_whitney": "median (ms)",
         "idempotency_success": "once and OK (%)", "conflict_rate": "writes in conflict (%)",
         "findings_per_1k": "per 1,000 spans", "violations_per_1k": "per 1,000 spans"}


CHART_TITLES = {"latency_mann_whitney": "Latency, median (Mann-Whitney U test)"}


def _at(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, tz=UTC).isoformat()


def _metric_chart(metric, baseline: dict, canary: dict, first: int, last: int) -> dict:
    fig = go.Figure()
    for name, series in (("baseline", baseline), ("canary", canary)):
        minutes = sorted(series)
        fig.add_trace(go.Scatter(
            x=[_at(m) for m in minutes],
            y=[_figure(metric, series[m]) for m in minutes], mode="lines+markers", name=name, connectgaps=False,
            line={"color": COLORS[name]}, hovertemplate="%{x}<br>%{y:.3g}<extra>" + name + "</extra>"))
    title = metric.name or CHART_TITLES.get(metric.kind) or METRIC_KINDS[metric.kind].label.split(" (")[0] + (
        f": {metric.finding_kind}" if metric.finding_kind else "")
    # The whole rollout on the x axis, by the minute, even when only a minute has data so far.
    fig.update_layout(**LAYOUT, title={"text": title}, yaxis={"title": UNITS[metric.kind], "rangemode": "tozero"},
                      xaxis={"type": "date", "range": [_at(first - 1), _at(last + 1)], "tickformatstops": [
                          {"dtickrange": [None, 60000], "value": "%H:%M:%S"},
                          {"dtickrange": [60000, None], "value": "%H:%M"}]})
    return fig.to_plotly_json()


def _metric_links(rollout: Rollout, metrics, first: int, last: int) -> list[list[tuple[str, str]]]:
    """Per metric, where to see what is behind it: the traces search (service, time range, errors or the
    finding kind), the findings page, the violations page, and example canary traces."""
    slug = rollout.project.slug
    since = datetime.fromtimestamp(first * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = datetime.fromtimestamp((last + 1) * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = {"service": rollout.service, "since": since, "until": until}
    if rollout.agent:
        base["agent"] = rollout.agent
    traces = reverse("trace-list", args=[slug])
    examples = version_examples(rollout, rollout.canary_version, first, last)
    links = []
    for metric in metrics:
        kind = metric.kind
        row = []
        if kind == "error_rate":
            row.append(("failed traces", f"{traces}?{urlencode({**base, 'status': 'error'})}"))
            row += _examples(slug, examples.get("errors", []))
        elif kind.startswith("latency"):
            row.append(("traces", f"{traces}?{urlencode(base)}"))
            row += _examples(slug, examples.get("slow", []), "slowest canary trace")
        elif kind == "idempotency_success":
            row.append(("duplicate side effects", f"{reverse('finding-list', args=[slug])}?kind=duplicate_side_effect"))
            row += _examples(slug, examples.get("duplicates", []))
        elif kind == "conflict_rate":
            row.append(("traces", f"{traces}?{urlencode(base)}"))
            row += _examples(slug, examples.get("conflicts", []))
        elif kind == "findings_per_1k":
            finding = {"kind": metric.finding_kind} if metric.finding_kind else {}
            row.append(("findings", f"{reverse('finding-list', args=[slug])}?{urlencode(finding)}"))
            if metric.finding_kind:
                row.append(("traces with them",
                            f"{traces}?{urlencode({**base, 'finding_kind': metric.finding_kind})}"))
        else:
            row.append(("violations", f"{reverse('violation-list', args=[slug])}"))
        links.append(row)
    return links


def _examples(slug: str, trace_ids: list[str], label: str = "canary trace") -> list[tuple[str, str]]:
    return [(f"{label} {t[:8]}", reverse("trace-detail", args=[slug, t])) for t in trace_ids[:3]]


def _actions(request, rollout: Rollout) -> list[dict]:
    state, reason = rollout.state, rollout.pause_reason
    allowed = {
        "start": state == Rollout.State.PENDING,
        "approve": state == Rollout.State.PAUSED and reason in (Rollout.PauseReason.AWAITING_APPROVAL,
                                                                Rollout.PauseReason.INCONCLUSIVE,
                                                                Rollout.PauseReason.ANALYSIS_FAILED),
        "promote": state in (Rollout.State.PENDING, *Rollout.ACTIVE_STATES),
        "rollback": state in Rollout.ACTIVE_STATES,
        "abort": state in (Rollout.State.PENDING, *Rollout.ACTIVE_STATES),
        "retry": services.retryable(rollout),
    }
    steps = rollout.steps
    current = steps[rollout.step_index] if rollout.step_index < len(steps) else None
    upcoming = steps[rollout.step_index + 1] if rollout.step_index + 1 < len(steps) else None
    words = {"name": rollout.name, "service": rollout.service, "canary": rollout.canary_version,
             "known_good": rollout.known_good_version,
             "first": step_text(steps[0]) if steps else "none",
             "step": f"step {rollout.step_index + 1} ({step_text(current)})" if current else "the last step",
             "next": step_text(upcoming) if upcoming else "promotion to 100%",
             "retry_what": f"run step {rollout.step_index + 1} again" if state == Rollout.State.PAUSED
             else "start again from the first step as a new attempt"}
    labels = {"start": "Start", "approve": "Approve", "promote": "Promote", "abort": "Abort", "rollback": "Roll back",
              "retry": "Retry"}
    return [{"name": name, "label": labels[name], "confirm": text.format(**words),
             "style": "danger" if name in ("rollback", "abort") else ""}
            for name, (_, role, text) in ACTIONS.items() if allowed[name] and _can(request, role)]


@login_required
@require_POST
def rollout_action(request, slug, rollout_id, action):
    project = page_project(request, slug)
    rollout = _rollout(project, rollout_id)
    if action not in ACTIONS:
        raise Http404(f"no action {action!r}")
    service = ACTIONS[action][0]
    try:
        version = int(request.POST.get("version", ""))
    except ValueError:
        version = None
    try:
        service(rollout=rollout, actor=request.user, reason=request.POST.get("reason", ""), expected_version=version,
                address=client_address(request))
        messages.success(request, f"{action.capitalize()}: done.")
    except PermissionDenied as exc:
        raise DjangoPermissionDenied(str(exc)) from None
    except services.RolloutConflict as exc:
        messages.error(request, f"Not done: {exc}.")
    return redirect("rollout-detail", slug=slug, rollout_id=rollout.pk)
