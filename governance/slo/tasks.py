"""Celery tasks of SLOs and alerts: the evaluation tick (beat), sending one notification, counting a
new SLI over the stored past, and expiring old rollups (beat). Each takes ids and calls a service.

SLI rollups of new traces are not a task here: they are a stage of the post-ingest pipeline
(governance/pipeline/stages.py, `sli_rollups`), run on quiet traces after their analysis.
"""

from __future__ import annotations

import time

from django.conf import settings

from governance.slo.evaluation import evaluate_tick, notification_send, notifications_due
from governance.slo.rollups import rollups_expire, sli_backfill
from governance.task_base import RetryPolicy, instrumented_task

# The database or broker briefly gone: try again soon. A webhook's own failures are not retried
# here but on the Notification row (durable backoff, governance.slo.evaluation.notification_send).
TRANSIENT_RETRY = RetryPolicy(max_attempts=5, backoff_seconds=2, backoff_max_seconds=60)


@instrumented_task(name="slo.evaluate", queue="control", time_limit=240, soft_time_limit=220, expires=60,
                   retry=TRANSIENT_RETRY)
def evaluate() -> int:
    """The evaluation tick, then a send task for every notification that is due. Returns how many.
    A tick that overlaps another does nothing (the tick's lease), so a retry or a late one is harmless."""
    evaluate_tick()
    due = notifications_due()
    for notification_id in due:
        notify.delay(notification_id)
    return len(due)


@instrumented_task(name="slo.notify", queue="control", time_limit=120, soft_time_limit=100, retry=TRANSIENT_RETRY)
def notify(notification_id: int) -> str:
    """Send one notification; a second run finds it claimed or sent and sends nothing."""
    return notification_send(notification_id=notification_id)


@instrumented_task(name="slo.sli_backfill", queue="analysis", time_limit=120, soft_time_limit=100,
                   retry=TRANSIENT_RETRY)
def sli_backfill_task(sli_id: int) -> bool:
    """Count a new SLI over the stored past; carries on in a fresh task while there is more."""
    done = sli_backfill(sli_id=sli_id, seconds=min(50.0, settings.CELERY_TASK_TIME_LIMIT / 3))
    if not done:
        sli_backfill_task.delay(sli_id)
    return done


@instrumented_task(name="slo.rollups_expire", queue="sweep", time_limit=300, soft_time_limit=280, expires=600,
                   retry=TRANSIENT_RETRY)
def expire_rollups() -> int:
    """Delete rollup rows older than the longest SLO window, a batch at a time for at most a minute
    (the next run goes on). Returns rows deleted."""
    deadline = time.monotonic() + 60
    deleted = 0
    while time.monotonic() < deadline:
        batch = rollups_expire()
        deleted += batch
        if batch == 0:
            break
    return deleted
