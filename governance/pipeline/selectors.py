"""Reads of the pipeline's state: what each stage has waiting, and the dead letters."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from governance.pipeline.models import StageBatch, StageHolder
from governance.pipeline.stages import STAGES, Stage


@dataclass(frozen=True)
class StageBacklog:
    stage: Stage
    waiting: int  # traces in batches not yet claimed (new or backing off)
    running: int  # traces in batches a run has claimed
    dead: int  # traces given up on
    held_by: str  # the worker the project's runs of a sticky stage go to ("" when any worker takes them)


def stage_backlogs(*, project) -> list[StageBacklog]:
    counts: dict[tuple[str, str], int] = {}
    for stage, state, trace_ids in StageBatch.objects.filter(project=project).values_list("stage", "state", "trace_ids"):
        counts[(stage, state)] = counts.get((stage, state), 0) + len(trace_ids)
    held = dict(StageHolder.objects.filter(project=project, until__gt=timezone.now()).values_list("stage", "worker"))
    return [
        StageBacklog(stage=stage, waiting=counts.get((stage.name, StageBatch.State.PENDING), 0),
                     running=counts.get((stage.name, StageBatch.State.RUNNING), 0),
                     dead=counts.get((stage.name, StageBatch.State.DEAD), 0), held_by=held.get(stage.name, ""))
        for stage in STAGES
    ]


def dead_letters(*, project):
    """Work the pipeline gave up on (one trace each), most recent failure first."""
    return StageBatch.objects.filter(project=project, state=StageBatch.State.DEAD).order_by("-failed_at", "-pk")
