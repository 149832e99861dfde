"""Canary metrics, a stage of the pipeline: per-minute, per-version aggregates of the spans of the
services that active rollouts target (CanaryMinute), and the reads an analysis makes of them.

`canary_minutes_update(project_id=, trace_ids=)` is the stage's entry point. It finds the minutes
the quiet traces' spans of those services started in and recounts each such minute whole from the
stored spans, findings and violations, replacing its rows: running it twice changes nothing, and
a trace reopened by late spans is counted anew when it is quiet again. It runs after the policy
stage, so the traces' findings and violations are stored when it counts them.
"""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from governance.rollouts.core.judgement import VersionSample
from governance.rollouts.models import CanaryMinute, Rollout
from governance.slo.rollups import LIVE_FINDINGS, duplicate_spans, minute_runs
from policies.models import Violation
from traces.models import FindingSpan, Span
from traces.records import STATUS_ERROR

NS_PER_MINUTE = 60_000_000_000
DURATIONS_PER_ROW = 200  # enough for a Mann-Whitney test over a few minutes; a row stays small
EXAMPLES_PER_ROW = 3
SPAN_FIELDS = ("trace_id", "span_id", "service_name", "agent", "service_version", "start_ns", "duration_ns",
               "status_code", "state_op", "state_conflict", "idempotency_key")


def rollout_services(project_id: int) -> set[str]:
    return set(Rollout.objects.filter(project_id=project_id, state__in=Rollout.ACTIVE_STATES)
               .values_list("service", flat=True))


def canary_minutes_update(*, project_id: int, trace_ids: list[str]) -> int:
    """Recount the minutes these quiet traces touch, for the services under an active rollout. Rows written."""
    services = rollout_services(project_id)
    if not services or not trace_ids:
        return 0
    minutes = {ns // NS_PER_MINUTE for ns in Span.objects.filter(
        project_id=project_id, trace_id__in=trace_ids, service_name__in=services).values_list("start_ns", flat=True)}
    written = 0
    for first, last in minute_runs(minutes, gap=0):
        written += canary_minutes_recount(project_id=project_id, services=services, first=first, last=last)
    return written


def _sampled(values: list[float], keep: int) -> list[float]:
    """An evenly spaced sample of the sorted values: it keeps their quantiles."""
    ordered = sorted(values)
    if len(ordered) <= keep:
        return [round(v, 3) for v in ordered]
    step = (len(ordered) - 1) / (keep - 1)
    return [round(ordered[round(i * step)], 3) for i in range(keep)]


def canary_minutes_recount(*, project_id: int, services: set[str], first: int, last: int) -> int:
    spans = list(Span.objects.filter(project_id=project_id, service_name__in=services,
                                     start_ns__gte=first * NS_PER_MINUTE, start_ns__lt=(last + 1) * NS_PER_MINUTE)
                 .values_list(*SPAN_FIELDS).iterator(chunk_size=5000))
    duplicates = duplicate_spans(project_id, {s[10] for s in spans if s[10]})
    group_of: dict[tuple[str, str], tuple] = {}
    groups: dict[tuple, dict] = defaultdict(lambda: {"spans": 0, "errors": 0, "durations": [], "idempotent": 0,
                                                     "idempotent_ok": 0, "writes": 0, "conflicts": 0,
                                                     "findings": defaultdict(set), "violations": 0,
                                                     "examples": defaultdict(list)})
    slow_ms: dict[tuple, float] = {}
    for trace_id, span_id, service, agent, version, start_ns, duration_ns, status, op, conflict, idem in spans:
        key = (service, version, agent, start_ns // NS_PER_MINUTE)
        group_of[(trace_id, span_id)] = key
        g = groups[key]
        g["spans"] += 1
        error = status == STATUS_ERROR
        g["errors"] += error
        g["durations"].append(duration_ns / 1e6)
        if idem:
            g["idempotent"] += 1
            ok = not error and span_id not in duplicates
            g["idempotent_ok"] += ok
            if not ok:
                _example(g, "duplicates", trace_id)
        if op == "write":
            g["writes"] += 1
            g["conflicts"] += bool(conflict)
            if conflict:
                _example(g, "conflicts", trace_id)
        if error:
            _example(g, "errors", trace_id)
        if duration_ns / 1e6 > slow_ms.get(key, -1):
            slow_ms[key] = duration_ns / 1e6
            g["examples"]["slow"] = [trace_id]
    if group_of:
        trace_ids = {t for t, _ in group_of}
        for finding_id, kind, trace_id, span_id in FindingSpan.objects.filter(
                project_id=project_id, trace_id__in=trace_ids,
                finding__status__in=LIVE_FINDINGS).values_list("finding_id", "finding__kind", "trace_id", "span_id"):
            key = group_of.get((trace_id, span_id))
            if key is not None:
                groups[key]["findings"][kind].add(finding_id)
        for trace_id, span_id in Violation.objects.filter(project_id=project_id, trace_id__in=trace_ids).values_list(
                "trace_id", "span_id"):
            key = group_of.get((trace_id, span_id))
            if key is not None:
                groups[key]["violations"] += 1
    rows = [CanaryMinute(project_id=project_id, service=service, version=version, agent=agent, minute=minute,
                         spans=g["spans"], errors=g["errors"], durations_ms=_sampled(g["durations"], DURATIONS_PER_ROW),
                         idempotent=g["idempotent"], idempotent_ok=g["idempotent_ok"], writes=g["writes"],
                         conflicts=g["conflicts"], findings={k: len(v) for k, v in sorted(g["findings"].items())},
                         violations=g["violations"], examples=dict(g["examples"]))
            for (service, version, agent, minute), g in groups.items()]
    with transaction.atomic():
        keep = {(r.service, r.version, r.agent, r.minute) for r in rows}
        stale = [pk for pk, *key in CanaryMinute.objects.filter(
            project_id=project_id, service__in=services, minute__gte=first, minute__lte=last).values_list(
            "pk", "service", "version", "agent", "minute") if tuple(key) not in keep]
        if stale:
            CanaryMinute.objects.filter(pk__in=stale).delete()
        CanaryMinute.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["project", "service", "version", "agent", "minute"],
            update_fields=["spans", "errors", "durations_ms", "idempotent", "idempotent_ok", "writes", "conflicts",
                           "findings", "violations", "examples"], batch_size=1000)
    return len(rows)


def _example(group: dict, what: str, trace_id: str) -> None:
    examples = group["examples"][what]
    if len(examples) < EXAMPLES_PER_ROW and trace_id not in examples:
        examples.append(trace_id)


# --- reads --------------------------------------------------------------------------------------------


def _rows(rollout: Rollout, version: str, first: int, last: int):
    rows = CanaryMinute.objects.filter(project_id=rollout.project_id, service=rollout.service, version=version,
                                       minute__gte=first, minute__lte=last)
    if rollout.agent:
        rows = rows.filter(agent=rollout.agent)
    return rows


def version_sample(rollout: Rollout, version: str, first: int, last: int) -> VersionSample:
    """What one version did from minute `first` to `last` (inclusive)."""
    total = VersionSample()
    for row in _rows(rollout, version, first, last).iterator():
        total.add(VersionSample(spans=row.spans, errors=row.errors, durations_ms=list(row.durations_ms),
                                idempotent=row.idempotent, idempotent_ok=row.idempotent_ok, writes=row.writes,
                                conflicts=row.conflicts, findings=dict(row.findings), violations=row.violations))
    return total


def version_series(rollout: Rollout, version: str, first: int, last: int) -> dict[int, VersionSample]:
    """Per minute, for the charts."""
    series: dict[int, VersionSample] = defaultdict(VersionSample)
    for row in _rows(rollout, version, first, last).order_by("minute"):
        series[row.minute].add(VersionSample(
            spans=row.spans, errors=row.errors, durations_ms=list(row.durations_ms), idempotent=row.idempotent,
            idempotent_ok=row.idempotent_ok, writes=row.writes, conflicts=row.conflicts, findings=dict(row.findings),
            violations=row.violations))
    return dict(series)


def version_examples(rollout: Rollout, version: str, first: int, last: int) -> dict[str, list[str]]:
    """A few trace ids behind each figure (errors, slow, conflicts, duplicates) of one version."""
    found: dict[str, list[str]] = defaultdict(list)
    for examples in _rows(rollout, version, first, last).order_by("-minute").values_list("examples", flat=True):
        for what, trace_ids in examples.items():
            for trace_id in trace_ids:
                if len(found[what]) < 5 and trace_id not in found[what]:
                    found[what].append(trace_id)
    return dict(found)
