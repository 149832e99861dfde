"""alice edits a policy in the browser: a located error, the fix, a dry run, activation."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from governance.models import AuditRecord
from policies.models import Policy
from policies.services import policy_create
from tests.conftest import log_in
from tests.test_policies_api import BROKEN, LEDGER_V1, LEDGER_V2, a_span, a_write, store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def type_source(page, text: str) -> None:
    # click() returns once a navigation commits; the editor's script, which listens for
    # typing, runs at the end of the page. Text typed before it ran was never validated.
    page.wait_for_load_state("load")
    page.get_by_label("Policy source").fill(text)


def test_alice_fixes_a_policy_error_dry_runs_it_and_activates_it(live_server, page, acme, alice):
    policy = policy_create(project=acme, source=LEDGER_V1, comment="first", actor=alice)
    store(acme, a_write("intruder", "ledger/42", "cc01"), a_span(agent="checkout", name="charge", trace="cc02"))
    log_in(page, live_server, "alice")

    page.goto(f"{live_server.url}/p/acme/violations/")
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="ledger").click()
    page.get_by_role("link", name="Edit (new version)").click()
    expect(page.get_by_label("Policy source")).to_have_value(LEDGER_V1)

    type_source(page, BROKEN)
    # The editor validates as you type, before anything is saved.
    expect(page.locator("#problems li").first).to_contain_text("Line 8, column 11")
    expect(page.locator("#gutter .bad-line")).to_have_text("8")
    page.get_by_role("button", name="Save new version").click()
    problems = page.locator("#problems li")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("Line 8, column 11")
    expect(problems.first).to_contain_text("unknown rule kind 'idempotency_requird'")
    expect(page.locator("#gutter .bad-line")).to_have_text("8")
    assert policy.versions.count() == 1

    type_source(page, LEDGER_V2)
    expect(page.locator("#valid-note")).to_have_text("Valid policy.")
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#problems")).to_have_count(0)
    expect(page.locator(".dry-run-total")).to_have_text("2 violations")
    expect(page.locator("tr[data-rule=ledger-owner] .count")).to_have_text("1")
    example = page.locator("tr[data-rule=ledger-owner] a").first
    expect(example).to_have_attribute("href", re.compile(r"^/p/acme/traces/cc010+/\?span=[0-9a-f]{16}$"))
    assert policy.versions.count() == 1

    page.get_by_label("Comment").fill("charges need idempotency keys")
    page.get_by_role("button", name="Save new version").click()
    expect(page.locator("ul.messages")).to_contain_text("Saved v2 of ledger")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Activate v2").click()
    expect(page.locator("ul.messages")).to_contain_text("v2 of ledger is now active")
    expect(page.locator("#active-version")).to_have_text("v2")
    expect(page.locator("tr[data-version='2'] .tag.active")).to_have_text("active")

    policy = Policy.objects.get(pk=policy.pk)
    assert policy.active_version.number == 2
    assert policy.active_version.comment == "charges need idempotency keys"
    assert AuditRecord.objects.filter(action="policy.activate", actor=alice).count() == 1

    page.get_by_role("link", name="diff with v1").click()
    expect(page.locator("table.diff")).to_contain_text("charges-idempotent")
