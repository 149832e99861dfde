"""SLIs and their per-minute rollups, SLOs, alert rules, alerts, silences and notification channels.

Every alert is one row per fingerprint of its labels (a unique constraint), and moves between
states only by a guarded update on its `version`, so two evaluations can never both move it.
What a channel was told is kept per alert (`ChannelAlertState`) and changed by a guarded update
in the transaction that writes the notification: each state change is notified once.
"""

from django.conf import settings
from django.db import models

from governance.models import Project


class Sli(models.Model):
    """One SLI definition of a project (governance.slo.core.sli), shared by every SLO and rule that
    uses the same definition, so each is rolled up once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=32, help_text="hash of the canonical definition")
    kind = models.CharField(max_length=16)
    definition = models.JSONField(help_text="canonical {kind, match, threshold_ms}")
    backfilled_from = models.BigIntegerField(null=True, blank=True,
                                             help_text="first minute the backfill has counted (None: not yet)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="sli_once")]

    def __str__(self):
        return f"{self.kind} SLI {self.key[:8]}"


class SliRollup(models.Model):
    """Counts of one SLI over one minute (width 1) or one hour (width 60), from the stored spans,
    findings and violations. An hour row is the sum of its minute rows, so a 28-day window reads
    about 700 rows, not 40 000. Rows with no events are not stored."""

    sli = models.ForeignKey(Sli, on_delete=models.CASCADE, related_name="+", db_index=False)
    width = models.SmallIntegerField(help_text="minutes: 1 or 60")
    start = models.IntegerField(help_text="minutes since 1970 (UTC)")
    good = models.BigIntegerField(default=0)
    total = models.BigIntegerField(default=0)
    value_sum = models.FloatField(default=0.0, help_text="sum of event values (ms): latency, time to recovery")
    hist = models.JSONField(default=dict, blank=True, help_text="log histogram of values {bucket: count}")
    examples = models.JSONField(default=list, blank=True, help_text="[trace_id, span_id] of a few bad events")

    class Meta:
        # The unique index also serves every window read: (sli, width, start range).
        constraints = [models.UniqueConstraint(fields=["sli", "width", "start"], name="sli_rollup_once")]


class SliBased(models.Model):
    """What an SLO and an alert rule share: a named definition on an SLI of a project, its labels, the
    last evaluation and who made it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self):
        return self.name


class Slo(SliBased):
    display_name = models.CharField(max_length=200, blank=True)
    service = models.CharField(max_length=200, blank=True)
    sli = models.ForeignKey(Sli, on_delete=models.PROTECT, related_name="slos")
    objective = models.FloatField(help_text="share of good events, e.g. 0.999")
    window_seconds = models.PositiveIntegerField(help_text="rolling window, 1h to 90d")
    tiers = models.JSONField(help_text="burn-rate tiers: {name: {enabled, factor, for_seconds}}")
    status = models.JSONField(default=dict, blank=True, help_text="the last evaluation (core.burn.SloStatus)")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(SliBased.Meta):
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="slo_name_unique")]


class AlertRule(SliBased):
    """A threshold on one metric of an SLI over a window, e.g. conflict rate > 0.2 over 10 minutes,
    true for `for_seconds` before it fires."""

    sli = models.ForeignKey(Sli, on_delete=models.PROTECT, related_name="rules")
    metric = models.CharField(max_length=16)
    op = models.CharField(max_length=2)
    threshold = models.FloatField()
    window_seconds = models.PositiveIntegerField()
    for_seconds = models.PositiveIntegerField(default=0)
    severity = models.CharField(max_length=32, default="page")
    enabled = models.BooleanField(default=True)
    status = models.JSONField(default=dict, blank=True, help_text="the last evaluation: {value, active}")

    class Meta(SliBased.Meta):
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="alert_rule_name_unique")]


class Alert(models.Model):
    class State(models.TextChoices):
        INACTIVE = "inactive"
        PENDING = "pending"
        FIRING = "firing"
        RESOLVED = "resolved"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    fingerprint = models.CharField(max_length=16)
    labels = models.JSONField()
    annotations = models.JSONField(default=dict, blank=True)
    slo = models.ForeignKey(Slo, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    tier = models.CharField(max_length=16, blank=True)
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(max_length=16, choices=State.choices, default=State.INACTIVE)
    active_since = models.DateTimeField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    episode = models.PositiveIntegerField(default=0, help_text="how many times it has fired")
    version = models.PositiveIntegerField(default=0, help_text="bumped by each transition; the guard of the next")
    value = models.FloatField(null=True, blank=True, help_text="the metric or burn rate at the last transition")
    evidence = models.JSONField(default=list, blank=True, help_text="[trace_id, span_id] of bad events that caused it")
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_episode = models.PositiveIntegerField(default=0)
    acknowledge_comment = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="when it last changed state")

    class Meta:
        ordering = ["-changed_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["project", "fingerprint"], name="alert_once")]
        indexes = [models.Index(fields=["project", "state"], name="alert_project_state")]

    @property
    def acknowledged(self) -> bool:
        """Acknowledged in this episode (a new firing needs a new acknowledgement)."""
        return self.acknowledged_at is not None and self.acknowledged_episode == self.episode


class Silence(models.Model):
    """Alertmanager's silence: alerts whose labels match every matcher are not notified while it lasts."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    matchers = models.JSONField(help_text="[{name, op, value}] (core.alerts.Matcher)")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    comment = models.CharField(max_length=500)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-ends_at", "-id"]
        indexes = [models.Index(fields=["project", "ends_at"], name="silence_project_ends")]


class Channel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, help_text="the receiver name in notifications")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url = models.URLField(max_length=1000, blank=True)
    to = models.JSONField(default=list, blank=True, help_text="e-mail addresses")
    group_by = models.JSONField(default=list, blank=True, help_text="label names; alerts sharing them are sent together")
    repeat_interval_seconds = models.PositiveIntegerField(default=4 * 3600)
    enabled = models.BooleanField(default=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="the last permanent failure, or a transient one out of retries")
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name


class ChannelAlertState(models.Model):
    """What a channel was last told about an alert: its state and episode."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="+")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16)
    episode = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "alert"], name="channel_alert_once")]


class Notification(models.Model):
    """One message to a channel about a group of alerts, written with the state changes it reports and
    sent after that transaction, by a worker that claims it first."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    group_key = models.CharField(max_length=1000)
    payload = models.JSONField(help_text="the Alertmanager webhook payload (e-mails are written from it)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    repeat = models.BooleanField(default=False, help_text="a reminder after the repeat interval, not a state change")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="notification_due"),
            models.Index(fields=["channel", "group_key", "-created_at"], name="notification_group"),
        ]


class Lease(models.Model):
    """A named claim on periodic work (the evaluation tick): one holder at a time."""

    name = models.CharField(max_length=64, unique=True)
    holder = models.CharField(max_length=64, blank=True)
    until = models.DateTimeField(null=True, blank=True)

