"""A violation's span may be a side of a concurrency finding: the violations page and API name
those findings and link to their pages (issue 14: the finding page is linked from everywhere a
finding appears). Runs on SQLite, and on PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from playwright.sync_api import expect

from policies.models import Violation
from policies.services import policy_create, policy_version_activate, violations_record
from tests.conftest import api_as, log_in
from tests.test_timeline import hand_trace, store_finding
from traces.ingest import spans_store
from traces.models import Finding
from traces.selectors import ns_of
from traces.services import findings_update

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("VIOLATION_SCREENSHOTS", ROOT / "data" / "screenshots"))

# In hand_trace the booker (a...04) and the payer (a...08) both write order/42 based on version 3,
# and the payer then reads the booker's older version: the analysis finds a lost update of the two
# writes and a stale read of the payer's write. This policy makes the payer's write a violation.
ORDERS = """\
policy: orders
description: Only the booker writes orders.
rules:
  - id: order-owner
    kind: single_writer
    key: "order/*"
    writer: booker
"""
BOOKER_WRITE, PAYER_WRITE = "a000000000000004", "a000000000000008"
HANDOFF = "a000000000000005"  # the booker's "publish handoff": in no finding of the analysis


def trace_id(n: int) -> str:
    return f"{n:032x}"


def store_traces(project, count: int, *, minutes_ago: int = 10) -> list[str]:
    """`count` copies of hand_trace, each its own trace (the same span ids in each), dated a few
    minutes before now so the page's default range (the last 24 hours) shows them."""
    t0 = ns_of(timezone.now()) - minutes_ago * 60 * 1_000_000_000
    traces = [trace_id(n) for n in range(1, count + 1)]
    for t in traces:
        spans_store(project_id=project.pk, spans=hand_trace(trace_id=t, t0=t0))
    return traces


def activate_orders(project, actor):
    policy = policy_create(project=project, source=ORDERS, comment="orders", actor=actor)
    policy_version_activate(policy=policy, version=policy.versions.get(number=1), actor=actor)
    return policy


def page_rows(client, query: str = "") -> list[str]:
    """The violations table's rows, as HTML."""
    body = client.get(f"/p/acme/violations/{query}").content.decode()
    table = body.split('<table class="violations">')[1].split("</table>")[0]
    return re.findall(r"<tr>\s*<td>.*?</tr>", table, flags=re.DOTALL)


def finding_links(row: str) -> list[tuple[str, str]]:
    return re.findall(r'<a href="([^"]+)" class="finding-link"[^>]*><span class="finding-kind">([^<]+)</span>', row)


@pytest.fixture
def analysed(acme, alice, clock):
    """One trace through the pipeline's two stages: the analysis (a lost update and a stale read
    of the payer's write), then the policy (the payer's write breaks order-owner)."""
    [trace] = store_traces(acme, 1)
    findings_update(project_id=acme.pk, trace_ids=[trace])
    activate_orders(acme, alice)
    assert violations_record(project_id=acme.pk, trace_ids=[trace]) == 1
    lost = Finding.objects.get(project=acme, kind="lost_update")
    stale = Finding.objects.get(project=acme, kind="stale_read")
    assert PAYER_WRITE in lost.span_ids and PAYER_WRITE in stale.span_ids
    assert Finding.objects.filter(project=acme).count() == 2
    return trace, lost, stale


def links_of(*findings) -> list[tuple[str, str]]:
    return [(f"/p/acme/findings/{f.pk}/", f.kind) for f in findings]


def api_findings(*findings) -> list[dict]:
    return [{"id": f.pk, "kind": f.kind, "url": f"/p/acme/findings/{f.pk}/"} for f in findings]


def test_a_violation_whose_span_is_in_findings_links_to_their_pages(client, acme, bob, analysed):
    _, lost, stale = analysed
    client.force_login(bob)
    [row] = page_rows(client)
    assert PAYER_WRITE in row
    assert finding_links(row) == links_of(lost, stale)
    assert "in this trace" not in row  # the trace has no finding on another span only

    for finding in (lost, stale):
        finding_page = client.get(f"/p/acme/findings/{finding.pk}/")
        assert finding_page.status_code == 200
        assert f"finding {finding.pk}" in finding_page.content.decode()

    [violation] = api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]
    assert violation["span_id"] == PAYER_WRITE
    assert violation["findings"] == api_findings(lost, stale)
    assert all(client.get(f["url"]).status_code == 200 for f in violation["findings"])


def test_an_acknowledged_finding_is_listed_and_says_so(client, acme, bob, analysed):
    _, lost, stale = analysed
    Finding.objects.filter(pk=lost.pk).update(status=Finding.Status.ACKNOWLEDGED)
    client.force_login(bob)
    [row] = page_rows(client)
    assert finding_links(row) == links_of(lost, stale)
    assert row.count("acknowledged") == 1
    [violation] = api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]
    assert violation["findings"] == api_findings(lost, stale)


def test_a_withdrawn_finding_is_not_listed(client, acme, bob, analysed):
    _, lost, stale = analysed
    Finding.objects.filter(pk=lost.pk).update(status=Finding.Status.WITHDRAWN, withdrawn_at=timezone.now(),
                                              withdrawn_reason="a later read showed both writes")
    client.force_login(bob)
    [row] = page_rows(client)
    assert finding_links(row) == links_of(stale)
    assert f"/findings/{lost.pk}/" not in row
    [violation] = api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]
    assert violation["findings"] == api_findings(stale)

    Finding.objects.filter(pk=stale.pk).update(status=Finding.Status.WITHDRAWN)
    [row] = page_rows(client)
    assert finding_links(row) == [] and "findings/" not in row
    [violation] = api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]
    assert violation["findings"] == []


def test_a_violation_whose_span_is_in_no_finding_shows_none(client, acme, alice, bob, clock):
    [trace] = store_traces(acme, 1)
    activate_orders(acme, alice)  # no analysis: no findings at all
    violations_record(project_id=acme.pk, trace_ids=[trace])
    client.force_login(bob)
    [row] = page_rows(client)
    assert finding_links(row) == []
    assert '<span class="muted">—</span>' in row
    [violation] = api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]
    assert violation["findings"] == []


def test_a_finding_of_another_trace_with_the_same_span_id_is_not_listed(client, acme, alice, bob, clock):
    # Both traces have a span a...08 (span ids are unique within a trace only): the finding of the
    # first must not appear beside the violation of the second.
    spans = {t: hand_trace(trace_id=t, t0=ns_of(timezone.now()) - 600 * 10**9) for t in (trace_id(1), trace_id(2))}
    for trace_spans in spans.values():
        spans_store(project_id=acme.pk, spans=trace_spans)
    first = store_finding(acme, spans[trace_id(1)], span_ids=(BOOKER_WRITE, PAYER_WRITE))
    activate_orders(acme, alice)
    violations_record(project_id=acme.pk, trace_ids=list(spans))
    listed = {v["trace_id"]: v["findings"] for v in api_as(bob).get("/api/v1/violations/?project=acme").json()["results"]}
    assert listed == {trace_id(1): [{"id": first.pk, "kind": "lost_update", "url": f"/p/acme/findings/{first.pk}/"}],
                      trace_id(2): []}


def test_findings_on_other_spans_of_the_trace_are_counted_with_a_link_to_them(client, acme, alice, bob, clock):
    [trace] = store_traces(acme, 1)
    spans = hand_trace(trace_id=trace)
    lost = store_finding(acme, spans, span_ids=(BOOKER_WRITE, PAYER_WRITE))
    orphan = store_finding(acme, spans, kind="orphan_span", key="", span_ids=(HANDOFF,), detail="no parent here")
    withdrawn = store_finding(acme, spans, kind="write_race", span_ids=(HANDOFF, BOOKER_WRITE))
    Finding.objects.filter(pk=withdrawn.pk).update(status=Finding.Status.WITHDRAWN)
    activate_orders(acme, alice)
    violations_record(project_id=acme.pk, trace_ids=[trace])
    client.force_login(bob)
    [row] = page_rows(client)
    assert finding_links(row) == [(f"/p/acme/findings/{lost.pk}/", "lost_update")]
    others = re.search(r'<a href="([^"]+)" class="muted trace-findings">([^<]+)</a>', row)
    assert others.group(2) == "+1 more in this trace"  # the orphan span; not the withdrawn race
    assert others.group(1) == f"/p/acme/findings/?trace_id={trace}"
    listed = client.get(others.group(1)).content.decode()
    assert f"/p/acme/findings/{lost.pk}/" in listed and f"/p/acme/findings/{orphan.pk}/" in listed
    assert f"/p/acme/findings/{withdrawn.pk}/" not in listed


def test_the_page_and_the_api_read_the_findings_of_fifty_violations_in_as_many_queries_as_of_one(
        client, acme, alice, bob, clock, django_assert_max_num_queries):
    activate_orders(acme, alice)
    client.force_login(bob)
    api = api_as(bob)

    def store(count: int) -> None:
        # Each trace's lost update and an orphan span of it, stored as the analysis would (the analysis
        # of fifty copies of one trace would also find races across them).
        Violation.objects.all().delete()
        Finding.objects.all().delete()
        traces = store_traces(acme, count)
        for t in traces:
            spans = hand_trace(trace_id=t)
            # (store_finding's fingerprint, at most 64 characters, is its kind, key and span ids: a key per
            # trace keeps them apart)
            store_finding(acme, spans, key=f"order/{t[-4:]}", span_ids=(BOOKER_WRITE, PAYER_WRITE))
            store_finding(acme, spans, kind="orphan_span", key=t[-4:], span_ids=(HANDOFF,), detail="no parent here")
        violations_record(project_id=acme.pk, trace_ids=traces)

    def shown(rows, results, count: int) -> None:
        assert len(rows) == len(results) == count
        assert all(len(finding_links(row)) == 1 and "+1 more in this trace" in row for row in rows)
        assert all([f["kind"] for f in v["findings"]] == ["lost_update"] for v in results)

    store(1)
    with CaptureQueriesContext(connection) as page_one:
        rows = page_rows(client)
    with CaptureQueriesContext(connection) as api_one:
        results = api.get("/api/v1/violations/?project=acme&limit=500").json()["results"]
    shown(rows, results, 1)
    # The page reads the findings of its spans and the counts of its traces; the API only the first.
    assert sum("findingspan" in q["sql"].lower() for q in page_one.captured_queries) == 2
    assert sum("findingspan" in q["sql"].lower() for q in api_one.captured_queries) == 1

    store(50)
    with django_assert_max_num_queries(len(page_one)):
        rows = page_rows(client)
    with django_assert_max_num_queries(len(api_one)):
        results = api.get("/api/v1/violations/?project=acme&limit=500").json()["results"]
    shown(rows, results, 50)


# ---------------------------------------------------------------------------
# In the browser

@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_alice_follows_a_violation_to_its_finding_in_the_browser(live_server, page, acme, alice):
    # No stopped clock here (the browser's session cookie keeps the real one): the spans are dated
    # ten minutes before the real now.
    traces = store_traces(acme, 1)
    findings_update(project_id=acme.pk, trace_ids=traces)
    activate_orders(acme, alice)
    violations_record(project_id=acme.pk, trace_ids=traces)
    finding = Finding.objects.get(project=acme, kind="lost_update")
    assert Finding.objects.filter(project=acme, kind="stale_read").exists()
    log_in(page, live_server, "alice")

    page.goto(f"{live_server.url}/p/acme/violations/")
    row = page.locator("table.violations tbody tr").filter(has_text=PAYER_WRITE)
    link = row.get_by_role("link", name="lost_update")
    expect(link).to_have_attribute("href", f"/p/acme/findings/{finding.pk}/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "violations-findings.png"), full_page=True)

    link.click()
    expect(page).to_have_url(f"{live_server.url}/p/acme/findings/{finding.pk}/")
    expect(page.locator("h1")).to_contain_text("lost_update")
    expect(page.locator("h1")).to_contain_text(f"finding {finding.pk}")
    page.screenshot(path=str(SHOTS / "violations-findings-finding-page.png"))
