"""The SLO and alert pages: in the one navigation, readable by viewers, changed only by the right roles."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import AuditRecord, Role
from governance.slo.evaluation import evaluate_tick
from governance.slo.models import Alert, AlertRule, Channel, Silence, Slo
from governance.slo.services import channel_create, rule_create, slo_create
from tests.conftest import make_user
from tests.test_slo_alerts import ERRORS, calls

PAGES = ["slos/", "slos/new/", "alert-rules/", "alerts/", "alerts/?state=resolved", "silences/", "channels/"]
SLO_FORM = {"name": "billing-success", "display_name": "Billing", "sli_kind": "success", "service": "billing",
            "objective_percent": "99.5", "window": "7d", "tier_page-fast": "on", "tier_ticket": "on",
            "labels": "team=payments"}


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Spans and windows are dated from the stopped clock."""


def as_user(client, user):
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_in_the_one_navigation_and_readable_by_viewers(client, bob, acme, path):
    page = as_user(client, bob).get(f"/p/acme/{path}")
    assert page.status_code == 200
    html = page.content.decode()
    nav = re.search(r"<nav>(.*?)</nav>", html, re.DOTALL).group(1)
    for link in ("slos", "alerts", "alert-rules", "silences", "channels"):
        assert f'href="/p/acme/{link}/"' in nav
    assert "Define SLO alert</button>" not in html and "Save alert rule" not in html and "Add channel" not in html


def test_an_approver_defines_an_slo_alert_in_the_form_and_sees_its_charts(client, alice, acme):
    response = as_user(client, alice).post("/p/acme/slos/new/", SLO_FORM)
    slo = Slo.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/acme/slos/{slo.pk}/"
    assert slo.objective == pytest.approx(0.995) and slo.window_seconds == 7 * 86400
    assert {n: t["enabled"] for n, t in slo.tiers.items()} == {"page-fast": True, "page-slow": False, "ticket": True}
    assert slo.labels == {"team": "payments"} and slo.sli.definition == {"kind": "success", "match": {"service": ["billing"]}}
    calls(acme, 5, error=False)
    evaluate_tick()
    html = client.get(f"/p/acme/slos/{slo.pk}/").content.decode()
    figures = json.loads(re.search(r'<script id="figures" type="application/json">(.*?)</script>', html, re.DOTALL).group(1))
    assert set(figures) == {"sli", "burndown", "burn"} and figures["burn"]["data"][0]["x"][0] == "page-fast (page)"
    assert 'id="budget-left">100.0 %' in html
    listed = client.get("/p/acme/slos/").content.decode()
    assert re.search(r'data-slo="billing-success".*?<span class="tag ok">ok</span>', listed, re.DOTALL)


def test_a_bad_slo_form_says_what_is_wrong_and_keeps_what_was_typed(client, alice, acme):
    response = as_user(client, alice).post("/p/acme/slos/new/", {**SLO_FORM, "window": "1M", "service": "shop"})
    html = response.content.decode()
    assert response.status_code == 200 and "months, quarters and years differ in length" in html
    assert 'value="shop"' in html and not Slo.objects.exists()


def test_a_viewer_cannot_define_and_is_told_so(client, bob, acme):
    response = as_user(client, bob).post("/p/acme/slos/new/", SLO_FORM, follow=True)
    assert "this needs the approver role" in response.content.decode() and not Slo.objects.exists()


def test_the_live_preview_counts_the_stored_spans_with_the_forms_sli(client, bob, acme):
    calls(acme, 4, error=False)
    calls(acme, 1, error=True)
    preview = as_user(client, bob).post("/p/acme/slos/preview/", {**SLO_FORM, "objective_percent": "99"}).json()
    assert preview["events"] == 5 and preview["sli"] == pytest.approx(0.8)
    assert preview["description"] == "success of service=billing"
    assert preview["figure"]["data"][1]["name"] == "objective"
    bad = client.post("/p/acme/slos/preview/", {**SLO_FORM, "attributes": "no equals sign"})
    assert bad.status_code == 400 and "one key=value a line" in bad.json()["error"]


def test_openslo_yaml_pasted_on_the_list_page_is_imported(client, alice, acme):
    from governance.slo.core.openslo import dump_openslo
    from tests.test_slo_core import BILLING

    response = as_user(client, alice).post("/p/acme/slos/", {"openslo": dump_openslo([BILLING])}, follow=True)
    assert "Imported: 1 created, 0 updated, 0 unchanged." in response.content.decode()
    assert Slo.objects.get().name == "billing-idempotent"


def test_alert_rules_are_added_and_deleted_by_approvers(client, alice, acme):
    client = as_user(client, alice)
    response = client.post("/p/acme/alert-rules/", {
        "name": "orders-lost-updates", "sli_kind": "findings", "finding_kind": "lost_update", "key": "orders/*",
        "metric": "count", "op": ">", "threshold": "0", "window": "5m", "for": "1m", "severity": "page"})
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert rule.sli.definition == {"kind": "findings", "match": {"finding_kind": ["lost_update"], "key": ["orders/*"]}}
    assert (rule.window_seconds, rule.for_seconds) == (300, 60)
    html = client.get("/p/acme/alert-rules/").content.decode()
    assert "count &gt; 0</code> over 5m" in html
    client.post("/p/acme/alert-rules/", {"delete": rule.pk})
    assert not AlertRule.objects.exists()


def test_an_operator_acknowledges_and_silences_from_the_alerts_page(client, acme, alice):
    olga = make_user("olga", acme, Role.OPERATOR)
    rule_create(project=acme, actor=alice, data={**ERRORS, "for_seconds": 0})
    calls(acme, 3, error=True)
    evaluate_tick()
    alert = Alert.objects.get()
    client = as_user(client, olga)
    html = client.get("/p/acme/alerts/").content.decode()
    assert 'data-alert="billing-errors"' in html and "Acknowledge</button>" in html
    assert "/p/acme/traces/" in html, "the alert links to the traces that caused it"
    silence_url = re.search(r'<a href="(/p/acme/silences/\?matchers=[^"]+)">Silence', html).group(1)
    form = client.get(silence_url.replace("&amp;", "&")).content.decode()
    assert 'alertname=&quot;billing-errors&quot;' in form, "the silence form is filled from the alert's labels"
    client.post(f"/p/acme/alerts/{alert.pk}/acknowledge/", {"comment": "on it"})
    alert.refresh_from_db()
    assert alert.acknowledged and alert.acknowledge_comment == "on it"
    client.post("/p/acme/silences/", {"matchers": 'alertname="billing-errors"\nseverity="page"', "duration": "2h",
                                      "comment": "fixing it"})
    silence = Silence.objects.get()
    assert silence.ends_at == timezone.now() + timedelta(hours=2) and silence.created_by == olga
    assert "silenced" in client.get("/p/acme/alerts/").content.decode()
    client.post("/p/acme/silences/", {"expire": silence.pk})
    assert Silence.objects.get().ends_at == timezone.now()
    assert [a.action for a in AuditRecord.objects.filter(actor=olga).order_by("id")] == [
        "alert.acknowledge", "silence.create", "silence.expire"]


def test_channels_are_added_by_approvers_and_tested_by_operators(client, acme, alice, receiver):
    client = as_user(client, alice)
    client.post("/p/acme/channels/", {"kind": "webhook", "name": "oncall", "url": receiver.url, "group_by": "alertname, slo",
                                      "repeat_interval": "1h"})
    channel = Channel.objects.get()
    assert channel.group_by == ["alertname", "slo"] and channel.repeat_interval_seconds == 3600
    olga = make_user("olga", acme, Role.OPERATOR)
    client = as_user(client, olga)
    response = client.post("/p/acme/channels/", {"test": channel.pk}, follow=True)
    assert "Test notification delivered to oncall." in response.content.decode()
    assert len(receiver.received) == 1
    response = client.post("/p/acme/channels/", {"delete": channel.pk}, follow=True)
    assert "this needs the approver role" in response.content.decode() and Channel.objects.exists()


def test_pages_only_show_this_projects_things(client, charlie, acme, alice):
    slo = slo_create(project=acme, actor=alice, data={"name": "billing", "objective": 0.99, "window_seconds": 86400,
                                                      "sli": {"kind": "success"}})
    channel_create(project=acme, actor=alice, data={"kind": "email", "to": ["a@example.com"]})
    client = as_user(client, charlie)
    assert client.get(f"/p/acme/slos/{slo.pk}/").status_code == 404
    assert client.get(f"/p/globex/slos/{slo.pk}/").status_code == 404
    assert "a@example.com" not in client.get("/p/globex/channels/").content.decode()
