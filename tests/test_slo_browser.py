"""alice defines an SLO alert in the browser, watching the live preview, and finds it on the SLO list;
she adds an e-mail channel and sends it a test notification."""

from __future__ import annotations

import itertools
import time

import pytest
from playwright.sync_api import expect

from governance.slo.models import Slo
from tests.conftest import log_in
from tests.test_slo_rollups import a_span
from traces.ingest import spans_store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
_traces = itertools.count(9000)


def test_alice_defines_an_slo_alert_with_a_live_preview_and_sees_it_listed(live_server, page, acme, alice, tmp_path):
    # The browser keeps the real clock (conftest's clock fixture says why), so spans are dated from it.
    spans = [a_span(next(_traces), 0, minutes_ago, error=i % 10 == 0) for i, minutes_ago in enumerate(range(5, 600, 6))]
    spans_store(project_id=acme.pk, spans=spans)
    assert time.time_ns() - spans[-1].start_ns < 3 * 86400 * 10**9
    log_in(page, live_server, "alice")

    page.get_by_role("navigation").get_by_role("link", name="SLOs", exact=True).click()
    page.get_by_role("link", name="Define an SLO alert").click()
    page.wait_for_load_state("load")  # the form's script runs at the end of the page
    page.get_by_label("Name", exact=True).fill("billing-success")
    page.get_by_label("SLI", exact=True).select_option("success")
    page.get_by_label("Service", exact=True).fill("billing")
    page.get_by_label("Objective (%)").fill("99")
    # The preview counts the stored spans with the SLI as typed: 100 calls, one in ten failed.
    expect(page.locator("#preview-note")).to_contain_text("success of service=billing: 100 events in the last 3 days, "
                                                          "SLI 90.000 %")
    expect(page.locator("#preview-chart .main-svg").first).to_be_visible()
    page.get_by_label("Service", exact=True).fill("shipping")
    expect(page.locator("#preview-note")).to_contain_text("success of service=shipping: 0 events")
    page.get_by_label("Service", exact=True).fill("billing")
    page.get_by_role("button", name="Define SLO alert").click()

    expect(page.locator("ul.messages")).to_contain_text("SLO billing-success defined")
    expect(page.locator("h1")).to_contain_text("billing-success")
    expect(page.locator("#chart-sli .main-svg").first).to_be_visible()
    page.get_by_role("link", name="All SLOs").click()
    row = page.locator("tr[data-slo=billing-success]")
    expect(row).to_contain_text("success of service=billing")
    expect(row).to_contain_text("99 % over 28d")
    slo = Slo.objects.get()
    assert slo.objective == 0.99 and all(t["enabled"] for t in slo.tiers.values())
    page.screenshot(path=str(tmp_path / "slos.png"), full_page=True)


def test_alice_adds_an_email_channel_and_sends_it_a_test_notification(live_server, page, acme, alice, tmp_path):
    from django.core import mail

    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/channels/")
    page.get_by_label("Kind").select_option("email")
    page.get_by_label("E-mail addresses (comma-separated)").fill("oncall@example.com")
    page.get_by_role("button", name="Add channel").click()
    expect(page.locator("ul.messages")).to_contain_text("Channel oncall@example.com added")
    page.locator("tr[data-channel='oncall@example.com']").get_by_role("button", name="Send test notification").click()
    expect(page.locator("ul.messages")).to_contain_text("Test notification delivered to oncall@example.com")
    assert [m.to for m in mail.outbox] == [["oncall@example.com"]]
    page.screenshot(path=str(tmp_path / "channels.png"), full_page=True)
