"""Input and output shapes of the SLO and alert API (and the pages' forms where they share one)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from governance.api.inputs import JsonBody, ProjectQuery
from governance.slo.core.alerts import OPS, Matcher
from governance.slo.core.burn import TIER_BY_NAME
from governance.slo.core.durations import format_duration, parse_duration
from governance.slo.core.sli import METRICS, SLI_KINDS, Sli, SliError
from governance.slo.models import Alert, AlertRule, Channel, Silence, Slo

DURATION_PATTERN = r"^[0-9]+[smhdw]$"


@extend_schema_field({"oneOf": [{"type": "string", "pattern": DURATION_PATTERN},
                                {"type": "integer", "minimum": 0, "maximum": 10**9}]})
class DurationField(serializers.Field):
    """A duration as "5m", "6h", "28d" (or whole seconds); given back in seconds as `<name>_seconds`."""

    default_error_messages = {"invalid": "{message}"}

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", 'a duration such as "5m", "6h", "28d" (or whole seconds)')
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        # Exactly the two JSON shapes the schema states: no 1.5, no " 5m", no true.
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid", message=f'{self.field_name} must be a duration such as "5m" or whole seconds')
        if isinstance(data, int) and data > 10**9:
            self.fail("invalid", message=f"{self.field_name} is over 10^9 seconds")
        if isinstance(data, str) and not re.fullmatch(DURATION_PATTERN[1:-1], data):
            try:
                parse_duration(data, what=self.field_name)  # its message says what is wrong
            except ValueError as exc:
                self.fail("invalid", message=str(exc))
            self.fail("invalid", message=f"{self.field_name} {data!r}: write a whole number and one of s, m, h, d, w")
        try:
            return parse_duration(data, what=self.field_name)
        except ValueError as exc:
            self.fail("invalid", message=str(exc))

    def to_representation(self, value):
        return format_duration(value)


class SliInput(JsonBody):
    kind = serializers.ChoiceField(choices=list(SLI_KINDS))
    match = serializers.DictField(required=False, default=dict, help_text=(
        "spans: service, agent, name, span_kind (globs allowed), attributes and resource "
        '({"key": {"equals"|"in"|"glob"|"regex"|"exists"|"range": ...}}); findings: finding_kind, key, agent; '
        "violations: policy, rule, agent, service, enforced"))
    threshold_ms = serializers.FloatField(required=False, allow_null=True,
                                          help_text="latency and recovery: events within it are good")

    def validate(self, data):
        spec = {"kind": data["kind"], "match": data.get("match") or {}}
        if data.get("threshold_ms") is not None:
            spec["threshold_ms"] = data["threshold_ms"]
        try:
            Sli.parse(spec)
        except SliError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return spec


class SliOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    match = serializers.DictField(source="definition.match")
    threshold_ms = serializers.FloatField(source="definition.threshold_ms", default=None, allow_null=True)
    description = serializers.SerializerMethodField()

    def get_description(self, sli) -> str:
        return Sli.parse(sli.definition).describe()


class TierInput(JsonBody):
    enabled = serializers.BooleanField(required=False)
    factor = serializers.FloatField(required=False, min_value=0.001, max_value=1000)
    for_seconds = serializers.IntegerField(required=False, min_value=0, max_value=86400)


class SloInput(JsonBody):
    name = serializers.CharField(max_length=100, help_text="lowercase letters, digits, -, . and _")
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    service = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=500), required=False,
                                   default=dict)
    objective = serializers.FloatField(help_text="share of good events over the window, e.g. 0.999")
    window = DurationField(help_text="rolling window from 1h to 90d, e.g. 28d")
    sli = SliInput()
    tiers = serializers.DictField(child=TierInput(), required=False, help_text=(
        "burn-rate tiers by name (page-fast, page-slow, ticket): {enabled, factor, for_seconds}; "
        "all on with the SRE Workbook's factors unless said otherwise"))

    def validate_tiers(self, tiers):
        unknown = [name for name in tiers if name not in TIER_BY_NAME]
        if unknown:
            raise serializers.ValidationError(f"unknown tier {unknown[0]!r}: the tiers are {', '.join(TIER_BY_NAME)}")
        return tiers

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        data["window_seconds"] = data.pop("window")
        return data


class TierOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    factor = serializers.FloatField()
    for_seconds = serializers.IntegerField()


class SloOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    window = serializers.SerializerMethodField()
    sli = SliOutput()
    tiers = serializers.DictField(child=TierOutput())
    status = serializers.DictField(help_text="the last evaluation: sli, budget_remaining and each tier's burn rates")
    firing = serializers.SerializerMethodField(help_text="alerts of this SLO firing now")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Slo
        fields = ["id", "project", "name", "display_name", "description", "service", "labels", "objective", "window",
                  "window_seconds", "sli", "tiers", "status", "evaluated_at", "firing", "created_at", "updated_at",
                  "url"]

    def get_window(self, slo) -> str:
        return format_duration(slo.window_seconds)

    def get_firing(self, slo) -> int:
        return sum(1 for a in slo.alerts.all() if a.state == Alert.State.FIRING)

    def get_url(self, slo) -> str:
        return f"/p/{slo.project.slug}/slos/{slo.pk}/"


class OpenSloResultOutput(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(), help_text="every SLO of the upload, in its order")
    created = serializers.ListField(child=serializers.IntegerField())
    updated = serializers.ListField(child=serializers.IntegerField())
    unchanged = serializers.ListField(child=serializers.IntegerField())
    skipped = serializers.ListField(child=serializers.CharField(), help_text="documents of kinds not imported")


class AlertRuleInput(JsonBody):
    name = serializers.CharField(max_length=100, help_text="the alertname label of its alerts")
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    sli = SliInput()
    metric = serializers.ChoiceField(choices=list(METRICS), help_text="; ".join(f"{k}: {v}" for k, v in METRICS.items()))
    op = serializers.ChoiceField(choices=list(OPS))
    threshold = serializers.FloatField()
    window = DurationField(help_text='the metric is taken over this window, e.g. "10m" (1m to 7d)')
    severity = serializers.CharField(max_length=32, required=False, default="page")
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=500), required=False,
                                   default=dict)
    enabled = serializers.BooleanField(required=False, default=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # "for" is a Python keyword, so the field cannot be declared as a class attribute.
        self.fields["for"] = DurationField(required=False, default=0,
                                           help_text='how long it must hold before it fires, e.g. "5m"')

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        data["window_seconds"] = data.pop("window")
        data["for_seconds"] = data.pop("for", 0)
        return data


class AlertRuleOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    sli = SliOutput()
    window = serializers.SerializerMethodField()
    status = serializers.DictField(help_text="the last evaluation: {value, active}")

    class Meta:
        model = AlertRule
        fields = ["id", "project", "name", "description", "sli", "metric", "op", "threshold", "window",
                  "window_seconds", "for_seconds", "severity", "labels", "enabled", "status", "evaluated_at",
                  "created_at"]

    def get_window(self, rule) -> str:
        return format_duration(rule.window_seconds)


class AlertFilter(ProjectQuery):
    state = serializers.ChoiceField(choices=Alert.State.choices, required=False, allow_blank=True,
                                    help_text="firing, pending, resolved or inactive; default the first three")
    fingerprint = serializers.RegexField(r"^[0-9a-f]{16}$", required=False, allow_blank=True)


class EvidenceOutput(serializers.Serializer):
    trace_id = serializers.CharField()
    span_id = serializers.CharField()
    url = serializers.CharField(help_text="the span in the causal timeline")


class AlertOutput(serializers.ModelSerializer):
    starts_at = serializers.DateTimeField(source="fired_at", allow_null=True)
    ends_at = serializers.DateTimeField(source="resolved_at", allow_null=True)
    acknowledged = serializers.BooleanField()
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    silenced_by = serializers.SerializerMethodField(help_text="the active silence that mutes it, if any")
    evidence = serializers.SerializerMethodField()
    slo = serializers.PrimaryKeyRelatedField(read_only=True)
    rule = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "fingerprint", "state", "labels", "annotations", "slo", "tier", "rule", "active_since",
                  "starts_at", "ends_at", "episode", "value", "evidence", "silenced_by", "acknowledged",
                  "acknowledged_by", "acknowledged_at", "acknowledge_comment", "changed_at"]

    def get_silenced_by(self, alert) -> int | None:
        from governance.slo.selectors import silence_of

        silence = silence_of(alert.labels, self.context.get("silences", []))
        return silence.pk if silence else None

    def get_evidence(self, alert) -> list[dict]:
        slug = self.context.get("slug", "")
        return [{"trace_id": t, "span_id": s, "url": f"/p/{slug}/traces/{t}/?span={s}"} for t, s in alert.evidence]


class AcknowledgeInput(JsonBody):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class SilenceInput(JsonBody):
    matchers = serializers.ListField(child=serializers.JSONField(), min_length=1, help_text=(
        'label matchers, each "name=value", "name!=value", "name=~regex", "name!~regex" or {name, op, value}'))
    comment = serializers.CharField(max_length=500)
    starts_at = serializers.DateTimeField(required=False, help_text="default: now")
    ends_at = serializers.DateTimeField(required=False)
    duration = DurationField(required=False, help_text='instead of ends_at, e.g. "2h"')

    def validate(self, data):
        if ("ends_at" in data) == ("duration" in data):
            raise serializers.ValidationError({"ends_at": "give ends_at or duration (one of them)"})
        if "duration" in data:
            data["ends_at"] = (data.get("starts_at") or timezone.now()) + timedelta(seconds=data.pop("duration"))
        return data


class SilenceOutput(serializers.ModelSerializer):
    matchers = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.SerializerMethodField(help_text="pending, active or expired")

    class Meta:
        model = Silence
        fields = ["id", "matchers", "starts_at", "ends_at", "comment", "created_by", "created_at", "status"]

    def get_matchers(self, silence) -> list[str]:
        return [str(Matcher(**m)) for m in silence.matchers]

    def get_status(self, silence) -> str:
        now = timezone.now()
        return "expired" if silence.ends_at <= now else "active" if silence.starts_at <= now else "pending"


class ChannelInput(JsonBody):
    kind = serializers.ChoiceField(choices=Channel.Kind.values)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="",
                                 help_text="the receiver name in notifications; default the URL's host or first address")
    url = serializers.CharField(max_length=1000, required=False, allow_blank=True, help_text="webhook: where to POST")
    to = serializers.ListField(child=serializers.CharField(max_length=254), required=False,
                               help_text="email: the addresses")
    group_by = serializers.ListField(child=serializers.CharField(max_length=100), required=False,
                                     help_text='label names; alerts sharing them go in one notification (default ["alertname"])')
    repeat_interval = DurationField(required=False, help_text='how often a firing group is sent again (default "4h")')
    enabled = serializers.BooleanField(required=False, default=True)

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        if "repeat_interval" in data:
            data["repeat_interval_seconds"] = data.pop("repeat_interval")
        return data


class ChannelOutput(serializers.ModelSerializer):
    repeat_interval = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = ["id", "name", "kind", "url", "to", "group_by", "repeat_interval", "repeat_interval_seconds",
                  "enabled", "last_sent_at", "last_error", "last_error_at", "created_at"]

    def get_repeat_interval(self, channel) -> str:
        return format_duration(channel.repeat_interval_seconds)


class ChannelTestOutput(serializers.Serializer):
    delivered = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True, help_text="what the receiver or mail server said; empty when delivered")
