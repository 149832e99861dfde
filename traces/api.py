from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.inputs import ProjectQuery, query, query_project
from governance.api.pagination import ApiPagination
from governance.selectors import project_for_user
from governance.services import client_address
from traces.records import STATUS_NAMES
from traces.selectors import (
    TRACE_COUNT_CAP,
    finding_get,
    findings_search,
    key_accesses,
    spans_of_trace,
    trace_get,
    traces_count,
    traces_search,
)
from traces.serializers import (
    FindingFilterSerializer,
    FindingSerializer,
    KeyHistoryFilterSerializer,
    KeyHistorySerializer,
    TimelineQuery,
    TimelineSerializer,
    TraceDetailSerializer,
    TraceFilterSerializer,
    TraceSummarySerializer,
)
from traces.services import finding_acknowledge
from traces.timeline import access_label
from traces.views import KEY_HISTORY_LIMIT, trace_timeline_data


class TracePagination(ApiPagination):
    """The API's list envelope, whose count stops TRACE_COUNT_CAP past the offset (as the traces page's):
    count_capped says there are more than count."""

    def get_count(self, queryset) -> int:
        count, self.count_capped = traces_count(queryset, offset=self.get_offset(self.request))
        return count

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        response.data["count_capped"] = self.count_capped
        return response

    def get_paginated_response_schema(self, schema):
        envelope = super().get_paginated_response_schema(schema)
        envelope["properties"]["count"]["description"] = (
            f"the matching traces, counted up to {TRACE_COUNT_CAP} past the offset")
        envelope["properties"]["count_capped"] = {
            "type": "boolean", "description": "there are more matching traces than count"}
        envelope["required"] = [*envelope["required"], "count_capped"]
        return envelope


class TraceListApi(ListAPIView):
    serializer_class = TraceSummarySerializer
    pagination_class = TracePagination

    @extend_schema(parameters=[TraceFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = TraceFilterSerializer(data=query(self.request))
        filters.is_valid(raise_exception=True)
        project = project_for_user(user=self.request.user, slug=filters.validated_data.get("project"))
        return traces_search(project=project, **filters.search_kwargs())


class TraceDetailApi(APIView):
    @extend_schema(parameters=[ProjectQuery], responses=TraceDetailSerializer)
    def get(self, request, trace_id: str):
        project = query_project(request)
        trace = trace_get(project=project, trace_id=trace_id)
        if trace is None:
            raise Http404(f"no trace {trace_id} in project {project.slug}")
        trace.span_list = list(spans_of_trace(project=project, trace_id=trace_id))
        return Response(TraceDetailSerializer(trace).data)


class FindingListApi(ListAPIView):
    """Findings of a project, newest first; withdrawn ones only with status=withdrawn."""

    serializer_class = FindingSerializer

    @extend_schema(parameters=[FindingFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = FindingFilterSerializer(data=query(self.request))
        filters.is_valid(raise_exception=True)
        project = project_for_user(user=self.request.user, slug=filters.validated_data.get("project"))
        return findings_search(project=project, **filters.search_kwargs()).select_related("acknowledged_by")


class FindingAcknowledgeApi(APIView):
    """Acknowledge a finding: operator role or higher; writes an audit record."""

    @extend_schema(request=None, responses=FindingSerializer)
    def post(self, request, finding_id: int):
        finding = finding_get(user=request.user, finding_id=finding_id)
        if finding is None:
            raise Http404(f"no finding {finding_id} among your projects")
        finding_acknowledge(finding=finding, actor=request.user, address=client_address(request))
        return Response(FindingSerializer(finding).data)


class KeyHistoryApi(APIView):
    """Every access to one state key (or idempotency key, or lock) across traces and agents."""

    @extend_schema(parameters=[KeyHistoryFilterSerializer], responses=KeyHistorySerializer)
    def get(self, request):
        filters = KeyHistoryFilterSerializer(data=query(request))
        filters.is_valid(raise_exception=True)
        project = project_for_user(user=request.user, slug=filters.validated_data.get("project"))
        key = filters.validated_data["key"]
        since_ns, until_ns = filters.range_ns()
        records = key_accesses(project=project, key=key, since_ns=since_ns, until_ns=until_ns,
                               limit=KEY_HISTORY_LIMIT + 1)
        truncated = len(records) > KEY_HISTORY_LIMIT
        accesses = [_access(s) for s in records[-KEY_HISTORY_LIMIT:]]
        findings = findings_search(project=project, key=key).select_related("acknowledged_by")[:200]
        return Response(KeyHistorySerializer({
            "key": key, "since_ns": since_ns, "until_ns": until_ns, "truncated": truncated,
            "accesses": accesses, "findings": findings,
        }).data)


def _access(s) -> dict:
    if s.state_key and s.state_op:
        op = s.state_op
    elif s.idempotency_key:
        op = s.idempotency_outcome or "idempotent"
    else:
        op = "lock"
    return {
        "trace_id": s.trace_id, "span_id": s.span_id, "name": s.name, "agent": s.agent, "service": s.service_name,
        "instance": s.instance_id, "op": op,
        "version": s.state_version if s.state_key else s.lock_fencing_token,
        "base_version": s.state_base_version, "conflict": s.state_conflict,
        "took_effect": s.write_took_effect, "status": STATUS_NAMES[s.status_code] if 0 <= s.status_code < 3 else "?",
        "start_ns": s.start_ns, "end_ns": s.end_ns, "label": access_label(s),
    }


class TraceTimelineApi(APIView):
    """The data the trace page draws: lanes, spans (as columns), causal edges, critical path,
    clock skew and findings. ?figure=1 adds the Plotly figure."""

    @extend_schema(parameters=[TimelineQuery], responses=TimelineSerializer)
    def get(self, request, trace_id: str):
        timeline_query = TimelineQuery(data=query(request))
        timeline_query.is_valid(raise_exception=True)
        project = project_for_user(user=request.user, slug=timeline_query.validated_data.get("project"))
        trace, data = trace_timeline_data(project=project, trace_id=trace_id,
                                          with_figure=timeline_query.validated_data["figure"] == "1")
        if trace is None:
            raise Http404(f"no trace {trace_id} in project {project.slug}")
        return Response(data)
