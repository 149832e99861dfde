from datetime import UTC, datetime, timedelta

from django.utils import timezone
from rest_framework import serializers

from governance.api.inputs import ProjectQuery
from traces.analysis import KINDS
from traces.models import Finding, Span, Trace
from traces.records import KIND_NAMES, STATUS_NAMES
from traces.selectors import LAST_CHOICES, TRACE_SORTS


class SpanTimeField(serializers.DateTimeField):
    """A moment spans can have: span times are int64 nanoseconds since 1970, so 1970 to 2262.
    (A range the OpenAPI schema cannot express for a date-time: it says so in words.)"""

    LOW = datetime(1970, 1, 1, tzinfo=UTC)
    HIGH = datetime(2262, 4, 11, tzinfo=UTC)

    def to_internal_value(self, value):
        moment = super().to_internal_value(value)
        if not self.LOW <= moment <= self.HIGH:
            raise serializers.ValidationError("must be between 1970-01-01 and 2262-04-11")
        return moment


# Durations are int64 nanoseconds: about 292 years is the most a span can last.
MAX_DURATION_MS = 9_000_000_000_000.0


class TraceFilterSerializer(serializers.Serializer):
    """The trace search filters, shared by the traces page and GET /api/v1/traces/."""

    project = serializers.SlugField(required=False)
    service = serializers.CharField(required=False, allow_blank=True)
    agent = serializers.CharField(required=False, allow_blank=True)
    name = serializers.CharField(required=False, allow_blank=True, help_text="any span in the trace has this name")
    status = serializers.ChoiceField(choices=["ok", "error"], required=False, allow_blank=True)
    last = serializers.ChoiceField(choices=list(LAST_CHOICES), required=False, allow_blank=True,
                                   help_text="traces that started within this time before now (a lookback "
                                             "on the start, as Jaeger's)")
    since = SpanTimeField(required=False)
    until = SpanTimeField(required=False)
    min_duration_ms = serializers.FloatField(required=False, min_value=0, max_value=MAX_DURATION_MS)
    max_duration_ms = serializers.FloatField(required=False, min_value=0, max_value=MAX_DURATION_MS)
    attr = serializers.CharField(required=False, allow_blank=True, max_length=1024, trim_whitespace=False,
                                 help_text='a span attribute "key=value", e.g. gen_ai.request.model=gpt-4o')
    finding_kind = serializers.ChoiceField(choices=list(KINDS), required=False, allow_blank=True,
                                           help_text="the trace has a finding of this kind")
    state_key = serializers.CharField(required=False, allow_blank=True, max_length=512, trim_whitespace=False,
                                      help_text="a span of the trace accessed this state key")
    has_findings = serializers.ChoiceField(choices=["yes", "no"], required=False, allow_blank=True,
                                           help_text="yes: the trace has an open or acknowledged finding; no: none")
    sort = serializers.ChoiceField(choices=list(TRACE_SORTS), required=False, allow_blank=True,
                                   help_text="newest (default), oldest, findings (open findings, most first), "
                                             "violations (most first), duration (longest first), errors")

    def validate_attr(self, value: str) -> str:
        if value and ("=" not in value or not value.partition("=")[0].strip()):
            raise serializers.ValidationError('write the attribute as key=value')
        return value

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"since": "since must be before until"})
        if (data.get("min_duration_ms") is not None and data.get("max_duration_ms") is not None
                and data["min_duration_ms"] > data["max_duration_ms"]):
            raise serializers.ValidationError({"min_duration_ms": "the minimum must not exceed the maximum"})
        if data.get("last"):
            data["started_since"] = timezone.now() - timedelta(seconds=LAST_CHOICES[data["last"]])
        return data

    def search_kwargs(self) -> dict:
        data = dict(self.validated_data)
        data.pop("project", None)
        data.pop("last", None)
        return {k: v for k, v in data.items() if v not in ("", None)}


class TraceSummarySerializer(serializers.ModelSerializer):
    services = serializers.ListField(source="service_list", child=serializers.CharField())
    agents = serializers.ListField(source="agent_list", child=serializers.CharField())
    duration_ns = serializers.IntegerField()
    open_findings = serializers.IntegerField(help_text="open findings involving a span of the trace")
    violations = serializers.IntegerField(help_text="policy violations recorded on spans of the trace")

    class Meta:
        model = Trace
        fields = ["trace_id", "root_name", "root_span_id", "services", "agents", "span_count", "error_count",
                  "start_ns", "end_ns", "duration_ns", "state", "open_findings", "violations"]


class SpanSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = Span
        fields = ["trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "service_version",
                  "instance_id", "agent", "thread_id", "start_ns", "end_ns", "duration_ns", "status",
                  "attributes", "events", "links", "resource_attributes", "scope_name", "scope_version",
                  "resource_schema_url", "scope_schema_url"]

    def get_kind(self, span) -> str:
        return KIND_NAMES[span.kind] if 0 <= span.kind < len(KIND_NAMES) else str(span.kind)

    def get_status(self, span) -> dict:
        code = STATUS_NAMES[span.status_code] if 0 <= span.status_code < len(STATUS_NAMES) else str(span.status_code)
        return {"code": code, "message": span.status_message}


class TraceDetailSerializer(TraceSummarySerializer):
    spans = SpanSerializer(many=True, source="span_list")

    class Meta(TraceSummarySerializer.Meta):
        fields = TraceSummarySerializer.Meta.fields + ["spans"]


class FindingFilterSerializer(serializers.Serializer):
    """Filters of the findings page and GET /api/v1/findings/."""

    project = serializers.SlugField(required=False)
    kind = serializers.ChoiceField(choices=list(KINDS), required=False, allow_blank=True)
    key = serializers.CharField(required=False, allow_blank=True, max_length=512, trim_whitespace=False,
                                help_text="state key, idempotency key or lock name")
    agent = serializers.CharField(required=False, allow_blank=True)
    trace_id = serializers.RegexField(r"^[0-9a-fA-F]{32}$", required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=list(Finding.Status.values), required=False, allow_blank=True,
                                     help_text="default: open and acknowledged")

    def search_kwargs(self) -> dict:
        data = dict(self.validated_data)
        data.pop("project", None)
        return {k: v for k, v in data.items() if v not in ("", None)}


class FindingSerializer(serializers.ModelSerializer):
    """A finding with the fields `check_traces --format json` prints, plus its id and status."""

    agents = serializers.ListField(source="agent_list", child=serializers.CharField())
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                                   help_text="who acknowledged it; null while open")

    class Meta:
        model = Finding
        fields = ["id", "kind", "key", "trace_ids", "span_ids", "agents", "detail", "status", "created_at",
                  "first_ns", "acknowledged_by", "acknowledged_at", "withdrawn_at", "withdrawn_reason"]


class KeyHistoryFilterSerializer(serializers.Serializer):
    project = serializers.SlugField(required=False)
    key = serializers.CharField(max_length=512, trim_whitespace=False,
                                help_text="state key (or idempotency key, or lock name), exactly")
    last = serializers.ChoiceField(choices=list(LAST_CHOICES), required=False, allow_blank=True, default="24h",
                                   help_text="time range ending now (default 24h; blank: all time); "
                                             "since/until override it")
    since = SpanTimeField(required=False)
    until = SpanTimeField(required=False)

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"since": "since must be before until"})
        if not data.get("since") and data.get("last"):
            data["since"] = timezone.now() - timedelta(seconds=LAST_CHOICES[data["last"]])
        return data

    def range_ns(self) -> tuple[int | None, int | None]:
        data = self.validated_data
        since, until = data.get("since"), data.get("until")
        return (int(since.timestamp() * 1e9) if since else None, int(until.timestamp() * 1e9) if until else None)


class KeyAccessSerializer(serializers.Serializer):
    trace_id = serializers.CharField()
    span_id = serializers.CharField()
    name = serializers.CharField()
    agent = serializers.CharField()
    service = serializers.CharField()
    instance = serializers.CharField()
    op = serializers.CharField(help_text="read, write, executed, deduplicated or lock")
    version = serializers.IntegerField(allow_null=True)
    base_version = serializers.IntegerField(allow_null=True)
    conflict = serializers.BooleanField()
    took_effect = serializers.BooleanField()
    status = serializers.CharField()
    start_ns = serializers.IntegerField()
    end_ns = serializers.IntegerField()
    label = serializers.CharField(help_text='"r v3", "w v4←3", "w ✗ conflict"')


class KeyHistorySerializer(serializers.Serializer):
    key = serializers.CharField()
    since_ns = serializers.IntegerField(allow_null=True)
    until_ns = serializers.IntegerField(allow_null=True)
    truncated = serializers.BooleanField(help_text="more accesses than the limit: the newest are listed")
    accesses = KeyAccessSerializer(many=True)
    findings = FindingSerializer(many=True)


class TimelineQuery(ProjectQuery):
    figure = serializers.ChoiceField(choices=["0", "1"], required=False, default="0", help_text="1: add the Plotly figure")


class TimelineSerializer(serializers.Serializer):
    """The timeline data the trace page draws (see traces/timeline.py for the layout)."""

    mode = serializers.CharField()
    title = serializers.CharField()
    x_kind = serializers.CharField(help_text='"ms" (since t0_ns) or "date" (epoch ms)')
    t0_ns = serializers.IntegerField()
    collapsed = serializers.BooleanField(help_text="lanes start collapsed (big traces)")
    tolerance_ms = serializers.FloatField()
    lanes = serializers.ListField(child=serializers.DictField())
    spans = serializers.DictField(help_text="parallel columns, one entry per span")
    details = serializers.ListField(child=serializers.DictField())
    edges = serializers.ListField(child=serializers.ListField(), help_text="[from index, to index, kind]")
    critical = serializers.ListField(child=serializers.IntegerField())
    findings = serializers.ListField(child=serializers.DictField())
