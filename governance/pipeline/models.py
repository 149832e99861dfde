from django.db import models
from django.utils import timezone

from governance.models import Project


class StageBatch(models.Model):
    """Quiet traces waiting for one stage of the pipeline: the durable record of work to do.

    The sweep writes a batch in the transaction that marks its traces complete, so no trace is
    handed on without one. A stage run claims batches with a lease (`lease_until`, kept fresh
    while it runs); a batch whose lease ran out (its worker was killed) is claimed again. On
    success the batch is deleted and the next stage's batch written, in one transaction.
    `attempts` counts claims and is the fencing token: a run whose batch was claimed again
    meanwhile changes nothing. A batch that keeps failing is split in halves, each run alone,
    down to one trace, which is then kept as a dead letter (state "dead") for people to see.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DEAD = "dead"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    stage = models.CharField(max_length=32)
    trace_ids = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="claims that did not end in success or a transient error")
    failures = models.PositiveIntegerField(default=0, help_text="runs that failed, transient or not (backoff, and a "
                                                                "batch that failed once runs alone)")
    run_after = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    nudged_at = models.DateTimeField(null=True, blank=True, help_text="when a task was last queued for it")
    received_at = models.DateTimeField(help_text="when the last span of its longest-waiting trace arrived")
    completed_at = models.DateTimeField(help_text="when the sweep marked its traces complete")
    last_error = models.TextField(blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "stage", "state", "created_at"], name="stage_batch_queue"),
            models.Index(fields=["state", "run_after"], name="stage_batch_due"),
        ]

    def __str__(self):
        return f"{self.stage} batch {self.pk} ({len(self.trace_ids)} traces, {self.state})"


class StageHolder(models.Model):
    """The worker that last ran a stage that keeps what it read for its next run (the analysis keeps
    the project's window in the worker's memory), and until when it counts as alive: the stage's
    next runs for the project are sent to that worker's own queue until then, so a second worker
    does not take a run over and read the whole window again. Renewed by each run."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    stage = models.CharField(max_length=32)
    worker = models.CharField(max_length=255, help_text="the Celery node name, e.g. analysis1@host")
    until = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "stage"], name="stage_holder_unique")]

    def __str__(self):
        return f"{self.stage} of project {self.project_id} on {self.worker} until {self.until}"
