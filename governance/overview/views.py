from collections import Counter

import plotly
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from governance.overview import charts
from governance.overview.selectors import (
    ACTIVITY_MINUTES,
    TREND_DAYS,
    VIOLATION_HOURS,
    findings_by_kind,
    firing_alerts,
    slo_rows,
    span_activity,
    trend_days,
    violations_by_policy,
)
from governance.rollouts.selectors import active_rollouts
from governance.rollouts.services import state_text
from governance.views import page_project
from traces.selectors import analysis_lag
from traces.timeline import timeline_json

SLOS_SHOWN = 10  # the worst first; the SLO page lists them all


@login_required
def overview(request, slug):
    """The project's home: how its agents are doing, each figure linking to the page that explains it."""
    project = page_project(request, slug)
    now = timezone.now()
    activity = span_activity(project=project, now=now)
    finding_rows = findings_by_kind(project=project, now=now)
    firing_count, firing = firing_alerts(project=project)
    slos = slo_rows(project=project)
    rollouts = active_rollouts(project=project)
    for rollout in rollouts:
        rollout.state_text = state_text(rollout)
    figures = {"spans": charts.spans_per_minute_figure(activity),
               "findings": charts.findings_trend_figure(finding_rows, trend_days(now=now)) if finding_rows else None}
    return render(request, "overview/overview.html", {
        "project": project, "activity": activity, "spans_last_hour": sum(activity.per_minute.values()),
        "finding_rows": finding_rows, "open_findings": sum(r.open for r in finding_rows),
        "slos": slos[:SLOS_SHOWN], "slo_count": len(slos),
        "slo_words": Counter(row.word for row in slos).most_common(), "firing_count": firing_count, "firing": firing,
        "rollouts": rollouts,
        "violations": violations_by_policy(project=project, now=now),
        "lag": analysis_lag(project=project, now=now), "quiet_seconds": settings.TRACE_QUIET_SECONDS,
        "activity_minutes": ACTIVITY_MINUTES, "trend_days": TREND_DAYS, "violation_hours": VIOLATION_HOURS,
        "figures_json": timeline_json(figures), "plotly_version": plotly.__version__,
    })
