"""Celery tasks of SLOs and alerts: the rollup sweep and the evaluation tick (beat), sending one
notification, and counting a new SLI over the stored past. Each takes ids and calls a service."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.conf import settings

from governance.slo.evaluation import evaluate_tick, notification_send, notifications_due
from governance.slo.rollups import lease_claim, lease_release, rollup_sweep, rollups_expire, sli_backfill

ROLLUP_LEASE = "slo-rollup"


@shared_task(name="slo.rollup_recent", time_limit=300, soft_time_limit=280, expires=60)
def rollup_recent() -> int:
    """Count the SLIs over traces completed since the last run (until the pipeline runs sli_rollups_update
    as a stage). One run at a time: an overlapping one returns at once."""
    holder = uuid.uuid4().hex
    if not lease_claim(ROLLUP_LEASE, seconds=330, holder=holder):
        return 0
    try:
        counted = rollup_sweep()
        rollups_expire()
        return counted
    finally:
        lease_release(ROLLUP_LEASE, holder=holder)


@shared_task(name="slo.evaluate", time_limit=240, soft_time_limit=220, expires=60)
def evaluate() -> int:
    """The evaluation tick, then a send task for every notification that is due. Returns how many."""
    evaluate_tick()
    due = notifications_due()
    for notification_id in due:
        notify.delay(notification_id)
    return len(due)


@shared_task(name="slo.notify", time_limit=120, soft_time_limit=100, acks_late=True)
def notify(notification_id: int) -> str:
    return notification_send(notification_id=notification_id)


@shared_task(name="slo.sli_backfill", time_limit=120, soft_time_limit=100, acks_late=True)
def sli_backfill_task(sli_id: int) -> bool:
    """Count a new SLI over the stored past; carries on in a fresh task while there is more."""
    done = sli_backfill(sli_id=sli_id, seconds=min(50.0, settings.CELERY_TASK_TIME_LIMIT / 3))
    if not done:
        sli_backfill_task.delay(sli_id)
    return done
