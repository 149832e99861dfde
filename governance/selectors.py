"""Reads scoped to what a person may see."""

from django.http import Http404

from governance.models import AuditRecord, Membership, Project, Role


def projects_for_user(*, user):
    """The projects a person can see: their memberships', or every project for a superuser
    (who acts as admin of each, as Django's admin leads people to expect)."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def memberships_of_user(*, user):
    """The user's projects, as their memberships (project and role), by project name. A superuser
    has an (unsaved) admin membership of every project."""
    if user.is_superuser:
        return [Membership(user=user, project=project, role=Role.ADMIN)
                for project in Project.objects.order_by("name", "id")]
    return Membership.objects.filter(user=user).select_related("project").order_by("project__name", "project_id")


def project_for_user(*, user, slug: str | None) -> Project:
    """The project named by slug among the user's; without a slug, their only project."""
    projects = projects_for_user(user=user)
    if slug:
        project = projects.filter(slug=slug).first()
        if project is None:
            raise Http404(f"you are not a member of a project {slug!r}; ask one of its admins to add you")
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
