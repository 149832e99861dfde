import gzip
import hashlib
from functools import lru_cache

import plotly
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from governance.api.pagination import MAX_OFFSET
from governance.models import Role
from governance.services import client_address
from governance.views import page_action, page_allows, page_object, page_project
from policies.selectors import violations_search
from traces.analysis import KINDS
from traces.explain import DOCS_PAGE, findings_evidence_edges, name_of, step_text
from traces.models import Finding, Trace
from traces.selectors import (
    LAST_CHOICES,
    analysis_lag,
    finding_explanation,
    finding_history,
    findings_of_trace,
    findings_search,
    key_accesses,
    span_records_of_trace,
    trace_get,
    traces_count,
    traces_search,
)
from traces.serializers import FindingFilterSerializer, KeyHistoryFilterSerializer, TraceFilterSerializer
from traces.services import finding_acknowledge
from traces.timeline import access_label, figure_build, graph_build, skew_note, timeline_build, timeline_json

KEY_HISTORY_LIMIT = 5000
KEY_TABLE_ROWS = 1000  # the accesses table beside the key's chart: the newest

TRACE_SORT_LABELS = [("newest", "newest first"), ("oldest", "oldest first"), ("findings", "most open findings"),
                     ("violations", "most violations"), ("duration", "longest"), ("errors", "most errors")]


# ---------------------------------------------------------------------------
# Helpers shared with traces/api.py


def finding_dict(finding: Finding, slug: str) -> dict:
    """A stored finding as the timeline and its list show it, with links to its traces and key."""
    return {
        "id": finding.pk,
        "kind": finding.kind,
        "key": finding.key,
        "detail": finding.detail,
        "status": finding.status,
        "span_ids": list(finding.span_ids),
        "trace_ids": list(finding.trace_ids),
        "agents": finding.agent_list,
        "key_url": reverse("key-history", args=[slug, finding.key]) if finding.key else "",
        "url": reverse("finding-detail", args=[slug, finding.pk]),
        "trace_urls": [[t, reverse("trace-detail", args=[slug, t]) + f"?finding={finding.pk}"]
                       for t in finding.trace_ids],
    }


def violation_dict(violation, slug: str) -> dict:
    """A policy violation in the shape of finding_dict, so the timeline marks its span the same way."""
    rule = f"{violation.policy.name}/{violation.rule_id}"
    return {
        "id": f"v{violation.pk}",
        "kind": "policy_violation",
        "key": rule,
        "detail": f"v{violation.version.number}: {violation.reason}",
        "status": "enforced" if violation.enforced else "monitored",
        "span_ids": [violation.span_id],
        "trace_ids": [violation.trace_id],
        "agents": [violation.agent],
        "key_url": reverse("violation-list", args=[slug]) + f"?policy={violation.policy_id}&rule={violation.rule_id}",
        "trace_urls": [[violation.trace_id, reverse("trace-detail", args=[slug, violation.trace_id])]],
    }


def trace_timeline_data(*, project, trace_id: str, with_figure: bool = True, skew_adjust: bool = False):
    """(trace, timeline data) for one trace of the project, or (None, None)."""
    trace = trace_get(project=project, trace_id=trace_id)
    if trace is None:
        return None, None
    records = span_records_of_trace(project=project, trace_id=trace.trace_id)
    findings = [finding_dict(f, project.slug) for f in findings_of_trace(project=project, trace_id=trace.trace_id)]
    evidence = findings_evidence_edges(findings, records)
    for f in findings:
        f["evidence_edges"], f["sides_elsewhere"] = evidence.get(f["id"], ((), 0))
    # Policy violations are marked like findings, as check_traces lists them beside findings.
    findings += [violation_dict(v, project.slug) for v in violations_search(project=project, trace_id=trace.trace_id)[:500]]
    data = timeline_build(records, mode="trace", title=trace.root_name or trace.trace_id, findings=findings)
    if with_figure:
        data["figure"] = figure_build(data, skew_adjust=skew_adjust)
    return trace, data


# ---------------------------------------------------------------------------
# Pages


TRACES_PER_PAGE = 50


class CappedPaginator(Paginator):
    """A paginator told its count: traces_count's, a lower bound when `capped` ("1,000+ traces")."""

    def __init__(self, object_list, per_page, *, count: int, capped: bool):
        super().__init__(object_list, per_page)
        self.count = count
        self.capped = capped


def _capped_paginator(traces, page_number) -> CappedPaginator:
    """The traces' paginator, counting them up to TRACE_COUNT_CAP past the page asked for."""
    try:
        number = max(1, int(page_number))
    except (TypeError, ValueError):
        number = 1
    count, capped = traces_count(traces, offset=min((number - 1) * TRACES_PER_PAGE, MAX_OFFSET))
    return CappedPaginator(traces, TRACES_PER_PAGE, count=count, capped=capped)


@login_required
def trace_list(request, slug):
    project = page_project(request, slug)
    filters = TraceFilterSerializer(data=request.GET)
    valid = filters.is_valid()
    traces = traces_search(project=project, **filters.search_kwargs()) if valid else Trace.objects.none()
    page = _capped_paginator(traces, request.GET.get("page")).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    unsorted = query.copy()
    unsorted.pop("sort", None)
    return render(request, "traces/search.html", {
        "project": project, "page": page, "filters": request.GET, "errors": filters.errors if not valid else {},
        "last_choices": list(LAST_CHOICES), "query": query.urlencode(), "finding_kinds": KINDS,
        "query_unsorted": unsorted.urlencode(), "sorts": TRACE_SORT_LABELS,
        "lag": analysis_lag(project=project, now=timezone.now()),
    })


@login_required
def trace_detail(request, slug, trace_id):
    """The causal timeline of one trace."""
    project = page_project(request, slug)
    skew_adjust = request.GET.get("skew") == "1"
    trace, data = trace_timeline_data(project=project, trace_id=trace_id, skew_adjust=skew_adjust)
    if trace is None:
        raise Http404("no such trace")
    data["trace_url"] = reverse("trace-list", args=[slug])
    # ?skew=1 draws the figure adjusted: the box is ticked and the note says what moved, as a tick does.
    data["skew_adjust"] = skew_adjust
    data["skew_note"] = skew_note(data["lanes"]) if skew_adjust else ""
    return render(request, "traces/timeline.html", {
        "project": project, "trace": trace, "data": data, "timeline_json": timeline_json(data),
        "findings": data["findings"], "plotly_version": plotly.__version__,
    })


@login_required
def trace_graph(request, slug, trace_id):
    """One trace as a network: agents (or services) and the calls and messages between them."""
    project = page_project(request, slug)
    trace = trace_get(project=project, trace_id=trace_id)
    if trace is None:
        raise Http404("no such trace")
    by = "service" if request.GET.get("by") == "service" else "agent"
    figure = graph_build(span_records_of_trace(project=project, trace_id=trace.trace_id), by=by)
    return render(request, "traces/graph.html", {
        "project": project, "trace": trace, "by": by, "figure_json": timeline_json(figure),
        "plotly_version": plotly.__version__,
    })


@login_required
def key_history(request, slug, key):
    """Every access to one key across traces and agents, on the timeline, with its findings."""
    project = page_project(request, slug)
    filters = KeyHistoryFilterSerializer(data={**request.GET.dict(), "key": key})
    valid = filters.is_valid()
    since_ns, until_ns = filters.range_ns() if valid else (None, None)
    records = key_accesses(project=project, key=key, since_ns=since_ns, until_ns=until_ns,
                           limit=KEY_HISTORY_LIMIT + 1) if valid else []
    truncated = len(records) > KEY_HISTORY_LIMIT
    records = records[-KEY_HISTORY_LIMIT:]
    findings = [finding_dict(f, slug) for f in findings_search(project=project, key=key)[:200]] if valid else []
    data = timeline_build(records, mode="key", title=key, findings=findings)
    data["figure"] = figure_build(data)
    data["trace_url"] = reverse("trace-list", args=[slug])
    S = data["spans"]
    in_finding = {S["id"][i] for i in range(len(S["id"])) if S["cat"][i] >= 2}
    finding_of = {sid: f["url"] for f in findings for sid in f["span_ids"]}
    table = [{"span": s, "x": (s.start_ns // 1_000_000), "label": access_label(s), "finding": s.span_id in in_finding,
              "finding_url": finding_of.get(s.span_id, ""),
              "trace_url": reverse("trace-detail", args=[slug, s.trace_id]) + f"?span={s.span_id}"}
             for s in reversed(records[-KEY_TABLE_ROWS:])]
    return render(request, "traces/key_history.html", {
        "project": project, "key": key, "data": data, "timeline_json": timeline_json(data),
        "findings": data["findings"], "filters": request.GET, "errors": filters.errors if not valid else {},
        "last_choices": list(LAST_CHOICES), "truncated": truncated, "limit": KEY_HISTORY_LIMIT,
        "plotly_version": plotly.__version__, "access_count": len(records), "table": table,
        "table_limit": KEY_TABLE_ROWS,
    })


@login_required
def finding_list(request, slug):
    project = page_project(request, slug)
    filters = FindingFilterSerializer(data=request.GET)
    valid = filters.is_valid()
    findings = findings_search(project=project, **filters.search_kwargs()) if valid else Finding.objects.none()
    page = Paginator(findings, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "traces/findings.html", {
        "project": project, "page": page, "rows": [finding_dict(f, slug) | {"obj": f} for f in page],
        "filters": request.GET, "errors": filters.errors if not valid else {}, "kinds": KINDS,
        "statuses": Finding.Status.values, "query": query.urlencode(),
        "can_acknowledge": page_allows(request, Role.OPERATOR),
    })


@login_required
def finding_detail(request, slug, finding_id):
    """One finding on one screen: both sides across traces, the happens-before evidence, the key's
    versions, what it means and what fixes it."""
    project = page_project(request, slug)
    finding = get_object_or_404(Finding.objects.select_related("acknowledged_by"), project=project, pk=finding_id)
    ex = finding_explanation(project=project, finding=finding)
    shown = finding_dict(finding, slug)
    data = timeline_build(ex.slice, mode="trace", title=f"finding {finding.pk}", findings=[shown], critical=False,
                          causal=False, extra_edges=ex.evidence_edges)
    data["figure"] = figure_build(data)
    focus = _focus_range(data, {s.span_id for s in ex.sides} | {i for a, b, _ in ex.evidence_edges for i in (a, b)})
    if focus:
        data["figure"]["layout"]["xaxis"]["range"] = focus
    data["trace_url"] = reverse("trace-list", args=[slug])
    trace_url = {t: u for t, u in shown["trace_urls"]}
    sides = [{"span": s, "name": name_of(s), "trace_url": trace_url.get(s.trace_id, "") + f"&span={s.span_id}"}
             for s in ex.sides]
    evidence = [{"ev": ev, "steps": [step_text(s) for s in ev.path], "steps_raw": ev.path,
                 "near": [(text, [step_text(s) for s in steps]) for text, steps in ev.near]} for ev in ex.evidence]
    return render(request, "traces/finding.html", {
        "project": project, "finding": finding, "ex": ex, "sides": sides, "evidence": evidence,
        "data": data, "timeline_json": timeline_json(data), "findings": data["findings"],
        "history": finding_history(project=project, finding=finding),
        "docs_url": reverse("docs-page", args=[DOCS_PAGE]) + (f"#{ex.docs_anchor}" if ex.docs_anchor else ""),
        "concurrent_url": reverse("docs-page", args=[DOCS_PAGE]) + "#concurrent-ordered-by-happens-before-in-neither-direction",
        "can_acknowledge": request.membership is not None and request.membership.allows(Role.OPERATOR),
        "plotly_version": plotly.__version__, "trace_urls": shown["trace_urls"], "key_url": shown["key_url"],
    })


def _focus_range(data: dict, span_ids: set[str]) -> list[float] | None:
    """The x range that shows these spans with a margin: where the finding page's chart opens."""
    S = data["spans"]
    xs = [(x0, x1) for sid, x0, x1 in zip(S["id"], S["x0"], S["x1"]) if sid in span_ids]
    if not xs:
        return None
    lo, hi = min(a for a, _ in xs), max(b for _, b in xs)
    pad = max((hi - lo) * 0.15, 1.0)
    return [lo - pad, hi + pad]


@login_required
@require_POST
def finding_acknowledge_view(request, slug, finding_id):
    _, finding = page_object(request, slug, Finding, finding_id)
    page_action(request, lambda: finding_acknowledge(finding=finding, actor=request.user, address=client_address(request)),
                done=f"Finding {finding.pk} ({finding.kind}) acknowledged.",
                already=f"Finding {finding.pk} was already acknowledged.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        target = reverse("finding-list", args=[slug])
    return redirect(target)


# ---------------------------------------------------------------------------
# plotly.js from the installed plotly package: no CDN, works offline


@lru_cache(maxsize=1)
def _plotly_js() -> tuple[bytes, bytes, str]:
    raw = plotly.offline.get_plotlyjs().encode()
    return raw, gzip.compress(raw, compresslevel=6), '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'


@require_GET
def plotly_js(request):
    raw, packed, etag = _plotly_js()
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponseNotModified()
    elif "gzip" in request.headers.get("Accept-Encoding", ""):
        response = HttpResponse(packed, content_type="application/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="application/javascript; charset=utf-8")
    response["ETag"] = etag
    response["Vary"] = "Accept-Encoding"
    # The URL carries plotly's version (?v=), so a new version is a new URL.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
