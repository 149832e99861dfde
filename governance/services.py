"""Writes for projects, keys and members. Every change a person makes checks
their role and writes an audit record in the same transaction."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from governance.models import AuditRecord, IngestKey, Membership, Project, Role, hash_key


class PermissionDenied(Exception):
    """The person's role in the project does not allow this."""


class IngestKeyUnknown(Exception):
    pass


class IngestKeyRevoked(Exception):
    pass


def membership_get(*, user, project: Project) -> Membership | None:
    """The person's membership; a superuser acts as admin of every project (an unsaved one)."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Membership(user=user, project=project, role=Role.ADMIN)
    return Membership.objects.filter(user=user, project=project).first()


def role_require(*, user, project: Project, role: str) -> Membership:
    membership = membership_get(user=user, project=project)
    if membership is None or not membership.allows(role):
        raise PermissionDenied(f"this needs the {role} role in project {project.slug}")
    return membership


def audit_record(*, project: Project | None, actor, action: str, obj_type: str, obj_id, detail=None, address=None) -> AuditRecord:
    return AuditRecord.objects.create(
        project=project,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        actor_name=getattr(actor, "username", "") or "system",
        action=action,
        object_type=obj_type,
        object_id=str(obj_id),
        detail=detail or {},
        address=address,
    )


def project_slug(slug_or_name: str) -> str:
    slug = slugify(slug_or_name)[:100]
    if not slug:
        raise ValueError(f"{slug_or_name!r} does not make a project slug: use letters, digits and hyphens")
    return slug


def project_get_or_create(*, slug_or_name: str) -> tuple[Project, bool]:
    """For commands run by the operator of the installation (no person to check)."""
    slug = project_slug(slug_or_name)
    return Project.objects.get_or_create(slug=slug, defaults={"name": slug_or_name})


class ProjectExists(ValueError):
    pass


def project_create(*, slug: str, name: str = "", actor, address=None) -> Project:
    """A new project whose creator is its first admin. Any admin of a project, or a superuser,
    may create one; the slug must be new."""
    if not (actor.is_superuser or Membership.objects.filter(user=actor, role=Role.ADMIN).exists()):
        raise PermissionDenied("creating a project needs the admin role in a project")
    slug = project_slug(slug)
    with transaction.atomic():
        if Project.objects.filter(slug=slug).exists():
            raise ProjectExists(f"a project {slug!r} exists already")
        project = Project.objects.create(slug=slug, name=(name or slug)[:100])
        Membership.objects.create(user=actor, project=project, role=Role.ADMIN)
        audit_record(project=project, actor=actor, action="project.create", obj_type="project", obj_id=project.pk,
                     detail={"slug": slug, "name": project.name}, address=address)
    return project


def ingest_key_create(*, project: Project, name: str, actor=None, address=None, check_role=True) -> tuple[IngestKey, str]:
    """A new key; the raw key is returned once and only its hash is kept."""
    if check_role:
        role_require(user=actor, project=project, role=Role.ADMIN)
    raw = IngestKey.new_raw_key()
    with transaction.atomic():
        key = IngestKey.objects.create(
            project=project,
            name=name or "ingest key",
            key_hash=hash_key(raw),
            hint=raw[:10],
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit_record(project=project, actor=actor, action="ingest_key.create", obj_type="ingest_key", obj_id=key.pk,
                     detail={"name": key.name, "hint": key.hint}, address=address)
    return key, raw


def ingest_key_revoke(*, key: IngestKey, actor, address=None) -> bool:
    role_require(user=actor, project=key.project, role=Role.ADMIN)
    with transaction.atomic():
        changed = IngestKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed:
            audit_record(project=key.project, actor=actor, action="ingest_key.revoke", obj_type="ingest_key",
                         obj_id=key.pk, detail={"name": key.name, "hint": key.hint}, address=address)
    return bool(changed)


def ingest_key_authenticate(raw: str) -> IngestKey:
    key = IngestKey.objects.select_related("project").filter(key_hash=hash_key(raw)).first() if raw else None
    if key is None:
        raise IngestKeyUnknown("unknown ingest key")
    if key.is_revoked:
        raise IngestKeyRevoked("this ingest key was revoked")
    now = timezone.now()
    # At most one write a minute per key: ingest is hot and this row is shared.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        IngestKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def api_token_create(*, user, expires_in: timedelta | None = None, actor=None, address=None) -> str:
    """A new API token for user; the token is returned once and only its digest is kept (knox)."""
    from knox.models import AuthToken

    with transaction.atomic():
        token, raw = AuthToken.objects.create(user=user, expiry=expires_in)
        audit_record(project=None, actor=actor, action="api_token.create", obj_type="api_token", obj_id=token.token_key,
                     detail={"user": user.username, "expiry": token.expiry.isoformat() if token.expiry else None},
                     address=address)
    return raw


class LastAdmin(Exception):
    """The change would leave the project with no admin, and then nobody could manage it."""


def member_set_role(*, project: Project, user, role: str, actor, address=None, check_role=True) -> Membership:
    """Add a member or change their role. `check_role=False` is for the installation's operator
    (`manage.py add_member`), who is not a person in the project."""
    if check_role:
        role_require(user=actor, project=project, role=Role.ADMIN)
    if role not in Role.values:
        raise ValueError(f"role must be one of {', '.join(Role.values)}")
    with transaction.atomic():
        _admins_lock(project)
        current = Membership.objects.filter(user=user, project=project).first()
        if current is not None and current.role == Role.ADMIN and role != Role.ADMIN:
            _keep_an_admin(project, leaving=current)
        membership, created = Membership.objects.update_or_create(user=user, project=project, defaults={"role": role})
        audit_record(project=project, actor=actor, action="member.add" if created else "member.role",
                     obj_type="membership", obj_id=membership.pk, detail={"user": user.username, "role": role},
                     address=address)
    return membership


def member_remove(*, membership: Membership, actor, address=None) -> None:
    role_require(user=actor, project=membership.project, role=Role.ADMIN)
    with transaction.atomic():
        _admins_lock(membership.project)
        if membership.role == Role.ADMIN:
            _keep_an_admin(membership.project, leaving=membership)
        audit_record(project=membership.project, actor=actor, action="member.remove", obj_type="membership",
                     obj_id=membership.pk, detail={"user": membership.user.username}, address=address)
        membership.delete()


def _admins_lock(project: Project) -> None:
    # Two admins demoting each other at once must not both pass the check below: the
    # project row is the lock they queue on.
    Project.objects.select_for_update().filter(pk=project.pk).first()


def _keep_an_admin(project: Project, *, leaving: Membership) -> None:
    others = Membership.objects.filter(project=project, role=Role.ADMIN).exclude(pk=leaving.pk)
    if not others.exists():
        raise LastAdmin(f"{leaving.user.username} is the last admin of {project.slug}: make someone else admin first")


def client_address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None
