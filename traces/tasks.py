"""Celery tasks for traces: retention and the span table's partitions. (What runs on quiet traces is
governance.pipeline.)"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from governance.models import Project
from governance.task_base import RetryPolicy, instrumented_task
from traces import partitions
from traces.models import Span, Trace


@instrumented_task(name="traces.span_partitions", queue="sweep", time_limit=300, expires=3600,
                   retry=RetryPolicy(max_attempts=3, backoff_seconds=30))
def span_partitions() -> dict:
    """PostgreSQL: create the span table's partitions from today to DAYS_AHEAD days ahead and drop those
    past every project's retention. Idempotent; a no-op on SQLite (see traces.partitions)."""
    now = timezone.now()
    return {"created": partitions.partitions_create(partitions.days_ahead(now.date())),
            "dropped": partitions.expired_partitions_drop(now)}


@instrumented_task(name="traces.retention", queue="sweep", time_limit=600, soft_time_limit=590, expires=600,
                   retry=RetryPolicy(max_attempts=3, backoff_seconds=30))
def retention(max_seconds: float = 60.0) -> int:
    """Delete spans and trace summaries older than each project's retention, in bounded batches.

    On PostgreSQL the days past every project's retention are dropped whole first (traces.partitions),
    and the projects with the longest retention leave the rest of their oldest day to that drop: their
    spans are deleted row by row only before that day (in the DEFAULT partition, if any), so such a
    project keeps its spans up to a day longer than its retention. Shorter retentions delete rows.

    Each project gets a fair share of the time: what is left divided by the projects still to
    go, so one big project cannot starve the others; time a project does not need goes to the
    next. A project cut short carries on at the next run (every 10 minutes).
    """
    began = time.monotonic()
    partitions.expired_partitions_drop(timezone.now())
    projects = list(Project.objects.order_by("pk"))
    longest = max((p.retention_days for p in projects), default=0)
    deleted = 0
    for done, project in enumerate(projects):
        left = max_seconds - (time.monotonic() - began)
        deleted += project_retention(project, deadline=time.monotonic() + left / (len(projects) - done),
                                     whole_days=partitions.is_partitioned() and project.retention_days == longest)
    return deleted


def project_retention(project: Project, *, deadline: float, whole_days: bool = False) -> int:
    """Spans of one project deleted past its retention, until `deadline` (time.monotonic()); with
    `whole_days`, only those before the start of the oldest day within retention (its partition is
    dropped whole later)."""
    cutoff_ns = int((timezone.now() - timedelta(days=project.retention_days)).timestamp() * 1e9)
    if whole_days:
        cutoff_ns -= cutoff_ns % partitions.NS_PER_DAY
    deleted = 0
    while time.monotonic() < deadline:
        # Span's primary key is (project, trace_id, span_id): a batch is deleted by its keys (and, on
        # PostgreSQL, looked up only in the day partitions before the cutoff).
        keys = list(
            Span.objects.filter(project=project, start_ns__lt=cutoff_ns).values_list("pk", flat=True)[: settings.RETENTION_BATCH]
        )
        if not keys:
            # Only once the old spans are all gone: ingest takes a trace without a row for one with no
            # stored spans (it skips the duplicate check), so no span may outlive its trace row.
            Trace.objects.filter(project=project, end_ns__lt=cutoff_ns).exclude(state=Trace.State.OPEN).delete()
            break
        deleted += Span.objects.filter(pk__in=keys, start_ns__lt=cutoff_ns).delete()[0]
    return deleted
