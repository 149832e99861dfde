"""Reads of rollouts, scoped to what a person may see."""

from __future__ import annotations

from governance.rollouts.models import Rollout
from governance.selectors import projects_for_user


def rollouts_for_project(*, project):
    return (Rollout.objects.filter(project=project).select_related("project", "created_by")
            .prefetch_related("runs").order_by("-id"))


def rollout_for_user(*, user, rollout_id: int) -> Rollout | None:
    return (Rollout.objects.filter(pk=rollout_id, project__in=projects_for_user(user=user))
            .select_related("project", "created_by").first())
