from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from governance.api.inputs import JsonBody
from governance.converters import MAX_ID, MAX_VERSION
from policies.models import Policy, PolicyVersion, Violation
from traces.serializers import SpanTimeField

LAST_CHOICES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_DRY_RUN_HOURS = 24 * 30
# A policy text of this many characters still fits the request body limit (2.5 MB) however
# it is written: a character escaped in JSON takes at most 12 bytes.
MAX_SOURCE_CHARS = 200_000


class ProblemOutput(serializers.Serializer):
    message = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    column = serializers.IntegerField(allow_null=True)
    path = serializers.CharField()


class InvalidPolicyError(serializers.Serializer):
    class Body(serializers.Serializer):
        code = serializers.CharField(default="invalid_policy")
        message = serializers.CharField()
        problems = ProblemOutput(many=True, required=False, help_text="invalid_policy: where the policy is wrong")

    error = Body()


class VersionSummaryOutput(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", default="")
    active = serializers.SerializerMethodField()

    class Meta:
        model = PolicyVersion
        fields = ["number", "author", "comment", "created_at", "active"]

    def get_active(self, version) -> bool:
        return version.pk == version.policy.active_version_id


class VersionOutput(VersionSummaryOutput):
    class Meta(VersionSummaryOutput.Meta):
        fields = VersionSummaryOutput.Meta.fields + ["source", "document"]


class PolicyOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    active_version = serializers.IntegerField(source="active_version.number", default=None, allow_null=True)

    class Meta:
        model = Policy
        fields = ["id", "project", "name", "description", "mode", "active_version", "created_at"]


class PolicyDetailOutput(PolicyOutput):
    versions = serializers.SerializerMethodField()

    class Meta(PolicyOutput.Meta):
        fields = PolicyOutput.Meta.fields + ["versions"]

    def get_versions(self, policy) -> list[dict]:
        versions = list(policy.versions.select_related("author").order_by("-number"))
        for v in versions:
            v.policy = policy
        return VersionSummaryOutput(versions, many=True).data


EXAMPLE_POLICY = """\
policy: ledger
description: Only the ledger agent writes the ledger.
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent
"""


class SourceInput(JsonBody):
    source = serializers.CharField(trim_whitespace=False, max_length=MAX_SOURCE_CHARS, help_text="the policy, YAML or JSON")
    comment = serializers.CharField(required=False, allow_blank=True, max_length=500, default="", trim_whitespace=False)


class DocumentOutput(serializers.Serializer):
    document = serializers.DictField(help_text="the policy in its canonical form")


class ActivateInput(JsonBody):
    if_active = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_VERSION,
        help_text="the active version number you saw (0 for none): refused with 409 if it changed meanwhile",
    )


class ModeInput(JsonBody):
    mode = serializers.ChoiceField(choices=Policy.Mode.choices)


class DiffQuery(serializers.Serializer):
    against = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION,
                                       help_text="version to compare with; default the one before")


class DiffOutput(serializers.Serializer):
    old = serializers.IntegerField()
    new = serializers.IntegerField()
    diff = serializers.CharField(help_text="unified diff of the source text")


class DryRunInput(JsonBody):
    source = serializers.CharField(required=False, trim_whitespace=False, max_length=MAX_SOURCE_CHARS,
                                   help_text="an unsaved draft")
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_VERSION,
                                       help_text="or a saved version number")
    hours = serializers.FloatField(default=24, min_value=0.01, max_value=MAX_DRY_RUN_HOURS)

    def validate(self, data):
        if ("source" in data) == ("version" in data):
            raise serializers.ValidationError({"source": "give exactly one of source or version"})
        return data


class DryRunExample(serializers.Serializer):
    trace_id = serializers.CharField()
    span_id = serializers.CharField()
    agent = serializers.CharField()
    service = serializers.CharField()
    reason = serializers.CharField()
    start_ns = serializers.IntegerField()
    url = serializers.CharField(help_text="the span in the causal timeline")


class DryRunRule(serializers.Serializer):
    rule_id = serializers.CharField()
    rule_kind = serializers.CharField()
    count = serializers.IntegerField()
    examples = DryRunExample(many=True)


class DryRunOutput(serializers.Serializer):
    policy = serializers.CharField()
    hours = serializers.FloatField()
    since_ns = serializers.IntegerField()
    spans_scanned = serializers.IntegerField()
    truncated = serializers.BooleanField()
    violations = serializers.IntegerField()
    rules = DryRunRule(many=True)


class ViolationFilter(serializers.Serializer):
    """Filters shared by the violations page and GET /api/v1/violations/."""

    project = serializers.SlugField(required=False)
    policy = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="policy id")
    rule = serializers.CharField(required=False, allow_blank=True)
    agent = serializers.CharField(required=False, allow_blank=True)
    service = serializers.CharField(required=False, allow_blank=True)
    trace_id = serializers.CharField(required=False, allow_blank=True)
    last = serializers.ChoiceField(choices=list(LAST_CHOICES), required=False, allow_blank=True,
                                   help_text="time range ending now")
    since = SpanTimeField(required=False)
    until = SpanTimeField(required=False)

    def validate(self, data):
        if data.get("last"):
            data["since"] = timezone.now() - timedelta(seconds=LAST_CHOICES[data["last"]])
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"since": "since must be before until"})
        return data

    def search_kwargs(self) -> dict:
        data = dict(self.validated_data)
        data.pop("project", None)
        data.pop("last", None)
        if "policy" in data:
            data["policy_id"] = data.pop("policy")
        return {k: v for k, v in data.items() if v not in ("", None)}


class ViolationFindingOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="the finding's id (GET /api/v1/findings/)")
    kind = serializers.CharField(help_text="lost_update, write_race, stale_read, ...: the finding kinds of the docs")
    url = serializers.SerializerMethodField(help_text="the finding's page: both sides, the evidence, the fix")

    def get_url(self, finding) -> str:
        return reverse("finding-detail", args=[self.context["slug"], finding["id"]])


class ViolationOutput(serializers.ModelSerializer):
    policy = serializers.CharField(source="policy.name")
    policy_id = serializers.IntegerField()
    version = serializers.IntegerField(source="version.number")
    url = serializers.SerializerMethodField()
    findings = ViolationFindingOutput(many=True, read_only=True,
                                      help_text="the findings, open or acknowledged (not withdrawn), that involve "
                                                "this violation's span, oldest first")

    class Meta:
        model = Violation
        fields = ["id", "policy", "policy_id", "version", "rule_id", "rule_kind", "trace_id", "span_id", "agent",
                  "service", "reason", "start_ns", "enforced", "created_at", "url", "findings"]

    def get_url(self, v) -> str:
        return span_url(self.context["slug"], v.trace_id, v.span_id)


class CountsQuery(serializers.Serializer):
    project = serializers.SlugField(required=False)
    since = SpanTimeField(required=False, help_text="default: 24 hours ago")
    until = SpanTimeField(required=False, help_text="default: now")
    bucket_seconds = serializers.IntegerField(default=3600, min_value=60, max_value=30 * 86400)
    group_by = serializers.ChoiceField(choices=["rule", "agent", "service", "policy"], default="rule")
    policy = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)

    def validate(self, data):
        data.setdefault("until", timezone.now())
        data.setdefault("since", data["until"] - timedelta(hours=24))
        if data["since"] >= data["until"]:
            raise serializers.ValidationError({"since": "since must be before until"})
        if (data["until"] - data["since"]).total_seconds() / data["bucket_seconds"] > 10_000:
            raise serializers.ValidationError({"bucket_seconds": "at most 10000 buckets: choose wider buckets"})
        return data


class CountOutput(serializers.Serializer):
    bucket_start = SpanTimeField()
    group = serializers.CharField()
    count = serializers.IntegerField()


def span_url(slug: str, trace_id: str, span_id: str) -> str:
    return f"/p/{slug}/traces/{trace_id}/?span={span_id}"
