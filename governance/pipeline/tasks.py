"""Celery tasks of the pipeline: the sweep (beat, every 2 s) and one task per declared stage."""

from __future__ import annotations

import logging
import time

from celery.signals import worker_init, worker_process_init
from django.conf import settings

from governance.pipeline.services import batches_nudge_due, quiet_traces_hand_on, stage_run
from governance.pipeline.stages import STAGES, Stage
from governance.task_base import instrumented_task

log = logging.getLogger(__name__)


@instrumented_task(name="pipeline.sweep", queue="sweep", time_limit=60, soft_time_limit=50, expires=30)
def sweep() -> int:
    """Hand quiet traces on to the first stage, and queue tasks for work nobody has taken (new, backed
    off long enough, or left by a dead worker). Returns how many traces were handed on."""
    handed = quiet_traces_hand_on(quiet_seconds=settings.TRACE_QUIET_SECONDS)
    batches_nudge_due()
    return handed


# This process's worker node name, as its own queue is named (Celery's worker_direct): set as the worker
# starts, before it forks its pool. A task's request.hostname is not it in every pool (the solo pool
# gives the host name), and a holder named after a queue nobody consumes would strand the analysis.
_node_name = ""


@worker_init.connect
def _node_name_keep(sender, **kwargs) -> None:
    global _node_name
    _node_name = sender.hostname


def _stage_task(stage: Stage):
    # Each stage's failures are recorded on its batches (durable retries, dead letters), so the
    # task itself is not retried by Celery: a lost message is sent again by the sweep.
    @instrumented_task(name=stage.task_name, queue=stage.queue, time_limit=stage.time_limit,
                       soft_time_limit=stage.soft_time_limit)
    def run_stage(project_id: int) -> int:
        return stage_run(stage=stage, project_id=project_id, worker=_node_name)

    return run_stage


STAGE_TASKS = {stage.name: _stage_task(stage) for stage in STAGES}


@worker_process_init.connect
def _analysis_kernels_load(**kwargs) -> None:
    """A worker process that takes the analysis queue loads the analysis's compiled loops as it starts
    (compiles them, the first time after an install), not in its first analysis run: that took 7 s
    while the first quiet traces waited. A worker kept for other queues (`-Q control`) never loads
    them (Numba is about 80 MB a process)."""
    from governance.celery import app
    from traces.analysis import kernels_load

    if "analysis" not in app.amqp.queues.consume_from:
        return
    began = time.perf_counter()
    kernels_load()
    log.info("analysis kernels loaded in %.1f s", time.perf_counter() - began)
