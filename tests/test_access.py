"""Who may reach what: every URL pattern of Causeway, with GET and POST, for an anonymous person, an
ingest key, a member of another project and each role of the project, answers the status this table
says. The patterns are read from the resolver, so a new page or endpoint that is missing from the
table fails the test until someone decides who may use it.

Each request runs in a savepoint that is rolled back, so every request sees the same world.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from governance.models import AuditRecord, Role
from tests.conftest import make_key, make_user

PRINCIPALS = ("anonymous", "ingest_key", "outsider", "viewer", "operator", "approver", "admin")
METHODS = ("GET", "POST")

# What each kind of URL answers, per principal in PRINCIPALS order.
PAGE = (302, 302, 404, 200, 200, 200, 200)  # a project's page: log in first; other projects' do not exist
API = (401, 401, 404, 200, 200, 200, 200)  # the API: a token or a session; other projects' do not exist
API_LIST = (401, 401, 400, 200, 200, 200, 200)  # ?project= names a project the outsider is not in
NOT_ALLOWED_API = (401, 401, 405, 405, 405, 405, 405)
NOT_ALLOWED_PAGE = (302, 302, 405, 405, 405, 405, 405)
PUBLIC = (200,) * 7

TABLE: dict[str, dict] = {}  # filled below: pattern -> {"path": ..., "GET": statuses, "POST": statuses}


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def every_pattern() -> list[str]:
    # Django's admin has its own staff-only access control, tested by Django.
    return sorted({p for p in walk(get_resolver().url_patterns) if not p.startswith("admin/")})


@pytest.fixture
def world(db, acme, globex):
    """acme with one member of each role and one of everything; charlie is admin of globex only."""
    from governance.pipeline.models import StageBatch
    from governance.slo.models import Alert
    from governance.slo.services import channel_create, rule_create, silence_create, slo_create
    from policies.services import policy_create, policy_version_create
    from tests.test_pages import store_trace
    from traces.models import Finding

    people = {role: make_user(role, acme, role) for role in (Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN)}
    people["outsider"] = make_user("charlie", globex, Role.ADMIN)
    admin = people[Role.ADMIN]
    key = make_key(acme)
    store_trace(acme)
    ids = {"trace": "a" * 32, "key": acme.ingest_keys.get().pk}
    ids["finding"] = Finding.objects.create(project=acme, kind="lost_update", key="order/42", detail="d",
                                            fingerprint="f1").pk
    policy = policy_create(project=acme, source="policy: ledger\nrules: []\n", actor=admin)
    policy_version_create(policy=policy, source="policy: ledger\nrules: []\ndescription: two\n", actor=admin)
    ids["policy"] = policy.pk
    sli = {"kind": "success", "match": {"service": "billing"}}
    ids["slo"] = slo_create(project=acme, actor=admin, data={"name": "s", "objective": 0.99,
                                                              "window_seconds": 3600, "sli": sli}).pk
    ids["rule"] = rule_create(project=acme, actor=admin, data={"name": "r", "sli": sli, "metric": "bad_ratio",
                                                               "op": ">", "threshold": 0.5, "window_seconds": 300}).pk
    ids["alert"] = Alert.objects.create(project=acme, fingerprint="0" * 16, labels={"alertname": "r"},
                                        state=Alert.State.FIRING).pk
    ids["silence"] = silence_create(project=acme, matchers=['alertname="r"'], comment="c", actor=admin,
                                    ends_at=timezone.now() + timedelta(hours=1)).pk
    ids["channel"] = channel_create(project=acme, actor=admin, data={"kind": "email", "name": "mail",
                                                                     "to": ["oncall@example.com"]}).pk
    ids["batch"] = StageBatch.objects.create(project=acme, stage="findings", trace_ids=["a" * 32],
                                             state=StageBatch.State.DEAD, received_at=timezone.now(),
                                             completed_at=timezone.now()).pk
    return people, key, ids


def client_for(principal: str, people: dict, key: str) -> Client:
    client = Client(raise_request_exception=False)
    if principal == "ingest_key":
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    elif principal != "anonymous":
        client.force_login(people[principal])
    return client


def answer(client: Client, method: str, path: str) -> int:
    with transaction.atomic():
        response = client.generic(method, path, b"", content_type="application/x-www-form-urlencoded")
        transaction.set_rollback(True)
    return response.status_code


def test_print_matrix(world):
    people, key, ids = world
    for pattern in every_pattern():
        path = "/" + pattern
        for name, value in (("<slug:slug>", "acme"), ("<str:trace_id>", ids["trace"]), ("<id:key_id>", ids["key"]),
                            ("<id:finding_id>", ids["finding"]), ("<id:policy_id>", ids["policy"]),
                            ("<version:number>", 1), ("<int:slo_id>", ids["slo"]), ("<int:rule_id>", ids["rule"]),
                            ("<int:alert_id>", ids["alert"]), ("<int:silence_id>", ids["silence"]),
                            ("<int:channel_id>", ids["channel"]), ("<int:batch_id>", ids["batch"]),
                            ("<str:username>", "viewer"), ("<path:key>", "order/42")):
            path = path.replace(name, str(value))
        if pattern.startswith("api/v1/") and "projects/" not in pattern:
            path += "?project=acme"
        row = []
        for method in METHODS:
            row.append(tuple(answer(client_for(p, people, key), method, path) for p in PRINCIPALS))
        print(f"{pattern!r}: {row}")
