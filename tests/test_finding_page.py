"""The finding page: one finding of each kind from a real `simulate` run, stored and analysed as the
live product does, opened in a real browser. Both sides' span names, the evidence and the explanation
must be on screen, not merely in the page; a bar clicked shows its detail in view; the traces list
marks the traces that have findings. Screenshots land in data/test/screenshots."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import log_in
from tests.worlds import relayed_stale_read
from traces import otlp
from traces.ingest import spans_store
from traces.models import Finding
from traces.records import make_span
from traces.services import findings_update

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("CAUSEWAY_DATA_DIR", ROOT / "data" / "test")) / "screenshots"

KIND_OF_BUG = {
    "no-cas": "lost_update",
    "no-lock": "write_race",
    "stale-cache": "stale_read",
    "idempotency-bypass": "duplicate_side_effect",
    "double-grant": "lock_overlap",
    "clock-skew": "causality_violation",
    "dropped-parent": "orphan_span",
}
_RUNS: dict[str, list] = {}


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    """simulated(bug) -> the spans of one small `simulate --bug BUG` run (run once per session)."""
    from traces.simulator import add_arguments, run_from_options

    def run(bug: str) -> list:
        if bug not in _RUNS:
            base = tmp_path_factory.mktemp(f"sim-{bug}")
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            options = vars(parser.parse_args([
                "--output", str(base / "out"), "--db", str(base / "store.sqlite3"), "--no-progress", "--bug", bug,
                "--agents", "3", "--iterations", "6"]))
            run_from_options(options, io.StringIO(), io.StringIO())
            spans = []
            for name in sorted(os.listdir(base / "out")):
                for request in otlp.read_otlp_file(str(base / "out" / name)):
                    spans += otlp.spans_from_request(request).spans
            _RUNS[bug] = spans
        return _RUNS[bug]

    return run


def store_and_analyse(project, spans) -> None:
    spans_store(project_id=project.pk, spans=spans)
    findings_update(project_id=project.pk, trace_ids=sorted({s.trace_id for s in spans}))


def first_finding(project, kind: str) -> Finding:
    finding = Finding.objects.filter(project=project, kind=kind, status="open").order_by("-first_ns", "-pk").first()
    assert finding is not None, f"the run stored no {kind}"
    return finding


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


# ---------------------------------------------------------------------------
# In the browser

@pytest.mark.browser
@pytest.mark.parametrize("bug", list(KIND_OF_BUG), ids=list(KIND_OF_BUG.values()))
def test_the_finding_page_shows_both_sides_the_evidence_and_the_explanation(
        transactional_db, live_server, page, acme, alice, simulated, bug):
    kind = KIND_OF_BUG[bug]
    store_and_analyse(acme, simulated(bug))
    finding = first_finding(acme, kind)
    names = {s.span_id: s.name for s in simulated(bug)}
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/findings/?kind={kind}")
    page.click(f"#finding-{finding.pk} a.finding-link")
    page.wait_for_url(f"**/p/acme/findings/{finding.pk}/")
    page.wait_for_selector("#tl-chart[data-ready='1']", timeout=15000)

    sides = page.locator("#fd-sides .fd-side")
    for n, span_id in enumerate(finding.span_ids[:2]):
        side = page.locator(f"#fd-sides .fd-side[data-span='{span_id}']")
        expect(side).to_be_in_viewport()
        expect(side.locator(".name")).to_have_text(names[span_id])
    assert sides.count() >= min(len(finding.span_ids), 8)
    evidence = page.locator("#fd-evidence")
    expect(evidence).to_be_in_viewport()
    explanation = page.locator("#fd-explanation")
    expect(explanation).to_be_in_viewport()
    expect(explanation).to_contain_text("Why it is a bug")
    expect(page.locator("#fd-docs")).to_be_in_viewport()
    if kind in ("write_race", "lost_update", "lock_overlap"):
        expect(evidence.locator(".fd-absent")).to_contain_text("No happens-before path either way")
    if kind == "stale_read":
        expect(evidence.locator(".fd-path li").first).to_be_in_viewport()
        expect(evidence).to_contain_text("happened before")
    if kind == "causality_violation":
        expect(evidence).to_contain_text("caused")
    if kind == "orphan_span":
        expect(evidence).to_contain_text("The parent is missing")
    # the slice draws every side, each bar named
    labels = page.evaluate("document.getElementById('tl-chart').data.find(t => t.name === 'labels').text")
    for span_id in finding.span_ids[:2]:
        assert names[span_id] in labels
    shot(page, f"finding-{kind}")
    page.locator("#fd-slice").scroll_into_view_if_needed()
    shot(page, f"finding-{kind}-slice")

    page.click("#fd-docs")
    page.wait_for_url(f"**/docs/concurrency/#{kind}")
    expect(page.locator(f"[id='{kind}']")).to_be_in_viewport()


def _click_span(page, span_id: str, dx: float = 0, dy: float = 0):
    where = """id => {
            const gd = document.getElementById('tl-chart');
            const data = JSON.parse(document.getElementById('timeline-data').textContent);
            const i = data.spans.id.indexOf(id);
            const h = gd.data.find(t => t.name === 'handles');
            const k = h.customdata.indexOf(i);
            const fl = gd._fullLayout, rect = gd.getBoundingClientRect();
            return {x: rect.left + fl._size.l + fl.xaxis.l2p(h.x[k]), y: rect.top + fl._size.t + fl.yaxis.l2p(h.y[k])};
        }"""
    box = page.evaluate(where, span_id)
    if not 0 <= box["y"] < page.viewport_size["height"]:  # a tall chart: the bar below the fold is not clickable
        page.evaluate("y => window.scrollBy(0, y - window.innerHeight / 2)", box["y"])
        box = page.evaluate(where, span_id)
    page.mouse.move(box["x"] + dx, box["y"] + dy)
    page.mouse.click(box["x"] + dx, box["y"] + dy)


@pytest.mark.browser
def test_a_span_clicked_on_the_finding_page_shows_its_detail_in_view(
        transactional_db, live_server, page, acme, alice, simulated):
    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/findings/{finding.pk}/")
    page.wait_for_selector("#tl-chart[data-ready='1']", timeout=15000)
    page.locator("#tl-chart").scroll_into_view_if_needed()
    names = {s.span_id: s.name for s in simulated("no-cas")}
    # On a loaded machine the chart may still be settling its hover layer; and an evidence arrow may cross
    # the bar's handle (its "late" label then takes the click): later tries click a little beside it,
    # where the bar is still the nearest point.
    for dx, dy in ((0, 0), (0, 0), (12, 0), (-12, 0), (0, 4), (0, -4), (24, 0), (-24, 0)):
        _click_span(page, finding.span_ids[1], dx, dy)
        if page.locator("#tl-panel .tl-span-detail").count():
            break
        page.wait_for_timeout(500)
    # Two threads of one agent share a lane, so the bar under the pointer may be a neighbour's: whichever
    # span was hit, its detail is shown, in view.
    detail = page.locator("#tl-panel .tl-span-detail").first
    expect(detail).to_be_in_viewport()
    clicked = detail.get_attribute("data-span")
    expect(detail.locator("h3")).to_have_text(names[clicked])
    expect(detail).to_contain_text(clicked)
    shot(page, "finding-span-detail")


@pytest.mark.browser
def test_the_traces_list_marks_the_traces_with_findings(transactional_db, live_server, page, acme, alice, simulated):
    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/traces/?sort=findings")
    first = page.locator("tr.trace-row").first
    expect(first).to_have_class("trace-row has-findings")
    expect(first.locator(".trace-findings")).to_contain_text("⚠")
    for trace_id in finding.trace_ids:
        expect(page.locator(f"tr.trace-row[data-trace='{trace_id}']")).to_have_class("trace-row has-findings")
    shot(page, "traces-with-findings")
    page.select_option("select[name=has_findings]", "yes")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    rows = page.locator("tr.trace-row")
    assert rows.count() >= 1
    assert page.locator("tr.trace-row:not(.has-findings)").count() == 0


# ---------------------------------------------------------------------------
# Without a browser


def test_acknowledging_from_the_finding_page_is_audited_and_listed_in_its_history(client, acme, alice, bob, simulated):
    from governance.models import AuditRecord

    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    url = f"/p/acme/findings/{finding.pk}/"
    client.force_login(bob)  # a viewer: no button, and the post is refused
    assert "Acknowledge</button>" not in client.get(url).content.decode()
    client.post(f"/p/acme/findings/{finding.pk}/acknowledge/", {"next": url})
    finding.refresh_from_db()
    assert finding.status == "open"
    client.force_login(alice)
    assert "Acknowledge</button>" in client.get(url).content.decode()
    response = client.post(f"/p/acme/findings/{finding.pk}/acknowledge/", {"next": url}, follow=True)
    finding.refresh_from_db()
    assert finding.status == "acknowledged"
    assert AuditRecord.objects.filter(action="finding.acknowledge", object_id=str(finding.pk)).count() == 1
    body = response.content.decode()
    assert "<strong>acknowledged</strong>" in body and "by alice" in body


def test_a_finding_of_another_project_is_not_found(client, acme, globex, alice, charlie, simulated):
    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    client.force_login(charlie)
    assert client.get(f"/p/globex/findings/{finding.pk}/").status_code == 404
    assert client.get(f"/p/acme/findings/{finding.pk}/").status_code == 404


def test_a_finding_whose_spans_retention_deleted_still_opens(client, acme, alice):
    # Retention drops spans before the findings that name them; the page must say so, not fail.
    finding = Finding.objects.create(project=acme, kind="lost_update", key="order/42", fingerprint="f" * 64,
                                     detail="agent A's write of order/42 was lost", trace_ids=[], span_ids=[])
    client.force_login(alice)
    response = client.get(f"/p/acme/findings/{finding.pk}/")
    assert response.status_code == 200
    assert "agent A&#x27;s write of order/42 was lost" in response.content.decode()


def test_causality_violations_name_spans_and_agents_not_raw_ids(acme, simulated):
    spans = simulated("clock-skew")
    store_and_analyse(acme, spans)
    by_id = {s.span_id: s for s in spans}
    for finding in Finding.objects.filter(project=acme, kind="causality_violation"):
        for span_id in finding.span_ids:
            assert span_id not in finding.detail
            assert by_id[span_id].name in finding.detail and by_id[span_id].agent in finding.detail


def test_write_races_are_told_in_plain_words(acme, simulated):
    store_and_analyse(acme, simulated("no-lock"))
    finding = first_finding(acme, "write_race")
    assert "neither direction" not in finding.detail
    assert "neither writer could have seen the other's write" in finding.detail


def test_the_traces_api_filters_and_sorts_by_findings(client, acme, alice, simulated):
    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    client.force_login(alice)
    body = client.get("/api/v1/traces/?project=acme&has_findings=yes&sort=findings").json()
    with_findings = {t for f in Finding.objects.filter(project=acme) for t in f.trace_ids}
    assert body["results"] and {t["trace_id"] for t in body["results"]} <= with_findings
    assert body["results"][0]["open_findings"] >= 1
    assert set(finding.trace_ids) & {t["trace_id"] for t in body["results"]}
    none = client.get("/api/v1/traces/?project=acme&has_findings=no").json()["results"]
    assert all(t["open_findings"] == 0 for t in none)
    assert client.get("/api/v1/traces/?project=acme&sort=sideways").status_code == 400


BUSY_KEY, BUSY_AGENTS, BUSY_TURNS = "account/busy", 10, 170
MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def busy_key_history():
    """(spans, the lost update's two writes, the edges the key history must draw for it) for one key
    read and written BUSY_TURNS times by BUSY_AGENTS agents taking turns, each a read of the latest
    version and a compare-and-set write on it, one trace per turn: every write is ordered after the
    one before by reads-from. The last turn is two agents at once, writing on the same version: a
    lost update, whose only drawn arrows are reads-from from the write of that version into both,
    and from the second write into the final read. Built by hand, so the subject is the same on
    every run (a `simulate` run's threads sometimes lose an update within one agent, whose arrows
    stay in one lane and are, rightly, not drawn)."""
    spans = []

    def access(turn: int, n: int, agent: int, op: str, version: int, base: int | None = None, at_ms: int = 0):
        attributes = {"state.key": BUSY_KEY, "state.op": op, "state.version": version, "thread.id": "1"}
        if base is not None:
            attributes["state.base_version"] = base
        start = T0 + (turn * 10 + at_ms) * MS
        span = make_span(trace_id=f"{turn + 1:032x}", span_id=f"{turn + 1:08x}{n:08x}", name=f"store.{op}",
                         start_ns=start, end_ns=start + 2 * MS, attributes=attributes,
                         resource_attributes={"service.name": "accounts", "service.instance.id": f"proc-{agent}",
                                              "gen_ai.agent.id": f"agent-{agent}"})
        spans.append(span)
        return span

    for turn in range(BUSY_TURNS):  # version turn + 1 read, turn + 2 written
        access(turn, 1, turn % BUSY_AGENTS, "read", turn + 1)
        access(turn, 2, turn % BUSY_AGENTS, "write", turn + 2, turn + 1, at_ms=4)
    last, v = BUSY_TURNS, BUSY_TURNS + 1  # agent-9 wrote v; agents 3 and 7 both build on it
    producer = spans[-1]
    access(last, 1, 3, "read", v)
    access(last + 1, 1, 7, "read", v, at_ms=1)
    first = access(last, 2, 3, "write", v + 1, v, at_ms=4)
    second = access(last + 1, 2, 7, "write", v + 2, v, at_ms=5)
    final = access(last + 2, 1, 0, "read", v + 2, at_ms=10)
    expected = {(producer.span_id, first.span_id), (producer.span_id, second.span_id),
                (second.span_id, final.span_id)}
    return spans, (first, second), expected


def test_a_busy_keys_history_draws_only_the_arrows_of_its_findings_with_a_brush_and_a_table(client, acme, alice):
    from tests.test_timeline import page_timeline_data

    spans, sides, expected = busy_key_history()
    store_and_analyse(acme, spans)
    [finding] = Finding.objects.filter(project=acme, key=BUSY_KEY)
    assert finding.kind == "lost_update" and set(finding.span_ids) == {s.span_id for s in sides}
    client.force_login(alice)
    body = client.get(f"/p/acme/state/{BUSY_KEY}/?last=").content.decode()
    data = page_timeline_data(body)
    ids = data["spans"]["id"]
    assert len(data["edges"]) > 2 * BUSY_TURNS  # every turn's read and write, from another agent
    assert expected <= {(ids[a], ids[b]) for a, b, _ in data["edges"]}
    # By default only the finding's arrows are drawn: from the end of one access to the start of the next.
    x0, x1 = data["spans"]["x0"], data["spans"]["x1"]
    drawn = [(arrow["ax"], arrow["x"]) for arrow in data["figure"]["layout"]["annotations"]]
    assert sorted(drawn) == sorted((x1[ids.index(a)], x0[ids.index(b)]) for a, b in expected)
    assert data["figure"]["layout"]["xaxis"]["rangeslider"]["visible"] is True
    assert body.count('<tr data-x="') == len(spans)
    assert 'id="tl-all-edges"' in body


def test_a_withdrawn_finding_says_which_later_spans_withdrew_it(client, acme, alice, simulated):
    from django.utils import timezone

    store_and_analyse(acme, simulated("no-cas"))
    finding = first_finding(acme, "lost_update")
    reason = "Later spans ordered these accesses (a happens-before path runs through them): publish (agent-0, ...)."
    Finding.objects.filter(pk=finding.pk).update(status="withdrawn", withdrawn_at=timezone.now(),
                                                 withdrawn_reason=reason)
    client.force_login(alice)
    body = client.get(f"/p/acme/findings/{finding.pk}/").content.decode()
    assert "Withdrawn" in body and "publish (agent-0, ...)" in body
    assert "Acknowledge</button>" not in body
    assert "<strong>withdrawn</strong>" in body


def test_a_stale_reads_path_through_spans_seconds_away_is_drawn_edge_by_edge(client, acme, alice):
    from tests.test_timeline import page_timeline_data

    spans, path = relayed_stale_read()
    # agent-c's next access, in a trace of its own: drawn as a neighbour, its detail read whole
    neighbour = make_span(trace_id="d" * 32, span_id="d" * 16, name="store.read", start_ns=T0 + 50 * MS,
                          end_ns=T0 + 52 * MS, attributes={"state.key": "order/8", "state.op": "read",
                                                           "state.version": 3, "thread.id": "1", "cache.hit": True},
                          resource_attributes={"service.name": "orders", "service.instance.id": "proc-agent-c",
                                               "gen_ai.agent.id": "agent-c"})
    store_and_analyse(acme, spans + [neighbour])
    finding = first_finding(acme, "stale_read")
    by_id = {s.span_id: s for s in spans}
    sides = [by_id[i] for i in finding.span_ids]
    relay = [by_id[b] for a, b in path if by_id[b].agent == "agent-b"]
    assert all(min(abs(r.start_ns - s.start_ns) for s in sides) > 2_000 * MS for r in relay)
    client.force_login(alice)
    body = client.get(f"/p/acme/findings/{finding.pk}/").content.decode()
    data = page_timeline_data(body)
    ids = data["spans"]["id"]
    evidence = [(ids[a], ids[b]) for a, b, kind in data["edges"] if kind == "evidence"]
    assert evidence == path
    assert data["details"][ids.index(neighbour.span_id)]["attributes"]["cache.hit"] is True
    assert "happened before" in body and "a chain of 5 edges" in body
    for a, b in path:
        assert by_id[a].name in body and by_id[b].name in body
    # the chart opens on the whole path, the relay's bars seconds before the sides included
    low, high = data["figure"]["layout"]["xaxis"]["range"]
    x0, x1 = data["spans"]["x0"], data["spans"]["x1"]
    for span_id in {i for pair in path for i in pair}:
        assert low <= x0[ids.index(span_id)] and x1[ids.index(span_id)] <= high


@pytest.mark.browser
def test_a_path_through_a_relay_on_a_slow_clock_is_on_screen(transactional_db, live_server, page, acme, alice):
    spans, path = relayed_stale_read()
    store_and_analyse(acme, spans)
    finding = first_finding(acme, "stale_read")
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/findings/{finding.pk}/")
    page.wait_for_selector("#tl-chart[data-ready='1']", timeout=15000)
    steps = page.locator("#fd-evidence .fd-path li")
    expect(steps).to_have_count(len(path))
    expect(steps.nth(2)).to_contain_text("relay inbox-b (agent-b)")
    expect(steps.last).to_be_in_viewport()
    shot(page, "finding-stale_read-relayed")
    page.locator("#fd-slice").scroll_into_view_if_needed()
    labels = page.evaluate("document.getElementById('tl-chart').data.find(t => t.name === 'labels').text")
    assert "relay inbox-b" in labels and "send inbox-c" in labels
    shot(page, "finding-stale_read-relayed-slice")
