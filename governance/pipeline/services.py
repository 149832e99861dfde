"""The pipeline's durable work: hand quiet traces on, claim with a lease, complete, retry, dead-letter.

Every stage runs at least once on every quiet trace and is idempotent, so running twice is
harmless and running never is not possible: the hand-on is written in the transaction that
marks the traces complete, and work is deleted only in the transaction that writes the next
stage's work. Celery messages only say "there is work for this project and stage"; a lost or
duplicated message changes nothing, because the database says what is to do (the sweep sends
the message again for work nobody has taken).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import reduce
from operator import or_

from celery.utils.nodenames import worker_direct
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from governance.models import Project, Role
from governance.pipeline.models import StageBatch, StageHolder
from governance.pipeline.stages import STAGE_BY_NAME, STAGES, Stage, stage_after
from governance.services import audit_record, role_require
from governance.task_base import TRANSIENT_ERRORS
from traces.services import QuietTrace, quiet_traces_claim, traces_mark_analysed

log = logging.getLogger(__name__)

BATCH_TRACES = 500  # traces per batch the sweep writes (what a failure isolates first); runs merge batches
SWEEP_CLAIM = 5000  # traces one sweep transaction claims
SWEEP_SECONDS = 1.5  # a sweep hands on until none are left or this time is up (beat runs it every 2 s)


def lease_seconds() -> float:
    return settings.PIPELINE_LEASE_SECONDS


# --- handing quiet traces on ---------------------------------------------------------------------------------------


def quiet_traces_hand_on(*, quiet_seconds: float, now: datetime | None = None) -> int:
    """Mark quiet traces complete and write the first stage's batches for them, in one transaction
    per claim, until none are left or SWEEP_SECONDS are up. Returns how many traces were handed on."""
    deadline = time.monotonic() + SWEEP_SECONDS
    handed = 0
    while True:
        moment = now or timezone.now()
        with transaction.atomic():
            quiet = quiet_traces_claim(quiet_seconds=quiet_seconds, limit=SWEEP_CLAIM, now=moment)
            batches_create(stage=STAGES[0], traces=quiet, completed_at=moment)
        handed += len(quiet)
        if len(quiet) < SWEEP_CLAIM or time.monotonic() > deadline:
            return handed


def batches_create(*, stage: Stage, traces: list[QuietTrace], completed_at: datetime) -> list[StageBatch]:
    """Batches of `stage` for these traces (longest-waiting first), and a task queued for each project
    once this transaction commits."""
    by_project: dict[int, list[QuietTrace]] = {}
    for quiet in traces:
        by_project.setdefault(quiet.project_id, []).append(quiet)
    now = timezone.now()
    batches = [
        StageBatch(project_id=project_id, stage=stage.name, trace_ids=[q.trace_id for q in chunk],
                   received_at=min(q.received_at for q in chunk), completed_at=completed_at, nudged_at=now)
        for project_id, quiet in by_project.items()
        for chunk in (quiet[i:i + BATCH_TRACES] for i in range(0, len(quiet), BATCH_TRACES))
    ]
    StageBatch.objects.bulk_create(batches)
    for project_id in by_project:
        transaction.on_commit(lambda project_id=project_id: stage_nudge(stage=stage, project_id=project_id))
    return batches


def stage_nudge(*, stage: Stage, project_id: int) -> None:
    """Queue the stage's task for the project: on the stage's queue, or for a sticky stage on the own
    queue of the worker that holds the project's run (StageHolder) while that worker is alive."""
    from governance.pipeline.tasks import STAGE_TASKS  # the tasks module imports this one

    options = {"priority": stage.priority}
    if stage.sticky:
        holder = (StageHolder.objects.filter(project_id=project_id, stage=stage.name, until__gt=timezone.now())
                  .values_list("worker", flat=True).first())
        if holder:
            options["queue"] = worker_direct(holder)
    STAGE_TASKS[stage.name].apply_async((project_id,), **options)


def holder_keep(*, stage: Stage, project_id: int, worker: str) -> None:
    """This worker runs the sticky stage for the project: its next runs come here for a lease's time.
    A worker that dies stops renewing it, and the runs go back to the stage's queue (the sweep queues
    a task again for work nobody took within a lease, by then on the shared queue)."""
    StageHolder.objects.update_or_create(
        project_id=project_id, stage=stage.name,
        defaults={"worker": worker, "until": timezone.now() + timedelta(seconds=lease_seconds())})


def batches_nudge_due(*, now: datetime | None = None) -> int:
    """Queue a task for every project and stage with work that is due (new, backed off long enough,
    or whose lease ran out because its worker died) and for which no task was queued within a lease.
    Returns how many tasks were queued."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=lease_seconds())
    due = (StageBatch.objects.filter(_claimable(now))
           .filter(Q(nudged_at__isnull=True) | Q(nudged_at__lt=stale)))
    pairs = sorted(set(due.values_list("project_id", "stage")))
    if not pairs:
        return 0
    due.update(nudged_at=now)
    for project_id, name in pairs:
        if name in STAGE_BY_NAME:
            stage_nudge(stage=STAGE_BY_NAME[name], project_id=project_id)
    return len(pairs)


def _claimable(now: datetime) -> Q:
    return (Q(state=StageBatch.State.PENDING, run_after__lte=now)
            | Q(state=StageBatch.State.RUNNING, lease_until__lte=now))


# --- one run of a stage ----------------------------------------------------------------------------------------------


def batches_claim(*, stage: Stage, project_id: int, now: datetime | None = None) -> list[StageBatch]:
    """Claim the project's due batches of `stage` with a lease, oldest first, up to stage.max_traces
    traces; none while another run of this stage holds a live lease on the project (a project's
    stage runs one at a time: the analysis of a project has one writer). A batch that failed
    before is claimed alone, so a failing trace holds up only its own batch."""
    now = now or timezone.now()
    with transaction.atomic():
        if Project.objects.select_for_update().filter(pk=project_id).first() is None:
            return []
        mine = StageBatch.objects.filter(project_id=project_id, stage=stage.name)
        if mine.filter(state=StageBatch.State.RUNNING, lease_until__gt=now).exists():
            return []
        for lost in mine.filter(state=StageBatch.State.RUNNING, lease_until__lte=now):
            _failed(lost, stage, "the worker running it was lost (killed, or over its time limit)",
                    transient=False, now=now)
        chosen: list[int] = []
        traces = 0
        for pk, failures, size in (mine.filter(state=StageBatch.State.PENDING, run_after__lte=now)
                                   .order_by("created_at", "pk").values_list("pk", "failures", "trace_ids")):
            if chosen and (failures or traces + len(size) > stage.max_traces):
                break
            chosen.append(pk)
            traces += len(size)
            if failures:
                break
        if not chosen:
            return []
        StageBatch.objects.filter(pk__in=chosen).update(
            state=StageBatch.State.RUNNING, attempts=F("attempts") + 1,
            lease_until=now + timedelta(seconds=lease_seconds()))
        return list(StageBatch.objects.filter(pk__in=chosen).order_by("created_at", "pk"))


def _ours(batches: list[StageBatch]) -> Q:
    # `attempts` is the fencing token: if a batch was claimed again since, it is not ours any more.
    return reduce(or_, (Q(pk=b.pk, attempts=b.attempts) for b in batches)) & Q(state=StageBatch.State.RUNNING)


@contextmanager
def lease_kept(batches: list[StageBatch]):
    """Renew the batches' lease every third of it while the block runs, from a thread of its own, so
    only a dead worker's lease runs out (then the sweep hands its batches to another run)."""
    stop = threading.Event()

    def renew():
        try:
            while not stop.wait(lease_seconds() / 3):
                try:
                    StageBatch.objects.filter(_ours(batches)).update(
                        lease_until=timezone.now() + timedelta(seconds=lease_seconds()))
                except TRANSIENT_ERRORS:
                    log.warning("could not renew the lease of %s", batches, exc_info=True)
                    close_old_connections()
        finally:
            connections.close_all()  # this thread's connections

    keeper = threading.Thread(target=renew, name="pipeline-lease", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def batches_complete(*, stage: Stage, batches: list[StageBatch]) -> bool:
    """The stage ran on these batches: delete them and write the next stage's batches (or mark the
    traces analysed after the last stage), in one transaction. False if they were claimed again
    meanwhile (the other run completes them)."""
    follow = stage_after(stage)
    with transaction.atomic():
        kept = set(StageBatch.objects.select_for_update().filter(_ours(batches)).values_list("pk", flat=True))
        if not kept:
            return False
        mine = [b for b in batches if b.pk in kept]
        StageBatch.objects.filter(pk__in=kept).delete()
        if follow is None:
            for batch in mine:
                traces_mark_analysed(project_id=batch.project_id, trace_ids=batch.trace_ids,
                                     completed_by=batch.completed_at)
            return True
        now = timezone.now()
        StageBatch.objects.bulk_create([
            StageBatch(project_id=b.project_id, stage=follow.name, trace_ids=b.trace_ids, received_at=b.received_at,
                       completed_at=b.completed_at, nudged_at=now)
            for b in mine
        ])
        project_id = mine[0].project_id
        transaction.on_commit(lambda: stage_nudge(stage=follow, project_id=project_id))
    return True


def batches_fail(*, stage: Stage, batches: list[StageBatch], error: str, transient: bool) -> None:
    """The run failed: back off and try again; a batch out of attempts is split in halves, each run
    alone, and a single trace out of attempts becomes a dead letter."""
    now = timezone.now()
    with transaction.atomic():
        for batch in StageBatch.objects.select_for_update().filter(_ours(batches)):
            _failed(batch, stage, error, transient=transient, now=now)


def _failed(batch: StageBatch, stage: Stage, error: str, *, transient: bool, now: datetime) -> None:
    batch.failures += 1
    batch.last_error = error[-4000:]
    batch.failed_at = now
    batch.lease_until = None
    batch.nudged_at = None  # the sweep queues a task as soon as it is due
    batch.run_after = now + timedelta(seconds=stage.retry.delay(batch.failures))
    if transient:
        batch.attempts = max(0, batch.attempts - 1)  # not the work's fault: it keeps its attempts
    if transient or batch.attempts < stage.retry.max_attempts:
        batch.state = StageBatch.State.PENDING
        batch.save()
        return
    if len(batch.trace_ids) > 1:
        half = len(batch.trace_ids) // 2
        StageBatch.objects.bulk_create([
            StageBatch(project_id=batch.project_id, stage=batch.stage, trace_ids=part, received_at=batch.received_at,
                       completed_at=batch.completed_at, failures=batch.failures, last_error=batch.last_error,
                       failed_at=now, run_after=now)
            for part in (batch.trace_ids[:half], batch.trace_ids[half:])
        ])
        batch.delete()
        return
    batch.state = StageBatch.State.DEAD
    batch.save()
    log.error("pipeline %s gave up on trace %s of project %s after %s attempts: %s", stage.name,
              batch.trace_ids[0], batch.project_id, batch.attempts, error.splitlines()[-1] if error else "")


def stage_run(*, stage: Stage, project_id: int, worker: str = "") -> int:
    """One run of a stage for a project, on `worker` (the Celery node name): claim, run, complete (or
    fail). Returns rows the stage stored."""
    batches = batches_claim(stage=stage, project_id=project_id)
    if not batches:
        return 0
    if stage.sticky and worker:
        holder_keep(stage=stage, project_id=project_id, worker=worker)
    trace_ids = sorted({trace_id for batch in batches for trace_id in batch.trace_ids})
    try:
        with lease_kept(batches):
            stored = stage.run(project_id=project_id, trace_ids=trace_ids)
    except TRANSIENT_ERRORS as exc:
        # If the connection itself is gone, recording this fails too: the lease then runs out and the
        # batch is taken up again (Celery's Django fixup closes an unusable connection after the task).
        log.warning("pipeline %s on project %s: transient error, will retry: %s", stage.name, project_id, exc)
        batches_fail(stage=stage, batches=batches, error=_describe(exc), transient=True)
        return 0
    except Exception as exc:
        log.exception("pipeline %s failed on project %s (%s traces)", stage.name, project_id, len(trace_ids))
        batches_fail(stage=stage, batches=batches, error=_describe(exc), transient=False)
        return 0
    batches_complete(stage=stage, batches=batches)
    if stage.sticky and worker:
        holder_keep(stage=stage, project_id=project_id, worker=worker)  # a lease from now, for the runs to come
    if StageBatch.objects.filter(_claimable(timezone.now()), project_id=project_id, stage=stage.name).exists():
        stage_nudge(stage=stage, project_id=project_id)  # more is waiting: carry on in a fresh task
    return stored


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- people ------------------------------------------------------------------------------------------------------------


def dead_letter_retry(*, batch: StageBatch, actor, address=None) -> bool:
    """Try a dead letter again from the start (operator role and up), with an audit record.
    False if it was no longer dead (someone retried it already)."""
    project = Project.objects.get(pk=batch.project_id)
    role_require(user=actor, project=project, role=Role.OPERATOR)
    stage = STAGE_BY_NAME.get(batch.stage)
    with transaction.atomic():
        changed = StageBatch.objects.filter(pk=batch.pk, state=StageBatch.State.DEAD).update(
            state=StageBatch.State.PENDING, attempts=0, run_after=timezone.now(), nudged_at=timezone.now())
        if changed:
            audit_record(project=project, actor=actor, action="pipeline.retry", obj_type="stage_batch", obj_id=batch.pk,
                         detail={"stage": batch.stage, "trace_ids": batch.trace_ids, "last_error": batch.last_error[-500:]},
                         address=address)
            if stage is not None:
                transaction.on_commit(lambda: stage_nudge(stage=stage, project_id=project.pk))
    return bool(changed)
