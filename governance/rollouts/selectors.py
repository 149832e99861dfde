"""Reads of rollouts, scoped to what a person may see."""

from __future__ import annotations

from governance.rollouts.core.plan import step_text
from governance.rollouts.models import AnalysisRun, Rollout
from governance.selectors import projects_for_user


def rollouts_for_project(*, project):
    return (Rollout.objects.filter(project=project).select_related("project", "created_by")
            .prefetch_related("runs").order_by("-id"))


def rollout_for_user(*, user, rollout_id: int) -> Rollout | None:
    return (Rollout.objects.filter(pk=rollout_id, project__in=projects_for_user(user=user))
            .select_related("project", "created_by").first())


def step_label(rollout: Rollout) -> str:
    """Where a rollout is in its plan, in words: "2/7: analysis 5m", or where it stopped."""
    if rollout.step_index >= len(rollout.steps):
        return "all steps done"
    label = f"{rollout.step_index + 1}/{len(rollout.steps)}: {step_text(rollout.steps[rollout.step_index])}"
    return f"stopped at {label}" if rollout.state in (Rollout.State.ABORTED, Rollout.State.ROLLED_BACK) else label


def active_rollouts(*, project) -> list[Rollout]:
    """The project's progressing and paused rollouts, each with `step_label` and `verdict` (of its latest
    analysis run, "" before the first), for the overview."""
    rollouts = list(Rollout.objects.filter(project=project, state__in=Rollout.ACTIVE_STATES).order_by("-id")[:20])
    latest: dict[int, str] = {}
    for rollout_id, verdict in (AnalysisRun.objects.filter(rollout__in=rollouts).order_by("rollout_id", "-id")
                                .values_list("rollout_id", "verdict")):
        latest.setdefault(rollout_id, verdict)
    for rollout in rollouts:
        rollout.step_label = step_label(rollout)
        rollout.verdict = latest.get(rollout.pk, "")
    return rollouts
