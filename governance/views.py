from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from governance.models import IngestKey, Membership, Role
from governance.selectors import audit_for_project, members_for_project, projects_for_user
from governance.services import (
    LastAdmin,
    PermissionDenied,
    client_address,
    ingest_key_create,
    ingest_key_revoke,
    member_remove,
    member_set_role,
    membership_get,
    project_create,
)


def page_project(request, slug):
    """The project and the person's membership, or 404: other projects do not exist for them."""
    project = projects_for_user(user=request.user).filter(slug=slug).first()
    if project is None:
        raise Http404(f"You are not a member of a project \"{slug}\" (or there is none): ask one of its admins to "
                      "add you, or pick one of your projects above.")
    request.membership = membership_get(user=request.user, project=project)
    return project


def page_object(request, slug, model, pk):
    """(project, the project's `model` row `pk`) for a page, or 404."""
    project = page_project(request, slug)
    return project, get_object_or_404(model, project=project, pk=pk)


def page_allows(request, role) -> bool:
    """Whether the person's role in the page's project (set by page_project) allows `role`'s actions."""
    return request.membership is not None and request.membership.allows(role)


def page_action(request, act, *, done: str, already: str) -> None:
    """Run a person's change from a page and say how it went, on the next page: `done`, `already` when
    `act()` answers False (someone got there first), or why it was refused (role, bad input)."""
    try:
        changed = act()
    except (PermissionDenied, ValueError) as exc:
        messages.error(request, str(exc))
        return
    if changed:
        messages.success(request, done)
    else:
        messages.info(request, already)


def login_locked_out(request, original_response=None, credentials=None):
    """What django-axes answers once an account or address is locked out: say so, and for how long."""
    return render(request, "registration/locked_out.html", {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": round(settings.AXES_COOLOFF_TIME.total_seconds() / 60),
    }, status=429)


@login_required
def home(request):
    project = projects_for_user(user=request.user).first()
    if project is None:
        return render(request, "governance/no_project.html")
    return redirect("overview", slug=project.slug)


def can_create_project(user) -> bool:
    return user.is_superuser or Membership.objects.filter(user=user, role=Role.ADMIN).exists()


@login_required
def project_new(request):
    if not can_create_project(request.user):
        raise Http404("Creating a project needs the admin role in a project: ask an admin.")
    form = {"slug": request.POST.get("slug", "").strip(), "name": request.POST.get("name", "").strip()}
    if request.method == "POST":
        try:
            project = project_create(slug=form["slug"], name=form["name"], actor=request.user,
                                     address=client_address(request))
        except (ValueError, PermissionDenied) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Project {project.name} created; you are its admin. Create an ingest key for "
                                      "its agents below.")
            return redirect("ingest-keys", slug=project.slug)
    return render(request, "governance/project_new.html", {"form": form})


@login_required
def ingest_keys(request, slug):
    project = page_project(request, slug)
    new_key = request.session.pop("new_ingest_key", None)
    return render(request, "governance/keys.html", {
        "project": project, "keys": project.ingest_keys.all(), "new_key": new_key,
        "can_admin": request.membership.allows(Role.ADMIN),
    })


@login_required
@require_POST
def ingest_key_new(request, slug):
    project = page_project(request, slug)
    try:
        _, raw = ingest_key_create(project=project, name=request.POST.get("name", "").strip()[:100], actor=request.user,
                                   address=client_address(request))
    except PermissionDenied as exc:
        messages.error(request, str(exc))
        return redirect("ingest-keys", slug=slug)
    # Shown once, on the next page load, then gone from the session.
    request.session["new_ingest_key"] = raw
    return redirect("ingest-keys", slug=slug)


@login_required
@require_POST
def ingest_key_revoke_view(request, slug, key_id):
    project = page_project(request, slug)
    key = get_object_or_404(IngestKey, project=project, pk=key_id)
    try:
        ingest_key_revoke(key=key, actor=request.user, address=client_address(request))
        messages.success(request, f"Key {key.name} revoked.")
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    return redirect("ingest-keys", slug=slug)


@login_required
def members(request, slug):
    project = page_project(request, slug)
    if request.method == "POST":
        try:
            if request.POST.get("remove"):
                membership = get_object_or_404(Membership, project=project, user__username=request.POST["remove"])
                member_remove(membership=membership, actor=request.user, address=client_address(request))
                messages.success(request, f"{request.POST['remove']} removed.")
            else:
                user = get_user_model().objects.filter(username=request.POST.get("username", "").strip()).first()
                if user is None:
                    messages.error(request, "No user with that name.")
                elif request.POST.get("role") not in Role.values:
                    messages.error(request, "Choose a role.")
                else:
                    member_set_role(project=project, user=user, role=request.POST["role"], actor=request.user,
                                    address=client_address(request))
                    messages.success(request, f"{user.username} is now {request.POST['role']}.")
        except (PermissionDenied, LastAdmin) as exc:
            messages.error(request, str(exc))
        return redirect("members", slug=slug)
    return render(request, "governance/members.html", {
        "project": project, "members": members_for_project(project=project), "roles": Role.values,
        "can_admin": request.membership.allows(Role.ADMIN),
    })


@login_required
def audit_log(request, slug):
    project = page_project(request, slug)
    if not request.membership.allows(Role.ADMIN):
        raise Http404("the audit log is for admins")
    page = Paginator(audit_for_project(project=project), 50).get_page(request.GET.get("page"))
    return render(request, "governance/audit.html", {"project": project, "page": page})
