"""Celery tasks for traces: the quiet-trace sweep (debounce) and retention."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from governance.models import Project
from policies.tasks import evaluate_traces
from traces.models import Span, Trace
from traces.services import findings_update

log = logging.getLogger(__name__)
SWEEP_BATCH = 500


def quiet_traces_claim(*, quiet_seconds: float, limit: int = SWEEP_BATCH) -> dict[int, list[str]]:
    """Mark traces complete once no span arrived for `quiet_seconds`; returns them by project.

    Rows are claimed under a row lock (skipping rows another sweeper holds), so
    two sweepers never hand on one trace twice.
    """
    cutoff = timezone.now() - timedelta(seconds=quiet_seconds)
    claimed: dict[int, list[str]] = {}
    with transaction.atomic():
        rows = list(
            Trace.objects.select_for_update(skip_locked=True)
            .filter(state=Trace.State.OPEN, last_received_at__lte=cutoff)
            .order_by("last_received_at")
            .values_list("pk", "project_id", "trace_id")[:limit]
        )
        if not rows:
            return claimed
        Trace.objects.filter(pk__in=[pk for pk, _, _ in rows], state=Trace.State.OPEN).update(
            state=Trace.State.COMPLETE, completed_at=timezone.now()
        )
        for _, project_id, trace_id in rows:
            claimed.setdefault(project_id, []).append(trace_id)
    return claimed


@shared_task(name="traces.sweep_quiet", time_limit=60, expires=30)
def sweep_quiet() -> int:
    """Hand on traces that turned quiet. Beat runs it every few seconds."""
    claimed = quiet_traces_claim(quiet_seconds=settings.TRACE_QUIET_SECONDS)
    for project_id, trace_ids in claimed.items():
        traces_completed(project_id, trace_ids)
    return sum(len(ids) for ids in claimed.values())


def traces_completed(project_id: int, trace_ids: list[str]) -> None:
    """Traces turned quiet: analyse them once this transaction's claim is visible."""
    for start in range(0, len(trace_ids), 100):
        analyse_traces.delay(project_id, trace_ids[start:start + 100])


@shared_task(name="traces.analyse", time_limit=600, acks_late=True)
def analyse_traces(project_id: int, trace_ids: list[str]) -> int:
    found = findings_update(project_id=project_id, trace_ids=trace_ids)
    # Policies are evaluated on the same traces, after their findings.
    evaluate_traces.delay(project_id, trace_ids)
    return found


@shared_task(name="traces.retention", time_limit=600, expires=600)
def retention(max_seconds: float = 60.0) -> int:
    """Delete spans and trace summaries older than each project's retention, in bounded batches."""
    deadline = time.monotonic() + max_seconds
    deleted = 0
    for project in Project.objects.all():
        cutoff_ns = int((timezone.now() - timedelta(days=project.retention_days)).timestamp() * 1e9)
        spans_gone = False
        while time.monotonic() < deadline:
            # Span's primary key is (project, trace_id, span_id): a batch is deleted by its keys.
            keys = list(
                Span.objects.filter(project=project, start_ns__lt=cutoff_ns).values_list("pk", flat=True)[: settings.RETENTION_BATCH]
            )
            if not keys:
                spans_gone = True
                break
            deleted += Span.objects.filter(pk__in=keys).delete()[0]
        if spans_gone:
            # Only once the old spans are all gone: ingest takes a trace without a row for one with no
            # stored spans (it skips the duplicate check), so no span may outlive its trace row.
            Trace.objects.filter(project=project, end_ns__lt=cutoff_ns, state=Trace.State.COMPLETE).delete()
    return deleted
