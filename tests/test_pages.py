"""The first pages: login, traces list, trace page, keys, members, audit."""

import re

import pytest

from governance.models import AuditRecord, IngestKey, Membership, Role
from tests.conftest import make_user
from tests.test_timeline import index_of, page_timeline_data
from traces.ingest import spans_store
from traces.records import STATUS_ERROR, make_span

T0 = 1_700_000_000_000_000_000


def store_trace(project, trace_id="a" * 32, service="billing", agent="planner", error=False):
    resource = {"service.name": service, "service.instance.id": f"{service}-1", "gen_ai.agent.id": agent}
    spans = [
        make_span(trace_id=trace_id, span_id="1" * 16, name="plan order", start_ns=T0, end_ns=T0 + 5_000_000,
                  resource_attributes=resource),
        make_span(trace_id=trace_id, span_id="2" * 16, parent_span_id="1" * 16, name="write order",
                  start_ns=T0 + 1_000_000, end_ns=T0 + 2_000_000, resource_attributes=resource,
                  status_code=STATUS_ERROR if error else 0, attributes={"state.key": "order/42", "state.op": "write"}),
    ]
    spans_store(project_id=project.pk, spans=spans)


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def test_it_sends_anonymous_people_to_the_login_page(client, db):
    response = client.get("/p/acme/traces/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_it_logs_in_with_a_password_and_lands_on_the_first_project(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    response = client.get("/")
    assert response["Location"] == "/p/acme/"


def test_it_lists_traces_with_their_summary(logged_in, acme):
    store_trace(acme, error=True)
    page = logged_in.get("/p/acme/traces/").content.decode()
    assert "plan order" in page
    assert "billing" in page and "planner" in page
    assert '<span class="bad">1</span>' in page


def test_it_filters_traces_by_service_agent_name_and_status(logged_in, acme):
    store_trace(acme, trace_id="a" * 32, service="billing", agent="planner", error=True)
    store_trace(acme, trace_id="b" * 32, service="shipping", agent="courier")
    assert "b" * 32 not in logged_in.get("/p/acme/traces/?service=billing").content.decode()
    assert "a" * 32 not in logged_in.get("/p/acme/traces/?agent=courier").content.decode()
    assert "a" * 32 in logged_in.get("/p/acme/traces/?name=write+order&status=error").content.decode()
    assert "b" * 32 not in logged_in.get("/p/acme/traces/?status=error").content.decode()


def test_it_shows_a_clear_error_for_a_bad_filter(logged_in, acme):
    page = logged_in.get("/p/acme/traces/?status=maybe").content.decode()
    assert "status:" in page and "not a valid choice" in page


def test_a_person_sees_nothing_of_another_project(client, charlie, acme, alice):
    store_trace(acme)
    client.force_login(charlie)
    assert client.get("/p/acme/traces/").status_code == 404
    assert client.get(f"/p/acme/traces/{'a' * 32}/").status_code == 404
    assert client.get("/p/acme/keys/").status_code == 404
    assert "Acme" not in client.get("/p/globex/traces/").content.decode()


def test_an_admin_creates_a_key_that_is_shown_once(logged_in, acme):
    response = logged_in.post("/p/acme/keys/new/", {"name": "fleet"}, follow=True)
    page = response.content.decode()
    raw = re.search(r'<code class="secret">(cwk_[^<]+)</code>', page).group(1)
    key = IngestKey.objects.get(name="fleet")
    assert key.key_hash != raw and raw.startswith(key.hint)
    assert "cwk_" not in logged_in.get("/p/acme/keys/").content.decode().replace(key.hint, "")
    assert AuditRecord.objects.filter(action="ingest_key.create", object_id=str(key.pk), actor_name="alice").exists()


def test_an_admin_revokes_a_key_with_an_audit_record(logged_in, acme, acme_key):
    key = IngestKey.objects.get(project=acme)
    logged_in.post(f"/p/acme/keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert key.is_revoked
    assert AuditRecord.objects.filter(action="ingest_key.revoke", object_id=str(key.pk)).count() == 1


def test_a_viewer_cannot_create_or_revoke_keys_from_the_page(client, bob, acme, acme_key):
    client.force_login(bob)
    response = client.post("/p/acme/keys/new/", {"name": "sneaky"}, follow=True)
    assert "needs the admin role" in response.content.decode()
    key = IngestKey.objects.get(project=acme)
    client.post(f"/p/acme/keys/{key.pk}/revoke/")
    key.refresh_from_db()
    assert not key.is_revoked
    assert not IngestKey.objects.filter(name="sneaky").exists()
    assert not AuditRecord.objects.filter(actor_name="bob").exists()


def test_an_admin_adds_a_member_and_changes_a_role(logged_in, acme, alice):
    dave = make_user("dave")
    logged_in.post("/p/acme/members/", {"username": "dave", "role": "operator"})
    assert Membership.objects.get(user=dave, project=acme).role == Role.OPERATOR
    logged_in.post("/p/acme/members/", {"username": "dave", "role": "approver"})
    assert Membership.objects.get(user=dave, project=acme).role == Role.APPROVER
    assert list(AuditRecord.objects.filter(object_type="membership").values_list("action", flat=True)) == ["member.role", "member.add"]


def test_the_members_page_describes_only_roles_the_product_has(logged_in):
    roles = re.search(r'<p class="muted" id="roles">(.*?)</p>', logged_in.get("/p/acme/members/").content.decode()).group(1)
    assert "operator: acknowledges findings and alerts, silences alerts and sends test notifications" in roles
    assert "approver: edits, activates and rolls back policies, defines SLOs, alert rules and notification channels" in roles
    assert "rollout" not in roles


def test_only_admins_see_the_audit_log(client, alice, bob, acme):
    client.force_login(bob)
    assert client.get("/p/acme/audit/").status_code == 404
    client.force_login(alice)
    assert client.get("/p/acme/audit/").status_code == 200


def test_the_trace_page_shows_spans_as_a_tree(logged_in, acme):
    store_trace(acme)
    response = logged_in.get(f"/p/acme/traces/{'a' * 32}/")
    assert response.status_code == 200
    data = page_timeline_data(response.content.decode())
    root, child = index_of(data, "plan order"), index_of(data, "write order")
    assert data["spans"]["parent"][root] == -1 and data["spans"]["parent"][child] == root
    # drawn in its parent's lane, one row below it
    assert data["spans"]["lane"][child] == data["spans"]["lane"][root]
    assert data["spans"]["row"][child] == data["spans"]["row"][root] + 1


def test_every_page_of_a_project_shows_the_same_navigation_with_findings(logged_in, acme, alice):
    from policies.services import policy_create
    from tests.test_policies_api import LEDGER_V1

    store_trace(acme)
    policy = policy_create(project=acme, source=LEDGER_V1, actor=alice)
    trace = "a" * 32
    pages = ["", "traces/", f"traces/{trace}/", f"traces/{trace}/graph/", "state/order/42/", "findings/", "policies/",
             "policies/new/", f"policies/{policy.pk}/", f"policies/{policy.pk}/edit/", f"policies/{policy.pk}/versions/1/",
             f"policies/{policy.pk}/dry-run/?version=1", "violations/", "slos/", "slos/new/", "alerts/", "alert-rules/",
             "silences/", "channels/", "rollouts/", "rollouts/new/", "pipeline/", "keys/", "members/", "audit/"]
    navigations = {}
    for tail in pages:
        response = logged_in.get(f"/p/acme/{tail}")
        assert response.status_code == 200, tail
        navigations[tail] = re.search(r"<nav>(.*?)</nav>", response.content.decode(), re.DOTALL).group(1)
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', navigations["traces/"])
    assert [name for _, name in links] == ["Overview", "Traces", "Findings", "Policies", "Violations", "SLOs", "Alerts",
                                           "Alert rules", "Silences", "Channels", "Rollouts", "Pipeline", "Ingest keys",
                                           "Members",
                                           "Audit log"]
    assert ("/p/acme/findings/", "Findings") in links
    assert {tail for tail, nav in navigations.items() if nav != navigations["traces/"]} == set()


def test_only_admins_are_shown_the_audit_log_link(client, alice, bob, acme):
    client.force_login(bob)
    assert "Audit log" not in client.get("/p/acme/findings/").content.decode()
    client.force_login(alice)
    assert "Audit log" in client.get("/p/acme/findings/").content.decode()
