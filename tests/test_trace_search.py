"""The trace search at scale: a count capped 1,000 past the page (page and API alike), the lookback on
a trace's start, longest first from its index."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import api_as, log_in
from tests.test_finding_page import shot
from traces.models import Trace
from traces.selectors import TRACE_COUNT_CAP, ns_of, traces_search

MS = 1_000_000
MANY = TRACE_COUNT_CAP + 60


def add_traces(project, count: int, *, first_ns: int, duration_ms=lambda i: 10):
    """`count` trace summaries one second apart from first_ns; trace i lasts duration_ms(i) ms."""
    Trace.objects.bulk_create([
        Trace(project=project, trace_id=f"{i:032x}", root_name=f"root {i}", span_count=1,
              start_ns=first_ns + i * 1000 * MS, end_ns=first_ns + i * 1000 * MS + duration_ms(i) * MS,
              last_received_at=timezone.now(), state=Trace.State.ANALYSED)
        for i in range(count)])


@pytest.fixture
def many_traces(acme, clock):  # placed days back and filtered on no time; stopped so no run differs
    add_traces(acme, MANY, first_ns=ns_of(timezone.now() - timedelta(days=2)))


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def test_the_page_counts_up_to_a_thousand_and_says_there_are_more(logged_in, many_traces):
    page = logged_in.get("/p/acme/traces/").content.decode()
    assert "1,000+ traces" in page and "Page 1 of 20+" in page
    assert page.count('class="trace-row') == 50
    assert f"{MANY - 1:032x}" in page  # newest first


def test_paging_on_past_the_cap_reaches_the_oldest_trace_with_an_exact_count(logged_in, many_traces):
    page = logged_in.get("/p/acme/traces/?page=21").content.decode()
    assert f"{MANY:,} traces" in page and "+ traces" not in page
    assert "Page 21 of 22<" in page and "page=22" in page
    last = logged_in.get("/p/acme/traces/?page=22").content.decode()
    assert last.count('class="trace-row') == MANY - 21 * 50
    assert f"{0:032x}" in last and "Older" not in last


def test_a_page_past_the_end_of_more_than_the_cap_shows_the_true_last_page(logged_in, many_traces):
    page = logged_in.get("/p/acme/traces/?page=99").content.decode()
    assert f"{MANY:,} traces" in page and "Page 22 of 22<" in page
    assert f"{0:032x}" in page


def test_a_page_past_the_end_shows_the_last_page(logged_in, acme, clock):
    add_traces(acme, 70, first_ns=ns_of(timezone.now() - timedelta(days=1)))
    page = logged_in.get("/p/acme/traces/?page=9999999999999999999").content.decode()
    assert "70 traces" in page and "Page 2 of 2<" in page
    assert page.count('class="trace-row') == 20


def test_the_api_count_is_capped_the_same_way_and_says_so(alice, many_traces):
    client = api_as(alice)
    first = client.get("/api/v1/traces/?project=acme&limit=100").json()
    assert (first["count"], first["count_capped"], len(first["results"])) == (TRACE_COUNT_CAP, True, 100)
    assert "offset=100" in first["next"]
    tail = client.get("/api/v1/traces/?project=acme&limit=100&offset=1000").json()
    assert (tail["count"], tail["count_capped"], len(tail["results"]), tail["next"]) == (MANY, False, 60, None)
    # Past the end, counted exactly: what a client can page back to.
    past = client.get("/api/v1/traces/?project=acme&offset=5000").json()
    assert (past["count"], past["count_capped"], past["results"], past["next"]) == (MANY, False, [], None)


def test_the_lookback_keeps_the_traces_that_started_in_it(logged_in, alice, acme, clock):
    now = ns_of(timezone.now())
    # Started two hours ago and ended ten minutes ago; started half an hour ago.
    Trace.objects.bulk_create([
        Trace(project=acme, trace_id="a" * 32, start_ns=now - 7200 * 10**9, end_ns=now - 600 * 10**9,
              last_received_at=timezone.now()),
        Trace(project=acme, trace_id="b" * 32, start_ns=now - 1800 * 10**9, end_ns=now - 1790 * 10**9,
              last_received_at=timezone.now())])
    last_hour = api_as(alice).get("/api/v1/traces/?project=acme&last=1h").json()
    assert [t["trace_id"] for t in last_hour["results"]] == ["b" * 32]
    page = logged_in.get("/p/acme/traces/?last=1h").content.decode()
    assert "b" * 32 in page and "a" * 32 not in page
    # since= keeps every trace whose time overlaps it, the long one too.
    since = (timezone.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    overlapping = api_as(alice).get("/api/v1/traces/", {"project": "acme", "since": since}).json()
    assert [t["trace_id"] for t in overlapping["results"]] == ["b" * 32, "a" * 32]


def test_longest_first_orders_by_duration_then_trace_id(alice, acme, clock):
    add_traces(acme, 6, first_ns=ns_of(timezone.now()), duration_ms=lambda i: [5, 50, 7, 50, 1, 9][i])
    body = api_as(alice).get("/api/v1/traces/?project=acme&sort=duration").json()
    assert [(t["trace_id"][-1], t["duration_ns"] // MS) for t in body["results"]] == [
        ("1", 50), ("3", 50), ("5", 9), ("2", 7), ("0", 5), ("4", 1)]


def test_longest_first_reads_the_duration_index_instead_of_sorting(acme):
    traces = traces_search(project=acme, sort="duration")[:50]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # A few rows: the planner would rather scan and sort; the index must be usable.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
    plan = traces.explain()
    assert "trace_project_duration" in plan


@pytest.mark.browser
def test_a_person_pages_through_a_capped_count_in_the_browser(transactional_db, live_server, page, acme, alice):
    add_traces(acme, MANY, first_ns=ns_of(timezone.now() - timedelta(days=2)))
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/traces/")
    expect(page.locator(".trace-count")).to_contain_text("1,000+ traces")
    expect(page.locator(".pager")).to_contain_text("Page 1 of 20+")
    shot(page, "traces-capped-count")
    page.click("text=Older →")
    expect(page.locator(".pager")).to_contain_text("Page 2 of 21+")
    expect(page.locator("tr.trace-row")).to_have_count(50)
    page.locator(".pager").scroll_into_view_if_needed()
    shot(page, "traces-capped-count-page-2")
