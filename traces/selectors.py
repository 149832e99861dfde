"""Reads of stored spans and traces."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from traces.models import Span, Trace
from traces.records import Link, SpanRecord, chain_and_clock

LAST_CHOICES = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def traces_search(*, project, service="", agent="", name="", status="", since=None, until=None,
                  min_duration_ms=None, max_duration_ms=None, now=None):
    """Traces of a project matching the filters, newest first."""
    qs = Trace.objects.filter(project=project)
    if service:
        qs = qs.filter(services__contains=f"|{service}|")
    if agent:
        qs = qs.filter(agents__contains=f"|{agent}|")
    if name:
        qs = qs.filter(
            Q(root_name=name)
            | Q(trace_id__in=Span.objects.filter(project=project, name=name).values("trace_id"))
        )
    if status == "error":
        qs = qs.filter(error_count__gt=0)
    elif status == "ok":
        qs = qs.filter(error_count=0)
    if since is not None:
        qs = qs.filter(end_ns__gte=_ns(since))
    if until is not None:
        qs = qs.filter(start_ns__lte=_ns(until))
    if min_duration_ms is not None:
        qs = qs.extra(where=["end_ns - start_ns >= %s"], params=[int(min_duration_ms * 1e6)])
    if max_duration_ms is not None:
        qs = qs.extra(where=["end_ns - start_ns <= %s"], params=[int(max_duration_ms * 1e6)])
    return qs.order_by("-start_ns", "trace_id")


def trace_get(*, project, trace_id: str) -> Trace | None:
    return Trace.objects.filter(project=project, trace_id=trace_id.lower()).first()


def spans_of_trace(*, project, trace_id: str):
    return Span.objects.filter(project=project, trace_id=trace_id.lower()).order_by("start_ns", "span_id")


def span_record(span: Span) -> SpanRecord:
    """A stored span as the plain record the analysis and policy cores read."""
    chain, clock = chain_and_clock(span.instance_id, span.thread_id, span.agent)
    return SpanRecord(
        trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_span_id, name=span.name,
        kind=span.kind, start_ns=span.start_ns, end_ns=span.end_ns, status_code=span.status_code,
        status_message=span.status_message, service_name=span.service_name, service_version=span.service_version,
        instance_id=span.instance_id, agent=span.agent, thread_id=span.thread_id, chain=chain, clock=clock,
        state_key=span.state_key, state_op=span.state_op, state_version=span.state_version,
        state_base_version=span.state_base_version, state_conflict=span.state_conflict,
        idempotency_key=span.idempotency_key, idempotency_outcome=span.idempotency_outcome,
        lock_name=span.lock_name, lock_fencing_token=span.lock_fencing_token,
        attributes=span.attributes, events=span.events,
        links=tuple(Link(l["trace_id"], l["span_id"], l.get("attributes") or {}) for l in span.links),
        resource_attributes=span.resource_attributes, scope_name=span.scope_name, scope_version=span.scope_version,
        resource_schema_url=span.resource_schema_url, scope_schema_url=span.scope_schema_url,
    )
