"""Storing decoded spans: one transaction, a batch insert, summaries updated.

A retried batch stores nothing twice: the trace rows of the batch are locked
first (in trace id order, so concurrent requests cannot deadlock), then the
spans already stored are skipped. Every writer of a trace holds its row lock,
so that check cannot race. A trace whose row this request creates has no
stored spans, so only traces that had spans are checked; on PostgreSQL new
traces are inserted with their summary in one statement and need no UPDATE.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from governance.bulk import rows_update
from traces.models import Span, Trace, member_text
from traces.records import STATUS_ERROR, SpanRecord
from traces.span_rules import json_text

SPAN_COLUMNS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "name", "kind",
    "service_name", "service_version", "instance_id", "agent", "thread_id",
    "start_ns", "end_ns", "duration_ns", "status_code", "status_message",
    "state_key", "state_op", "state_version", "state_base_version", "state_conflict",
    "idempotency_key", "idempotency_outcome", "lock_name", "lock_fencing_token",
    "attributes", "events", "links", "resource_attributes",
    "scope_name", "scope_version", "resource_schema_url", "scope_schema_url",
)


def _rows(project_id: int, spans: list[SpanRecord]):
    resource_json: dict[int, str] = {}  # spans of one resource share its dict
    for s in spans:
        resource = resource_json.get(id(s.resource_attributes))
        if resource is None:
            resource = resource_json[id(s.resource_attributes)] = json_text(s.resource_attributes)
        yield (
            project_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind,
            s.service_name, s.service_version, s.instance_id, s.agent, s.thread_id,
            s.start_ns, s.end_ns, s.end_ns - s.start_ns, s.status_code, s.status_message,
            s.state_key, s.state_op, s.state_version, s.state_base_version, s.state_conflict,
            s.idempotency_key, s.idempotency_outcome, s.lock_name, s.lock_fencing_token,
            json_text(s.attributes),
            json_text(s.events) if s.events else "[]",
            json_text([{"trace_id": l.trace_id, "span_id": l.span_id, "attributes": l.attributes} for l in s.links])
            if s.links else "[]",
            resource,
            s.scope_name, s.scope_version, s.resource_schema_url, s.scope_schema_url,
        )


def _insert_spans(project_id: int, spans: list[SpanRecord]) -> None:
    table = Span._meta.db_table
    columns = ", ".join(SPAN_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY is the fastest way into PostgreSQL; duplicates were filtered under the trace locks. It goes
            # through psycopg's own cursor, so its errors are turned into Django's here, as the ORM's are.
            with connection.wrap_database_errors, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in _rows(project_id, spans):
                    copy.write_row(row)
        else:
            placeholders = ", ".join(["%s"] * len(SPAN_COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", list(_rows(project_id, spans)))


def spans_store(*, project_id: int, spans: list[SpanRecord]) -> int:
    """Store spans not stored before; returns how many were new."""
    if not spans:
        return 0
    by_trace: dict[str, dict[str, SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, {}).setdefault(span.span_id, span)
    trace_ids = sorted(by_trace)
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            created, traces = _traces_create_or_lock(project_id, trace_ids, by_trace, now)
        else:
            created = set()
            Trace.objects.bulk_create(
                [Trace(project_id=project_id, trace_id=t, last_received_at=now) for t in trace_ids],
                ignore_conflicts=True,
            )
            traces = list(
                Trace.objects.select_for_update().filter(project_id=project_id, trace_id__in=trace_ids).order_by("trace_id")
            )
        # Only traces that had spans when locked can hold a span of this batch: a trace row is created with
        # its first spans, in the same transaction, and outlives them (see tasks.retention). Most batches
        # bring new traces, so this query is usually skipped.
        # By trace only, filtering span ids here: with span_id IN (500 ids) too, PostgreSQL's estimate of
        # the trace x span probes made it scan every span of the project (15-40 ms a batch at 50k spans).
        had_spans = [t.trace_id for t in traces if t.span_count]
        stored = set(
            Span.objects.filter(project_id=project_id, trace_id__in=had_spans).values_list("trace_id", "span_id")
        ) if had_spans else set()
        new_spans = [
            span for trace_id in trace_ids for span_id, span in by_trace[trace_id].items()
            if (trace_id, span_id) not in stored
        ]
        if not new_spans:
            return 0
        _insert_spans(project_id, new_spans)
        changed = _summaries_update(traces, [s for s in new_spans if s.trace_id not in created], now)
        _traces_update(changed)
    return len(new_spans)


def _traces_create_or_lock(project_id: int, trace_ids: list[str], by_trace: dict[str, dict[str, SpanRecord]],
                           now) -> tuple[set[str], list[Trace]]:
    """PostgreSQL: insert the batch's new traces already summarised, lock the others; returns
    (ids of the traces inserted, the other traces locked).

    One INSERT ... ON CONFLICT DO NOTHING RETURNING inserts (in trace id order) the row of every trace not
    stored yet with the summary of its spans in this batch, which are all new: such a trace needs no
    stored-span check and no UPDATE. It returns the rows it inserted; the traces that existed are then
    locked in trace id order, as the ORM path locks them. An insert waits for a concurrent insert of the
    same trace to commit, and both steps go in trace id order, so concurrent requests cannot deadlock.
    """
    fresh = [Trace(project_id=project_id, trace_id=t, last_received_at=now) for t in trace_ids]
    _summaries_update(fresh, [span for t in trace_ids for span in by_trace[t].values()], now)
    fields = [Trace._meta.get_field(name) for name in ("project", "trace_id", *SUMMARY_FIELDS)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    arrays = ", ".join(f"%s::{f.cast_db_type(connection)}[]" for f in fields)
    table = quote(Trace._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS batch ({columns}, position) ORDER BY position "
            f"ON CONFLICT ({quote('project_id')}, {quote('trace_id')}) DO NOTHING RETURNING {quote('trace_id')}",
            [[f.get_db_prep_save(getattr(trace, f.attname), connection) for trace in fresh] for f in fields],
        )
        created = {row[0] for row in cursor.fetchall()}
    existing = [t for t in trace_ids if t not in created]
    if not existing:
        return created, []
    return created, list(
        Trace.objects.select_for_update().filter(project_id=project_id, trace_id__in=existing).order_by("trace_id")
    )


SUMMARY_FIELDS = ("root_name", "root_span_id", "services", "agents", "span_count", "error_count",
                  "start_ns", "end_ns", "last_received_at", "state", "completed_at")


def _traces_update(traces: list[Trace]) -> None:
    rows_update(traces, SUMMARY_FIELDS)


def _summaries_update(traces: list[Trace], new_spans: list[SpanRecord], now) -> list[Trace]:
    by_id = {t.trace_id: t for t in traces}
    grouped: dict[str, list[SpanRecord]] = {}
    for span in new_spans:
        grouped.setdefault(span.trace_id, []).append(span)
    changed = []
    for trace_id, group in grouped.items():
        trace = by_id[trace_id]
        first = trace.span_count == 0
        start = min(s.start_ns for s in group)
        end = max(s.end_ns for s in group)
        trace.start_ns = start if first else min(trace.start_ns, start)
        trace.end_ns = end if first else max(trace.end_ns, end)
        trace.span_count += len(group)
        trace.error_count += sum(1 for s in group if s.status_code == STATUS_ERROR)
        trace.services = member_text(trace.service_list + [s.service_name for s in group])
        trace.agents = member_text(trace.agent_list + [s.agent for s in group])
        root = next((s for s in group if not s.parent_span_id), None)
        if root is not None and not trace.root_span_id:
            trace.root_name, trace.root_span_id = root.name, root.span_id
        trace.last_received_at = now
        # New spans reopen a completed trace, so analysis sees them once it is quiet again.
        trace.state = Trace.State.OPEN
        trace.completed_at = None
        changed.append(trace)
    return changed
