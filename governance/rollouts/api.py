"""REST API for rollouts: list and create, detail, and one endpoint per action. Thin views over the services.

Roles: any member reads; approvers create, start, approve and promote; operators abort, roll back and
retry. An action the rollout's state does not allow, or that lost a race (the `version` sent is not the
rollout's any more), is 409 with the rollout as it is now, so a script can decide again.
"""

from __future__ import annotations

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.inputs import JsonBody, ProjectQuery, query_project
from governance.converters import MAX_ID
from governance.rollouts import services
from governance.rollouts.core.plan import TEMPLATES
from governance.rollouts.models import AnalysisRun, Rollout
from governance.rollouts.selectors import rollout_for_user, rollouts_for_project
from governance.services import client_address

NOT_YOURS = {403: OpenApiResponse(description="your role does not allow this"),
             404: OpenApiResponse(description="no such rollout among your projects")}


class RunOutput(serializers.ModelSerializer):
    class Meta:
        model = AnalysisRun
        fields = ["id", "step_index", "attempt", "started_at", "ended_at", "verdict", "score", "reason", "results",
                  "measurements"]


class RolloutOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    created_by = serializers.CharField(source="created_by.username", default="", allow_null=True)
    current_step = serializers.SerializerMethodField(help_text="the step being run; null when all are done")
    runs = serializers.SerializerMethodField(help_text="analysis runs, newest first")

    class Meta:
        model = Rollout
        fields = ["id", "project", "name", "service", "agent", "flag_key", "baseline_version", "canary_version",
                  "known_good_version", "template", "steps", "metrics", "analysis", "guards", "state",
                  "pause_reason", "step_index", "current_step", "weight", "attempt", "version", "created_by",
                  "created_at", "updated_at", "ended_at", "runs"]

    def get_current_step(self, rollout) -> dict | None:
        return rollout.steps[rollout.step_index] if 0 <= rollout.step_index < len(rollout.steps) else None

    def get_runs(self, rollout) -> list[dict]:
        return RunOutput(rollout.runs.order_by("-attempt", "-step_index"), many=True).data


class RolloutConflictBody(serializers.Serializer):
    code = serializers.CharField(default="conflict")
    message = serializers.CharField()
    rollout = RolloutOutput(help_text="the rollout as it is now")


class ConflictOutput(serializers.Serializer):
    error = RolloutConflictBody()


CONFLICT = {409: OpenApiResponse(ConflictOutput, description="not allowed in the rollout's current state, or lost a "
                                                             "race: the current state is in error.rollout")}


class RolloutInput(JsonBody):
    name = serializers.CharField(max_length=100)
    service = serializers.CharField(max_length=200, help_text="service.name of the agents rolled out")
    agent = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                  help_text="only this agent of the service")
    baseline_version = serializers.CharField(max_length=100, help_text="the service.version running now")
    canary_version = serializers.CharField(max_length=100, help_text="the service.version rolled out")
    flag_key = serializers.CharField(max_length=200, help_text="the OFREP flag the agents evaluate")
    template = serializers.ChoiceField(choices=sorted(TEMPLATES), required=False,
                                       help_text="a common plan, when `steps` is not given")
    steps = serializers.ListField(child=serializers.DictField(), required=False, max_length=50, help_text=(
        "[{kind: set_weight, weight}, {kind: pause, seconds}, {kind: approval}, "
        "{kind: analysis, count, interval_seconds, failure_limit, inconclusive_limit}]"))
    metrics = serializers.ListField(child=serializers.DictField(), required=False, max_length=50, help_text=(
        "[{kind, pass: {op, value}, failure: {op, value} | null, min_samples, critical, finding_kind, name}]; "
        "kinds: error_rate, latency_p95_ratio, latency_mann_whitney, idempotency_success, conflict_rate, "
        "findings_per_1k, violations_per_1k. Default: all of them"))
    analysis = serializers.DictField(required=False, help_text="{pass_score, marginal_score, on_failure: rollback|pause}")
    guards = serializers.DictField(required=False, help_text="{alert_rules: [ids], slos: [ids], action: rollback|pause}")


class ActionInput(JsonBody):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500,
                                   help_text="recorded in the audit trail")
    version = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text=(
        "the rollout's version you saw: refused with 409 if it changed meanwhile"))


class RolloutApiView(APIView):
    def handle_exception(self, exc):
        if isinstance(exc, services.RolloutConflict):
            current = rollout_for_user(user=self.request.user, rollout_id=exc.rollout.pk) or exc.rollout
            return Response({"error": {"code": "conflict", "message": str(exc),
                                       "rollout": RolloutOutput(current).data}}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)

    def rollout(self, rollout_id: int) -> Rollout:
        rollout = rollout_for_user(user=self.request.user, rollout_id=rollout_id)
        if rollout is None:
            raise Http404(f"no rollout {rollout_id} among your projects")
        return rollout


EXAMPLE = {"name": "billing 1.1", "service": "billing", "baseline_version": "1.0.0", "canary_version": "1.1.0",
           "flag_key": "billing-version", "template": "standard"}


class RolloutListApi(RolloutApiView, ListAPIView):
    serializer_class = RolloutOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return rollouts_for_project(project=query_project(self.request))

    @extend_schema(parameters=[ProjectQuery], request=RolloutInput, responses={201: RolloutOutput, **NOT_YOURS, **CONFLICT},
                   examples=[OpenApiExample("from a template", value=EXAMPLE, request_only=True)],
                   description="Create a pending rollout (approver). One flag has one unfinished rollout at a time.")
    def post(self, request):
        project = query_project(request)
        data = RolloutInput(data=request.data)
        data.is_valid(raise_exception=True)
        rollout = services.rollout_create(project=project, actor=request.user, address=client_address(request),
                                          **data.validated_data)
        return Response(RolloutOutput(self.rollout(rollout.pk)).data, status=status.HTTP_201_CREATED)


class RolloutDetailApi(RolloutApiView):
    @extend_schema(responses={200: RolloutOutput, **NOT_YOURS})
    def get(self, request, rollout_id: int):
        return Response(RolloutOutput(self.rollout(rollout_id)).data)


ACTIONS = {
    "start": (services.rollout_start, "Start the first step (approver)."),
    "approve": (services.rollout_approve, "Approve the gate the rollout waits at and go on (approver)."),
    "promote": (services.rollout_promote, ("Every agent on the canary now; it becomes the known-good version "
                                           "(approver).")),
    "abort": (services.rollout_abort, "Stop: weight 0, every agent back on the known-good version (operator)."),
    "rollback": (services.rollout_rollback, ("Every agent back on the known-good version at its next flag "
                                             "evaluation (operator).")),
    "retry": (services.rollout_retry, ("Run the current step again when paused; start again from the first step "
                                       "when aborted or rolled back (operator).")),
}


def _action_view(name: str):
    service, description = ACTIONS[name]

    class RolloutActionApi(RolloutApiView):
        @extend_schema(request=ActionInput, responses={200: RolloutOutput, **NOT_YOURS, **CONFLICT},
                       operation_id=f"rollouts_{name}", description=description + " Audited.")
        def post(self, request, rollout_id: int):
            rollout = self.rollout(rollout_id)
            data = ActionInput(data=request.data)
            data.is_valid(raise_exception=True)
            service(rollout=rollout, actor=request.user, address=client_address(request),
                    reason=data.validated_data["reason"], expected_version=data.validated_data.get("version"))
            return Response(RolloutOutput(self.rollout(rollout_id)).data)

    RolloutActionApi.__name__ = RolloutActionApi.__qualname__ = f"Rollout{name.title()}Api"
    return RolloutActionApi.as_view()


urlpatterns = [
    path("rollouts/", RolloutListApi.as_view()),
    path("rollouts/<id:rollout_id>/", RolloutDetailApi.as_view()),
    *[path(f"rollouts/<id:rollout_id>/{name}/", _action_view(name)) for name in ACTIONS],
]
