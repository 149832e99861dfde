"""Policies through the API: versions, located errors, diff, dry run, activation, rollback, evaluation, violations."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from governance.models import AuditRecord, Role
from policies.models import Policy, PolicyVersion, VersionImmutable, Violation
from policies.selectors import violation_counts
from policies.services import policy_create, policy_version_activate, violations_record
from tests.conftest import api_as, at_fixed_instants, make_user
from traces.ingest import spans_store
from traces.records import make_span

LEDGER_V1 = """\
policy: ledger
description: Only the ledger agent writes the ledger.
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent
"""

LEDGER_V2 = LEDGER_V1 + """\
  - id: charges-idempotent
    kind: idempotency_required
    match:
      name: charge
"""

BROKEN = """\
policy: ledger
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent
  - id: charges
    kind: idempotency_requird
"""

_ids = itertools.count(1)
MINUTE_NS = 60 * 1_000_000_000


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans are dated from the clock and windows end at it: stop it first, for every test here."""


def a_span(*, agent: str, name: str, trace: str, minutes_ago: float = 10, service: str = "billing", **attributes):
    start = time.time_ns() - int(minutes_ago * MINUTE_NS)
    return make_span(
        trace_id=trace.ljust(32, "0"), span_id=f"{next(_ids):016x}", name=name, start_ns=start, end_ns=start + 5_000_000,
        attributes={"gen_ai.agent.id": agent, **attributes},
        resource_attributes={"service.name": service, "service.instance.id": f"{service}-1"},
    )


def a_write(agent: str, key: str, trace: str, **kw):
    return a_span(agent=agent, name="state.write", trace=trace, **{"state.key": key, "state.op": "write"}, **kw)


def store(project, *spans) -> list[str]:
    spans_store(project_id=project.pk, spans=list(spans))
    return sorted({s.trace_id for s in spans})


@pytest.fixture
def dave(acme):
    """An approver of acme."""
    return make_user("dave", acme, Role.APPROVER)


@pytest.fixture
def olga(acme):
    """An operator of acme."""
    return make_user("olga", acme, Role.OPERATOR)


@pytest.fixture
def ledger(acme, alice):
    policy = policy_create(project=acme, source=LEDGER_V1, comment="first", actor=alice)
    return policy


@pytest.fixture
def ledger_spans(acme):
    """Three traces: the owner writes, an intruder writes the ledger, a charge without an idempotency key."""
    return store(
        acme,
        a_write("ledger-agent", "ledger/42", "aa01"),
        a_write("intruder", "ledger/42", "aa02", minutes_ago=5),
        a_span(agent="checkout", name="charge", trace="aa03", minutes_ago=3),
        a_write("intruder", "ledger/7", "aa04", minutes_ago=60 * 30),  # outside a 24 h window
    )


def url(policy, tail=""):
    return f"/api/v1/policies/{policy.pk}/{tail}"


# --- creating and saving versions ----------------------------------------------------------


def test_it_lets_an_approver_create_a_policy_as_version_1_not_active(acme, dave):
    response = api_as(dave).post("/api/v1/policies/?project=acme", {"source": LEDGER_V1, "comment": "first"}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["name"] == "ledger"
    assert response.data["active_version"] is None
    assert response.data["mode"] == "enforce"
    assert [v["number"] for v in response.data["versions"]] == [1]
    assert AuditRecord.objects.filter(project=acme, action="policy.create").count() == 1


def test_it_refuses_creation_to_an_operator_and_a_viewer(acme, olga, bob):
    for person in (olga, bob):
        response = api_as(person).post("/api/v1/policies/?project=acme", {"source": LEDGER_V1}, format="json")
        assert response.status_code == 403
        assert response.data["error"]["code"] == "permission_denied"
    assert not Policy.objects.exists()


def test_it_refuses_a_second_policy_of_the_same_name(ledger, alice):
    response = api_as(alice).post("/api/v1/policies/?project=acme", {"source": LEDGER_V1}, format="json")
    assert response.status_code == 409
    assert response.data["error"]["code"] == "conflict"


def test_a_malformed_policy_gives_located_problems_and_saves_nothing(ledger, alice):
    before = AuditRecord.objects.count()
    response = api_as(alice).post(url(ledger, "versions/"), {"source": BROKEN}, format="json")
    assert response.status_code == 400
    error = response.data["error"]
    assert error["code"] == "invalid_policy"
    assert "line 8" in error["message"]
    assert error["problems"][0]["line"] == 8
    assert error["problems"][0]["column"] == 11
    assert error["problems"][0]["path"] == "rules[1].kind"
    assert "unknown rule kind 'idempotency_requird'" in error["problems"][0]["message"]
    assert ledger.versions.count() == 1
    assert AuditRecord.objects.count() == before


def test_a_yaml_syntax_error_is_located_too(ledger, alice):
    response = api_as(alice).post(url(ledger, "versions/"), {"source": "policy: ledger\nrules: [\n"}, format="json")
    assert response.status_code == 400
    assert response.data["error"]["problems"][0]["line"] is not None
    assert ledger.versions.count() == 1


def test_a_new_version_cannot_rename_the_policy(ledger, alice):
    response = api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V1.replace("policy: ledger", "policy: other")},
                                  format="json")
    assert response.status_code == 400
    assert response.data["error"]["problems"] == [{
        "message": "this policy is named 'ledger'; a version cannot rename it to 'other'", "line": 1, "column": 9,
        "path": "policy",
    }]


def test_a_creation_with_a_malformed_policy_saves_nothing(acme, alice):
    response = api_as(alice).post("/api/v1/policies/?project=acme", {"source": BROKEN}, format="json")
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid_policy"
    assert not Policy.objects.exists()


def test_it_numbers_versions_and_keeps_them_immutable(ledger, alice):
    response = api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V2, "comment": "idempotent charges"},
                                  format="json")
    assert response.status_code == 201
    assert response.data["number"] == 2
    assert response.data["document"]["rules"][1] == {"id": "charges-idempotent", "kind": "idempotency_required",
                                                     "match": {"name": ["charge"]}}
    assert response.data["active"] is False
    v1 = api_as(alice).get(url(ledger, "versions/1/"))
    assert v1.data["source"] == LEDGER_V1
    for method in ("put", "patch", "delete"):
        assert getattr(api_as(alice), method)(url(ledger, "versions/1/"), {"source": LEDGER_V2}, format="json").status_code == 405
    version = PolicyVersion.objects.get(policy=ledger, number=1)
    version.source = "changed"
    with pytest.raises(VersionImmutable):
        version.save()
    assert PolicyVersion.objects.get(policy=ledger, number=1).source == LEDGER_V1


def test_it_diffs_two_versions(ledger, alice):
    api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    response = api_as(alice).get(url(ledger, "versions/2/diff/"))
    assert response.status_code == 200
    assert response.data["old"] == 1 and response.data["new"] == 2
    assert "--- v1\n+++ v2\n" in response.data["diff"]
    assert "+  - id: charges-idempotent\n" in response.data["diff"]
    reverse = api_as(alice).get(url(ledger, "versions/1/diff/?against=2"))
    assert "-  - id: charges-idempotent\n" in reverse.data["diff"]
    assert api_as(alice).get(url(ledger, "versions/1/diff/")).status_code == 404


def test_other_projects_policies_do_not_exist_for_charlie(ledger, charlie):
    assert api_as(charlie).get(url(ledger)).status_code == 404
    assert api_as(charlie).post(url(ledger, "versions/1/activate/")).status_code == 404
    assert api_as(charlie).get("/api/v1/policies/?project=acme").status_code == 404


# --- activation, rollback, mode ----------------------------------------------------------


def test_a_viewer_cannot_activate_and_nothing_changes(ledger, bob):
    response = api_as(bob).post(url(ledger, "versions/1/activate/"))
    assert response.status_code == 403
    assert response.data["error"]["code"] == "permission_denied"
    ledger.refresh_from_db()
    assert ledger.active_version is None
    assert not AuditRecord.objects.filter(action="policy.activate").exists()


def test_an_approver_activates_a_version_and_it_is_audited(ledger, dave):
    response = api_as(dave).post(url(ledger, "versions/1/activate/"))
    assert response.status_code == 200
    assert response.data["active_version"] == 1
    record = AuditRecord.objects.get(action="policy.activate")
    assert (record.actor, record.object_id, record.detail["version"], record.detail["previous"]) == (dave, str(ledger.pk), 1, None)
    detail = api_as(dave).get(url(ledger))
    assert [(v["number"], v["active"]) for v in detail.data["versions"]] == [(1, True)]


def test_activation_with_a_stale_view_is_refused(ledger, alice, dave):
    api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    api_as(alice).post(url(ledger, "versions/1/activate/"), {"if_active": 0}, format="json")
    response = api_as(dave).post(url(ledger, "versions/2/activate/"), {"if_active": 0}, format="json")
    assert response.status_code == 409
    ledger.refresh_from_db()
    assert ledger.active_version.number == 1


def test_rollback_returns_to_the_previously_active_version_and_is_recorded_as_such(ledger, alice):
    client = api_as(alice)
    client.post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    client.post(url(ledger, "versions/"), {"source": LEDGER_V2 + "      kind: internal\n"}, format="json")
    assert client.post(url(ledger, "rollback/")).status_code == 409  # nothing active yet
    for n in (1, 2, 3):
        client.post(url(ledger, f"versions/{n}/activate/"))
    response = client.post(url(ledger, "rollback/"))
    assert response.status_code == 200 and response.data["active_version"] == 2
    assert client.post(url(ledger, "rollback/")).data["active_version"] == 1
    assert client.post(url(ledger, "rollback/")).status_code == 409
    rollbacks = AuditRecord.objects.filter(action="policy.rollback").order_by("id")
    assert [(r.detail["previous"], r.detail["version"]) for r in rollbacks] == [(3, 2), (2, 1)]


def test_a_viewer_cannot_roll_back_or_change_the_mode(ledger, alice, bob):
    api_as(alice).post(url(ledger, "versions/1/activate/"))
    assert api_as(bob).post(url(ledger, "rollback/")).status_code == 403
    assert api_as(bob).post(url(ledger, "mode/"), {"mode": "monitor"}, format="json").status_code == 403
    ledger.refresh_from_db()
    assert ledger.mode == "enforce"


def test_an_approver_changes_the_mode_with_an_audit_record(ledger, dave):
    response = api_as(dave).post(url(ledger, "mode/"), {"mode": "monitor"}, format="json")
    assert response.status_code == 200 and response.data["mode"] == "monitor"
    assert AuditRecord.objects.get(action="policy.mode").detail == {"name": "ledger", "mode": "monitor", "previous": "enforce"}
    bad = api_as(dave).post(url(ledger, "mode/"), {"mode": "loud"}, format="json")
    assert bad.status_code == 400 and "mode" in bad.data["error"]["fields"]


# --- dry run and evaluation --------------------------------------------------------------


def test_a_dry_run_of_a_draft_shows_counts_per_rule_and_examples_and_stores_nothing(ledger, bob, ledger_spans):
    response = api_as(bob).post(url(ledger, "dry-run/"), {"source": LEDGER_V2, "hours": 24}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["spans_scanned"] == 3
    assert response.data["violations"] == 2
    rules = {r["rule_id"]: r for r in response.data["rules"]}
    assert rules["ledger-owner"]["count"] == 1
    example = rules["ledger-owner"]["examples"][0]
    assert example["agent"] == "intruder"
    assert example["url"] == f"/p/acme/traces/{'aa02'.ljust(32, '0')}/?span={example['span_id']}"
    assert rules["charges-idempotent"]["count"] == 1
    assert not Violation.objects.exists()


def test_a_dry_run_of_a_broken_draft_gives_located_problems(ledger, bob):
    response = api_as(bob).post(url(ledger, "dry-run/"), {"source": BROKEN}, format="json")
    assert response.status_code == 400
    assert response.data["error"]["problems"][0]["line"] == 8


def test_a_dry_run_needs_exactly_one_of_source_or_version(ledger, bob):
    response = api_as(bob).post(url(ledger, "dry-run/"), {"hours": 3}, format="json")
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"


def _stored(project):
    return sorted(Violation.objects.filter(project=project).values_list("rule_id", "trace_id", "span_id", "agent",
                                                                         "service", "reason"))


def _dry(response):
    return sorted((r["rule_id"], e["trace_id"], e["span_id"], e["agent"], e["service"], e["reason"])
                  for r in response.data["rules"] for e in r["examples"])


def test_what_a_dry_run_shows_is_what_activation_then_records(acme, ledger, alice, ledger_spans):
    client = api_as(alice)
    client.post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    dry = client.post(url(ledger, "dry-run/"), {"version": 2, "hours": 24}, format="json")
    client.post(url(ledger, "versions/2/activate/"))
    assert violations_record(project_id=acme.pk, trace_ids=ledger_spans[:3]) == 2
    assert _stored(acme) == _dry(dry)
    violation = Violation.objects.get(rule_id="ledger-owner")
    assert violation.version.number == 2 and violation.enforced is True
    assert violation.rule_kind == "single_writer" and violation.start_ns > 0
    # Evaluating the same traces again stores nothing twice.
    assert violations_record(project_id=acme.pk, trace_ids=ledger_spans[:3]) == 0
    assert Violation.objects.count() == 2


def test_a_monitoring_policy_records_violations_as_not_enforced(acme, ledger, alice, ledger_spans):
    policy_version_activate(policy=ledger, version=ledger.versions.get(number=1), actor=alice)
    api_as(alice).post(url(ledger, "mode/"), {"mode": "monitor"}, format="json")
    violations_record(project_id=acme.pk, trace_ids=ledger_spans)
    assert list(Violation.objects.values_list("rule_id", "agent", "enforced").order_by("start_ns")) == [
        ("ledger-owner", "intruder", False), ("ledger-owner", "intruder", False),
    ]


def test_inactive_policies_record_nothing(acme, ledger, ledger_spans):
    assert violations_record(project_id=acme.pk, trace_ids=ledger_spans) == 0
    assert not Violation.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(TRACE_QUIET_SECONDS=0.0)
def test_the_celery_worker_evaluates_quiet_traces_after_analysis(celery_worker, acme, alice):
    from governance.pipeline.tasks import sweep

    policy = policy_create(project=acme, source=LEDGER_V2, actor=alice)
    policy_version_activate(policy=policy, version=policy.versions.get(), actor=alice)
    store(acme, a_write("intruder", "ledger/1", "bb01"), a_span(agent="checkout", name="charge", trace="bb02"))
    dry = api_as(alice).post(url(policy, "dry-run/"), {"version": 1, "hours": 1}, format="json")
    sweep.delay()  # the pipeline: analysis, then the policies on the same traces
    deadline = time.monotonic() + 30
    while Violation.objects.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _stored(acme) == _dry(dry)
    assert Violation.objects.count() == 2


# --- violations --------------------------------------------------------------------------


@pytest.fixture
def recorded(acme, ledger, alice, ledger_spans):
    api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    policy_version_activate(policy=ledger, version=ledger.versions.get(number=2), actor=alice)
    violations_record(project_id=acme.pk, trace_ids=ledger_spans)
    return Violation.objects.all()


def test_it_lists_violations_with_filters_and_timeline_links(recorded, bob):
    client = api_as(bob)
    every = client.get("/api/v1/violations/?project=acme")
    assert every.data["count"] == 3
    assert [v["agent"] for v in every.data["results"]] == ["checkout", "intruder", "intruder"]  # newest span first
    first = every.data["results"][0]
    assert first["url"] == f"/p/acme/traces/{first['trace_id']}/?span={first['span_id']}"
    assert first["policy"] == "ledger" and first["version"] == 2 and first["enforced"] is True
    assert client.get("/api/v1/violations/?project=acme&rule=ledger-owner").data["count"] == 2
    assert client.get("/api/v1/violations/?project=acme&agent=checkout").data["count"] == 1
    assert client.get("/api/v1/violations/?project=acme&last=24h").data["count"] == 2
    assert client.get("/api/v1/violations/?project=acme&service=nowhere").data["count"] == 0


@at_fixed_instants
def test_violation_counts_by_rule_and_agent_per_bucket(acme, recorded, bob):
    now = datetime.now(UTC)
    three_days = 3 * 86400
    rows = violation_counts(project=acme, since=now - timedelta(days=2), until=now, bucket_seconds=three_days,
                            group_by="rule")
    # each violation counts in the epoch-aligned bucket its span started in
    expected = Counter((datetime.fromtimestamp(v.start_ns // 10**9 // three_days * three_days, UTC), v.rule_id)
                       for v in recorded)
    assert sorted(((b, g), n) for b, g, n in rows) == sorted(expected.items())
    totals = Counter()
    for _, group, n in rows:
        totals[group] += n
    assert totals == {"charges-idempotent": 1, "ledger-owner": 2}
    by_agent = violation_counts(project=acme, since=now - timedelta(hours=1), until=now, bucket_seconds=60, group_by="agent")
    assert sum(n for _, g, n in by_agent if g == "intruder") == 1
    assert all(b.timestamp() % 60 == 0 for b, _, _ in by_agent)
    response = api_as(bob).get("/api/v1/violations/counts/?project=acme&group_by=agent&bucket_seconds=3600")
    assert response.status_code == 200
    assert sorted((r["group"], r["count"]) for r in response.data["results"]) == [("checkout", 1), ("intruder", 1)]


def test_violations_either_side_of_a_bucket_boundary_count_in_their_own_buckets(acme, recorded, clock):
    # The clock reads 2026-12-03 01:00 UTC; a 3-day bucket began an hour ago. The intruder's
    # write of ledger/7, 30 hours ago, falls in the bucket before.
    now = datetime.now(UTC)
    rows = violation_counts(project=acme, since=now - timedelta(days=2), until=now, bucket_seconds=3 * 86400,
                            group_by="rule")
    assert rows == [
        (datetime(2026, 11, 30, tzinfo=UTC), "ledger-owner", 1),
        (datetime(2026, 12, 3, tzinfo=UTC), "charges-idempotent", 1),
        (datetime(2026, 12, 3, tzinfo=UTC), "ledger-owner", 1),
    ]


def test_the_openapi_schema_lists_the_policy_endpoints(alice):
    response = api_as(alice).get("/api/schema/?format=json")
    paths = response.json()["paths"] if hasattr(response, "json") else {}
    for path in ("/api/v1/policies/", "/api/v1/policies/{policy_id}/versions/", "/api/v1/policies/{policy_id}/dry-run/",
                 "/api/v1/policies/{policy_id}/versions/{number}/activate/", "/api/v1/violations/counts/"):
        assert path in paths


# --- pages -------------------------------------------------------------------------------


# The hour, in UTC, that the violations of 3, 5 and 10 minutes ago fall in at each fixed instant.
@pytest.mark.parametrize("clock, hour", [("bucket-boundary", "2026-12-03 00:00"), ("year-end", "2026-12-31 23:00"),
                                         ("dst-change", "2026-03-29 01:00")], indirect=["clock"])
def test_bob_reads_the_violations_page_with_counts_over_time_and_timeline_links(client, recorded, bob, hour):
    client.force_login(bob)
    response = client.get("/p/acme/violations/?rule=ledger-owner&last=")
    assert response.status_code == 200
    v = Violation.objects.filter(rule_id="ledger-owner").order_by("-start_ns").first()
    assert f'href="/p/acme/traces/{v.trace_id}/?span={v.span_id}"'.encode() in response.content
    assert response.content.count(b'<span class="tag enforce">enforced</span>') == 2
    per_day = client.get("/p/acme/violations/?last=24h").content.decode()
    assert 'data-group="rule"' in per_day and 'data-group="agent"' in per_day
    assert "charges-idempotent" in per_day
    assert re.findall(r'<th title="([^"]+) UTC">', per_day) == [hour] * 2  # one hourly bucket, by rule and by agent


def test_rolling_back_on_the_page_says_which_version_is_active_now(client, ledger, alice):
    api_as(alice).post(url(ledger, "versions/"), {"source": LEDGER_V2}, format="json")
    for number in (1, 2):
        policy_version_activate(policy=ledger, version=ledger.versions.get(number=number), actor=alice)
    client.force_login(alice)
    page = client.post(f"/p/acme/policies/{ledger.pk}/rollback/", follow=True).content.decode()
    assert "Rolled ledger back to v1." in page
    assert '<strong id="active-version">v1</strong>' in page


def test_the_policy_page_says_what_its_mode_does_for_alerts(client, ledger, alice, bob):
    client.force_login(bob)
    enforcing = client.get(f"/p/acme/policies/{ledger.pk}/").content.decode()
    assert ('violations are recorded, marked enforced; <a href="/p/acme/alert-rules/">alert rules</a> on enforced '
            'violations raise alerts') in enforcing
    api_as(alice).post(url(ledger, "mode/"), {"mode": "monitor"}, format="json")
    monitoring = client.get(f"/p/acme/policies/{ledger.pk}/").content.decode()
    assert "violations are recorded, marked monitor (trying the rules out): alert rules on enforced violations " \
           "ignore them" in monitoring


def test_a_viewer_sees_no_activate_or_save_buttons(client, ledger, bob):
    client.force_login(bob)
    detail = client.get(f"/p/acme/policies/{ledger.pk}/")
    assert detail.status_code == 200 and b"Activate v1" not in detail.content and b"Edit (new version)" not in detail.content
    editor = client.get(f"/p/acme/policies/{ledger.pk}/edit/")
    assert b"Save new version" not in editor.content
    refused = client.post(f"/p/acme/policies/{ledger.pk}/versions/1/activate/", follow=True)
    assert b"this needs the approver role" in refused.content
    ledger.refresh_from_db()
    assert ledger.active_version is None


def test_the_timeline_marks_a_violating_span_beside_the_findings(ledger, alice, acme, ledger_spans, client):
    policy_version_activate(policy=ledger, version=ledger.versions.get(number=1), actor=alice)
    violations_record(project_id=acme.pk, trace_ids=ledger_spans)
    trace_id = "aa02".ljust(32, "0")
    data = api_as(alice).get(f"/api/v1/traces/{trace_id}/timeline/").json()
    marked = [f for f in data["findings"] if f["kind"] == "policy_violation"]
    assert len(marked) == 1
    assert marked[0]["key"] == "ledger/ledger-owner" and marked[0]["agents"] == ["intruder"]
    assert [data["spans"]["cat"][i] for i in marked[0]["spans"]] == [2]
    client.force_login(alice)
    assert "policy_violation" in client.get(f"/p/acme/traces/{trace_id}/").content.decode()


def test_validating_a_draft_saves_nothing_and_locates_problems(acme, bob):
    response = api_as(bob).post("/api/v1/policies/validate/", {"source": BROKEN}, format="json")
    assert response.status_code == 400
    problems = response.json()["error"]["problems"]
    assert problems[0]["line"] == 8 and problems[0]["column"] == 11
    ok = api_as(bob).post("/api/v1/policies/validate/", {"source": LEDGER_V1}, format="json")
    assert ok.status_code == 200 and ok.json()["document"]["policy"] == "ledger"
    assert not Policy.objects.exists()
