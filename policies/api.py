"""REST API for policies and violations: one view per operation, thin, in the project's error shape.

Roles: any member reads and dry-runs; approver (and admin) creates policies,
saves versions, activates, rolls back and changes the mode.
"""

from __future__ import annotations

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.inputs import ProjectQuery, query, query_project
from governance.selectors import project_for_user
from governance.services import client_address
from policies.core import PolicyError, parse_policy, policy_document
from policies.selectors import (
    policies_for_project,
    policy_for_user,
    version_diff,
    version_get,
    versions_of,
    violation_counts,
    violations_search,
    violations_with_findings,
)
from policies.serializers import (
    EXAMPLE_POLICY,
    ActivateInput,
    CountOutput,
    CountsQuery,
    DiffOutput,
    DiffQuery,
    DocumentOutput,
    DryRunInput,
    DryRunOutput,
    InvalidPolicyError,
    ModeInput,
    PolicyDetailOutput,
    PolicyOutput,
    SourceInput,
    VersionOutput,
    VersionSummaryOutput,
    ViolationFilter,
    ViolationOutput,
    span_url,
)
from policies.services import (
    PolicyConflict,
    policy_create,
    policy_dry_run,
    policy_mode_set,
    policy_rollback,
    policy_version_activate,
    policy_version_create,
    problems_json,
)

ERROR_RESPONSES = {403: OpenApiResponse(description="your role does not allow this"),
                   404: OpenApiResponse(description="no such policy among your projects")}
INVALID = {400: OpenApiResponse(InvalidPolicyError, description="invalid_policy: located problems; nothing saved")}
SOURCE_EXAMPLES = [OpenApiExample("a policy", value={"source": EXAMPLE_POLICY, "comment": "first"}, request_only=True)]
CONFLICT = {409: OpenApiResponse(description="conflict: the active version changed meanwhile, or nothing to roll back to")}


def invalid_policy_response(error: PolicyError) -> Response:
    problems = problems_json(error)
    first = str(error.errors[0]) if error.errors else "invalid policy"
    message = f"the policy has {len(problems)} problem{'s' if len(problems) != 1 else ''}: {first}"
    return Response({"error": {"code": "invalid_policy", "message": message, "problems": problems}},
                    status=status.HTTP_400_BAD_REQUEST)


class PolicyApiView(APIView):
    """PolicyError -> 400 invalid_policy with its problems; PolicyConflict -> 409 conflict."""

    def handle_exception(self, exc):
        if isinstance(exc, PolicyError):
            return invalid_policy_response(exc)
        if isinstance(exc, PolicyConflict):
            return Response({"error": {"code": "conflict", "message": str(exc)}}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)

    def policy(self, policy_id: int):
        policy = policy_for_user(user=self.request.user, policy_id=policy_id)
        if policy is None:
            raise Http404(f"no policy {policy_id} among your projects")
        return policy

    def version(self, policy, number: int):
        version = version_get(policy=policy, number=number)
        if version is None:
            raise Http404(f"policy {policy.name} has no version {number}")
        version.policy = policy
        return version


class PolicyListApi(PolicyApiView, ListAPIView):
    serializer_class = PolicyOutput

    @extend_schema(parameters=[ProjectQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return policies_for_project(project=query_project(self.request))

    @extend_schema(parameters=[ProjectQuery], request=SourceInput, examples=SOURCE_EXAMPLES,
                   responses={201: PolicyDetailOutput, **INVALID, **ERROR_RESPONSES,
                              409: OpenApiResponse(description="a policy of that name exists")},
                   description="Create a policy from its text (the name is the document's `policy` field). "
                               "Saved as version 1, not active. Needs the approver role.")
    def post(self, request):
        project = query_project(request)
        data = SourceInput(data=request.data)
        data.is_valid(raise_exception=True)
        policy = policy_create(project=project, actor=request.user, address=client_address(request), **data.validated_data)
        return Response(PolicyDetailOutput(self.policy(policy.pk)).data, status=status.HTTP_201_CREATED)


class PolicyValidateApi(PolicyApiView):
    @extend_schema(request=SourceInput, responses={200: DocumentOutput, **INVALID}, examples=SOURCE_EXAMPLES,
                   description="Check a policy text against the format (policies/policy.schema.json) and the rule "
                               "checks, saving nothing: the editor calls it as you type.")
    def post(self, request):
        data = SourceInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"document": policy_document(parse_policy(data.validated_data["source"]))})


class PolicyDetailApi(PolicyApiView):
    @extend_schema(responses={200: PolicyDetailOutput, **ERROR_RESPONSES})
    def get(self, request, policy_id: int):
        return Response(PolicyDetailOutput(self.policy(policy_id)).data)


class PolicyModeApi(PolicyApiView):
    @extend_schema(request=ModeInput, responses={200: PolicyOutput, **ERROR_RESPONSES},
                   description="enforce: violations are recorded marked enforced; monitor: marked monitor. Approver.")
    def post(self, request, policy_id: int):
        policy = self.policy(policy_id)
        data = ModeInput(data=request.data)
        data.is_valid(raise_exception=True)
        policy_mode_set(policy=policy, mode=data.validated_data["mode"], actor=request.user, address=client_address(request))
        return Response(PolicyOutput(self.policy(policy_id)).data)


class VersionListApi(PolicyApiView, ListAPIView):
    serializer_class = VersionSummaryOutput

    @extend_schema(responses={200: VersionSummaryOutput(many=True), **ERROR_RESPONSES})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return versions_of(policy=self.policy(self.kwargs["policy_id"])).select_related("policy")

    @extend_schema(request=SourceInput, responses={201: VersionOutput, **INVALID, **ERROR_RESPONSES},
                   examples=SOURCE_EXAMPLES,
                   description="Save the next version (immutable, not active). A bad policy is never saved. Approver.")
    def post(self, request, policy_id: int):
        policy = self.policy(policy_id)
        data = SourceInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = policy_version_create(policy=policy, actor=request.user, address=client_address(request),
                                        **data.validated_data)
        return Response(VersionOutput(self.version(policy, version.number)).data, status=status.HTTP_201_CREATED)


class VersionDetailApi(PolicyApiView):
    @extend_schema(responses={200: VersionOutput, **ERROR_RESPONSES})
    def get(self, request, policy_id: int, number: int):
        policy = self.policy(policy_id)
        return Response(VersionOutput(self.version(policy, number)).data)


class VersionDiffApi(PolicyApiView):
    @extend_schema(parameters=[DiffQuery], responses={200: DiffOutput, **ERROR_RESPONSES})
    def get(self, request, policy_id: int, number: int):
        policy = self.policy(policy_id)
        diff_query = DiffQuery(data=query(request))
        diff_query.is_valid(raise_exception=True)
        new = self.version(policy, number)
        against = diff_query.validated_data.get("against", number - 1)
        if against < 1:
            raise Http404("version 1 has no version before it: pass ?against=")
        old = self.version(policy, against)
        return Response({"old": old.number, "new": new.number, "diff": version_diff(old=old, new=new)})


class VersionActivateApi(PolicyApiView):
    @extend_schema(request=ActivateInput, responses={200: PolicyOutput, **CONFLICT, **ERROR_RESPONSES},
                   description="Make this version the one active version. Approver; audited.")
    def post(self, request, policy_id: int, number: int):
        policy = self.policy(policy_id)
        data = ActivateInput(data=request.data)
        data.is_valid(raise_exception=True)
        policy_version_activate(policy=policy, version=self.version(policy, number), actor=request.user,
                                address=client_address(request), expected_active=data.validated_data.get("if_active"))
        return Response(PolicyOutput(self.policy(policy_id)).data)


class PolicyRollbackApi(PolicyApiView):
    @extend_schema(request=None, responses={200: PolicyOutput, **CONFLICT, **ERROR_RESPONSES},
                   description="Return to the version active before the current one; audited as policy.rollback. Approver.")
    def post(self, request, policy_id: int):
        policy = self.policy(policy_id)
        policy_rollback(policy=policy, actor=request.user, address=client_address(request))
        return Response(PolicyOutput(self.policy(policy_id)).data)


class DryRunApi(PolicyApiView):
    @extend_schema(request=DryRunInput, responses={200: DryRunOutput, **INVALID, **ERROR_RESPONSES},
                   description="What a draft (`source`) or saved `version` would flag on the project's spans of the "
                               "last `hours`. Nothing is stored. Any member.")
    def post(self, request, policy_id: int):
        policy = self.policy(policy_id)
        data = DryRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = self.version(policy, data.validated_data["version"]) if "version" in data.validated_data else None
        result = policy_dry_run(project=policy.project, source=data.validated_data.get("source"), version=version,
                                hours=data.validated_data["hours"]).as_dict()
        for rule in result["rules"]:
            for example in rule["examples"]:
                example["url"] = span_url(policy.project.slug, example["trace_id"], example["span_id"])
        return Response(result)


class ViolationListApi(ListAPIView):
    serializer_class = ViolationOutput

    @extend_schema(parameters=[ViolationFilter])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = ViolationFilter(data=query(self.request))
        filters.is_valid(raise_exception=True)
        self.project = project_for_user(user=self.request.user, slug=filters.validated_data.get("project"))
        return violations_search(project=self.project, **filters.search_kwargs())

    def paginate_queryset(self, queryset):
        # The findings of the page's violations, in one query however long the page.
        return violations_with_findings(project=self.project, violations=super().paginate_queryset(queryset),
                                        trace_counts=False)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["slug"] = self.project.slug if hasattr(self, "project") else ""
        return context


class ViolationCountsApi(ListAPIView):
    serializer_class = CountOutput

    @extend_schema(parameters=[CountsQuery],
                   description="Violations per bucket of span start time and per rule, agent, service or policy.")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        counts_query = CountsQuery(data=query(self.request))
        counts_query.is_valid(raise_exception=True)
        q = counts_query.validated_data
        project = project_for_user(user=self.request.user, slug=q.get("project"))
        rows = violation_counts(project=project, since=q["since"], until=q["until"], bucket_seconds=q["bucket_seconds"],
                                group_by=q["group_by"], policy_id=q.get("policy"))
        return [{"bucket_start": b, "group": g, "count": n} for b, g, n in rows]


# Included under /api/v1/ by governance/urls.py.
urlpatterns = [
    path("policies/", PolicyListApi.as_view()),
    path("policies/validate/", PolicyValidateApi.as_view()),
    path("policies/<id:policy_id>/", PolicyDetailApi.as_view()),
    path("policies/<id:policy_id>/mode/", PolicyModeApi.as_view()),
    path("policies/<id:policy_id>/versions/", VersionListApi.as_view()),
    path("policies/<id:policy_id>/versions/<version:number>/", VersionDetailApi.as_view()),
    path("policies/<id:policy_id>/versions/<version:number>/diff/", VersionDiffApi.as_view()),
    path("policies/<id:policy_id>/versions/<version:number>/activate/", VersionActivateApi.as_view()),
    path("policies/<id:policy_id>/rollback/", PolicyRollbackApi.as_view()),
    path("policies/<id:policy_id>/dry-run/", DryRunApi.as_view()),
    path("violations/", ViolationListApi.as_view()),
    path("violations/counts/", ViolationCountsApi.as_view()),
]
