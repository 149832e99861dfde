from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.api.errors import ErrorOutput, error_response
from governance.models import AuditRecord, IngestKey, Membership, Role
from governance.selectors import audit_for_project, members_for_project, project_for_user, projects_for_user
from governance.services import (
    LastAdmin,
    client_address,
    ingest_key_create,
    ingest_key_revoke,
    member_remove,
    member_set_role,
    project_create,
    role_require,
)


class ProjectOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    role = serializers.CharField()
    retention_days = serializers.IntegerField()


class ProjectCreateInput(serializers.Serializer):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class ProjectListApi(APIView):
    @extend_schema(responses=ProjectOutput(many=True))
    def get(self, request):
        roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
        data = [
            {"slug": p.slug, "name": p.name, "role": Role.ADMIN if request.user.is_superuser else roles[p.pk],
             "retention_days": p.retention_days}
            for p in projects_for_user(user=request.user)
        ]
        return Response(data)

    @extend_schema(request=ProjectCreateInput, responses={201: ProjectOutput})
    def post(self, request):
        data = ProjectCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_create(slug=data.validated_data["slug"], name=data.validated_data.get("name", ""),
                                 actor=request.user, address=client_address(request))
        return Response({"slug": project.slug, "name": project.name, "role": Role.ADMIN,
                         "retention_days": project.retention_days}, status=status.HTTP_201_CREATED)


class IngestKeyOutput(serializers.ModelSerializer):
    revoked = serializers.BooleanField(source="is_revoked")

    class Meta:
        model = IngestKey
        fields = ["id", "name", "hint", "created_at", "revoked", "revoked_at", "last_used_at"]


class IngestKeyCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class IngestKeyCreatedOutput(IngestKeyOutput):
    key = serializers.CharField(help_text="shown once: store it now")

    class Meta(IngestKeyOutput.Meta):
        fields = IngestKeyOutput.Meta.fields + ["key"]


class IngestKeyListApi(APIView):
    @extend_schema(responses=IngestKeyOutput(many=True))
    def get(self, request, slug):
        project = project_for_user(user=request.user, slug=slug)
        return Response(IngestKeyOutput(project.ingest_keys.all(), many=True).data)

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


class MemberInput(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.values)


class MemberListApi(APIView):
    @extend_schema(responses=MemberOutput(many=True))
    def get(self, request, slug):
        project = project_for_user(user=request.user, slug=slug)
        return Response(MemberOutput(members_for_project(project=project), many=True).data)

    @extend_schema(request=MemberInput, responses={200: MemberOutput, 409: ErrorOutput})
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
    @extend_schema(request=None, responses={204: None, 409: ErrorOutput})
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
