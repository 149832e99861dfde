"""Rollouts of a new agent version as a canary, and the analysis runs that judge it.

A rollout moves between states only through guarded transitions (governance.rollouts.services):
`select_for_update` on the row plus a check that its `version` is the one the caller saw, then
`version + 1`. Two people clicking at once, or a click racing the beat tick, make one transition;
the loser is told the current state. Every transition writes an audit record.
"""

from django.conf import settings
from django.db import models

from governance.models import Project


class Rollout(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        PROGRESSING = "progressing"
        PAUSED = "paused"
        PROMOTED = "promoted"
        ABORTED = "aborted"
        ROLLED_BACK = "rolled_back"

    class PauseReason(models.TextChoices):
        NONE = "", "not paused"
        AWAITING_APPROVAL = "awaiting_approval", "awaiting approval"
        INCONCLUSIVE = "inconclusive_analysis", "inconclusive analysis"
        ANALYSIS_FAILED = "analysis_failed", "analysis failed"
        GUARD_FIRING = "guard_firing", "a guard alert is firing"

    ACTIVE_STATES = (State.PROGRESSING, State.PAUSED)
    FINAL_STATES = (State.PROMOTED, State.ABORTED, State.ROLLED_BACK)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    service = models.CharField(max_length=200, help_text="service.name of the agents rolled out")
    agent = models.CharField(max_length=200, blank=True, help_text="optional agent name within the service")
    flag_key = models.CharField(max_length=200, help_text="the OFREP flag agents evaluate to learn their version")
    baseline_version = models.CharField(max_length=100)
    canary_version = models.CharField(max_length=100)
    known_good_version = models.CharField(max_length=100, help_text="what a rollback returns all traffic to")
    steps = models.JSONField(default=list, help_text="[{kind: set_weight|pause|approval|analysis, ...}]")
    metrics = models.JSONField(default=list, help_text="analysis metrics: [{name, ...conditions}]")
    analysis = models.JSONField(default=dict, blank=True,
                                help_text="failure_limit, inconclusive_limit, on_failure, pass/marginal score")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    pause_reason = models.CharField(max_length=32, choices=PauseReason.choices, blank=True, default="")
    step_index = models.IntegerField(default=0, help_text="the step being run (len(steps) when all are done)")
    step_started_at = models.DateTimeField(null=True, blank=True)
    weight = models.IntegerField(default=0, help_text="percent of agents on the canary version")
    attempt = models.IntegerField(default=1, help_text="1, then + 1 on every retry")
    version = models.IntegerField(default=1, help_text="bumped by every transition: the race guard")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["project", "flag_key", "-id"], name="rollout_flag_latest"),
                   models.Index(fields=["state"], name="rollout_state")]

    def __str__(self):
        return f"{self.name} ({self.baseline_version} -> {self.canary_version})"


class AnalysisRun(models.Model):
    """One canary-vs-baseline analysis of a rollout's analysis step."""

    class Verdict(models.TextChoices):
        RUNNING = "running"
        SUCCESSFUL = "successful"
        FAILED = "failed"
        INCONCLUSIVE = "inconclusive"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="runs")
    step_index = models.IntegerField()
    attempt = models.IntegerField(default=1, help_text="the rollout's attempt this run belongs to")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    verdict = models.CharField(max_length=16, choices=Verdict.choices, default=Verdict.RUNNING)
    score = models.FloatField(null=True, blank=True, help_text="passing metrics over all, 0..100 (Kayenta)")
    results = models.JSONField(default=list, blank=True, help_text="per metric: figures, samples, verdict")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rollout", "attempt", "step_index"], name="analysis_run_per_step")]
