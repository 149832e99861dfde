from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from governance.views import page_project
from traces.records import KIND_NAMES, STATUS_NAMES
from traces.selectors import LAST_CHOICES, spans_of_trace, trace_get, traces_search
from traces.serializers import TraceFilterSerializer


@login_required
def trace_list(request, slug):
    project = page_project(request, slug)
    filters = TraceFilterSerializer(data=request.GET)
    valid = filters.is_valid()
    traces = traces_search(project=project, **filters.search_kwargs()) if valid else []
    page = Paginator(traces, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "traces/list.html", {
        "project": project, "page": page, "filters": request.GET, "errors": filters.errors if not valid else {},
        "last_choices": list(LAST_CHOICES), "query": query.urlencode(),
    })


def _span_tree(spans):
    """Spans in depth-first order with their depth, children by start time; orphans at the top level."""
    ids = {s.span_id for s in spans}
    children: dict[str, list] = {}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else ""
        children.setdefault(parent, []).append(span)
    ordered, stack = [], [(s, 0) for s in reversed(children.get("", []))]
    while stack:
        span, depth = stack.pop()
        span.depth = depth
        span.kind_name = KIND_NAMES[span.kind] if 0 <= span.kind < len(KIND_NAMES) else str(span.kind)
        span.status_name = STATUS_NAMES[span.status_code] if 0 <= span.status_code < len(STATUS_NAMES) else "?"
        ordered.append(span)
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    return ordered


@login_required
def trace_detail(request, slug, trace_id):
    project = page_project(request, slug)
    trace = trace_get(project=project, trace_id=trace_id)
    if trace is None:
        raise Http404("no such trace")
    spans = _span_tree(list(spans_of_trace(project=project, trace_id=trace_id)))
    for span in spans:
        span.offset_ms = (span.start_ns - trace.start_ns) / 1e6
        span.duration_ms = span.duration_ns / 1e6
        span.indent = span.depth * 16
    return render(request, "traces/detail.html", {"project": project, "trace": trace, "spans": spans})
