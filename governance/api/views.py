from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.errors import error_response
from governance.api.inputs import JsonBody
from governance.models import AuditRecord, IngestKey, Membership, Role
from governance.selectors import audit_for_project, members_for_project, memberships_of_user, project_for_user
from governance.services import (
    LastAdmin,
    ProjectExists,
    client_address,
    ingest_key_create,
    ingest_key_revoke,
    member_remove,
    member_set_role,
    project_create,
    role_require,
)


LAST_ADMIN_OR_TAKEN = OpenApiResponse(description="conflict: the project exists already, or the change would leave "
                                                  "the project without an admin (code last_admin)")


class ProjectOutput(serializers.Serializer):
    """A project as one of its members sees it, with their role."""

    slug = serializers.CharField(source="project.slug")
    name = serializers.CharField(source="project.name")
    role = serializers.ChoiceField(choices=Role.values)
    retention_days = serializers.IntegerField(source="project.retention_days")


class ProjectCreateInput(JsonBody):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class ProjectListApi(ListAPIView):
    serializer_class = ProjectOutput

    def get_queryset(self):
        return memberships_of_user(user=self.request.user)

    @extend_schema(request=ProjectCreateInput, responses={201: ProjectOutput, 409: LAST_ADMIN_OR_TAKEN})
    def post(self, request):
        data = ProjectCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            project = project_create(slug=data.validated_data["slug"], name=data.validated_data.get("name", ""),
                                     actor=request.user, address=client_address(request))
        except ProjectExists as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT, "conflict")
        membership = Membership(user=request.user, project=project, role=Role.ADMIN)
        return Response(ProjectOutput(membership).data, status=status.HTTP_201_CREATED)


class IngestKeyOutput(serializers.ModelSerializer):
    revoked = serializers.BooleanField(source="is_revoked")

    class Meta:
        model = IngestKey
        fields = ["id", "name", "hint", "created_at", "revoked", "revoked_at", "last_used_at"]


class IngestKeyCreateInput(JsonBody):
    # Taken as sent: DRF checks the length after trimming, so 101 characters would pass the 100 the schema says.
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="", trim_whitespace=False,
                                 help_text='to tell keys apart (default "ingest key")')


class IngestKeyCreatedOutput(IngestKeyOutput):
    key = serializers.CharField(help_text="shown once: store it now")

    class Meta(IngestKeyOutput.Meta):
        fields = IngestKeyOutput.Meta.fields + ["key"]


class IngestKeyListApi(ListAPIView):
    serializer_class = IngestKeyOutput

    def get_queryset(self):
        return project_for_user(user=self.request.user, slug=self.kwargs["slug"]).ingest_keys.all()

    @extend_schema(request=IngestKeyCreateInput, responses={201: IngestKeyCreatedOutput})
    def post(self, request, slug):
        project = project_for_user(user=request.user, slug=slug)
        role_require(user=request.user, project=project, role=Role.ADMIN)
        data = IngestKeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = ingest_key_create(project=project, name=data.validated_data["name"], actor=request.user,
                                     address=client_address(request))
        key.key = raw
        return Response(IngestKeyCreatedOutput(key).data, status=status.HTTP_201_CREATED)


class IngestKeyRevokeApi(APIView):
    @extend_schema(request=None, responses=IngestKeyOutput)
    def post(self, request, slug, key_id):
        project = project_for_user(user=request.user, slug=slug)
        key = get_object_or_404(IngestKey, project=project, pk=key_id)
        ingest_key_revoke(key=key, actor=request.user, address=client_address(request))
        key.refresh_from_db()
        return Response(IngestKeyOutput(key).data)


class MemberOutput(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()


class MemberInput(JsonBody):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    role = serializers.ChoiceField(choices=Role.values)


class MemberListApi(ListAPIView):
    serializer_class = MemberOutput

    def get_queryset(self):
        return members_for_project(project=project_for_user(user=self.request.user, slug=self.kwargs["slug"]))

    @extend_schema(request=MemberInput, responses={200: MemberOutput, 409: LAST_ADMIN_OR_TAKEN})
    def put(self, request, slug):
        project = project_for_user(user=request.user, slug=slug)
        role_require(user=request.user, project=project, role=Role.ADMIN)
        data = MemberInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(username=data.validated_data["username"]).first()
        if user is None:
            raise serializers.ValidationError({"username": "no such user"})
        try:
            membership = member_set_role(project=project, user=user, role=data.validated_data["role"],
                                         actor=request.user, address=client_address(request))
        except LastAdmin as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT, "last_admin")
        return Response(MemberOutput(membership).data)


class MemberDetailApi(APIView):
    @extend_schema(request=None, responses={204: None, 409: LAST_ADMIN_OR_TAKEN})
    def delete(self, request, slug, username):
        project = project_for_user(user=request.user, slug=slug)
        membership = get_object_or_404(Membership, project=project, user__username=username)
        try:
            member_remove(membership=membership, actor=request.user, address=client_address(request))
        except LastAdmin as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT, "last_admin")
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditRecord
        fields = ["id", "created_at", "actor_name", "action", "object_type", "object_id", "detail", "address"]


class AuditListApi(ListAPIView):
    serializer_class = AuditOutput

    def get_queryset(self):
        project = project_for_user(user=self.request.user, slug=self.kwargs["slug"])
        role_require(user=self.request.user, project=project, role=Role.ADMIN)
        return audit_for_project(project=project)


class SchemaApi(SpectacularAPIView):
    """The OpenAPI schema, YAML or JSON; its errors are JSON in the API's shape, as every /api/ error is."""

    def handle_exception(self, exc):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
