"""The overview: a project's home page, every figure from its own data and linking to the page that explains it."""

from __future__ import annotations

import itertools
import json
import re
import time

import pytest

from governance.rollouts.services import rollout_create, rollout_promote, rollout_start
from governance.slo.evaluation import evaluate_tick
from governance.slo.services import rule_create, slo_create
from policies.services import policy_version_activate, violations_record
from tests.conftest import make_user
from tests.test_policies_api import LEDGER_V1, a_write, store
from tests.test_slo_alerts import ERRORS, calls
from traces.ingest import spans_store
from traces.models import Finding
from traces.records import make_span

MINUTE_NS = 60 * 10**9
_fingerprints = itertools.count()


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans, findings and windows are dated from the stopped clock."""


def agent_spans(project, *, agent: str, version: str, count: int, minutes_ago: float, trace: str):
    start = time.time_ns() - int(minutes_ago * MINUTE_NS)
    spans_store(project_id=project.pk, spans=[
        make_span(trace_id=trace.ljust(32, "0"), span_id=f"{i + 1:016x}", name="step", start_ns=start + i,
                  end_ns=start + i + 1000,
                  resource_attributes={"service.name": "billing", "service.version": version,
                                       "gen_ai.agent.id": agent})
        for i in range(count)])


def a_finding(project, kind: str, *, days_ago: float, status=Finding.Status.OPEN):
    Finding.objects.create(project=project, kind=kind, detail="d", fingerprint=f"f{next(_fingerprints)}", status=status,
                           first_ns=time.time_ns() - int(days_ago * 24 * 60 * MINUTE_NS))


def figures(html: str) -> dict:
    return json.loads(re.search(r'<script id="figures" type="application/json">(.*?)</script>', html, re.DOTALL).group(1))


def test_home_is_the_first_projects_overview(client, alice):
    client.force_login(alice)
    assert client.get("/")["Location"] == "/p/acme/"
    assert 'href="/p/acme/">Overview</a>' in client.get("/p/acme/").content.decode()


def test_it_charts_the_spans_per_minute_and_lists_the_agents_of_the_last_hour_with_their_versions(client, bob, acme):
    agent_spans(acme, agent="planner", version="1.0.0", count=3, minutes_ago=2, trace="a1")
    agent_spans(acme, agent="planner", version="1.1.0", count=2, minutes_ago=10, trace="a2")
    agent_spans(acme, agent="courier", version="2.0.0", count=4, minutes_ago=2, trace="a3")
    agent_spans(acme, agent="retired", version="0.9.0", count=5, minutes_ago=90, trace="a4")
    client.force_login(bob)
    html = client.get("/p/acme/").content.decode()
    spans = figures(html)["spans"]["data"][0]["y"]
    assert len(spans) == 60 and sum(spans) == 9, "an hour of minutes, the older spans left out"
    assert sorted(y for y in spans if y) == [2, 7]
    planner = re.search(r'<tr data-agent="planner">(.*?)</tr>', html, re.DOTALL).group(1)
    assert ">1.0.0<" in planner and ">1.1.0<" in planner and ">5<" in planner
    assert 'href="/p/acme/traces/?agent=planner&amp;last=1h"' in planner
    assert 'data-agent="courier"' in html and 'data-agent="retired"' not in html


def test_it_counts_open_findings_by_kind_with_their_trend(client, bob, acme):
    for days_ago in (0.1, 0.2, 0.3, 1.5):
        a_finding(acme, "lost_update", days_ago=days_ago)
    a_finding(acme, "stale_read", days_ago=1.2)
    a_finding(acme, "stale_read", days_ago=0.1, status=Finding.Status.ACKNOWLEDGED)
    a_finding(acme, "write_race", days_ago=0.1, status=Finding.Status.WITHDRAWN)
    client.force_login(bob)
    html = client.get("/p/acme/").content.decode()
    lost = re.search(r'<tr data-kind="lost_update">(.*?)</tr>', html, re.DOTALL).group(1)
    assert re.findall(r'<td class="n[^"]*">([^<]*)</td>', lost) == ["4", "3", "▲ +2"]
    stale = re.search(r'<tr data-kind="stale_read">(.*?)</tr>', html, re.DOTALL).group(1)
    assert re.findall(r'<td class="n[^"]*">([^<]*)</td>', stale) == ["1", "1", "="]
    assert 'href="/p/acme/findings/?kind=lost_update&amp;status=open"' in lost
    assert 'data-kind="write_race"' not in html, "withdrawn findings are no findings"
    trend = {bar["name"]: bar["y"] for bar in figures(html)["findings"]["data"]}
    assert trend["lost_update"][-2:] == [1, 3] and sum(trend["lost_update"]) == 4


def test_it_shows_slo_budgets_firing_alerts_and_violations_by_policy(client, alice, bob, acme):
    slo_create(project=acme, actor=alice, data={"name": "billing-success", "objective": 0.99, "window_seconds": 3600,
                                                "sli": {"kind": "success", "match": {"service": "billing"}}})
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 4, error=True)
    calls(acme, 1, error=False)
    evaluate_tick()
    from policies.services import policy_create

    policy = policy_create(project=acme, source=LEDGER_V1, actor=alice)
    policy_version_activate(policy=policy, version=policy.versions.get(), actor=alice)
    traces = store(acme, a_write("intruder", "ledger/1", "bb01"), a_write("intruder", "ledger/2", "bb02"))
    violations_record(project_id=acme.pk, trace_ids=traces)
    client.force_login(bob)
    html = client.get("/p/acme/").content.decode()
    slo = re.search(r'<tr data-slo="billing-success">(.*?)</tr>', html, re.DOTALL).group(1)
    assert "exhausted" in slo and "-7900 %" in slo, "4 calls in 5 failed against a 1 % budget"
    assert "80.00×" in slo, "burning 80 times as fast as the budget allows"
    assert re.search(r'href="/p/acme/slos/\d+/"', slo)
    alerts = re.search(r'<section class="box" id="alerts">(.*?)</section>', html, re.DOTALL).group(1)
    assert "billing-errors" in alerts and "1 firing" in alerts
    ledger = re.search(r'<tr data-policy="ledger">(.*?)</tr>', html, re.DOTALL).group(1)
    assert f'href="/p/acme/violations/?policy={policy.pk}&amp;last=24h"' in ledger and '<td class="n">2</td>' in ledger


def test_it_shows_active_rollouts_with_their_step_and_link(client, alice, bob, acme):
    done = rollout_create(project=acme, actor=alice, name="old", service="billing", baseline_version="0.9",
                          canary_version="1.0", flag_key="old-version", template="quick")
    rollout_start(rollout=done, actor=alice)
    rollout_promote(rollout=done, actor=alice)
    live = rollout_create(project=acme, actor=alice, name="billing 1.1", service="billing", baseline_version="1.0",
                          canary_version="1.1", flag_key="billing-version", template="quick")
    rollout_start(rollout=live, actor=alice)
    client.force_login(bob)
    html = client.get("/p/acme/").content.decode()
    section = re.search(r'<section class="box" id="rollouts">(.*?)</section>', html, re.DOTALL).group(1)
    row = re.search(rf'<tr data-rollout="{live.pk}">(.*?)</tr>', section, re.DOTALL).group(1)
    assert f'href="/p/acme/rollouts/{live.pk}/"' in row and "billing 1.1" in row and "1.0 → 1.1" in row
    assert "1/" in row and "no analysis yet" in row
    assert f'data-rollout="{done.pk}"' not in section, "a promoted rollout is no longer active"


def test_it_links_the_analysis_lag_to_the_pipeline_page(client, bob, acme, clock):
    agent_spans(acme, agent="planner", version="1", count=1, minutes_ago=5, trace="c1")
    clock.shift(125)  # quiet, and not analysed: no worker runs here
    client.force_login(bob)
    html = client.get("/p/acme/").content.decode()
    lag = re.search(r'<section class="box" id="lag">(.*?)</section>', html, re.DOTALL).group(1)
    assert "2 min 5 s" in lag and "1 trace waiting for analysis" in lag and 'href="/p/acme/pipeline/"' in lag


def test_a_member_of_another_project_does_not_see_it(client, acme, charlie):
    agent_spans(acme, agent="planner", version="1", count=1, minutes_ago=1, trace="d1")
    client.force_login(charlie)
    assert client.get("/p/acme/").status_code == 404
    make_user("nobody")
    assert client.get("/p/globex/").status_code == 200
