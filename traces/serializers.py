from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from traces.models import Span, Trace
from traces.records import KIND_NAMES, STATUS_NAMES
from traces.selectors import LAST_CHOICES


class TraceFilterSerializer(serializers.Serializer):
    """The trace search filters, shared by the traces page and GET /api/v1/traces/."""

    project = serializers.SlugField(required=False)
    service = serializers.CharField(required=False, allow_blank=True)
    agent = serializers.CharField(required=False, allow_blank=True)
    name = serializers.CharField(required=False, allow_blank=True, help_text="any span in the trace has this name")
    status = serializers.ChoiceField(choices=["", "ok", "error"], required=False)
    last = serializers.ChoiceField(choices=[""] + list(LAST_CHOICES), required=False, help_text="time range ending now")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    min_duration_ms = serializers.FloatField(required=False, min_value=0)
    max_duration_ms = serializers.FloatField(required=False, min_value=0)

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"since": "since must be before until"})
        if data.get("last"):
            data["since"] = timezone.now() - timedelta(seconds=LAST_CHOICES[data["last"]])
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

    class Meta:
        model = Trace
        fields = ["trace_id", "root_name", "root_span_id", "services", "agents", "span_count", "error_count",
                  "start_ns", "end_ns", "duration_ns", "state"]


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
