"""The API's shared behaviour: one error shape, filters that refuse what cannot be, an offline schema."""

import pytest

from tests.conftest import api_as


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


def test_an_anonymous_caller_gets_the_error_shape(client, db):
    response = client.get("/api/v1/traces/")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "not_authenticated"


def test_token_auth_works_for_scripts(alice):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    token = Token.objects.create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/projects/").json() == [
        {"slug": "acme", "name": "Acme", "role": "admin", "retention_days": 14}]


def test_the_openapi_schema_and_its_ui_are_served_without_a_cdn(client, alice):
    client.force_login(alice)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/traces/", "/api/v1/findings/", "/api/v1/policies/", "/api/v1/violations/"):
        assert path in text
    ui = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in ui
    assert "cdn" not in ui.lower() and "/static/drf_spectacular_sidecar/" in ui
