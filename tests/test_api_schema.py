"""The API answers as its OpenAPI schema says: schemathesis runs against the real server
(gunicorn on the test database) with an API token, for a bounded time, with every check
(no 5xx, status codes, content types, headers and bodies as documented, bad input refused,
valid input accepted, authentication not ignored)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from governance.rollouts.services import rollout_create
from governance.services import api_token_create, ingest_key_create
from governance.slo.services import channel_create, rule_create, silence_create, slo_create
from policies.services import policy_create, policy_version_activate, violations_record
from tests.test_pages import store_trace
from tests.test_policies_api import LEDGER_V2, a_span, a_write, store
from tests.test_timeline import hand_trace, store_finding
from traces.ingest import spans_store
from traces.services import finding_acknowledge

# Seconds schemathesis may spend; the run as a whole takes about half a minute more.
BUDGET_SECONDS = 100
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = str(Path(__file__).with_name("schemathesis.toml"))
HOOKS = str(Path(__file__).with_name("schemathesis_hooks.py"))


@pytest.fixture
def populated(transactional_db, acme, alice, bob):
    """acme with what every endpoint lists: traces, an open and an acknowledged finding, a policy
    with two versions, one active, its violations, an ingest key, an SLO, an alert rule, a silence,
    an e-mail channel (a webhook's test would send to whatever host it names) and a pending rollout."""
    spans = hand_trace()
    spans_store(project_id=acme.pk, spans=spans)
    store_trace(acme, trace_id="b" * 32, error=True)
    store_finding(acme, spans)
    acknowledged = store_finding(acme, spans, kind="write_race", span_ids=("a000000000000004",))
    finding_acknowledge(finding=acknowledged, actor=alice)
    policy = policy_create(project=acme, source=LEDGER_V2, comment="first", actor=alice)
    policy_version_activate(policy=policy, version=policy.versions.get(number=1), actor=alice)
    traces = store(acme, a_write("intruder", "ledger/42", "aa02", minutes_ago=5),
                   a_span(agent="checkout", name="charge", trace="aa03", minutes_ago=3))
    violations_record(project_id=acme.pk, trace_ids=traces)
    ingest_key_create(project=acme, name="agents", actor=alice)
    slo_create(project=acme, actor=alice, data={"name": "billing", "objective": 0.999, "window_seconds": 28 * 86400,
                                                "sli": {"kind": "success", "match": {"service": "billing"}}})
    rule_create(project=acme, actor=alice, data={
        "name": "lost-updates", "sli": {"kind": "findings", "match": {"finding_kind": "lost_update"}},
        "metric": "count", "op": ">", "threshold": 0, "window_seconds": 300})
    silence_create(project=acme, actor=alice, matchers=['alertname="lost-updates"'], comment="deploy",
                   ends_at=timezone.now() + timedelta(hours=2))
    channel_create(project=acme, actor=alice, data={"kind": "email", "to": ["oncall@example.com"]})
    rollout_create(project=acme, actor=alice, name="billing 1.1", service="billing", baseline_version="1.0.0",
                   canary_version="1.1.0", flag_key="billing-version", template="quick")
    return alice


def test_the_api_answers_as_its_openapi_schema_says(gunicorn_url, populated, tmp_path):
    token = api_token_create(user=populated)
    result = subprocess.run(
        # One worker: hypothesis's lambda descriptions parse source with `ast`, which is not
        # thread-safe on Python 3.11 (an internal error, not a finding, once in a few minutes).
        [SCHEMATHESIS, "--config-file", CONFIG, "run", f"{gunicorn_url}/api/schema/?format=json",
         "--header", f"Authorization: Token {token}",
         "--checks", "all", "--max-time", str(BUDGET_SECONDS), "--workers", "1", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=BUDGET_SECONDS + 300, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(tmp_path), "COLUMNS": "120",
             "SCHEMATHESIS_HOOKS": HOOKS})
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    # The figures (operations, phases, cases generated, failures, seed) show with pytest -s or -rP.
    print(result.stdout[result.stdout.find("SUMMARY"):] if "SUMMARY" in result.stdout else result.stdout[-3000:])
    assert result.returncode == 0, f"see {tmp_path / 'schemathesis.txt'}\n" + result.stdout[-20000:] + result.stderr[-3000:]
