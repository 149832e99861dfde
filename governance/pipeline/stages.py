"""The pipeline: what runs on traces once they are quiet, in this order. The one place it is declared.

Each stage is a plain function of the app that owns the work, `run(project_id=..., trace_ids=[...])`,
returning how many rows it stored. A stage is idempotent (running it twice on the same traces
stores nothing twice), reads the traces it needs once, and runs as its own Celery task with its
own queue, time limits and retry policy. `traces` and `policies` never import each other's
tasks: this module, in the layer above both, chains them (tests/test_import_rules.py holds it).

Stages to come on the same quiet traces are added to STAGES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from governance.rollouts.canary import canary_minutes_update
from governance.slo.rollups import sli_rollups_update
from governance.task_base import RetryPolicy
from policies.services import violations_record
from traces.services import findings_update


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., int]
    queue: str
    time_limit: int  # seconds before the worker process is killed
    soft_time_limit: int  # seconds before the run is interrupted and counted as failed
    retry: RetryPolicy
    max_traces: int  # a run takes the project's waiting batches up to this many traces
    # The run keeps what it read in the worker for the next run (StageHolder): a project's runs go to
    # the worker that ran the last one, while it is alive.
    sticky: bool = False

    @property
    def task_name(self) -> str:
        return f"pipeline.{self.name}"

    @property
    def priority(self) -> int:
        """The priority of its messages (Redis: 0 is taken first, 9 last; steps 0, 3, 6, 9). A later stage
        goes first: a worker finishes the traces it has begun before it begins the next ones, so the
        later stages of a batch do not each wait behind another batch's analysis (a trace's findings
        count as fresh once its last stage has run). A broker without priorities keeps arrival order."""
        return max(0, 9 - 3 * [s.name for s in STAGES].index(self.name))


STAGES: tuple[Stage, ...] = (
    # Concurrency findings: the happens-before analysis of the quiet traces with what they touch.
    Stage(name="analysis", run=findings_update, queue="analysis", time_limit=300, soft_time_limit=270,
          retry=RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_max_seconds=300), max_traces=5000,
          sticky=True),
    # Governance: the active policy versions evaluated on the same traces, after their findings.
    Stage(name="policies", run=violations_record, queue="analysis", time_limit=120, soft_time_limit=110,
          retry=RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_max_seconds=300), max_traces=5000),
    # SLI rollups: the minutes these traces touch recounted from stored spans, findings and violations
    # (after both, so their findings and violations are counted too).
    Stage(name="sli_rollups", run=sli_rollups_update, queue="analysis", time_limit=120, soft_time_limit=110,
          retry=RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_max_seconds=300), max_traces=5000),
    # Canary metrics: per-minute, per-version counts of the services under an active rollout, after the
    # findings and violations they count (governance.rollouts.canary).
    Stage(name="canary", run=canary_minutes_update, queue="analysis", time_limit=120, soft_time_limit=110,
          retry=RetryPolicy(max_attempts=3, backoff_seconds=2, backoff_max_seconds=300), max_traces=5000),
)

STAGE_BY_NAME = {stage.name: stage for stage in STAGES}


def stage_after(stage: Stage) -> Stage | None:
    at = [s.name for s in STAGES].index(stage.name)
    return STAGES[at + 1] if at + 1 < len(STAGES) else None
