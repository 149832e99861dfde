"""Two people acting on one policy at once, on PostgreSQL, with real threads and connections.

SQLite serialises every writer (IMMEDIATE transactions), so these races only
mean something on PostgreSQL, where CI runs them.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from governance.models import AuditRecord, Role
from policies.models import Policy, PolicyActivation
from policies.services import PolicyConflict, policy_create, policy_version_activate, policy_version_create
from tests.conftest import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="row-lock races need PostgreSQL: set DATABASE_URL=postgres://... (CI does)"),
]

SOURCE = """\
policy: ledger
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent{suffix}
"""
RACERS = 8


def race(work, count: int = RACERS) -> list:
    """Run work(i) in `count` threads released together; returns each result or exception."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.fixture
def approvers(acme):
    return [make_user(f"approver{i}", acme, Role.APPROVER) for i in range(RACERS)]


@pytest.fixture
def policy(acme, alice):
    policy = policy_create(project=acme, source=SOURCE.format(suffix=0), actor=alice)
    for i in range(1, RACERS):
        policy_version_create(policy=policy, source=SOURCE.format(suffix=i), actor=alice)
    return policy


def test_people_activating_different_versions_at_once_leave_one_active_and_a_consistent_history(policy, approvers):
    def activate(i):
        fresh = Policy.objects.get(pk=policy.pk)
        return policy_version_activate(policy=fresh, version=fresh.versions.get(number=i + 1), actor=approvers[i])

    results = race(activate)
    assert not [r for r in results if isinstance(r, Exception)]
    policy.refresh_from_db()
    history = list(PolicyActivation.objects.filter(policy=policy).order_by("id"))
    assert len(history) == RACERS
    # Serialised by the row lock: each activation saw the one before it as the active version.
    assert history[0].previous is None
    assert [h.previous_id for h in history[1:]] == [h.version_id for h in history[:-1]]
    assert policy.active_version_id == history[-1].version_id
    assert AuditRecord.objects.filter(action="policy.activate").count() == RACERS


def test_people_activating_from_the_same_view_at_once_let_exactly_one_win(policy, approvers):
    def activate(i):
        fresh = Policy.objects.get(pk=policy.pk)
        return policy_version_activate(policy=fresh, version=fresh.versions.get(number=i + 1), actor=approvers[i],
                                       expected_active=0)

    results = race(activate)
    winners = [r for r in results if isinstance(r, Policy)]
    assert len(winners) == 1
    assert all(isinstance(r, PolicyConflict) for r in results if r not in winners)
    policy.refresh_from_db()
    assert policy.active_version_id == winners[0].active_version.pk
    assert PolicyActivation.objects.filter(policy=policy).count() == 1
    assert AuditRecord.objects.filter(action="policy.activate").count() == 1


def test_people_saving_versions_at_once_get_distinct_consecutive_numbers(acme, alice, approvers):
    policy = policy_create(project=acme, source=SOURCE.format(suffix=0), actor=alice)

    def save(i):
        return policy_version_create(policy=Policy.objects.get(pk=policy.pk), source=SOURCE.format(suffix=i + 100),
                                     actor=approvers[i]).number

    results = race(save)
    assert sorted(results) == list(range(2, RACERS + 2))
