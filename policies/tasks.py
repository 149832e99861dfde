"""Celery tasks for policies: evaluate the active versions on traces that turned quiet."""

from __future__ import annotations

from celery import shared_task

from policies.services import violations_record


@shared_task(name="policies.evaluate", time_limit=600, soft_time_limit=570, acks_late=True)
def evaluate_traces(project_id: int, trace_ids: list[str]) -> int:
    """Queued by traces.analyse after findings; stores new violations (never one twice), returns how many."""
    return violations_record(project_id=project_id, trace_ids=list(trace_ids))
