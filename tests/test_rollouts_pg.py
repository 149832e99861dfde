"""Races on one rollout against PostgreSQL, with real threads and connections: people clicking at once,
and ticks overlapping. SQLite serialises every writer, so these races only mean something on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from governance.models import AuditRecord, Role
from governance.rollouts import services
from governance.rollouts.models import Rollout
from tests.conftest import make_user
from tests.test_policies_pg import race

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="row-lock races need PostgreSQL: set DATABASE_URL=postgres://... (CI does)"),
]


def a_rollout(project, actor, steps) -> Rollout:
    return services.rollout_create(project=project, actor=actor, name="billing 1.1", service="billing",
                                   baseline_version="1.0.0", canary_version="1.1.0", flag_key="billing-version",
                                   steps=steps)


def test_approve_and_roll_back_at_once_make_one_transition_and_the_other_is_told_the_state_it_lost_to(acme):
    approver = make_user("dana", acme, Role.APPROVER)
    operator = make_user("otto", acme, Role.OPERATOR)
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, [{"kind": "approval"}, {"kind": "pause",
                                                                                               "seconds": 600}]),
                                     actor=approver)
    services.rollouts_tick()
    seen = Rollout.objects.get(pk=rollout.pk)
    assert seen.pause_reason == "awaiting_approval"

    def click(i):
        if i % 2 == 0:
            return services.rollout_approve(rollout=seen, actor=approver, expected_version=seen.version)
        return services.rollout_rollback(rollout=seen, actor=operator, expected_version=seen.version)

    results = race(click, count=2)
    winners = [r for r in results if isinstance(r, Rollout)]
    losers = [r for r in results if isinstance(r, services.RolloutConflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    now = Rollout.objects.get(pk=rollout.pk)
    assert now.version == seen.version + 1 and losers[0].rollout.state == now.state
    assert AuditRecord.objects.filter(action__in=["rollout.approve", "rollout.rollback"]).count() == 1


def test_many_people_approving_at_once_advance_the_gate_once(acme):
    approvers = [make_user(f"approver{i}", acme, Role.APPROVER) for i in range(6)]
    rollout = services.rollout_start(rollout=a_rollout(acme, approvers[0], [{"kind": "approval"},
                                                                            {"kind": "approval"}]),
                                     actor=approvers[0])
    services.rollouts_tick()
    results = race(lambda i: services.rollout_approve(rollout=rollout, actor=approvers[i]), count=6)
    assert sum(isinstance(r, Rollout) for r in results) == 1
    assert all(isinstance(r, (Rollout, services.RolloutConflict)) for r in results), results
    assert Rollout.objects.get(pk=rollout.pk).step_index == 1


def test_overlapping_ticks_advance_a_step_once(acme, clock):
    approver = make_user("dana", acme, Role.APPROVER)
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, [
        {"kind": "pause", "seconds": 60}, {"kind": "pause", "seconds": 60}, {"kind": "approval"}]), actor=approver)
    clock.shift(timedelta(seconds=61))
    results = race(lambda i: services.rollouts_tick(), count=6)
    assert sorted(results) == [0, 0, 0, 0, 0, 1], results
    assert Rollout.objects.get(pk=rollout.pk).step_index == 1
    assert AuditRecord.objects.filter(action="rollout.step").count() == 1


def test_a_click_racing_a_tick_makes_one_transition(acme, clock):
    approver = make_user("dana", acme, Role.APPROVER)
    operator = make_user("otto", acme, Role.OPERATOR)
    rollout = services.rollout_start(rollout=a_rollout(acme, approver, [
        {"kind": "pause", "seconds": 60}, {"kind": "approval"}]), actor=approver)
    seen = Rollout.objects.get(pk=rollout.pk)
    clock.shift(timedelta(seconds=61))

    def act(i):
        if i == 0:
            return services.rollouts_tick()
        return services.rollout_rollback(rollout=seen, actor=operator, expected_version=seen.version)

    results = race(act, count=2)
    now = Rollout.objects.get(pk=rollout.pk)
    if isinstance(results[1], Rollout):  # the click won: the tick found the rollout held, or ended
        assert (now.state, now.version, results[0]) == ("rolled_back", seen.version + 1, 0)
    else:  # the tick won (the pause ends, the gate is reached): the click is told the rollout moved on
        assert isinstance(results[1], services.RolloutConflict), results
        assert (now.pause_reason, now.version - seen.version, results[0]) == ("awaiting_approval", 2, 2)
        assert not AuditRecord.objects.filter(action="rollout.rollback").exists()
