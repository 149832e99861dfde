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
from tests.otlp_builders import export_request
from traces.records import make_span

ONE_SPAN = export_request([make_span(trace_id="b" * 32, span_id="1" * 16, name="step", start_ns=10**18,
                                     end_ns=10**18 + 5)]).SerializeToString()

PRINCIPALS = ("anonymous", "ingest_key", "outsider", "viewer", "operator", "approver", "admin")
METHODS = ("GET", "POST")

# What each kind of URL answers, per principal in PRINCIPALS order. An ingest key is no login: pages send
# it to log in and the API answers 401. Another project's things do not exist for its members (404).
PAGE = (302, 302, 404, 200, 200, 200, 200)  # read by every member
PAGE_405 = (302, 302, 405, 405, 405, 405, 405)  # a page action that only takes POST
PAGE_ACTION = (302, 302, 404, 302, 302, 302, 302)  # a form post: back to the page, which says what happened
API = (401, 401, 404, 200, 200, 200, 200)  # read by every member
API_405 = (401, 401, 405, 405, 405, 405, 405)  # a method the endpoint does not take (after authentication)
API_BAD_BODY = (401, 401, 404, 400, 400, 400, 400)  # an empty body is invalid, but only members learn that
NO_METHOD = (405,) * 7

# pattern -> (GET, POST). A POST carries an empty form body, so creations fail validation; what a role may
# change is tested with each feature. Here: who gets in at all, and what a refusal looks like.
TABLE: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    '': ((302, 302, 302, 302, 302, 302, 302), (302, 302, 302, 302, 302, 302, 302)),
    'api/docs/': ((302, 302, 200, 200, 200, 200, 200), PAGE_405),
    'api/schema/': ((401, 401, 200, 200, 200, 200, 200), API_405),
    'api/v1/alert-rules/': (API, API_BAD_BODY),
    'api/v1/alert-rules/<int:rule_id>/': (API, API_405),
    'api/v1/alerts/': (API, API_405),
    'api/v1/alerts/<int:alert_id>/acknowledge/': (API_405, (401, 401, 404, 403, 200, 200, 200)),
    'api/v1/channels/': (API, API_BAD_BODY),
    'api/v1/channels/<int:channel_id>/': (API_405, API_405),
    'api/v1/channels/<int:channel_id>/test/': (API_405, (401, 401, 404, 403, 200, 200, 200)),
    'api/v1/findings/': (API, API_405),
    'api/v1/findings/<id:finding_id>/acknowledge/': (API_405, (401, 401, 404, 403, 200, 200, 200)),
    'api/v1/policies/': (API, API_BAD_BODY),
    'api/v1/policies/<id:policy_id>/': (API, API_405),
    'api/v1/policies/<id:policy_id>/dry-run/': (API_405, API_BAD_BODY),
    'api/v1/policies/<id:policy_id>/mode/': (API_405, API_BAD_BODY),
    'api/v1/policies/<id:policy_id>/rollback/': (API_405, (401, 401, 404, 403, 403, 409, 409)),
    'api/v1/policies/<id:policy_id>/versions/': (API, API_BAD_BODY),
    'api/v1/policies/<id:policy_id>/versions/<version:number>/': (API, API_405),
    'api/v1/policies/<id:policy_id>/versions/<version:number>/activate/': (API_405, (401, 401, 404, 403, 403, 200, 200)),
    'api/v1/policies/<id:policy_id>/versions/<version:number>/diff/': (API, API_405),
    'api/v1/policies/validate/': (API_405, (401, 401, 400, 400, 400, 400, 400)),
    'api/v1/projects/': ((401, 401, 200, 200, 200, 200, 200), (401, 401, 400, 400, 400, 400, 400)),
    'api/v1/projects/<slug:slug>/audit/': ((401, 401, 404, 403, 403, 403, 200), API_405),
    'api/v1/projects/<slug:slug>/ingest-keys/': (API, (401, 401, 404, 403, 403, 403, 201)),
    'api/v1/projects/<slug:slug>/ingest-keys/<id:key_id>/revoke/': (API_405, (401, 401, 404, 403, 403, 403, 200)),
    'api/v1/projects/<slug:slug>/members/': (API, API_405),
    'api/v1/projects/<slug:slug>/members/<str:username>/': (API_405, API_405),
    'api/v1/rollouts/': (API, API_BAD_BODY),
    'api/v1/rollouts/<id:rollout_id>/': (API, API_405),
    'api/v1/rollouts/<id:rollout_id>/abort/': (API_405, (401, 401, 404, 403, 200, 200, 200)),
    'api/v1/rollouts/<id:rollout_id>/approve/': (API_405, (401, 401, 404, 403, 403, 409, 409)),  # pending: no gate yet,
    'api/v1/rollouts/<id:rollout_id>/promote/': (API_405, (401, 401, 404, 403, 403, 200, 200)),
    'api/v1/rollouts/<id:rollout_id>/retry/': (API_405, (401, 401, 404, 403, 409, 409, 409)),  # nothing to retry,
    'api/v1/rollouts/<id:rollout_id>/rollback/': (API_405, (401, 401, 404, 403, 409, 409, 409)),  # not active,
    'api/v1/rollouts/<id:rollout_id>/start/': (API_405, (401, 401, 404, 403, 403, 200, 200)),
    'api/v1/silences/': (API, API_BAD_BODY),
    'api/v1/silences/<int:silence_id>/': (API_405, API_405),
    'api/v1/slis/preview/': (API_405, API_BAD_BODY),
    'api/v1/slos/': (API, API_BAD_BODY),
    'api/v1/slos/<int:slo_id>/': (API, API_405),
    'api/v1/slos/openslo/': (API, API_BAD_BODY),
    'api/v1/state/history/': (API, API_405),
    'api/v1/traces/': (API, API_405),
    'api/v1/traces/<str:trace_id>/': (API, API_405),
    'api/v1/traces/<str:trace_id>/timeline/': (API, API_405),
    'api/v1/violations/': (API, API_405),
    'api/v1/violations/counts/': (API, API_405),
    'assets/plotly.min.js': ((200, 200, 200, 200, 200, 200, 200), NO_METHOD),
    'docs/<slug:name>/': ((302, 302, 200, 200, 200, 200, 200), PAGE_405),  # any person signed in,
    'healthz': ((200, 200, 200, 200, 200, 200, 200), NO_METHOD),
    'login/': ((200, 200, 200, 200, 200, 200, 200), (200, 200, 200, 200, 200, 200, 200)),
    'logout/': (NO_METHOD, (302, 302, 302, 302, 302, 302, 302)),
    'metrics': ((401, 401, 401, 401, 401, 401, 401), NO_METHOD),
    'p/<slug:slug>/': (PAGE, PAGE),
    'p/<slug:slug>/alert-rules/': (PAGE, PAGE),
    'p/<slug:slug>/alerts/': (PAGE, PAGE),
    'p/<slug:slug>/alerts/<int:alert_id>/acknowledge/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/audit/': ((302, 302, 404, 404, 404, 404, 200), (302, 302, 404, 404, 404, 404, 200)),
    'p/<slug:slug>/channels/': (PAGE, PAGE),
    'p/<slug:slug>/findings/': (PAGE, PAGE),
    'p/<slug:slug>/findings/<id:finding_id>/': (PAGE, PAGE),
    'p/<slug:slug>/findings/<id:finding_id>/acknowledge/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/keys/': (PAGE, PAGE),
    'p/<slug:slug>/keys/<id:key_id>/revoke/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/keys/new/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/members/': (PAGE, PAGE_ACTION),
    'p/<slug:slug>/pipeline/': (PAGE, PAGE),
    'p/<slug:slug>/pipeline/dead-letters/<int:batch_id>/retry/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/policies/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/diff/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/dry-run/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/edit/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/mode/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/policies/<id:policy_id>/rollback/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/policies/<id:policy_id>/versions/<version:number>/': (PAGE, PAGE),
    'p/<slug:slug>/policies/<id:policy_id>/versions/<version:number>/activate/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/policies/new/': (PAGE, PAGE),
    'p/<slug:slug>/rollouts/': (PAGE, PAGE),
    'p/<slug:slug>/rollouts/<id:rollout_id>/': (PAGE, PAGE),
    'p/<slug:slug>/rollouts/<id:rollout_id>/<str:action>/': (PAGE_405, (302, 302, 404, 403, 403, 302, 302)),  # start,
    'p/<slug:slug>/rollouts/new/': (PAGE, PAGE),
    'p/<slug:slug>/silences/': (PAGE, PAGE),
    'p/<slug:slug>/slos/': (PAGE, PAGE),
    'p/<slug:slug>/slos/<int:slo_id>/': (PAGE, PAGE),
    'p/<slug:slug>/slos/<int:slo_id>/delete/': (PAGE_405, PAGE_ACTION),
    'p/<slug:slug>/slos/<int:slo_id>/edit/': (PAGE, PAGE),
    'p/<slug:slug>/slos/new/': (PAGE, PAGE),
    'p/<slug:slug>/slos/preview/': (PAGE_405, (302, 302, 404, 400, 400, 400, 400)),
    'p/<slug:slug>/state/<path:key>/': (PAGE, PAGE),
    'p/<slug:slug>/traces/': (PAGE, PAGE),
    'p/<slug:slug>/traces/<str:trace_id>/': (PAGE, PAGE),
    'p/<slug:slug>/traces/<str:trace_id>/graph/': (PAGE, PAGE),
    'p/<slug:slug>/violations/': (PAGE, PAGE),
    'projects/new/': ((302, 302, 200, 404, 404, 404, 200), (302, 302, 200, 404, 404, 404, 200)),
    '^ofrep/': (NO_METHOD, (401, 400, 401, 401, 401, 401, 401)),  # an ingest key only (400: no context sent)
    'v1/traces': (NO_METHOD, (401, 200, 401, 401, 401, 401, 401)),  # only an ingest key sends spans
    'v1/traces/': (NO_METHOD, (401, 200, 401, 401, 401, 401, 401)),  # only an ingest key sends spans
}

# Paths whose pattern alone does not make a request the view can answer.
QUERIES = {
    "api/v1/policies/<id:policy_id>/versions/<version:number>/diff/": {"<version:number>": "2"},
    "p/<slug:slug>/policies/<id:policy_id>/diff/": {"": "?new=2"},
    "p/<slug:slug>/policies/<id:policy_id>/dry-run/": {"": "?version=1"},
    "api/v1/state/history/": {"": "&key=order/42"},
    "^ofrep/": {"^ofrep/": "ofrep/v1/evaluate/flags/agent-version"},
}


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
    from governance.rollouts.services import rollout_create
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
    ids["rollout"] = rollout_create(project=acme, actor=admin, name="billing 1.1", service="billing",
                                    baseline_version="1.0.0", canary_version="1.1.0", flag_key="billing-version",
                                    template="quick").pk
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


def answer(client: Client, method: str, path: str, *, otlp: bool = False) -> tuple[int, bool]:
    """The status, and whether the request wrote an audit record; in a savepoint rolled back after."""
    with transaction.atomic():
        audits = AuditRecord.objects.count()
        if otlp:  # one span, so the body is not empty (the test client sends no content type without one)
            response = client.generic(method, path, ONE_SPAN, content_type="application/x-protobuf")
        else:
            response = client.generic(method, path, b"", content_type="application/x-www-form-urlencoded")
        audited = AuditRecord.objects.count() != audits
        transaction.set_rollback(True)
    return response.status_code, audited


def path_of(pattern: str, ids: dict) -> str:
    path = "/" + pattern
    for name, value in QUERIES.get(pattern, {}).items():
        if name:
            path = path.replace(name, value)
    for name, value in (("<slug:slug>", "acme"), ("<str:trace_id>", ids["trace"]), ("<id:key_id>", ids["key"]),
                        ("<id:finding_id>", ids["finding"]), ("<id:policy_id>", ids["policy"]),
                        ("<version:number>", 1), ("<int:slo_id>", ids["slo"]), ("<int:rule_id>", ids["rule"]),
                        ("<int:alert_id>", ids["alert"]), ("<int:silence_id>", ids["silence"]),
                        ("<int:channel_id>", ids["channel"]), ("<int:batch_id>", ids["batch"]),
                        ("<id:rollout_id>", ids["rollout"]), ("<str:action>", "start"), ("<slug:name>", "concurrency"),
                        ("<str:username>", "viewer"), ("<path:key>", "order/42")):
        path = path.replace(name, str(value))
    assert "<" not in path and "^" not in path, f"no sample value for a part of {pattern}: add one to path_of"
    if pattern.startswith("api/v1/") and not pattern.startswith("api/v1/projects/"):
        path += "?project=acme"
    return path + QUERIES.get(pattern, {}).get("", "")


def test_every_url_pattern_is_in_the_table():
    assert sorted(set(every_pattern()) - set(TABLE)) == [], "decide who may use these: add them to TABLE"
    assert sorted(set(TABLE) - set(every_pattern())) == [], "these are gone: remove them from TABLE"


def test_every_pattern_and_method_answers_each_principal_as_the_table_says(world):
    people, key, ids = world
    wrong = []
    for pattern in every_pattern():
        path = path_of(pattern, ids)
        # Fresh clients for each pattern: a POST to logout/ ends the session of the client that sent it.
        clients = {principal: client_for(principal, people, key) for principal in PRINCIPALS}
        for method, expected in zip(METHODS, TABLE[pattern], strict=True):
            for principal, status in zip(PRINCIPALS, expected, strict=True):
                got, audited = answer(clients[principal], method, path,
                                      otlp=pattern.startswith("v1/traces"))
                if got != status:
                    wrong.append(f"{method} {path} as {principal}: {got}, expected {status}")
                if audited and principal in ("anonymous", "ingest_key", "outsider", "viewer"):
                    wrong.append(f"{method} {path} as {principal} changed something (an audit record)")
    assert wrong == [], "\n".join(wrong)
