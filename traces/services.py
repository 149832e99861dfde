"""Analysis in the live product: load what new spans touch, analyse, store findings once."""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from governance.bulk import rows_insert, rows_update
from governance.models import Project, Role
from governance.services import audit_record, role_require
from traces.analysis import Finding as FoundFinding
from traces.analysis import HappensBefore, Window
from traces.models import Finding, FindingSpan, Span, Trace, member_text
from traces.records import SpanRecord, collector_paused
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


class _QuietSpans:
    """The spans of quiet traces that this worker process has read, per project, and the analysis
    window (`traces.analysis.Window`) indexed over them, for the next run.

    A run analyses its new spans with every quiet trace around them, and most of those were read and
    indexed by the run before: reading them again was a third of a run, indexing them most of the
    rest. A quiet trace's spans are final until new spans reopen it, and ingest stores a span once,
    so a trace is read again only when its (row, span_count) differs from the copy
    kept, and then only its spans not held yet are added to the window. Traces still open around the
    new ones are left out: their spans are new to a later run, once they are quiet (as the spec says
    of orphans: "once the trace has been quiet").

    The window only grows; the traces in it that a run's range no longer holds (gone out of the
    horizon, reopened, deleted) stay until they are a quarter of it, and then it is built afresh
    from the range (`STALE_SHARE`): a run may see up to that much more than its horizon, never less.
    """

    STALE_SHARE = 0.25

    def __init__(self):
        # Per project: the window, and the spans it holds by trace, with the version they were read at.
        self._windows: dict[int, tuple[Window, dict[str, tuple[tuple, list[SpanRecord]]]]] = {}

    def clear(self) -> None:
        self._windows.clear()

    def region(self, project: Project, trace_ids: list[str]) -> tuple[list[SpanRecord], Window]:
        """(the spans of `trace_ids`, the window the run analyses them in, theirs included): every
        quiet trace with a span within the analysis horizon (event time) before their earliest span
        or after their latest, whole (a trace is never cut, so no span in it looks orphaned).

        A happens-before path may run through any span (program order on a thread, a message, a
        version, a lock), and late spans may order accesses on traces far from their own. Paths run
        forward in time but for clock skew, so the spans around in time decide every pair the new
        spans take part in or order, up to the horizon."""
        # A trace's version: its row and its span count. Ingest stores a span once and never changes it, so
        # spans added are the only change; the row's id, as a test database rolled back may hand out one
        # trace id again.
        version_columns = ("trace_id", "pk", "span_count")
        traces = Trace.objects.filter(project=project)
        batch = list(traces.filter(trace_id__in=trace_ids).values_list(*version_columns, "start_ns", "end_ns"))
        if not batch:
            return [], Window()
        horizon = analysis_horizon_ns(project)
        around = traces.exclude(state=Trace.State.OPEN).filter(
            start_ns__lte=max(row[-1] for row in batch) + horizon, end_ns__gte=min(row[-2] for row in batch) - horizon)
        # Every quiet trace of the horizon, every run: read as plain rows, without the ORM's per-row work.
        sql, params = around.values_list(*version_columns).query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            versions = {trace_id: (pk, count) for trace_id, pk, count in cursor.fetchall()}
        versions.update((row[0], row[1:3]) for row in batch)
        window, held = self._windows.get(project.pk, (None, {}))
        spans_of = {trace_id: held[trace_id] for trace_id, version in versions.items()
                    if trace_id in held and held[trace_id][0] == version}
        unread = [trace_id for trace_id in versions if trace_id not in spans_of]
        read: dict[str, list[SpanRecord]] = {trace_id: [] for trace_id in unread}
        with collector_paused():  # each collection would rescan the window's records kept
            for at in range(0, len(unread), 5000):
                for s in span_records(Span.objects.filter(project=project, trace_id__in=unread[at:at + 5000]),
                                      resource=False, bare=True):
                    read[s.trace_id].append(s)
        stale = sum(len(spans) for trace_id, (_, spans) in held.items() if trace_id not in versions)
        if window is None or window.worn or stale > self.STALE_SHARE * len(window):
            window, held = Window(), {}
            read.update((trace_id, spans) for trace_id, (_, spans) in spans_of.items())
        # A trace read again (new spans reopened it) adds only the spans the window does not hold yet.
        window.add(s for spans in read.values() for s in spans)
        held.update((trace_id, (versions[trace_id], spans)) for trace_id, spans in read.items())
        self._windows[project.pk] = (window, held)
        if read:
            # The records and indexes kept live as long as the window, millions of objects without
            # cycles: moved out of the cyclic collector's sight, or every collection in this process
            # rescans them all (a third of a run's load step at 200,000 spans). Collected first, so no
            # garbage is frozen.
            gc.collect()
            gc.freeze()
        new = [s for trace_id in trace_ids if trace_id in held for s in held[trace_id][1]]
        return new, window

quiet_spans = _QuietSpans()


def findings_update(*, project_id: int, trace_ids: list[str]) -> int:
    """The analysis stage: analyse the traces that turned quiet with the spans around them, and
    revise only the findings their spans can change (docs/concurrency.md, live analysis): store
    those not stored yet, reopen those found again, withdraw those no longer found. Idempotent.
    Returns how many findings were new."""
    project = Project.objects.get(pk=project_id)
    began = time.perf_counter()
    quiet, window = quiet_spans.region(project, trace_ids)
    if not quiet:
        return 0
    loaded = time.perf_counter()
    revised_by = {(s.trace_id, s.span_id) for s in quiet}
    revised, touched, graph = window.revise(revised_by)
    analysed = time.perf_counter()
    found = {finding_fingerprint(f): f for f in revised}
    # The findings' spans by id: a few hundred, among the hundreds of thousands analysed.
    span_of = {span_id: span for f in found.values() for span_id in f.span_ids for trace_id in f.trace_ids
               if (span := graph.span((trace_id, span_id)))}
    with transaction.atomic():
        known = dict(Finding.objects.filter(project=project, fingerprint__in=list(found))
                     .values_list("fingerprint", "status"))
        fresh = [
            Finding(project=project, kind=f.kind, key=f.key, trace_ids=list(f.trace_ids), span_ids=list(f.span_ids),
                    agents=member_text(f.agents), detail=f.detail, fingerprint=fp,
                    first_ns=min((span_of[s].start_ns if s in span_of else 0 for s in f.span_ids), default=0))
            for fp, f in found.items() if fp not in known
        ]
        rows_insert(fresh, ignore_conflicts=True)
        stored = dict(Finding.objects.filter(project=project, fingerprint__in=[f.fingerprint for f in fresh])
                      .values_list("fingerprint", "pk"))
        rows_insert([
            FindingSpan(finding_id=stored[f.fingerprint], project=project,
                        trace_id=span_of[span_id].trace_id if span_id in span_of else "",
                        span_id=span_id)
            for f in fresh if f.fingerprint in stored for span_id in f.span_ids
        ])
        again = [fp for fp, status in known.items() if status == Finding.Status.WITHDRAWN]
        if again:
            Finding.objects.filter(project=project, fingerprint__in=again).update(
                status=Finding.Status.OPEN, withdrawn_at=None, withdrawn_reason="")
        _withdraw_revised(project, graph, found, quiet, touched)
    # What a run costs, by step: the figures docs/concurrency.md's pipeline section is about.
    log.info("analysis of %s new spans with %s around them (%s lanes): %s revised, %s findings touched, %s new; "
             "load %.2f s, analyse %.2f s, store %.2f s", len(quiet), len(window), window.lanes, len(touched), len(found),
             len(fresh), loaded - began, analysed - loaded, time.perf_counter() - analysed)
    return len(fresh)


def _withdraw_revised(project: Project, graph: HappensBefore, found: dict[str, FoundFinding],
                      quiet: list[SpanRecord], touched: set[tuple[str, str]]) -> None:
    """An open finding that the new spans could change (one of its spans happened after one of
    them, or it is a duplicate execution of one of their idempotency keys), whose spans were all
    analysed again and that is no longer found, was made before later spans arrived (they ordered
    its accesses, or brought an orphan's parent): withdraw it, and say which later spans did it."""
    keys = {s.idempotency_key for s in quiet if s.idempotency_key}
    standing = [Finding.Status.OPEN, Finding.Status.ACKNOWLEDGED]
    # Filtered here rather than by long IN lists in SQL: most of these findings are the ones this run
    # found, and a run at 10,000 spans/s finds thousands.
    by_span = FindingSpan.objects.filter(project=project, trace_id__in={t for t, _ in touched},
                                         finding__status__in=standing).values_list("finding_id", "trace_id", "span_id")
    ids = {finding_id for finding_id, t, s in by_span if (t, s) in touched}
    ids.update(Finding.objects.filter(project=project, status__in=standing, kind="duplicate_side_effect",
                                      key__in=keys).values_list("pk", flat=True))
    gone = [pk for pk, fingerprint in Finding.objects.filter(pk__in=ids).values_list("pk", "fingerprint")
            if fingerprint not in found]
    spans_of: dict[int, list[tuple[str, str]]] = {}
    for finding_id, trace_id, span_id in FindingSpan.objects.filter(finding_id__in=gone).values_list(
            "finding_id", "trace_id", "span_id"):
        spans_of.setdefault(finding_id, []).append((trace_id, span_id))
    analysed_again = [pk for pk, spans in spans_of.items() if all(graph.span(key) is not None for key in spans)]
    withdrawn = list(Finding.objects.filter(pk__in=analysed_again))
    explain = _Withdrawals(graph, found, quiet)
    now = timezone.now()
    for finding in withdrawn:
        finding.status, finding.withdrawn_at = Finding.Status.WITHDRAWN, now
        finding.withdrawn_reason = explain.reason(finding, spans_of[finding.pk])
    # A run can withdraw thousands. It holds its project's analysis lease, so no other run writes
    # these rows meanwhile.
    rows_update(withdrawn, ["status", "withdrawn_at", "withdrawn_reason"])


class _Withdrawals:
    """Why findings were withdrawn, for one run, over the happens-before graph its analysis built
    (a run over traffic with hot keys can withdraw thousands of findings; building a graph per
    finding made a run quadratic). Paths are traced for the first PATHS_NAMED pairs of a run; the
    rest name the later traces, which is what a reader follows anyway."""

    PATHS_NAMED = 1

    def __init__(self, graph: HappensBefore, found: dict[str, FoundFinding], quiet: list[SpanRecord]):
        self.graph = graph
        self.found_by_span: dict[tuple[str, str, str], list[FoundFinding]] = {}
        for f in found.values():
            for span_id in f.span_ids:
                self.found_by_span.setdefault((f.kind, f.key, span_id), []).append(f)
        self.later = [(s.trace_id, s.span_id) for s in quiet]
        self.later_traces = sorted({s.trace_id for s in quiet})
        self._later_at = None
        self._paths_left = self.PATHS_NAMED

    def named(self, key: tuple[str, str]) -> str:
        s = self.graph.span(key)
        return f"{s.name} ({s.agent or s.service_name}, span {s.span_id} of trace {s.trace_id})"

    def reason(self, finding: Finding, spans: list[tuple[str, str]]) -> str:
        if finding.kind == "orphan_span":
            child = self.graph.span(spans[0])
            return f"Its parent arrived later: {self.named((child.trace_id, child.parent_span_id))}."
        if len(spans) == 2 and finding.kind in ("write_race", "stale_read", "lock_overlap") and self._paths_left > 0:
            self._paths_left -= 1
            if self._later_at is None:
                self._later_at = self.graph.indexes(self.later)
            between = self.graph.between(spans[0], spans[1], self._later_at)
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
