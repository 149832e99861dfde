from django.db import models
from django.db.models import Q

from governance.models import Project


class Span(models.Model):
    """One stored span. Columns for what the product filters on, the spec's
    concurrency attributes typed, everything else kept whole as JSON.

    Ingest is the hot path, so the table carries as few indexes as the product's
    queries allow: the primary key is (project, trace_id, span_id) itself (no id
    column, no sequence, no separate unique index) and also serves lookups by
    project, so the foreign key gets no index of its own.

    On PostgreSQL the table is partitioned by day on start_ns (traces.partitions), and the database's key
    is (project, trace_id, span_id, start_ns), as a partitioned table's key must hold the partition key;
    ingest keeps (project, trace_id, span_id) unique (traces.ingest)."""

    pk = models.CompositePrimaryKey("project", "trace_id", "span_id")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True)
    name = models.CharField(max_length=512)
    kind = models.SmallIntegerField()
    service_name = models.CharField(max_length=256, blank=True)
    service_version = models.CharField(max_length=128, blank=True)
    instance_id = models.CharField(max_length=256, blank=True)
    agent = models.CharField(max_length=256, blank=True)
    thread_id = models.CharField(max_length=128, blank=True)
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    duration_ns = models.BigIntegerField()
    status_code = models.SmallIntegerField()
    status_message = models.TextField(blank=True)
    state_key = models.CharField(max_length=512, blank=True)
    state_op = models.CharField(max_length=8, blank=True)
    state_version = models.BigIntegerField(null=True)
    state_base_version = models.BigIntegerField(null=True)
    state_conflict = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=512, blank=True)
    idempotency_outcome = models.CharField(max_length=16, blank=True)
    lock_name = models.CharField(max_length=512, blank=True)
    lock_fencing_token = models.BigIntegerField(null=True)
    attributes = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    links = models.JSONField(default=list)
    resource_attributes = models.JSONField(default=dict)
    scope_name = models.CharField(max_length=256, blank=True)
    scope_version = models.CharField(max_length=128, blank=True)
    resource_schema_url = models.CharField(max_length=512, blank=True)
    scope_schema_url = models.CharField(max_length=512, blank=True)

    class Meta:
        # No (project, name) index: the name filter of the trace search scans the project's spans
        # (within its time range) rather than cost every ingested span an index insert.
        indexes = [
            models.Index(fields=["project", "start_ns"], name="span_project_start"),
            models.Index(fields=["project", "state_key", "start_ns"], name="span_state_key", condition=~Q(state_key="")),
            models.Index(fields=["project", "idempotency_key"], name="span_idem_key", condition=~Q(idempotency_key="")),
            models.Index(fields=["project", "lock_name"], name="span_lock_name", condition=~Q(lock_name="")),
        ]


# A trace's duration as the longest-first sort orders by it and its index stores it.
TRACE_DURATION = models.F("end_ns") - models.F("start_ns")


class Trace(models.Model):
    """Summary of one trace, kept up to date on ingest."""

    class State(models.TextChoices):
        OPEN = "open"  # spans arriving (new spans reopen a trace in any state)
        COMPLETE = "complete"  # quiet for the quiet period and handed to the pipeline
        ANALYSED = "analysed"  # every pipeline stage has run on it

    # The unique (project, trace_id) index serves lookups by project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    trace_id = models.CharField(max_length=32)
    root_name = models.CharField(max_length=512, blank=True)
    root_span_id = models.CharField(max_length=16, blank=True)
    # "|a|b|" so one portable LIKE finds a member on SQLite and PostgreSQL alike.
    services = models.TextField(blank=True, default="")
    agents = models.TextField(blank=True, default="")
    span_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    start_ns = models.BigIntegerField(default=0)
    end_ns = models.BigIntegerField(default=0)
    last_received_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    completed_at = models.DateTimeField(null=True, blank=True)
    analysed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "trace_id"], name="trace_unique")]
        indexes = [
            models.Index(fields=["project", "-start_ns"], name="trace_project_start"),
            models.Index(fields=["state", "last_received_at"], name="trace_state_received"),
            # Longest first (TRACE_SORTS "duration") reads this index instead of sorting every trace.
            models.Index(models.F("project"), TRACE_DURATION.desc(), models.F("trace_id"),
                         name="trace_project_duration"),
        ]

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def service_list(self) -> list[str]:
        return [s for s in self.services.split("|") if s]

    @property
    def agent_list(self) -> list[str]:
        return [a for a in self.agents.split("|") if a]


def member_text(values) -> str:
    values = sorted(set(values) - {""})
    return "|" + "|".join(values) + "|" if values else ""


class Finding(models.Model):
    """A concurrency finding as the analysis core reports it, stored once (by fingerprint)."""

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        WITHDRAWN = "withdrawn"  # later spans showed it was not a finding; withdrawn_reason says which

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=512, blank=True)
    trace_ids = models.JSONField(default=list)
    span_ids = models.JSONField(default=list)
    agents = models.TextField(blank=True, default="")  # "|a|b|", see member_text
    detail = models.TextField()
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    first_ns = models.BigIntegerField(default=0, help_text="start of the earliest span involved")
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_reason = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "fingerprint"], name="finding_once")]
        indexes = [
            models.Index(fields=["project", "kind", "-first_ns"], name="finding_kind"),
            models.Index(fields=["project", "key"], name="finding_key"),
            models.Index(fields=["project", "status", "-first_ns"], name="finding_status"),
        ]

    @property
    def agent_list(self) -> list[str]:
        return [a for a in self.agents.split("|") if a]


class FindingSpan(models.Model):
    """Which spans a finding involves, to find a trace's findings and traces by finding kind."""

    finding = models.ForeignKey(Finding, on_delete=models.CASCADE, related_name="spans")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)

    class Meta:
        indexes = [models.Index(fields=["project", "trace_id"], name="finding_span_trace")]
