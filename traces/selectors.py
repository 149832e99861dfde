"""Reads of stored spans and traces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from sys import intern

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, Exists, IntegerField, Min, OuterRef, Q, Subquery, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from governance.models import AuditRecord
from governance.selectors import projects_for_user
from traces.explain import Explanation, evidence_incomplete, explain, path_references
from traces.models import TRACE_DURATION, Finding, FindingSpan, Span, Trace
from traces.records import Link, SpanRecord, chain_and_clock, collector_paused

LAST_CHOICES = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def ns_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _typed(value: str) -> list:
    """The JSON values a query string value may stand for: "42" is 42 or "42"."""
    values: list = [value]
    if value in ("true", "false"):
        values.append(value == "true")
    else:
        try:
            values.append(int(value))
        except ValueError:
            try:
                values.append(float(value))
            except ValueError:
                pass
    return values


def spans_with_attribute(*, project, key: str, value: str):
    """Spans whose attribute `key` (dotted keys are one key: "gen_ai.request.model") equals value,
    compared as text, so 42 matches "42" and true matches "true"."""
    spans = Span.objects.filter(project=project)
    if connection.vendor == "postgresql":
        # jsonb containment, which a GIN index on attributes can serve.
        match = Q()
        for typed in _typed(value):
            match |= Q(attributes__contains={key: typed})
        return spans.filter(match)
    # SQLite (JSON1): json_extract of the quoted key; numbers and booleans come back as SQL numbers.
    text = Cast(KeyTextTransform(key, "attributes"), TextField())
    alternatives = [value]
    if value in ("true", "false"):
        alternatives.append("1" if value == "true" else "0")
    return spans.alias(_attr=text).filter(_attr__in=alternatives)


# How far past the page a trace search counts its matches.
TRACE_COUNT_CAP = 1000

TRACE_SORTS = {
    "newest": ("-start_ns", "trace_id"),
    "oldest": ("start_ns", "trace_id"),
    "findings": ("-open_findings", "-start_ns", "trace_id"),
    "violations": ("-violations", "-start_ns", "trace_id"),
    "duration": ("-duration", "trace_id"),
    "errors": ("-error_count", "-start_ns", "trace_id"),
}

# Violations are the policies app's, which traces does not import (pyproject's import contracts):
# the count reads its table by name. The (project, trace_id) index serves it.
_VIOLATIONS_OF_TRACE = ("SELECT COUNT(*) FROM policies_violation v "
                        "WHERE v.project_id = traces_trace.project_id AND v.trace_id = traces_trace.trace_id")


def _open_findings_of_trace():
    return Coalesce(Subquery(
        FindingSpan.objects.filter(project=OuterRef("project"), trace_id=OuterRef("trace_id"),
                                   finding__status=Finding.Status.OPEN)
        .order_by().values("trace_id").annotate(n=Count("finding_id", distinct=True)).values("n")[:1],
        output_field=IntegerField()), Value(0))


def _with_counts(traces):
    """Traces with their count of open findings and of policy violations (TraceSummarySerializer's)."""
    return traces.annotate(open_findings=_open_findings_of_trace(),
                           violations=RawSQL(_VIOLATIONS_OF_TRACE, [], IntegerField()))


def traces_search(*, project, service="", agent="", name="", status="", since=None, until=None, started_since=None,
                  min_duration_ms=None, max_duration_ms=None, now=None, attr="", finding_kind="", state_key="",
                  has_findings="", sort=""):
    """Traces of a project matching the filters, newest first unless `sort` says otherwise (TRACE_SORTS),
    each with its count of open findings and of policy violations. `since` and `until` keep the traces
    whose time overlaps them; `started_since` (the lookback, ?last=) those that started at or after it.
    `attr` is "key=value" on a span's attributes; `has_findings` "yes" or "no" (open or acknowledged findings)."""
    qs = _with_counts(Trace.objects.filter(project=project))
    if has_findings:
        with_findings = FindingSpan.objects.filter(project=project).exclude(
            finding__status=Finding.Status.WITHDRAWN).values("trace_id")
        qs = qs.filter(trace_id__in=with_findings) if has_findings == "yes" else qs.exclude(trace_id__in=with_findings)
    if attr:
        key, _, value = attr.partition("=")
        qs = qs.filter(trace_id__in=spans_with_attribute(project=project, key=key.strip(), value=value.strip())
                       .values("trace_id"))
    if state_key:
        qs = qs.filter(trace_id__in=Span.objects.filter(project=project, state_key=state_key).values("trace_id"))
    if finding_kind:
        qs = qs.filter(trace_id__in=FindingSpan.objects.filter(
            project=project, finding__kind=finding_kind).exclude(finding__status=Finding.Status.WITHDRAWN)
            .values("trace_id"))
    if service:
        qs = qs.filter(services__contains=f"|{service}|")
    if agent:
        qs = qs.filter(agents__contains=f"|{agent}|")
    if name:
        # EXISTS per trace, not IN: a common name has millions of spans, too many to hash (PostgreSQL then
        # scanned them for every trace). A trace's spans start within its summary's times, so the probe
        # reads one or two day partitions on PostgreSQL.
        qs = qs.filter(Q(root_name=name) | Exists(Span.objects.filter(
            project=project, name=name, trace_id=OuterRef("trace_id"),
            start_ns__gte=OuterRef("start_ns"), start_ns__lte=OuterRef("end_ns"))))
    if status == "error":
        qs = qs.filter(error_count__gt=0)
    elif status == "ok":
        qs = qs.filter(error_count=0)
    if since is not None:
        qs = qs.filter(end_ns__gte=ns_of(since))
    if until is not None:
        qs = qs.filter(start_ns__lte=ns_of(until))
    if started_since is not None:
        # On the start, which the (project, start) index bounds: nothing indexes a trace's end.
        qs = qs.filter(start_ns__gte=ns_of(started_since))
    if min_duration_ms is not None:
        qs = qs.extra(where=["end_ns - start_ns >= %s"], params=[int(min_duration_ms * 1e6)])
    if max_duration_ms is not None:
        qs = qs.extra(where=["end_ns - start_ns <= %s"], params=[int(max_duration_ms * 1e6)])
    if sort == "duration":
        # The expression of the trace_project_duration index, which serves this order.
        qs = qs.alias(duration=TRACE_DURATION)
    return qs.order_by(*TRACE_SORTS.get(sort or "newest"))


def traces_count(traces, *, offset: int = 0) -> tuple[int, bool]:
    """(count, capped): how many of `traces` there are, counted no further than TRACE_COUNT_CAP past
    `offset`; capped says there are more (the count is then a lower bound, shown "1,000+" as Jaeger and
    Tempo do). An exact count of a million matches read them all; this reads at most offset + cap + 1,
    in any order (how many there are does not depend on it)."""
    matches = traces.order_by().values("pk")
    found = matches[offset:offset + TRACE_COUNT_CAP + 1].count()
    if offset and not found:
        # Past the end: there are fewer than `offset`, counted exactly (no more than reading up to the
        # offset costs) so the pager goes back to the true last page.
        return matches[:offset].count(), False
    return offset + min(found, TRACE_COUNT_CAP), found > TRACE_COUNT_CAP


def trace_get(*, project, trace_id: str) -> Trace | None:
    return _with_counts(Trace.objects.filter(project=project, trace_id=trace_id.lower())).first()


@dataclass(frozen=True)
class AnalysisLag:
    seconds: float  # since the last span of the oldest trace due for analysis and not analysed; 0 when none
    waiting: int  # traces due for analysis and not analysed


def analysis_lag(*, project, now: datetime) -> AnalysisLag:
    """How fresh the project's findings are. A trace is due once it has been quiet for
    TRACE_QUIET_SECONDS; it waits until every pipeline stage has run on it."""
    due = Trace.objects.filter(project=project).filter(
        Q(state=Trace.State.COMPLETE)
        | Q(state=Trace.State.OPEN, last_received_at__lte=now - timedelta(seconds=settings.TRACE_QUIET_SECONDS)))
    found = due.aggregate(oldest=Min("last_received_at"), waiting=Count("pk"))
    oldest = found["oldest"]
    return AnalysisLag(seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0, waiting=found["waiting"])


def spans_of_trace(*, project, trace_id: str):
    return Span.objects.filter(project=project, trace_id=trace_id.lower()).order_by("start_ns", "span_id")


# ---------------------------------------------------------------------------
# Timelines, key histories and findings

# The columns a SpanRecord needs, read as tuples: building model instances costs more
# than the analyses that read the records.
_RECORD_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status_code", "status_message",
    "service_name", "service_version", "instance_id", "agent", "thread_id", "state_key", "state_op", "state_version",
    "state_base_version", "state_conflict", "idempotency_key", "idempotency_outcome", "lock_name",
    "lock_fencing_token", "attributes", "events", "links",
)
_RESOURCE_COLUMNS = ("resource_attributes", "scope_name", "scope_version", "resource_schema_url", "scope_schema_url")


def span_records(qs, *, resource: bool = True, chunk_size: int = 5000, bare: bool = False) -> Iterator[SpanRecord]:
    """Stored spans as the plain records the analysis and policy cores read, in chunks.
    Without `resource`, resource attributes, scope and schema URLs are left empty (timelines
    and the happens-before analysis do not read them). `bare` leaves attributes and events empty
    too: the happens-before analysis reads neither, and decoding their JSON was a third of loading.

    The rows are read with the queryset's own SQL on a plain cursor and turned into records here:
    Django's per-row converters were most of the time it took to load the tens of thousands of
    spans an analysis run or a finding page reads. Both backends hand JSON columns over as text."""
    columns = _RECORD_COLUMNS + (_RESOURCE_COLUMNS if resource else ())
    if bare:
        # An empty text, not a JSON null: Value(None, JSONField()) comes back as the text "null", and
        # decoding that twice per span was a fifth of a finding page's load.
        columns = tuple(Value("", TextField()) if c in ("attributes", "events") else c for c in columns)
    try:
        sql, params = qs.values_list(*columns).query.sql_with_params()
    except EmptyResultSet:  # a filter nothing can match (e.g. `__in=[]`): the ORM would return no rows
        return
    loads, record = json.loads, SpanRecord
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            for row in rows:
                (trace_id, span_id, parent, name, kind, start, end, status_code, status_message, service, version,
                 instance, agent, thread, key, op, state_version, base, conflict, idem, outcome, lock, token,
                 attributes, events, links) = row[:26]
                # The texts that repeat from span to span, one copy each: an analysis worker keeps the
                # window's records (1.4 KB a span with a copy of each, 0.9 KB without).
                trace_id, name, service, version, instance, agent, thread, key, op = (
                    intern(trace_id), intern(name), intern(service), intern(version), intern(instance),
                    intern(agent), intern(thread), intern(key), intern(op))
                chain, clock = chain_and_clock(instance, thread, agent)
                # Positional, in SpanRecord's field order: keywords cost half of building a record, and
                # an analysis run builds hundreds of thousands.
                span = record(
                    trace_id, span_id, parent, name, kind, start, end, status_code, status_message, service, version,
                    instance, agent, thread, intern(chain), clock, key, op, state_version, base, bool(conflict), idem,
                    outcome, lock, token, loads(attributes) if attributes else {}, loads(events) if events else [],
                    tuple(Link(l["trace_id"], l["span_id"], l.get("attributes") or {}) for l in loads(links))
                    if links and links != "[]" else (),
                )
                if resource:
                    resource_attributes, span.scope_name, span.scope_version, span.resource_schema_url, \
                        span.scope_schema_url = row[26:]
                    span.resource_attributes = loads(resource_attributes) if resource_attributes else {}
                yield span


def span_records_of_trace(*, project, trace_id: str) -> list[SpanRecord]:
    """One trace's spans as plain records (no resource attributes), by start time."""
    return list(span_records(spans_of_trace(project=project, trace_id=trace_id), resource=False))


def key_accesses(*, project, key: str, since_ns: int | None = None, until_ns: int | None = None,
                 limit: int = 5000) -> list[SpanRecord]:
    """Spans that touched one key (state key, idempotency key or lock name) in a time range, oldest
    first; the newest `limit` when there are more."""
    qs = Span.objects.filter(Q(state_key=key) | Q(idempotency_key=key) | Q(lock_name=key), project=project)
    if since_ns is not None:
        qs = qs.filter(start_ns__gte=since_ns)
    if until_ns is not None:
        qs = qs.filter(start_ns__lte=until_ns)
    records = list(span_records(qs.order_by("-start_ns", "span_id")[:limit], resource=False))
    records.reverse()
    return records


def findings_search(*, project, kind="", key="", agent="", trace_id="", status="", since_ns=None, until_ns=None):
    """A project's findings matching the filters, newest first. Withdrawn ones only when asked for."""
    qs = Finding.objects.filter(project=project)
    if kind:
        qs = qs.filter(kind=kind)
    if key:
        qs = qs.filter(key=key)
    if agent:
        qs = qs.filter(agents__contains=f"|{agent}|")
    if trace_id:
        qs = qs.filter(pk__in=FindingSpan.objects.filter(project=project, trace_id=trace_id.lower()).values("finding_id"))
    if status:
        qs = qs.filter(status=status)
    else:
        qs = qs.exclude(status=Finding.Status.WITHDRAWN)
    if since_ns is not None:
        qs = qs.filter(first_ns__gte=since_ns)
    if until_ns is not None:
        qs = qs.filter(first_ns__lte=until_ns)
    return qs.order_by("-first_ns", "-id")


def findings_of_trace(*, project, trace_id: str):
    """Findings involving a span of this trace, not withdrawn."""
    return findings_search(project=project, trace_id=trace_id)


def findings_of_spans(*, project, spans) -> dict[tuple[str, str], list[dict]]:
    """{(trace_id, span_id): [{"id", "kind", "status"}, ...]}: the findings, not withdrawn, that involve
    each of these spans, oldest finding first; spans in none are absent. One query for any number of
    spans (a page of violations): FindingSpan rows of their traces (the (project, trace_id) index)
    whose span id is among theirs, then the exact pairs kept here, a span id of one trace matching a
    span of another being rare."""
    wanted = set(spans)
    if not wanted:
        return {}
    rows = (FindingSpan.objects.filter(project=project, trace_id__in={t for t, _ in wanted},
                                       span_id__in={s for _, s in wanted})
            .exclude(finding__status=Finding.Status.WITHDRAWN).order_by("finding_id")
            .values_list("trace_id", "span_id", "finding_id", "finding__kind", "finding__status"))
    found: dict[tuple[str, str], list[dict]] = {}
    for trace_id, span_id, finding_id, kind, status in rows:
        shown = found.setdefault((trace_id, span_id), []) if (trace_id, span_id) in wanted else None
        if shown is not None and all(f["id"] != finding_id for f in shown):
            shown.append({"id": finding_id, "kind": kind, "status": status})
    return found


def finding_counts_of_traces(*, project, trace_ids) -> dict[str, int]:
    """{trace_id: how many findings, not withdrawn, involve a span of it}; traces with none are absent."""
    if not trace_ids:
        return {}
    return dict(FindingSpan.objects.filter(project=project, trace_id__in=set(trace_ids))
                .exclude(finding__status=Finding.Status.WITHDRAWN).order_by()
                .values("trace_id").annotate(n=Count("finding_id", distinct=True)).values_list("trace_id", "n"))


def finding_get(*, user, finding_id: int):
    """A finding in one of the person's projects, or None."""
    return Finding.objects.select_related("project").filter(
        pk=finding_id, project__in=projects_for_user(user=user)).first()


# The spans a finding's explanation reads: around its own spans by this much, and at most this many.
FINDING_CONTEXT_NS = 250_000_000
FINDING_CONTEXT_MAX = 20_000
FINDING_TRACE_WHOLE_MAX = 2_000  # a finding's own traces are read whole up to this many spans


def finding_context_spans(*, project, finding: Finding) -> list[SpanRecord]:
    """The spans a happens-before path between the finding's spans can run through: every span
    that ran between its first start and last end (and a quarter second either side, for clock
    skew and for the edges that came too late), plus the whole of the finding's own traces when
    they are not huge (their roots give the bars their tree). Oldest first."""
    own = list(Span.objects.filter(project=project, trace_id__in=finding.trace_ids, span_id__in=finding.span_ids)
               .values_list("start_ns", "end_ns"))
    if not own:
        return list(span_records(Span.objects.filter(project=project, trace_id__in=finding.trace_ids)
                                 .order_by("start_ns", "span_id"), resource=False))
    low = min(s for s, _ in own) - FINDING_CONTEXT_NS
    high = max(e for _, e in own) + FINDING_CONTEXT_NS
    around = (Span.objects.filter(project=project, start_ns__gte=low - FINDING_CONTEXT_NS, start_ns__lte=high,
                                  end_ns__gte=low)
              .order_by("start_ns")[:FINDING_CONTEXT_MAX])  # the index's order: no sort (the records are sorted below)
    # Bare (no attributes or events): the graph reads neither, and decoding them was a third of loading
    # thousands of spans; finding_explanation reads the few drawn ones whole.
    records = {(s.trace_id, s.span_id): s for s in span_records(around, resource=False, bare=True)}
    small = Trace.objects.filter(project=project, trace_id__in=finding.trace_ids,
                                 span_count__lte=FINDING_TRACE_WHOLE_MAX).values("trace_id")
    for s in span_records(Span.objects.filter(project=project, trace_id__in=small), resource=False):
        records[(s.trace_id, s.span_id)] = s
    return sorted(records.values(), key=lambda s: (s.start_ns, s.span_id))


def analysis_horizon_ns(project) -> int:
    """How far in event time the analysis looks around new spans: the project's analysis window,
    or ANALYSIS_HORIZON_SECONDS when that is set and shorter."""
    window_ns = project.analysis_window_minutes * 60 * 1_000_000_000
    if settings.ANALYSIS_HORIZON_SECONDS <= 0:
        return window_ns
    return min(window_ns, int(settings.ANALYSIS_HORIZON_SECONDS * 1_000_000_000))


FINDING_PATH_HOPS = 4  # rounds of following a path back from trace to trace
FINDING_PATH_MAX = 5_000  # spans loaded in all while following it
FINDING_PATH_REFERENCES = 200  # spans or versions asked for in one round


def finding_explanation(*, project, finding: Finding) -> Explanation:
    """The finding explained (traces.explain) over the spans around it. When those lack a path the
    analysis found (its spans ran far away in time, or on a clock far off), the path is followed
    back from the finding's traces, trace by trace, through the spans the loaded ones name (parent,
    linked span) and the writes of the versions they read, within the analysis horizon: each hop
    loads only the traces named, a few queries on the primary key and the state-key index."""
    with collector_paused():  # up to tens of thousands of records and the graph over them
        return _explanation(project, finding)


def _explanation(project, finding: Finding) -> Explanation:
    spans = finding_context_spans(project=project, finding=finding)

    def explained(records) -> Explanation:
        return explain(kind=finding.kind, key=finding.key, span_ids=finding.span_ids, trace_ids=finding.trace_ids,
                       detail=finding.detail, spans=records)

    ex = explained(spans)
    if not evidence_incomplete(ex) or not ex.sides:
        return _drawn_whole(project, ex)
    records = {(s.trace_id, s.span_id): s for s in spans}
    horizon = analysis_horizon_ns(project)
    low = min(s.start_ns for s in ex.sides) - horizon
    high = max(s.end_ns for s in ex.sides) + horizon
    frontier = [s for s in spans if s.trace_id in set(finding.trace_ids)]
    for _ in range(FINDING_PATH_HOPS):
        frontier = [s for s in _named_spans(project, frontier, records, low, high)
                    if (s.trace_id, s.span_id) not in records]
        if not frontier:
            break
        records.update(((s.trace_id, s.span_id), s) for s in frontier)
        ex = explained(records.values())
        if not evidence_incomplete(ex) or len(records) >= FINDING_PATH_MAX:
            break
    return _drawn_whole(project, ex)


def _drawn_whole(project, ex: Explanation) -> Explanation:
    """The explanation with its slice's spans read whole (attributes and events, for the bars' detail)."""
    if ex.slice:
        # Both id lists, not an OR of (trace, span) pairs: PostgreSQL planned the OR of 80 pairs for
        # longer than it ran. The few extra rows a cross product may bring are dropped here.
        wanted = {(s.trace_id, s.span_id) for s in ex.slice}
        rows = Span.objects.filter(project=project, trace_id__in={t for t, _ in wanted},
                                   span_id__in={i for _, i in wanted})
        whole = {(s.trace_id, s.span_id): s for s in span_records(rows, resource=False)}
        ex.slice = [whole.get((s.trace_id, s.span_id), s) for s in ex.slice]
    return ex


def _named_spans(project, spans: list[SpanRecord], known: dict, low: int, high: int) -> list[SpanRecord]:
    """The traces (whole when small, else the span alone) of the spans these spans name and that are
    not `known`: parents, linked spans, and the writes of the versions they read or wrote on."""
    named, versions = path_references(spans, known.values())
    named, versions = sorted(named)[:FINDING_PATH_REFERENCES], sorted(versions)[:FINDING_PATH_REFERENCES]
    if not named and not versions:
        return []
    found: list[tuple[str, str]] = []
    if named:
        by_pair = Q()
        for trace_id, span_id in named:
            by_pair |= Q(trace_id=trace_id, span_id=span_id)
        found += Span.objects.filter(by_pair, project=project).values_list("trace_id", "span_id")
    if versions:
        writes = Q()
        for key, version in versions:
            writes |= Q(state_key=key, state_version=version)
        found += (Span.objects.filter(writes, project=project, state_op="write", start_ns__gte=low, start_ns__lte=high)
                  .values_list("trace_id", "span_id")[:FINDING_PATH_REFERENCES])
    if not found:
        return []
    traces = {t for t, _ in found}
    small = list(Trace.objects.filter(project=project, trace_id__in=traces, span_count__lte=FINDING_TRACE_WHOLE_MAX,
                                      start_ns__lte=high, end_ns__gte=low).values_list("trace_id", flat=True))
    alone = Q()
    for trace_id, span_id in found:
        if trace_id not in small:
            alone |= Q(trace_id=trace_id, span_id=span_id)
    wanted = Q(trace_id__in=small) | alone if alone else Q(trace_id__in=small)
    return list(span_records(Span.objects.filter(wanted, project=project, start_ns__gte=low, start_ns__lte=high)
                             .order_by("start_ns")[:FINDING_PATH_MAX], resource=False))


_HISTORY_WORDS = {"finding.acknowledge": "acknowledged"}


def finding_history(*, project, finding: Finding) -> list[dict]:
    """What happened to a finding, oldest first: found, acknowledged (from the audit log), withdrawn."""
    events = [{"at": finding.created_at, "what": "found", "who": "analysis", "detail": ""}]
    for record in AuditRecord.objects.filter(project=project, object_type="finding", object_id=str(finding.pk)):
        events.append({"at": record.created_at, "what": _HISTORY_WORDS.get(record.action, record.action),
                       "who": record.actor_name, "detail": ""})
    if finding.withdrawn_at:
        events.append({"at": finding.withdrawn_at, "what": "withdrawn", "who": "analysis",
                       "detail": finding.withdrawn_reason})
    return sorted(events, key=lambda e: e["at"])
