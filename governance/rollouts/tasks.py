"""Celery tasks of rollouts: the beat tick. It takes no arguments and calls a service."""

from __future__ import annotations

from governance.rollouts.services import rollouts_tick
from governance.task_base import RetryPolicy, instrumented_task


@instrumented_task(name="rollouts.tick", queue="control", time_limit=120, soft_time_limit=100, expires=60,
                   retry=RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_max_seconds=30))
def tick() -> int:
    """Drive every active rollout on; each is claimed with SKIP LOCKED, so an overlapping or redelivered
    tick passes over the rollouts another holds and never advances a step twice. Returns transitions made."""
    return rollouts_tick()
