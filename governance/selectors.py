"""Reads scoped to what a person may see."""

from django.http import Http404

from governance.models import AuditRecord, Membership, Project


def projects_for_user(*, user):
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user).distinct()


def memberships_of_user(*, user):
    """The user's projects, as their memberships (project and role), by project name."""
    return Membership.objects.filter(user=user).select_related("project").order_by("project__name", "project_id")


def project_for_user(*, user, slug: str | None) -> Project:
    """The project named by slug among the user's; without a slug, their only project."""
    projects = projects_for_user(user=user)
    if slug:
        project = projects.filter(slug=slug).first()
        if project is None:
            raise Http404(f"no project {slug!r} among yours")
        return project
    mine = list(projects[:2])
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise Http404("you are not a member of any project")
    raise ValueError("you belong to several projects: name one with ?project=<slug>")


def members_for_project(*, project: Project):
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")


def audit_for_project(*, project: Project):
    return AuditRecord.objects.filter(project=project).select_related("actor")
