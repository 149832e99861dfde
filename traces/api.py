from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.selectors import project_for_user
from traces.selectors import spans_of_trace, trace_get, traces_search
from traces.serializers import TraceDetailSerializer, TraceFilterSerializer, TraceSummarySerializer


class TraceListApi(ListAPIView):
    serializer_class = TraceSummarySerializer

    @extend_schema(parameters=[TraceFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = TraceFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        project = project_for_user(user=self.request.user, slug=filters.validated_data.get("project"))
        return traces_search(project=project, **filters.search_kwargs())


class TraceDetailApi(APIView):
    @extend_schema(responses=TraceDetailSerializer)
    def get(self, request, trace_id: str):
        project = project_for_user(user=request.user, slug=request.query_params.get("project"))
        trace = trace_get(project=project, trace_id=trace_id)
        if trace is None:
            raise Http404(f"no trace {trace_id} in project {project.slug}")
        trace.span_list = list(spans_of_trace(project=project, trace_id=trace_id))
        return Response(TraceDetailSerializer(trace).data)
