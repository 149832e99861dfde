"""Analysis in the live product: load what new spans touch, analyse, store findings once."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance.bulk import rows_update
from governance.models import Project, Role
from governance.services import audit_record, role_require
from traces.analysis import Finding as FoundFinding
from traces.analysis import HappensBefore, analyse_revised
from traces.models import Finding, FindingSpan, Span, Trace, member_text
from traces.records import SpanRecord
from traces.selectors import analysis_horizon_ns, span_records

log = logging.getLogger(__name__)


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


def _region_spans(project: Project, new: list[SpanRecord]) -> list[SpanRecord]:
    """The spans a run analyses with the spans of traces that turned quiet: every trace that has a
    span within the analysis horizon (event time) before their earliest span or after their latest,
    whole (a trace is never cut, so no span in it looks orphaned).

    A happens-before path may run through any span (program order on a thread, a message, a
    version, a lock), and late spans may order accesses on traces far from their own. Paths run
    forward in time but for clock skew, so the spans around in time decide every pair the new
    spans take part in or order, up to the horizon; what costs a run is the horizon times the span
    rate, whatever the window.
    """
    low, high = min(s.start_ns for s in new), max(s.end_ns for s in new)
    horizon = analysis_horizon_ns(project)
    nearby = Trace.objects.filter(project=project, start_ns__lte=high + horizon,
                                  end_ns__gte=low - horizon).values("trace_id")
    return list(span_records(Span.objects.filter(project=project, trace_id__in=nearby), resource=False, bare=True))


def findings_update(*, project_id: int, trace_ids: list[str]) -> int:
    """The analysis stage: analyse the traces that turned quiet with the spans around them, and
    revise only the findings their spans can change (docs/concurrency.md, live analysis): store
    those not stored yet, reopen those found again, withdraw those no longer found. Idempotent.
    Returns how many findings were new."""
    project = Project.objects.get(pk=project_id)
    began = time.perf_counter()
    quiet = list(span_records(Span.objects.filter(project=project, trace_id__in=trace_ids), resource=False,
                              bare=True))
    if not quiet:
        return 0
    records = _region_spans(project, quiet)
    loaded = time.perf_counter()
    revised_by = {(s.trace_id, s.span_id) for s in quiet}
    revised, touched = analyse_revised(records, revised_by)
    analysed = time.perf_counter()
    found = {finding_fingerprint(f): f for f in revised}
    trace_of = {s.span_id: s.trace_id for s in records}
    start_of = {s.span_id: s.start_ns for s in records}
    with transaction.atomic():
        known = dict(Finding.objects.filter(project=project, fingerprint__in=list(found))
                     .values_list("fingerprint", "status"))
        fresh = [
            Finding(project=project, kind=f.kind, key=f.key, trace_ids=list(f.trace_ids), span_ids=list(f.span_ids),
                    agents=member_text(f.agents), detail=f.detail, fingerprint=fp,
                    first_ns=min((start_of.get(s, 0) for s in f.span_ids), default=0))
            for fp, f in found.items() if fp not in known
        ]
        created = Finding.objects.bulk_create(fresh, ignore_conflicts=True)
        stored = dict(Finding.objects.filter(project=project, fingerprint__in=[f.fingerprint for f in created])
                      .values_list("fingerprint", "pk"))
        FindingSpan.objects.bulk_create([
            FindingSpan(finding_id=stored[f.fingerprint], project=project, trace_id=trace_of.get(span_id, ""),
                        span_id=span_id)
            for f in created if f.fingerprint in stored for span_id in f.span_ids
        ])
        again = [fp for fp, status in known.items() if status == Finding.Status.WITHDRAWN]
        if again:
            Finding.objects.filter(project=project, fingerprint__in=again).update(
                status=Finding.Status.OPEN, withdrawn_at=None, withdrawn_reason="")
        _withdraw_revised(project, records, found, quiet, touched)
    # What a run costs, by step: the figures docs/concurrency.md's pipeline section is about.
    log.info("analysis of %s new spans with %s around them: %s revised, %s findings touched, %s new; "
             "load %.2f s, analyse %.2f s, store %.2f s", len(quiet), len(records), len(touched), len(found),
             len(fresh), loaded - began, analysed - loaded, time.perf_counter() - analysed)
    return len(fresh)


def _withdraw_revised(project: Project, records: list[SpanRecord], found: dict[str, FoundFinding],
                      quiet: list[SpanRecord], touched: set[tuple[str, str]]) -> None:
    """An open finding that the new spans could change (one of its spans happened after one of
    them, or it is a duplicate execution of one of their idempotency keys), whose spans were all
    analysed again and that is no longer found, was made before later spans arrived (they ordered
    its accesses, or brought an orphan's parent): withdraw it, and say which later spans did it."""
    region = {(s.trace_id, s.span_id) for s in records}
    keys = {s.idempotency_key for s in quiet if s.idempotency_key}
    by_span = FindingSpan.objects.filter(project=project, trace_id__in={t for t, _ in touched}).values_list(
        "finding_id", "trace_id", "span_id")
    ids = {finding_id for finding_id, t, s in by_span if (t, s) in touched}
    candidates = (Finding.objects.filter(project=project, status__in=[Finding.Status.OPEN, Finding.Status.ACKNOWLEDGED])
                  .filter(Q(pk__in=ids) | Q(kind="duplicate_side_effect", key__in=keys))
                  .exclude(fingerprint__in=list(found)))
    spans_of: dict[int, list[tuple[str, str]]] = {}
    for finding_id, trace_id, span_id in FindingSpan.objects.filter(finding__in=candidates).values_list(
            "finding_id", "trace_id", "span_id"):
        spans_of.setdefault(finding_id, []).append((trace_id, span_id))
    explain = _Withdrawals(records, found, {s.trace_id for s in quiet})
    withdrawn = list(candidates.filter(pk__in=[pk for pk, spans in spans_of.items() if set(spans) <= region]))
    now = timezone.now()
    for finding in withdrawn:
        finding.status, finding.withdrawn_at = Finding.Status.WITHDRAWN, now
        finding.withdrawn_reason = explain.reason(finding, spans_of[finding.pk])
    # A run can withdraw thousands. It holds its project's analysis lease, so no other run writes
    # these rows meanwhile.
    rows_update(withdrawn, ["status", "withdrawn_at", "withdrawn_reason"])


class _Withdrawals:
    """Why findings were withdrawn, for one run: its spans indexed and its happens-before graph
    built once (a run over traffic with hot keys can withdraw thousands of findings; building them
    per finding made a run quadratic). Paths are traced for the first PATHS_NAMED pairs of a run;
    the rest name the later traces, which is what a reader follows anyway."""

    PATHS_NAMED = 100

    def __init__(self, records: list[SpanRecord], found: dict[str, FoundFinding], trace_ids: set[str]):
        self.by_key = {(s.trace_id, s.span_id): s for s in records}
        self.records = records
        self.found_by_span: dict[tuple[str, str, str], list[FoundFinding]] = {}
        for f in found.values():
            for span_id in f.span_ids:
                self.found_by_span.setdefault((f.kind, f.key, span_id), []).append(f)
        self.later = [key for key in self.by_key if key[0] in trace_ids]
        self.later_traces = sorted(trace_ids)
        self._graph: HappensBefore | None = None
        self._later_at = None
        self._paths_left = self.PATHS_NAMED

    def named(self, key: tuple[str, str]) -> str:
        s = self.by_key[key]
        return f"{s.name} ({s.agent or s.service_name}, span {s.span_id} of trace {s.trace_id})"

    def reason(self, finding: Finding, spans: list[tuple[str, str]]) -> str:
        if finding.kind == "orphan_span":
            child = self.by_key[spans[0]]
            return f"Its parent arrived later: {self.named((child.trace_id, child.parent_span_id))}."
        if len(spans) == 2 and finding.kind in ("write_race", "stale_read", "lock_overlap") and self._paths_left > 0:
            self._paths_left -= 1
            if self._graph is None:
                self._graph = HappensBefore(self.records)
                self._later_at = self._graph.indexes(self.later)
            between = self._graph.between(spans[0], spans[1], self._later_at)
            if between:
                return ("Later spans ordered these accesses (a happens-before path runs through them): "
                        + "; ".join(self.named(key) for key in between[:3]) + (" and more." if len(between) > 3 else "."))
        for span_id in finding.span_ids:
            if same := self.found_by_span.get((finding.kind, finding.key, span_id)):
                return f"Later spans changed it; it stands as: {same[0].detail}."
        traces = self.later_traces
        return ("No longer found once the spans received later were analysed with it (trace "
                + ", ".join(traces[:3]) + (" and more" if len(traces) > 3 else "") + ").")


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
