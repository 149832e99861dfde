"""Analysis in the live product: load what new spans touch, analyse, store findings once."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance.models import Project, Role
from governance.services import audit_record, role_require
from traces.analysis import Finding as FoundFinding
from traces.analysis import affected_scope, analyse
from traces.models import Finding, FindingSpan, Span, Trace, member_text
from traces.records import SpanRecord
from traces.selectors import span_records


class QuietTrace(NamedTuple):
    project_id: int
    trace_id: str
    received_at: datetime  # when its last span arrived


def quiet_traces_claim(*, quiet_seconds: float, limit: int, now: datetime | None = None) -> list[QuietTrace]:
    """Mark traces complete once no span arrived for `quiet_seconds`; returns them, longest-waiting first.

    Rows are claimed under a row lock (skipping rows another sweeper holds), so two sweepers never
    hand on one trace twice. Call it inside the transaction that records the hand-on
    (governance.pipeline), so a trace is never complete without work queued for it.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            Trace.objects.select_for_update(skip_locked=True)
            .filter(state=Trace.State.OPEN, last_received_at__lte=now - timedelta(seconds=quiet_seconds))
            .order_by("last_received_at")
            .values_list("pk", "project_id", "trace_id", "last_received_at")[:limit]
        )
        if rows:
            Trace.objects.filter(pk__in=[pk for pk, *_ in rows], state=Trace.State.OPEN).update(
                state=Trace.State.COMPLETE, completed_at=now)
    return [QuietTrace(project_id, trace_id, received_at) for _, project_id, trace_id, received_at in rows]


def traces_mark_analysed(*, project_id: int, trace_ids: list[str], completed_by: datetime) -> int:
    """Every pipeline stage has run on these traces as they were when completed at `completed_by`
    or before; a trace that new spans reopened since is left for its next pass."""
    return Trace.objects.filter(
        project_id=project_id, trace_id__in=trace_ids, state=Trace.State.COMPLETE, completed_at__lte=completed_by,
    ).update(state=Trace.State.ANALYSED, analysed_at=timezone.now())


def finding_fingerprint(found: FoundFinding) -> str:
    text = "\x1f".join([found.kind, found.key, *found.span_ids])
    return hashlib.sha256(text.encode()).hexdigest()


def _window_spans(project: Project, trace_ids: list[str]) -> list[SpanRecord]:
    """The spans analysis needs for these traces: the traces themselves, every trace that
    touches one of their keys, idempotency keys or locks within the project's window, and
    the traces they link to."""
    new_spans = list(span_records(Span.objects.filter(project=project, trace_id__in=trace_ids), resource=False))
    if not new_spans:
        return []
    scope = affected_scope(new_spans)
    window_ns = project.analysis_window_minutes * 60 * 1_000_000_000
    low = min(s.start_ns for s in new_spans) - window_ns
    high = max(s.end_ns for s in new_spans) + window_ns
    touching = Q()
    if scope.state_keys:
        touching |= Q(state_key__in=scope.state_keys)
    if scope.idempotency_keys:
        touching |= Q(idempotency_key__in=scope.idempotency_keys)
    if scope.lock_names:
        touching |= Q(lock_name__in=scope.lock_names)
    related = set(trace_ids) | set(scope.trace_ids)
    if touching:
        related |= set(
            Span.objects.filter(touching, project=project, start_ns__gte=low, start_ns__lte=high)
            .values_list("trace_id", flat=True).distinct()
        )
    others = related - set(trace_ids)
    if others:
        new_spans += span_records(Span.objects.filter(project=project, trace_id__in=others), resource=False)
    return new_spans


def findings_update(*, project_id: int, trace_ids: list[str]) -> int:
    """Analyse the traces that turned quiet; store new findings, withdraw revised ones. Returns new findings."""
    project = Project.objects.get(pk=project_id)
    records = _window_spans(project, trace_ids)
    if not records:
        return 0
    trace_of = {s.span_id: s.trace_id for s in records}
    start_of = {s.span_id: s.start_ns for s in records}
    found = analyse(records)
    fingerprints = {finding_fingerprint(f): f for f in found}
    analysed = {s.span_id for s in records}
    with transaction.atomic():
        existing = set(
            Finding.objects.filter(project=project, fingerprint__in=list(fingerprints)).values_list("fingerprint", flat=True)
        )
        fresh = [
            Finding(project=project, kind=f.kind, key=f.key, trace_ids=list(f.trace_ids), span_ids=list(f.span_ids),
                    agents=member_text(f.agents), detail=f.detail, fingerprint=fp,
                    first_ns=min((start_of.get(s, 0) for s in f.span_ids), default=0))
            for fp, f in fingerprints.items() if fp not in existing
        ]
        created = Finding.objects.bulk_create(fresh, ignore_conflicts=True)
        stored = {f.fingerprint: f.pk for f in Finding.objects.filter(project=project, fingerprint__in=[f.fingerprint for f in created])}
        FindingSpan.objects.bulk_create([
            FindingSpan(finding_id=stored[f.fingerprint], project=project, trace_id=trace_of.get(span_id, ""), span_id=span_id)
            for f in created if f.fingerprint in stored for span_id in f.span_ids
        ])
        _withdraw_revised(project, analysed, set(fingerprints), set(trace_ids))
    return len(fresh)


def _withdraw_revised(project: Project, analysed: set[str], still_found: set[str], trace_ids: set[str]) -> None:
    """A finding about these traces whose spans were all analysed again and that is no longer found
    was made before late spans arrived (an orphan whose parent came): withdraw it."""
    candidates = Finding.objects.filter(
        project=project, status__in=[Finding.Status.OPEN, Finding.Status.ACKNOWLEDGED],
        pk__in=FindingSpan.objects.filter(project=project, trace_id__in=trace_ids).values("finding_id"),
    ).exclude(fingerprint__in=still_found)
    withdrawn = [f.pk for f in candidates if set(f.span_ids) <= analysed]
    if withdrawn:
        Finding.objects.filter(pk__in=withdrawn).update(status=Finding.Status.WITHDRAWN)


def finding_acknowledge(*, finding: Finding, actor, address=None) -> bool:
    """Mark an open finding acknowledged (operator role and up), with an audit record.
    Returns False when it was already acknowledged; a withdrawn finding is a ValueError."""
    role_require(user=actor, project=finding.project, role=Role.OPERATOR)
    with transaction.atomic():
        changed = Finding.objects.filter(pk=finding.pk, status=Finding.Status.OPEN).update(
            status=Finding.Status.ACKNOWLEDGED, acknowledged_by=actor, acknowledged_at=timezone.now())
        if changed:
            audit_record(project=finding.project, actor=actor, action="finding.acknowledge", obj_type="finding",
                         obj_id=finding.pk, detail={"kind": finding.kind, "key": finding.key}, address=address)
    if not changed:
        status = Finding.objects.filter(pk=finding.pk).values_list("status", flat=True).first()
        if status == Finding.Status.WITHDRAWN:
            raise ValueError("this finding was withdrawn: later spans showed it was not one")
    finding.refresh_from_db()
    return bool(changed)
