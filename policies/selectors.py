"""Reads of policies, versions and violations."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime

from django.db.models import BigIntegerField, Count, F, Value
from django.db.models.functions import Cast

from governance.models import Project
from governance.selectors import projects_for_user
from policies.models import Policy, PolicyVersion, Violation
from traces.selectors import finding_counts_of_traces, findings_of_spans, ns_of

GROUPS = {"rule": "rule_id", "agent": "agent", "service": "service", "policy": "policy__name"}


def policies_for_project(*, project: Project):
    return (Policy.objects.filter(project=project).select_related("active_version")
            .annotate(version_count=Count("versions", distinct=True)).order_by("name"))


def policy_for_user(*, user, policy_id: int) -> Policy | None:
    """A policy of one of the user's projects, else None (other projects' policies do not exist for them)."""
    return (Policy.objects.filter(pk=policy_id, project__in=projects_for_user(user=user))
            .select_related("project", "active_version").first())


def versions_of(*, policy: Policy):
    return policy.versions.select_related("author").order_by("-number")


def version_get(*, policy: Policy, number: int) -> PolicyVersion | None:
    return policy.versions.select_related("author").filter(number=number).first()


def version_diff(*, old: PolicyVersion, new: PolicyVersion) -> str:
    """Unified diff of the source text, old -> new."""
    return "".join(difflib.unified_diff(
        old.source.splitlines(keepends=True), new.source.splitlines(keepends=True),
        fromfile=f"v{old.number}", tofile=f"v{new.number}",
    ))


def version_diff_html(*, old: PolicyVersion, new: PolicyVersion) -> str:
    """Side by side HTML table (difflib.HtmlDiff escapes the text)."""
    return difflib.HtmlDiff(wrapcolumn=80).make_table(
        old.source.splitlines(), new.source.splitlines(), f"v{old.number}", f"v{new.number}", context=False,
    )


def violations_search(*, project: Project, policy_id: int | None = None, rule: str = "", agent: str = "",
                      service: str = "", trace_id: str = "", since: datetime | None = None,
                      until: datetime | None = None):
    """Violations of a project, newest span first."""
    qs = Violation.objects.filter(project=project).select_related("policy", "version")
    if policy_id:
        qs = qs.filter(policy_id=policy_id)
    if rule:
        qs = qs.filter(rule_id=rule)
    if agent:
        qs = qs.filter(agent=agent)
    if service:
        qs = qs.filter(service=service)
    if trace_id:
        qs = qs.filter(trace_id=trace_id.lower())
    if since is not None:
        qs = qs.filter(start_ns__gte=ns_of(since))
    if until is not None:
        qs = qs.filter(start_ns__lte=ns_of(until))
    return qs.order_by("-start_ns", "-id")


def violations_with_findings(*, project: Project, violations, trace_counts: bool = True) -> list[Violation]:
    """The violations (a page of them), each given `findings`: the findings, not withdrawn, that involve
    its span ([{"id", "kind", "status"}], traces.selectors.findings_of_spans), and with trace_counts
    `other_trace_findings`: how many more involve another span of its trace. One query for the
    findings of the spans and one for the counts, however many violations."""
    violations = list(violations)
    found = findings_of_spans(project=project, spans={(v.trace_id, v.span_id) for v in violations})
    counts = finding_counts_of_traces(project=project, trace_ids={v.trace_id for v in violations}) if trace_counts else {}
    for v in violations:
        v.findings = found.get((v.trace_id, v.span_id), [])
        v.other_trace_findings = max(counts.get(v.trace_id, 0) - len(v.findings), 0)
    return violations


def violation_counts(*, project: Project, since: datetime, until: datetime, bucket_seconds: int = 3600,
                     group_by: str = "rule", policy_id: int | None = None) -> list[tuple[datetime, str, int]]:
    """[(bucket_start, group, count)] of violations by span start time, buckets aligned to the epoch.

    group_by: "rule" | "agent" | "service" | "policy". Counted in the database
    (integer division works alike on SQLite and PostgreSQL), so SLIs can use it.
    """
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    if bucket_seconds < 1:
        raise ValueError("bucket_seconds must be at least 1")
    bucket_ns = int(bucket_seconds) * 1_000_000_000
    qs = Violation.objects.filter(project=project, start_ns__gte=ns_of(since), start_ns__lt=ns_of(until))
    if policy_id:
        qs = qs.filter(policy_id=policy_id)
    bucket = Cast(F("start_ns") / Value(bucket_ns), BigIntegerField())
    rows = (qs.annotate(bucket=bucket).values("bucket", GROUPS[group_by]).annotate(n=Count("id"))
            .order_by("bucket", GROUPS[group_by]))
    return [
        (datetime.fromtimestamp(row["bucket"] * bucket_seconds, tz=UTC), row[GROUPS[group_by]], row["n"])
        for row in rows
    ]


def violation_totals(*, project: Project, since: datetime | None = None, group_by: str = "rule", limit: int = 50,
                     policy_id: int | None = None):
    """[(group, count)] most frequent first, for the pages."""
    qs = Violation.objects.filter(project=project)
    if policy_id:
        qs = qs.filter(policy_id=policy_id)
    if since is not None:
        qs = qs.filter(start_ns__gte=ns_of(since))
    field = GROUPS[group_by]
    return [(r[field], r["n"]) for r in qs.values(field).annotate(n=Count("id")).order_by("-n", field)[:limit]]


def violation_filter_choices(*, project: Project) -> dict:
    qs = Violation.objects.filter(project=project)
    return {
        "rules": list(qs.values_list("rule_id", flat=True).distinct().order_by("rule_id")[:200]),
        "agents": list(qs.values_list("agent", flat=True).distinct().order_by("agent")[:200]),
        "services": list(qs.values_list("service", flat=True).distinct().order_by("service")[:200]),
    }
