"""alice moves billing 1.1 out in the browser: creates the rollout, starts it, approves a canary step, and
rolls it back, each time confirming a dialog that names what will happen. bob, a viewer, sees no buttons."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from governance.rollouts.models import Rollout
from governance.rollouts.services import rollouts_tick
from tests.conftest import log_in
from tests.rollout_worlds import agents_work

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

STEPS = [{"kind": "set_weight", "weight": 10}, {"kind": "approval"}, {"kind": "set_weight", "weight": 50},
         {"kind": "approval"}, {"kind": "set_weight", "weight": 100}]
# Where the screenshots go, to be looked at (ROLLOUT_SCREENSHOTS overrides).
SHOTS = Path(os.environ.get("ROLLOUT_SCREENSHOTS", "data/screenshots"))


def confirmed(page, button: str, expected: str) -> None:
    """Click an action button, accept its confirmation, and check it said what will happen."""
    said = []
    page.once("dialog", lambda dialog: (said.append(dialog.message), dialog.accept()))
    page.locator(f"#action-{button}").click()
    page.wait_for_load_state("load")
    assert said and expected in said[0], said


def test_alice_approves_a_canary_step_and_rolls_it_back(live_server, page, acme, alice, bob):
    log_in(page, live_server, "alice")
    page.get_by_role("navigation").get_by_role("link", name="Rollouts", exact=True).click()
    page.get_by_role("link", name="New rollout").click()
    for label, value in (("Name", "billing 1.1"), ("Service (service.name)", "billing"),
                         ("Baseline version (running now)", "1.0.0"), ("Canary version", "1.1.0"),
                         ("OFREP flag key", "billing-version")):
        page.get_by_label(label, exact=True).fill(value)
    page.locator("#steps").fill(json.dumps(STEPS))
    page.get_by_role("button", name="Create rollout").click()
    expect(page.locator("#rollout-state")).to_have_text("pending")

    confirmed(page, "start", "Start rollout billing 1.1: its first step (10%) runs now.")
    agents_work(acme, count=60)  # the browser keeps the real clock, so the spans are dated from it
    rollouts_tick()
    page.reload()
    expect(page.locator("#rollout-state")).to_have_text("paused (awaiting approval)")
    expect(page.locator("#weight")).to_have_text("10%")
    expect(page.locator("#step-bar li.paused")).to_have_text("2. approve")

    confirmed(page, "approve", "Approve step 2 (approve) of billing 1.1: the rollout goes on to the next step (50%).")
    rollouts_tick()
    page.reload()
    expect(page.locator("#weight")).to_have_text("50%")
    expect(page.locator("#step-bar li.paused")).to_have_text("4. approve")
    expect(page.locator(".chart .main-svg").first).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "rollout-detail.png"), full_page=True)

    confirmed(page, "rollback", "Roll back billing 1.1: every agent of billing returns to 1.0.0 at its next flag "
                                "evaluation (canary weight 0).")
    expect(page.locator("#rollout-state")).to_have_text("rolled back")
    expect(page.locator("#weight")).to_have_text("0%")
    expect(page.locator("#audit")).to_contain_text("rollout.rollback")
    rollout = Rollout.objects.get()
    assert (rollout.state, rollout.weight, rollout.known_good_version) == ("rolled_back", 0, "1.0.0")

    page.get_by_role("link", name="All rollouts").click()
    expect(page.locator(f"#rollout-{rollout.pk}")).to_contain_text("rolled back")
    page.screenshot(path=str(SHOTS / "rollout-list.png"), full_page=True)


def test_a_viewer_sees_the_analysis_and_the_figures_behind_it_but_no_action(live_server, page, acme, alice, bob):
    from governance.rollouts.services import rollout_create, rollout_start

    rollout = rollout_start(rollout=rollout_create(
        project=acme, actor=alice, name="billing 1.1", service="billing", baseline_version="1.0.0",
        canary_version="1.1.0", flag_key="billing-version",
        steps=[{"kind": "set_weight", "weight": 20}, {"kind": "analysis", "count": 1, "interval_seconds": 1},
               {"kind": "approval"}, {"kind": "set_weight", "weight": 100}]), actor=alice)
    rollouts_tick()  # the analysis step starts now, at T
    # Wait out the 1 s interval first: the spans, dated 1 s before they are stored, then fall after T, inside the
    # step's minutes whatever minute T falls in (dated before T they missed the window when T began a minute).
    time.sleep(1.1)
    agents_work(acme, count=150, seconds_ago=1, canary_ms=11.0)
    rollouts_tick()
    log_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/p/acme/rollouts/{rollout.pk}/")
    expect(page.locator("#rollout-state")).to_have_text("paused (awaiting approval)")
    expect(page.locator(".run")).to_contain_text("successful")
    expect(page.locator(".run table.metrics")).to_contain_text("error_rate")
    expect(page.locator(".actions")).to_contain_text("Your role allows no action here.")
    expect(page.locator("#action-approve")).to_have_count(0)
    expect(page.get_by_role("link", name="failed traces")).to_have_attribute("href", re.compile("service=billing"))
    expect(page.locator(".chart .main-svg").first).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "rollout-detail-analysis.png"), full_page=True)
