"""One way to declare a Celery task, for the whole project (in the manner of Sentry's `instrumented_task`).

Every task names itself, its queue, its soft and hard time limits and its retry policy, and
logs how long it ran. Messages are acknowledged late and given back to the broker when the
worker process dies, so a killed worker loses no message; the tasks are idempotent.

Queues keep kinds of work apart, so a rollback never waits behind a long analysis:
- "sweep": short periodic housekeeping (the quiet-trace sweep, retention);
- "analysis": the pipeline's stages over quiet traces (governance.pipeline.stages);
- "control": what people wait for (rollbacks, notifications, ticks).
A worker started without -Q consumes all of them (they are the app's `task_queues`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import wraps

from celery import current_task, shared_task
from django.db import InterfaceError, OperationalError

from governance import metrics
from governance.logs import task_id_var

log = logging.getLogger("causeway.tasks")

QUEUES = ("sweep", "analysis", "control")
QUEUE_OF: dict[str, str] = {}  # task name -> queue, filled by instrumented_task; read by `route`

# Errors worth retrying as they are: the database or the broker was briefly unavailable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, work that failed is tried again.

    `max_attempts` counts the runs that failed for a reason that may be the work's own (an
    exception, a worker killed or out of time); transient errors do not use it up. The wait
    before try n (n >= 2) is backoff_seconds * 2 ** (n - 2), at most backoff_max_seconds.
    """

    max_attempts: int = 3
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 300.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed run."""
        return min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, failures - 1))


NO_RETRY = RetryPolicy(max_attempts=1)


def instrumented_task(*, name: str, queue: str, time_limit: int, soft_time_limit: int | None = None,
                      retry: RetryPolicy = NO_RETRY, expires: float | None = None):
    """Declare a task: `@instrumented_task(name="traces.retention", queue="sweep", time_limit=600)`.

    Transient errors (database or broker briefly gone) are retried by Celery with the policy's
    backoff; other exceptions fail the task and are logged. Pipeline stages keep their own
    durable retry state (governance.pipeline), with a RetryPolicy too.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; queues are {', '.join(QUEUES)}")

    def decorate(func):
        @wraps(func)
        def timed(*args, **kwargs):
            began = time.monotonic()
            outcome = "failed"
            request = getattr(current_task, "request", None)
            token = task_id_var.set(getattr(request, "id", None) or "")
            try:
                result = func(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                seconds = time.monotonic() - began
                metrics.TASK_SECONDS.labels(task=name, outcome=outcome).observe(seconds)
                if outcome == "failed":
                    metrics.TASK_FAILURES.labels(task=name).inc()
                log.info("task %s %s in %.3f s", name, outcome, seconds)
                task_id_var.reset(token)

        QUEUE_OF[name] = queue
        options = {
            "name": name, "time_limit": time_limit,
            "soft_time_limit": soft_time_limit if soft_time_limit is not None else max(1, time_limit - 10),
            "acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
        }
        if expires is not None:
            options["expires"] = expires
        if retry.max_attempts > 1:
            options.update(autoretry_for=TRANSIENT_ERRORS, max_retries=retry.max_attempts - 1,
                           retry_backoff=retry.backoff_seconds, retry_backoff_max=retry.backoff_max_seconds,
                           retry_jitter=True)
        return shared_task(**options)(timed)

    return decorate


def route(name, args, kwargs, options, task=None, **extra):
    """Celery router (the app's task_routes): each task to the queue it was declared with."""
    queue = QUEUE_OF.get(name)
    return {"queue": queue} if queue else None
