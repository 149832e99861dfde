"""Findings: the API and page, acknowledging them, key history, and trace search by attribute.

Runs on SQLite, and on PostgreSQL when DATABASE_URL is set (the attribute search takes a
different path on each)."""

from __future__ import annotations

import pytest
from django.db import connection

from governance.models import AuditRecord
from tests.conftest import api_as, make_user
from tests.test_timeline import T0, TRACE, hand_trace, store_finding
from traces.ingest import spans_store
from traces.models import Finding
from traces.records import make_span

OTHER = "2" * 32


@pytest.fixture
def stored(acme):
    spans = hand_trace()
    spans_store(project_id=acme.pk, spans=spans)
    lost = store_finding(acme, spans)
    orphan = store_finding(acme, spans, kind="orphan_span", key="", span_ids=("a000000000000005",),
                           detail="span a000000000000005 has no parent here")
    return spans, lost, orphan


@pytest.fixture
def globex_stored(globex):
    spans = hand_trace(trace_id=OTHER, prefix="c")
    spans_store(project_id=globex.pk, spans=spans)
    return store_finding(globex, spans, span_ids=("c000000000000004", "c000000000000008"))


# ---------------------------------------------------------------------------
# GET /api/v1/findings/


def test_it_lists_findings_with_the_check_traces_fields(bob, stored):
    response = api_as(bob).get("/api/v1/findings/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    lost = next(f for f in body["results"] if f["kind"] == "lost_update")
    assert set(lost) >= {"id", "kind", "key", "trace_ids", "span_ids", "agents", "detail", "status", "created_at"}
    assert lost["key"] == "order/42"
    assert lost["trace_ids"] == [TRACE]
    assert lost["span_ids"] == ["a000000000000004", "a000000000000008"]
    assert lost["agents"] == ["booker", "payer"]
    assert lost["status"] == "open"


@pytest.mark.parametrize("query, kinds", [
    ("kind=lost_update", ["lost_update"]),
    ("kind=orphan_span", ["orphan_span"]),
    ("key=order/42", ["lost_update"]),
    ("agent=payer", ["lost_update"]),
    ("agent=booker", ["lost_update", "orphan_span"]),
    (f"trace_id={TRACE}", ["lost_update", "orphan_span"]),
    ("trace_id=" + "3" * 32, []),
    ("status=acknowledged", []),
    ("status=open", ["lost_update", "orphan_span"]),
])
def test_findings_filter(bob, stored, query, kinds):
    response = api_as(bob).get(f"/api/v1/findings/?{query}")
    assert response.status_code == 200
    assert sorted(f["kind"] for f in response.json()["results"]) == kinds


def test_a_bad_filter_is_a_400_in_the_error_shape(bob, stored):
    response = api_as(bob).get("/api/v1/findings/?kind=heisenbug")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "kind" in response.json()["error"]["fields"]


def test_withdrawn_findings_are_hidden_unless_asked_for(bob, stored):
    Finding.objects.filter(pk=stored[2].pk).update(status=Finding.Status.WITHDRAWN)
    assert [f["kind"] for f in api_as(bob).get("/api/v1/findings/").json()["results"]] == ["lost_update"]
    assert [f["kind"] for f in api_as(bob).get("/api/v1/findings/?status=withdrawn").json()["results"]] == [
        "orphan_span"]


def test_findings_of_another_project_are_invisible(bob, charlie, stored, globex_stored):
    assert api_as(bob).get("/api/v1/findings/?project=globex").status_code == 404
    theirs = api_as(charlie).get("/api/v1/findings/").json()["results"]
    assert [f["id"] for f in theirs] == [globex_stored.pk]
    mine = api_as(bob).get("/api/v1/findings/").json()["results"]
    assert globex_stored.pk not in [f["id"] for f in mine]


# ---------------------------------------------------------------------------
# POST /api/v1/findings/{id}/acknowledge/


def test_a_viewer_cannot_acknowledge_and_nothing_changes(bob, stored):
    lost = stored[1]
    response = api_as(bob).post(f"/api/v1/findings/{lost.pk}/acknowledge/")
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "permission_denied",
                                         "message": "this needs the operator role in project acme"}}
    lost.refresh_from_db()
    assert lost.status == Finding.Status.OPEN and lost.acknowledged_by is None
    assert not AuditRecord.objects.filter(action="finding.acknowledge").exists()


def test_an_admin_acknowledges_and_it_is_audited(alice, stored):
    lost = stored[1]
    response = api_as(alice).post(f"/api/v1/findings/{lost.pk}/acknowledge/", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    assert response.json()["status"] == "acknowledged"
    assert response.json()["acknowledged_by"] == "alice"
    lost.refresh_from_db()
    assert lost.status == Finding.Status.ACKNOWLEDGED and lost.acknowledged_by == alice
    record = AuditRecord.objects.get(action="finding.acknowledge")
    assert (record.actor, record.object_type, record.object_id) == (alice, "finding", str(lost.pk))
    assert record.detail == {"kind": "lost_update", "key": "order/42"}
    assert record.address == "10.1.2.3"
    # again: no second audit record
    assert api_as(alice).post(f"/api/v1/findings/{lost.pk}/acknowledge/").status_code == 200
    assert AuditRecord.objects.filter(action="finding.acknowledge").count() == 1


def test_an_operator_may_acknowledge(acme, stored):
    olga = make_user("olga", acme, "operator")
    assert api_as(olga).post(f"/api/v1/findings/{stored[1].pk}/acknowledge/").status_code == 200


def test_a_withdrawn_finding_cannot_be_acknowledged(alice, stored):
    Finding.objects.filter(pk=stored[2].pk).update(status=Finding.Status.WITHDRAWN)
    response = api_as(alice).post(f"/api/v1/findings/{stored[2].pk}/acknowledge/")
    assert response.status_code == 400
    assert "withdrawn" in response.json()["error"]["message"]


def test_acknowledging_another_projects_finding_is_not_found(alice, stored, globex_stored):
    response = api_as(alice).post(f"/api/v1/findings/{globex_stored.pk}/acknowledge/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    globex_stored.refresh_from_db()
    assert globex_stored.status == Finding.Status.OPEN


# ---------------------------------------------------------------------------
# The findings page


def test_the_findings_page_lists_and_links(client, bob, stored):
    client.force_login(bob)
    response = client.get("/p/acme/findings/?kind=lost_update")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count('class="tl-kind">lost_update<') == 1 and 'class="tl-kind">orphan_span<' not in body
    assert f"/p/acme/traces/{TRACE}/?finding={stored[1].pk}" in body
    assert 'href="/p/acme/state/order/42/"' in body
    assert "Acknowledge</button>" not in body  # bob is a viewer


def test_acknowledging_from_the_page(client, alice, bob, stored):
    lost = stored[1]
    client.force_login(bob)
    response = client.post(f"/p/acme/findings/{lost.pk}/acknowledge/", {"next": "/p/acme/findings/"}, follow=True)
    assert "needs the operator role" in response.content.decode()
    lost.refresh_from_db()
    assert lost.status == Finding.Status.OPEN
    client.force_login(alice)
    page = client.get("/p/acme/findings/").content.decode()
    assert "Acknowledge</button>" in page
    response = client.post(f"/p/acme/findings/{lost.pk}/acknowledge/", {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/p/acme/findings/"
    lost.refresh_from_db()
    assert lost.status == Finding.Status.ACKNOWLEDGED
    assert AuditRecord.objects.filter(action="finding.acknowledge", actor=alice).count() == 1


def test_the_findings_page_of_another_project_is_not_found(client, charlie, stored):
    client.force_login(charlie)
    assert client.get("/p/acme/findings/").status_code == 404
    assert client.post(f"/p/globex/findings/{stored[1].pk}/acknowledge/").status_code == 404


# ---------------------------------------------------------------------------
# GET /api/v1/state/history/


def test_key_history_lists_accesses_with_versions_and_findings(bob, acme, stored):
    spans_store(project_id=acme.pk, spans=[make_span(
        trace_id="4" * 32, span_id="d000000000000001", name="cas write", start_ns=T0 + 950_000_000,
        end_ns=T0 + 960_000_000, resource_attributes={"service.name": "booking", "service.instance.id": "booking-2"},
        attributes={"state.key": "order/42", "state.op": "write", "state.version": 6, "state.base_version": 5,
                    "state.conflict": True})])
    response = api_as(bob).get("/api/v1/state/history/", {"key": "order/42", "since": "2025-01-01T00:00:00Z"})
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == "order/42" and body["truncated"] is False
    assert [(a["span_id"], a["op"], a["label"]) for a in body["accesses"]] == [
        ("a000000000000004", "write", "w v4←3"),  # oldest first, by each span's own clock
        ("a000000000000008", "write", "w v5←3"),
        ("a00000000000000a", "read", "r v4"),
        ("d000000000000001", "write", "w ✗ conflict"),
    ]
    conflict = body["accesses"][-1]
    assert conflict["conflict"] is True and conflict["took_effect"] is False and conflict["agent"] == "booking/booking-2"
    assert [f["id"] for f in body["findings"]] == [stored[1].pk]


def test_key_history_defaults_to_the_last_24_hours(bob, stored):
    body = api_as(bob).get("/api/v1/state/history/", {"key": "order/42"}).json()
    assert body["accesses"] == []  # the stored spans are from 2025
    assert body["since_ns"] is not None


def test_key_history_needs_a_key_and_stays_in_the_project(bob, charlie, stored):
    response = api_as(bob).get("/api/v1/state/history/")
    assert response.status_code == 400 and "key" in response.json()["error"]["fields"]
    theirs = api_as(charlie).get("/api/v1/state/history/", {"key": "order/42", "since": "2025-01-01T00:00:00Z"})
    assert theirs.status_code == 200 and theirs.json()["accesses"] == [] and theirs.json()["findings"] == []
    assert api_as(charlie).get("/api/v1/state/history/", {"key": "order/42", "project": "acme"}).status_code == 404


# ---------------------------------------------------------------------------
# Trace search: attribute, finding kind, state key, duration


def _search(user, query):
    response = api_as(user).get(f"/api/v1/traces/?{query}")
    assert response.status_code == 200, response.json()
    return [t["trace_id"] for t in response.json()["results"]]


@pytest.fixture
def two_traces(acme, stored):
    spans_store(project_id=acme.pk, spans=[make_span(
        trace_id="5" * 32, span_id="e000000000000001", name="quick", start_ns=T0, end_ns=T0 + 5_000_000,
        attributes={"gen_ai.request.model": "gpt-4o-mini", "retries": 0, "cached": True, "weird__key": "x"},
        resource_attributes={"service.name": "billing"})])
    return stored


@pytest.mark.parametrize("query, found", [
    ("attr=gen_ai.request.model=gpt-4o", [TRACE]),
    ("attr=gen_ai.request.model=gpt-4o-mini", ["5" * 32]),
    ("attr=gen_ai.request.model=claude", []),
    ("attr=retries=2", [TRACE]),  # an int attribute matches its text
    ("attr=retries=0", ["5" * 32]),
    ("attr=cached=true", ["5" * 32]),
    ("attr=weird__key=x", ["5" * 32]),
    ("attr=state.key=order/42", [TRACE]),
    ("finding_kind=lost_update", [TRACE]),
    ("finding_kind=stale_read", []),
    ("state_key=order/42", [TRACE]),
    ("min_duration_ms=100", [TRACE]),
    ("max_duration_ms=100", ["5" * 32]),
])
def test_trace_search(bob, two_traces, query, found):
    assert sorted(_search(bob, query)) == sorted(found)


def test_attribute_search_runs_on_this_database(bob, two_traces):
    assert connection.vendor in ("sqlite", "postgresql")
    assert _search(bob, "attr=gen_ai.request.model=gpt-4o&finding_kind=lost_update") == [TRACE]


def test_a_malformed_attribute_filter_is_a_400(bob, stored):
    response = api_as(bob).get("/api/v1/traces/?attr=nokey")
    assert response.status_code == 400 and "attr" in response.json()["error"]["fields"]


def test_the_traces_page_has_the_new_filters(client, bob, two_traces):
    client.force_login(bob)
    body = client.get("/p/acme/traces/?attr=retries%3D2").content.decode()
    assert 'name="attr"' in body and 'name="finding_kind"' in body and 'name="state_key"' in body
    assert TRACE in body and "5" * 32 not in body
    assert 'href="/p/acme/findings/"' in body
