"""Every project can be reached: superusers act as admin of each, commands add projects and
members, admins create projects in the browser, and a project always keeps an admin."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from governance.models import AuditRecord, Membership, Project, Role
from tests.conftest import api_as, make_user


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@localhost", "root-password")


def test_a_project_made_by_create_ingest_key_is_seen_by_the_superuser_and_by_an_added_member(client, root, capsys):
    call_command("create_ingest_key", "newproject")
    assert capsys.readouterr().out.strip().startswith("cwk_")  # the key alone, for scripts

    client.force_login(root)
    assert client.get("/p/newproject/traces/").status_code == 200
    assert api_as(root).get("/api/v1/traces/?project=newproject").status_code == 200

    erin = make_user("erin")
    client.force_login(erin)
    assert client.get("/p/newproject/traces/").status_code == 404
    assert api_as(erin).get("/api/v1/traces/?project=newproject").status_code == 404

    call_command("add_member", "newproject", "erin", "--role", "viewer")
    assert client.get("/p/newproject/traces/").status_code == 200
    assert api_as(erin).get("/api/v1/traces/?project=newproject").status_code == 200
    record = AuditRecord.objects.get(action="member.add")
    assert (record.actor_name, record.detail) == ("system", {"user": "erin", "role": "viewer"})


def test_add_member_changes_a_role_and_says_what_is_wrong(db, acme, alice, capsys):
    make_user("erin")
    call_command("add_member", "acme", "erin", "--role", "operator")
    call_command("add_member", "acme", "erin", "--role", "approver")
    assert Membership.objects.get(user__username="erin", project=acme).role == Role.APPROVER
    with pytest.raises(CommandError, match="no project 'nope'"):
        call_command("add_member", "nope", "erin")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("add_member", "acme", "nobody")
    with pytest.raises(CommandError, match="last admin"):
        call_command("add_member", "acme", "alice", "--role", "viewer")


def test_create_project_makes_an_empty_project_once(db, capsys):
    call_command("create_project", "billing", "--name", "Billing agents")
    assert Project.objects.get(slug="billing").name == "Billing agents"
    call_command("create_project", "billing")
    assert "exists already" in capsys.readouterr().out
    assert AuditRecord.objects.filter(action="project.create").count() == 1


def test_the_superuser_acts_as_admin_of_every_project_in_pages_and_api(client, root, acme, globex):
    client.force_login(root)
    switcher = client.get("/p/acme/traces/").content.decode()
    assert 'value="acme"' in switcher and 'value="globex"' in switcher
    assert client.get("/p/globex/audit/").status_code == 200
    client.post("/p/globex/keys/new/", {"name": "root's key"})
    assert Project.objects.get(slug="globex").ingest_keys.filter(name="root's key").exists()
    projects = api_as(root).get("/api/v1/projects/").json()["results"]
    assert {(p["slug"], p["role"]) for p in projects} == {("acme", "admin"), ("globex", "admin")}


def test_the_last_admin_cannot_demote_or_remove_themselves(client, alice, acme):
    api = api_as(alice)
    response = api.put("/api/v1/projects/acme/members/", {"username": "alice", "role": "viewer"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "last_admin"
    assert api.delete("/api/v1/projects/acme/members/alice/").status_code == 409
    client.force_login(alice)
    page = client.post("/p/acme/members/", {"username": "alice", "role": "viewer"}, follow=True).content.decode()
    assert "last admin" in page
    assert Membership.objects.get(user=alice, project=acme).role == Role.ADMIN


def test_an_admin_steps_down_once_another_admin_exists(alice, acme):
    make_user("frank", acme, "admin")
    api = api_as(alice)
    assert api.put("/api/v1/projects/acme/members/", {"username": "alice", "role": "viewer"}, format="json").status_code == 200
    assert Membership.objects.get(user=alice, project=acme).role == Role.VIEWER


def test_an_admin_creates_a_project_in_the_browser_and_becomes_its_admin(client, alice):
    client.force_login(alice)
    assert "New project" in client.get("/p/acme/traces/").content.decode()
    response = client.post("/projects/new/", {"slug": "research", "name": "Research agents"})
    assert response["Location"] == "/p/research/keys/"
    project = Project.objects.get(slug="research")
    assert Membership.objects.get(user=alice, project=project).role == Role.ADMIN
    assert AuditRecord.objects.filter(project=project, action="project.create", actor=alice).exists()
    page = client.post("/projects/new/", {"slug": "research"}, follow=True).content.decode()
    assert "exists already" in page


def test_a_viewer_cannot_create_projects(client, bob):
    client.force_login(bob)
    assert "New project" not in client.get("/p/acme/traces/").content.decode()
    assert client.post("/projects/new/", {"slug": "sneaky"}).status_code == 404
    assert not Project.objects.filter(slug="sneaky").exists()
    assert api_as(bob).post("/api/v1/projects/", {"slug": "sneaky"}, format="json").status_code == 403


def test_a_project_that_is_not_yours_gets_a_page_that_says_what_to_do(client, bob, globex):
    client.force_login(bob)
    response = client.get("/p/globex/traces/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "You are not a member of a project" in page and "ask one of its admins" in page
    assert '<a href="/p/acme/traces/">Acme</a>' in page  # where they can go instead
