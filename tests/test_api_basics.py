"""The API's shared behaviour: one error shape, filters that refuse what cannot be, an offline schema."""

import pytest

from tests.conftest import api_as, served_from_here


@pytest.mark.parametrize("query, field", [
    ("until=0294-01-29T10:05:24%2B01:25", "until"),
    ("since=3000-01-01T00:00:00Z", "since"),
    ("min_duration_ms=1.0e%2B308", "min_duration_ms"),
    ("status=maybe", "status"),
    ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
])
def test_a_filter_that_cannot_be_is_a_400_naming_the_field(alice, query, field):
    response = api_as(alice).get(f"/api/v1/traces/?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"] and error["message"]


def test_a_person_in_several_projects_must_name_one(alice, globex):
    from governance.models import Membership

    Membership.objects.create(user=alice, project=globex, role="viewer")
    response = api_as(alice).get("/api/v1/traces/")
    assert response.status_code == 400
    assert "?project=<slug>" in response.json()["error"]["message"]
    assert api_as(alice).get("/api/v1/traces/?project=globex").status_code == 200


def test_an_anonymous_caller_is_told_to_authenticate_with_401_and_www_authenticate(client, db):
    response = client.get("/api/v1/traces/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"


def create_api_token(username: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_token", username, stdout=out)
    return out.getvalue().strip()


def token_client(token: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_an_api_token_is_printed_once_and_stored_only_as_a_digest(alice):
    from django.db import connection

    from governance.models import AuditRecord

    token = create_api_token("alice")
    assert token.startswith("cwt_") and len(token) == 4 + 64
    response = token_client(token).get("/api/v1/projects/")
    assert response.status_code == 200
    assert response.json()["results"] == [{"slug": "acme", "name": "Acme", "role": "admin", "retention_days": 14}]
    # Nowhere in the token table is the token itself, nor its secret part.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert token not in stored and token[20:] not in stored
    assert AuditRecord.objects.filter(action="api_token.create", detail__user="alice").count() == 1


@pytest.mark.parametrize("header", [
    "Token cwt_" + "0" * 64,  # well formed, unknown
    "Token caf\u00e9",  # not ASCII: knox would fail to decode it
    "Token abc\x00def",  # a NUL the database cannot compare
    "Token",
])
def test_a_wrong_token_is_a_401_in_the_error_shape(alice, header):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_token_made_with_an_expiry_stops_working_after_it(alice):
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone
    from knox.models import AuthToken

    out = StringIO()
    call_command("create_api_token", "alice", "--expires-days", "7", stdout=out)
    client = token_client(out.getvalue().strip())
    assert client.get("/api/v1/projects/").status_code == 200
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/projects/").status_code == 401


def test_the_openapi_schema_and_its_ui_are_served_without_a_cdn(client, alice):
    client.force_login(alice)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/traces/", "/api/v1/findings/", "/api/v1/policies/", "/api/v1/violations/"):
        assert path in text
    ui = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in ui
    assert any("/static/drf_spectacular_sidecar/" in url for url in served_from_here(ui))


def test_the_schema_and_its_ui_need_a_login_or_a_token(client, alice):
    schema = client.get("/api/schema/")
    assert schema.status_code == 401 and schema.json()["error"]["code"] == "not_authenticated"
    docs = client.get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/login/?next=/api/docs/")
    assert token_client(create_api_token("alice")).get("/api/schema/").status_code == 200


def test_plain_text_tokens_of_an_earlier_version_are_kept_as_digests_and_still_work(alice):
    from importlib import import_module
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection
    from django.utils import timezone

    old = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # as DRF's authtoken made them: 40 hex digits
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id bigint NOT NULL, "
                       "created timestamp with time zone NOT NULL)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old, alice.pk, timezone.now()])
    migration = import_module("governance.migrations.0002_api_tokens_hashed")
    migration.tokens_to_digests(apps, SimpleNamespace(connection=connection))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    assert token_client(old).get("/api/v1/projects/").status_code == 200
