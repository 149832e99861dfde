"""Hostile and broken requests: every /api/ error is the JSON error shape, pages get a page,
a NUL byte or an oversized body is a 4xx, lists share one envelope with a capped limit."""

import pytest
from django.test import Client
from django.urls import path

from governance.urls import handler400, handler403, handler404, handler500  # noqa: F401 - this test's urlconf
from governance.urls import urlpatterns as causeway_urls
from tests.conftest import api_as
from tests.test_pages import store_trace

TRACE = "a" * 32


def crash(request):
    raise RuntimeError("a bug")


# This module is the urlconf of the tests marked `crashing`: Causeway's URLs plus views that fail.
urlpatterns = [path("api/v1/crash/", crash), path("p/crash/", crash), *causeway_urls]
crashing = pytest.mark.urls("tests.test_api_errors")


@pytest.fixture
def acme_trace(acme):
    store_trace(acme, trace_id=TRACE)


def assert_json_error(response, status: int, code: str):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.mark.parametrize("address", [
    "/api/v1/traces/a%00b/",
    "/api/v1/traces/a%00b/timeline/",
    "/api/v1/traces/?service=a%00b",
    "/api/v1/findings/?key=%00",
])
def test_a_nul_byte_in_an_api_address_is_a_json_400(alice, acme_trace, address):
    error = assert_json_error(api_as(alice).get(address), 400, "invalid")
    assert "NUL" in error["message"]


def test_a_nul_byte_in_a_username_to_remove_is_a_json_400(alice):
    assert_json_error(api_as(alice).delete("/api/v1/projects/acme/members/al%00ice/"), 400, "invalid")


@pytest.mark.parametrize("address", [
    f"/p/acme/traces/{TRACE}%00/",
    f"/p/acme/traces/{TRACE}%00/graph/",
    "/p/acme/state/order%00/",
    "/admin/auth/user/?q=%00",
])
def test_a_nul_byte_in_a_page_address_is_a_400_page(client, alice, acme_trace, address):
    client.force_login(alice)
    response = client.get(address)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "NUL byte" in response.content.decode()


def test_an_unknown_api_path_is_a_json_404_and_an_unknown_page_a_page(client, db):
    assert_json_error(client.get("/api/v1/no-such-thing/"), 404, "not_found")
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and "there is no page at this address" in page.content.decode()


def test_a_missing_trace_says_what_is_missing(alice, acme):
    error = assert_json_error(api_as(alice).get("/api/v1/traces/" + "b" * 32 + "/"), 404, "not_found")
    assert "b" * 32 in error["message"]


@crashing
def test_a_crash_under_api_is_a_json_500_and_elsewhere_a_page(db):
    client = Client(raise_request_exception=False)
    error = assert_json_error(client.get("/api/v1/crash/"), 500, "server_error")
    assert "a bug" not in error["message"]
    page = client.get("/p/crash/")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
    assert "Server error" in page.content.decode()


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b'{"source": "' + b"x" * 3000 + b'"}'),
    ("application/x-www-form-urlencoded", b"source=" + b"x" * 3000),
])
def test_a_body_over_the_upload_limit_is_a_json_413(alice, settings, content_type, body):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = api_as(alice).generic("POST", "/api/v1/policies/validate/", body, content_type=content_type)
    error = assert_json_error(response, 413, "request_too_large")
    assert "2000 bytes" in error["message"]


def test_a_body_under_the_limit_still_reaches_the_view(alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = api_as(alice).post("/api/v1/policies/validate/", {"source": "policy: x\nrules: []\n"}, format="json")
    assert response.status_code in (200, 400)
    assert response.json().get("error", {}).get("code") != "request_too_large"


LIST_ENDPOINTS = [
    "/api/v1/projects/",
    "/api/v1/projects/acme/ingest-keys/",
    "/api/v1/projects/acme/members/",
    "/api/v1/projects/acme/audit/",
    "/api/v1/traces/",
    "/api/v1/findings/",
    "/api/v1/policies/",
    "/api/v1/violations/",
    "/api/v1/violations/counts/",
]


@pytest.mark.parametrize("endpoint", LIST_ENDPOINTS)
def test_every_list_answers_the_one_envelope(alice, acme_trace, endpoint):
    body = api_as(alice).get(endpoint + "?limit=1").json()
    # The traces' count stops 1,000 past the offset (a million traces are not counted): it says when.
    extra = {"count_capped"} if endpoint == "/api/v1/traces/" else set()
    assert set(body) == {"count", "next", "previous", "results"} | extra
    assert isinstance(body["results"], list) and len(body["results"]) <= 1


def test_every_list_of_the_schema_is_paginated_with_a_capped_limit(alice):
    schema = api_as(alice).get("/api/schema/?format=json").json()
    lists = {address for address, operations in schema["paths"].items()
             if "/Paginated" in str(operations.get("get", {}).get("responses", {}).get("200", {}))}
    assert {address.replace("{slug}", "acme") for address in lists} >= set(LIST_ENDPOINTS)
    assert "/api/v1/policies/{policy_id}/versions/" in lists
    for address in lists:
        limit = next(p for p in schema["paths"][address]["get"]["parameters"] if p["name"] == "limit")
        assert limit["schema"]["maximum"] == 500 and "at most 500" in limit["description"]


@pytest.mark.parametrize("query, field", [
    ("limit=100000", "limit"),
    ("limit=501", "limit"),
    ("limit=0", "limit"),
    ("limit=ten", "limit"),
    ("offset=-1", "offset"),
    ("offset=99999999999999999999999", "offset"),
])
def test_a_limit_or_offset_out_of_range_is_a_400_naming_it(alice, acme_trace, query, field):
    error = assert_json_error(api_as(alice).get(f"/api/v1/traces/?{query}"), 400, "invalid")
    assert field in error["fields"]


def test_the_largest_limit_is_honoured(alice, acme_trace):
    body = api_as(alice).get("/api/v1/traces/?limit=500").json()
    assert body["count"] == 1 and len(body["results"]) == 1


@pytest.mark.parametrize("query, field", [
    ("since=", "since"),
    ("min_duration_ms=", "min_duration_ms"),
    ("project=", "project"),
    ("limit=", "limit"),
])
def test_a_blank_value_where_the_schema_wants_a_date_number_or_slug_is_a_400(alice, acme_trace, query, field):
    error = assert_json_error(api_as(alice).get(f"/api/v1/traces/?{query}"), 400, "invalid")
    assert field in error["fields"]


def test_a_blank_filter_from_the_traces_page_still_means_no_filter(client, alice, acme_trace):
    client.force_login(alice)
    page = client.get("/p/acme/traces/?since=&until=&min_duration_ms=&status=&last=")
    assert page.status_code == 200 and TRACE in page.content.decode()


@pytest.mark.parametrize("address, body, field", [
    ("/api/v1/projects/acme/ingest-keys/", {"name": 0}, "name"),
    ("/api/v1/projects/acme/members/", {"username": "bob", "role": 3}, "role"),
    ("/api/v1/policies/validate/", {"source": ["policy: x"]}, "source"),
])
def test_a_body_field_of_the_wrong_json_type_is_a_400_naming_it(alice, bob, address, body, field):
    client = api_as(alice)
    response = client.put(address, body, format="json") if "members" in address else client.post(address, body,
                                                                                               format="json")
    error = assert_json_error(response, 400, "invalid")
    assert error["fields"][field] == ["must be a string"]


def test_a_string_longer_than_the_schema_allows_is_a_400_even_when_trimming_would_shorten_it(alice):
    # The schema says at most 100 characters of what is sent; a leading space must not buy a 101st.
    response = api_as(alice).post("/api/v1/projects/", {"slug": "long-name", "name": " " + "n" * 100}, format="json")
    assert assert_json_error(response, 400, "invalid")["fields"] == {"name": ["must be at most 100 characters long"]}
    assert api_as(alice).post("/api/v1/projects/", {"slug": "long-name", "name": "n" * 100},
                              format="json").status_code == 201


def test_a_misspelt_body_field_is_a_400_not_silently_ignored(alice, acme):
    from policies.services import policy_create, policy_version_activate
    from tests.test_policies_api import LEDGER_V1

    policy = policy_create(project=acme, source=LEDGER_V1, actor=alice)
    policy_version_activate(policy=policy, version=policy.versions.get(number=1), actor=alice)
    response = api_as(alice).post(f"/api/v1/policies/{policy.pk}/versions/1/activate/", {"if_activ": 0},
                                  format="json")
    assert assert_json_error(response, 400, "invalid")["fields"] == {"if_activ": ["unknown field"]}


def test_options_is_not_a_method_of_the_api(alice):
    assert_json_error(api_as(alice).options("/api/v1/projects/acme/members/"), 405, "method_not_allowed")


@pytest.mark.parametrize("address, status", [
    ("/api/v1/policies/9999999999999999999999/", 404),  # no row id has that many digits
    ("/api/v1/findings/99999999999999999999/acknowledge/", 404),
    ("/api/v1/violations/?policy=904082861700091478352618061824", 400),  # found by schemathesis: was a 500
    ("/api/v1/violations/counts/?policy=99999999999999999999", 400),
])
def test_a_number_too_big_for_the_database_is_a_4xx(alice, address, status):
    client = api_as(alice)
    response = client.post(address) if address.endswith("acknowledge/") else client.get(address)
    assert_json_error(response, status, "not_found" if status == 404 else "invalid")


def test_a_version_number_too_big_for_the_database_is_no_such_page(client, alice, acme):
    from policies.services import policy_create
    from tests.test_policies_api import LEDGER_V1

    policy = policy_create(project=acme, source=LEDGER_V1, actor=alice)
    client.force_login(alice)
    assert client.get(f"/p/acme/policies/{policy.pk}/versions/3000000000/").status_code == 404
    assert_json_error(api_as(alice).get(f"/api/v1/policies/{policy.pk}/versions/3000000000/"), 404, "not_found")
