"""REST API for SLOs, alert rules, alerts, silences and channels: one view per operation, thin.

Lists take ?project=<slug> (optional for people in one project) and share the list envelope
(count, next, previous, results). Roles: any member reads; operators acknowledge alerts,
create and expire silences and send test notifications; approvers and admins define SLOs,
alert rules and channels. Errors have the API's one shape; a name taken is 409.
"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.errors import ErrorOutput, error_response
from governance.api.inputs import JsonBody, ProjectQuery, query, query_project
from governance.selectors import project_for_user
from governance.services import client_address
from governance.slo.selectors import (
    active_silences,
    alert_for_user,
    alerts_for_project,
    channel_for_user,
    channels_for_project,
    rule_for_user,
    rules_for_project,
    silence_for_user,
    silences_for_project,
    sli_preview,
    slo_for_user,
    slos_for_project,
)
from governance.slo.serializers import (
    AcknowledgeInput,
    AlertFilter,
    AlertOutput,
    AlertRuleInput,
    AlertRuleOutput,
    ChannelInput,
    ChannelOutput,
    ChannelTestOutput,
    OpenSloResultOutput,
    SilenceInput,
    SilenceOutput,
    SliInput,
    SloInput,
    SloOutput,
)
from governance.slo.services import (
    SloConflict,
    alert_acknowledge,
    channel_create,
    channel_delete,
    channel_test,
    rule_create,
    rule_delete,
    rule_update,
    silence_create,
    silence_expire,
    slo_create,
    slo_delete,
    slo_update,
    slos_export_openslo,
    slos_import_openslo,
)

MAX_OPENSLO_BYTES = 1_000_000
NOT_YOURS = {403: OpenApiResponse(ErrorOutput, description="your role does not allow this"),
             404: OpenApiResponse(ErrorOutput, description="not among your projects")}
CONFLICT = {409: OpenApiResponse(ErrorOutput, description="conflict: the name is taken")}


class SloApiView(APIView):
    """SloConflict is 409 conflict; a ValueError from the core or a service (a bad SLI, OpenSLO document,
    matcher...) is 400 invalid with its message as is."""

    def handle_exception(self, exc):
        if isinstance(exc, SloConflict):
            return error_response(str(exc), status.HTTP_409_CONFLICT, "conflict")
        if isinstance(exc, ValueError):
            return error_response(str(exc), status.HTTP_400_BAD_REQUEST, "invalid")
        return super().handle_exception(exc)


def _found(obj, what: str, ident):
    if obj is None:
        raise Http404(f"no {what} {ident} among your projects")
    return obj


# --- SLOs ------------------------------------------------------------------------------------------------


class SloListApi(SloApiView, ListAPIView):
    serializer_class = SloOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return slos_for_project(project=query_project(self.request)).select_related("project").prefetch_related("alerts")

    @extend_schema(parameters=[ProjectQuery], request=SloInput, responses={201: SloOutput, **NOT_YOURS, **CONFLICT},
                   description="Define an SLO (approver). Its burn-rate alerts follow the SRE Workbook's tiers, each "
                               "of which can be turned off or given another factor or `for`.")
    def post(self, request, *args, **kwargs):
        project = query_project(request)
        data = SloInput(data=request.data)
        data.is_valid(raise_exception=True)
        slo = slo_create(project=project, data=data.service_data(), actor=request.user, address=client_address(request))
        return Response(SloOutput(slo_for_user(user=request.user, slo_id=slo.pk)).data, status=status.HTTP_201_CREATED)


class SloDetailApi(SloApiView):
    @extend_schema(responses={200: SloOutput, **NOT_YOURS})
    def get(self, request, slo_id: int):
        return Response(SloOutput(_found(slo_for_user(user=request.user, slo_id=slo_id), "SLO", slo_id)).data)

    @extend_schema(request=SloInput, responses={200: SloOutput, **NOT_YOURS, **CONFLICT},
                   description="Replace the SLO's definition (approver). Its alerts follow at the next tick.")
    def put(self, request, slo_id: int):
        slo = _found(slo_for_user(user=request.user, slo_id=slo_id), "SLO", slo_id)
        data = SloInput(data=request.data)
        data.is_valid(raise_exception=True)
        slo_update(slo=slo, data=data.service_data(), actor=request.user, address=client_address(request))
        return Response(SloOutput(slo_for_user(user=request.user, slo_id=slo_id)).data)

    @extend_schema(request=None, responses={204: None, **NOT_YOURS})
    def delete(self, request, slo_id: int):
        slo = _found(slo_for_user(user=request.user, slo_id=slo_id), "SLO", slo_id)
        slo_delete(slo=slo, actor=request.user, address=client_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class YamlParser(BaseParser):
    """An OpenSLO upload: the body is YAML text (one or more documents)."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_OPENSLO_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_OPENSLO_BYTES:
            raise ParseError(f"the upload is over {MAX_OPENSLO_BYTES} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("the upload is not UTF-8 text") from None


class XYamlParser(YamlParser):
    media_type = "application/x-yaml"


class TextParser(YamlParser):
    media_type = "text/*"  # text/yaml, text/plain (curl --data-binary @slo.yaml -H 'Content-Type: text/yaml')


OPENSLO_EXAMPLE = """apiVersion: openslo/v1
kind: SLO
metadata: {name: billing-idempotent}
spec:
  indicator:
    metadata: {name: billing-idempotent-sli}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Causeway, spec: {sli: idempotency, match: {agent: billing-agent}, events: good}}}
        total: {metricSource: {type: Causeway, spec: {sli: idempotency, match: {agent: billing-agent}, events: total}}}
  timeWindow: [{duration: 28d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.999}]
"""


# The export read as what it is, a stream of YAML documents: the list of them, each an OpenSLO v1 object.
OPENSLO_STREAM = {"type": "array", "items": {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"apiVersion": {"type": "string", "enum": ["openslo/v1"]},
                   "kind": {"type": "string", "enum": ["SLO", "SLI", "AlertPolicy", "AlertCondition"]},
                   "metadata": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                   "spec": {"type": "object"}}}}

# What an OpenSLO upload may be sent as (curl --data-binary @slo.yaml -H 'Content-Type: application/yaml').
OPENSLO_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain")


class OpenSloApi(SloApiView):
    parser_classes = [YamlParser, XYamlParser, TextParser]

    @extend_schema(parameters=[ProjectQuery], responses={(200, "application/yaml"): OpenApiResponse(
                       OPENSLO_STREAM, description="a YAML stream (RFC 9512), one document each; none when the "
                                                   "project has no SLOs")},
                   description="Every SLO of the project as OpenSLO v1 YAML: per SLO its SLI, an AlertCondition and "
                               "AlertPolicy per burn-rate tier that is on, and the SLO.")
    def get(self, request):
        project = query_project(request)
        response = HttpResponse(slos_export_openslo(project=project), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{project.slug}-slos.yaml"'
        return response

    @extend_schema(parameters=[ProjectQuery], request={media: OpenApiTypes.STR for media in OPENSLO_MEDIA_TYPES},
                   responses={200: OpenSloResultOutput, 400: OpenApiResponse(ErrorOutput, description="what is wrong, "
                              "naming the document"), **NOT_YOURS},
                   examples=[OpenApiExample("an SLO with its SLI inline", value=OPENSLO_EXAMPLE, request_only=True)],
                   description="Create or update (by metadata.name) the SLOs of an OpenSLO v1 upload: one or more YAML "
                               "documents of kinds SLO, SLI, AlertPolicy and AlertCondition. All or nothing. Approver.")
    def post(self, request):
        project = query_project(request)
        if not isinstance(request.data, str):
            raise ParseError("send the OpenSLO YAML as the body, with Content-Type application/yaml")
        result = slos_import_openslo(project=project, text=request.data, actor=request.user,
                                     address=client_address(request))
        return Response(OpenSloResultOutput(result).data)


class SliPreviewInput(JsonBody):
    sli = SliInput()
    hours = serializers.IntegerField(required=False, default=72, min_value=1, max_value=14 * 24)


class SliPreviewBucket(serializers.Serializer):
    start = serializers.DateTimeField()
    good = serializers.IntegerField()
    total = serializers.IntegerField()
    ratio = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True, help_text="latency and recovery (ms)")


class SliPreviewOutput(serializers.Serializer):
    sli = serializers.DictField()
    description = serializers.CharField()
    since = serializers.DateTimeField()
    truncated = serializers.BooleanField(help_text="more spans than the preview reads: the newest were counted")
    spans_scanned = serializers.IntegerField()
    buckets = SliPreviewBucket(many=True)


class SliPreviewApi(SloApiView):
    @extend_schema(parameters=[ProjectQuery], request=SliPreviewInput, responses={200: SliPreviewOutput},
                   description="The SLI per hour over the last `hours`, counted from the stored spans (nothing is "
                               "saved): the live preview of the define-SLO form. Any member.")
    def post(self, request):
        project = query_project(request)
        data = SliPreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(SliPreviewOutput(sli_preview(project=project, spec=data.validated_data["sli"],
                                                     hours=data.validated_data["hours"])).data)


# --- alert rules ---------------------------------------------------------------------------------------------


class AlertRuleListApi(SloApiView, ListAPIView):
    serializer_class = AlertRuleOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return rules_for_project(project=query_project(self.request)).select_related("project")

    @extend_schema(parameters=[ProjectQuery], request=AlertRuleInput,
                   responses={201: AlertRuleOutput, **NOT_YOURS, **CONFLICT},
                   examples=[OpenApiExample("lost updates on orders", request_only=True, value={
                       "name": "orders-lost-updates", "sli": {"kind": "findings", "match": {
                           "finding_kind": "lost_update", "key": "orders/*"}},
                       "metric": "count", "op": ">", "threshold": 0, "window": "5m"})],
                   description="A threshold on one metric of an SLI over a window, with a `for` (approver).")
    def post(self, request, *args, **kwargs):
        project = query_project(request)
        data = AlertRuleInput(data=request.data)
        data.is_valid(raise_exception=True)
        rule = rule_create(project=project, data=data.service_data(), actor=request.user,
                           address=client_address(request))
        return Response(AlertRuleOutput(rule).data, status=status.HTTP_201_CREATED)


class AlertRuleDetailApi(SloApiView):
    @extend_schema(responses={200: AlertRuleOutput, **NOT_YOURS})
    def get(self, request, rule_id: int):
        return Response(AlertRuleOutput(_found(rule_for_user(user=request.user, rule_id=rule_id), "alert rule",
                                               rule_id)).data)

    @extend_schema(request=AlertRuleInput, responses={200: AlertRuleOutput, **NOT_YOURS, **CONFLICT})
    def put(self, request, rule_id: int):
        rule = _found(rule_for_user(user=request.user, rule_id=rule_id), "alert rule", rule_id)
        data = AlertRuleInput(data=request.data)
        data.is_valid(raise_exception=True)
        rule = rule_update(rule=rule, data=data.service_data(), actor=request.user, address=client_address(request))
        return Response(AlertRuleOutput(rule).data)

    @extend_schema(request=None, responses={204: None, **NOT_YOURS})
    def delete(self, request, rule_id: int):
        rule = _found(rule_for_user(user=request.user, rule_id=rule_id), "alert rule", rule_id)
        rule_delete(rule=rule, actor=request.user, address=client_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- alerts ---------------------------------------------------------------------------------------------------


class AlertListApi(SloApiView, ListAPIView):
    """Alerts of a project, most recently changed first: firing, pending and resolved (or one ?state=)."""

    serializer_class = AlertOutput

    @extend_schema(parameters=[AlertFilter])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = AlertFilter(data=query(self.request))
        filters.is_valid(raise_exception=True)
        self.project = project_for_user(user=self.request.user, slug=filters.validated_data.get("project"))
        return alerts_for_project(project=self.project, state=filters.validated_data.get("state", ""),
                                  fingerprint=filters.validated_data.get("fingerprint", ""))

    def get_serializer_context(self):
        from django.utils import timezone

        context = super().get_serializer_context()
        if hasattr(self, "project"):
            context["slug"] = self.project.slug
            context["silences"] = active_silences(project_id=self.project.pk, now=timezone.now())
        return context


class AlertAcknowledgeApi(SloApiView):
    @extend_schema(request=AcknowledgeInput, responses={200: AlertOutput, **NOT_YOURS,
                                                        409: OpenApiResponse(ErrorOutput, description="resolved")},
                   description="Acknowledge a pending or firing alert with a comment (operator): it is no longer "
                               "repeated to channels in this episode.")
    def post(self, request, alert_id: int):
        alert = _found(alert_for_user(user=request.user, alert_id=alert_id), "alert", alert_id)
        data = AcknowledgeInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            alert_acknowledge(alert=alert, comment=data.validated_data["comment"], actor=request.user,
                              address=client_address(request))
        except ValueError as exc:  # resolved meanwhile: the request was fine, the alert moved on
            return error_response(str(exc), status.HTTP_409_CONFLICT, "conflict")
        return Response(AlertOutput(alert, context={"slug": alert.project.slug}).data)


# --- silences -------------------------------------------------------------------------------------------------


class SilenceListApi(SloApiView, ListAPIView):
    serializer_class = SilenceOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return silences_for_project(project=query_project(self.request))

    @extend_schema(parameters=[ProjectQuery], request=SilenceInput, responses={201: SilenceOutput, **NOT_YOURS},
                   examples=[OpenApiExample("a deploy", request_only=True, value={
                       "matchers": ['alertname="ErrorBudgetBurn"', 'slo="billing-idempotent"'],
                       "duration": "2h", "comment": "billing deploy, INC-42"})],
                   description="Silence alerts whose labels match every matcher (operator).")
    def post(self, request, *args, **kwargs):
        project = query_project(request)
        data = SilenceInput(data=request.data)
        data.is_valid(raise_exception=True)
        silence = silence_create(project=project, actor=request.user, address=client_address(request),
                                 **data.validated_data)
        return Response(SilenceOutput(silence).data, status=status.HTTP_201_CREATED)


class SilenceDetailApi(SloApiView):
    @extend_schema(request=None, responses={204: None, **NOT_YOURS},
                   description="Expire the silence now (operator); it stays listed as expired.")
    def delete(self, request, silence_id: int):
        silence = _found(silence_for_user(user=request.user, silence_id=silence_id), "silence", silence_id)
        silence_expire(silence=silence, actor=request.user, address=client_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- channels ---------------------------------------------------------------------------------------------------


class ChannelListApi(SloApiView, ListAPIView):
    serializer_class = ChannelOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return channels_for_project(project=query_project(self.request))

    @extend_schema(parameters=[ProjectQuery], request=ChannelInput, responses={201: ChannelOutput, **NOT_YOURS},
                   examples=[OpenApiExample("webhook", request_only=True,
                                            value={"kind": "webhook", "url": "https://alerts.example/hook"}),
                             OpenApiExample("e-mail", request_only=True,
                                            value={"kind": "email", "to": ["oncall@example.com"]})],
                   description="A notification channel (approver): a webhook receiving the Alertmanager webhook "
                               "payload (version 4), or e-mail through Django's e-mail backend.")
    def post(self, request, *args, **kwargs):
        project = query_project(request)
        data = ChannelInput(data=request.data)
        data.is_valid(raise_exception=True)
        channel = channel_create(project=project, data=data.service_data(), actor=request.user,
                                 address=client_address(request))
        return Response(ChannelOutput(channel).data, status=status.HTTP_201_CREATED)


class ChannelDetailApi(SloApiView):
    @extend_schema(request=None, responses={204: None, **NOT_YOURS})
    def delete(self, request, channel_id: int):
        channel = _found(channel_for_user(user=request.user, channel_id=channel_id), "channel", channel_id)
        channel_delete(channel=channel, actor=request.user, address=client_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ChannelTestApi(SloApiView):
    @extend_schema(request=None, responses={200: ChannelTestOutput, **NOT_YOURS},
                   description="Send a test notification now (operator). The answer says whether the receiver or "
                               "mail server took it and, if not, what it said (kept on the channel too): the request "
                               "itself succeeded either way, so a refusal is not an error of this API.")
    def post(self, request, channel_id: int):
        channel = _found(channel_for_user(user=request.user, channel_id=channel_id), "channel", channel_id)
        problem = channel_test(channel=channel, actor=request.user, address=client_address(request))
        return Response(ChannelTestOutput({"delivered": not problem, "error": problem}).data)


# Included under /api/v1/ by governance/urls.py.
urlpatterns = [
    path("slos/", SloListApi.as_view()),
    path("slos/openslo/", OpenSloApi.as_view()),
    path("slos/<int:slo_id>/", SloDetailApi.as_view()),
    path("slis/preview/", SliPreviewApi.as_view()),
    path("alert-rules/", AlertRuleListApi.as_view()),
    path("alert-rules/<int:rule_id>/", AlertRuleDetailApi.as_view()),
    path("alerts/", AlertListApi.as_view()),
    path("alerts/<int:alert_id>/acknowledge/", AlertAcknowledgeApi.as_view()),
    path("silences/", SilenceListApi.as_view()),
    path("silences/<int:silence_id>/", SilenceDetailApi.as_view()),
    path("channels/", ChannelListApi.as_view()),
    path("channels/<int:channel_id>/", ChannelDetailApi.as_view()),
    path("channels/<int:channel_id>/test/", ChannelTestApi.as_view()),
]
