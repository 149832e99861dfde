"""Whole rollouts as production runs them: gunicorn (OTLP and OFREP), a Celery worker and Celery beat as their
own processes on the configured broker (Redis in CI), and real agents from `simulate --flag --canary-version`
that learn their version through OFREP and stamp it as service.version.

A healthy canary passes its analysis, waits for a person, is approved and promoted; a canary with
--regression fails its analysis and is rolled back by the tick alone, after which OFREP answers the
baseline to every targeting key. The clock is real here (every process keeps its own)."""

from __future__ import annotations

import io
import time

import pytest
import requests

from governance.models import Role
from governance.rollouts.models import AnalysisRun, Rollout
from governance.rollouts.services import rollout_create, rollout_start
from governance.services import api_token_create
from tests.conftest import make_key, make_user
from tests.processes import beat, celery_env, running, wait_for, worker
from traces.models import Trace
from traces.simulator import run_from_options

pytestmark = pytest.mark.django_db(transaction=True)

FLAG = "sim-agents-version"
SERVICE = "causeway-sim-agent"
# Long enough for the agents to run and their traces to go through the pipeline before the one measurement.
ANALYSIS_SECONDS = 90
STEPS = [{"kind": "set_weight", "weight": 50}, {"kind": "analysis", "count": 1, "interval_seconds": ANALYSIS_SECONDS},
         {"kind": "approval"}, {"kind": "set_weight", "weight": 100}]


# Beat ticks rollouts every second; the pipeline takes traces at once; no alert ticks in the way.
CELERY_SETTINGS = {"ROLLOUT_TICK_SECONDS": "1", "TRACE_QUIET_SECONDS": "0", "ALERT_EVAL_INTERVAL_SECONDS": "3600",
                   "DEBUG": "true"}


@pytest.fixture
def stack(gunicorn_url, acme, tmp_path):
    """gunicorn, a worker and beat, warmed up: a first run of other agents has gone through the pipeline, so the
    worker's processes have loaded the analysis kernels before the rollout's clock starts. Yields the web address."""
    env = celery_env(**CELERY_SETTINGS)
    with running(worker(env, tmp_path, "rollouts-e2e", concurrency=2), beat(env, tmp_path)):
        run_from_options({"endpoint": gunicorn_url, "key": make_key(acme), "agents": 2, "processes": 1,
                          "threads": 2, "iterations": 3, "service_name": "warm-up", "run_id": "warm-up",
                          "namespace": "warm-up", "no_progress": True}, io.StringIO(), io.StringIO())
        wait_for(lambda: Trace.objects.exists() and not Trace.objects.exclude(state=Trace.State.ANALYSED).exists(),
                 300, f"the warm-up traces to go through the pipeline (logs in {tmp_path})", every=0.25)
        yield gunicorn_url


def rollout_now(rollout) -> Rollout:
    return Rollout.objects.get(pk=rollout.pk)


def agents_run(url: str, key: str, run_id: str, **extra):
    return run_from_options({"endpoint": url, "key": key, "flag": FLAG, "canary_version": "1.1.0", "agents": 8,
                             "processes": 2, "threads": 2, "iterations": 12, "run_id": run_id, "no_progress": True,
                             "namespace": run_id, **extra}, io.StringIO(), io.StringIO())


def ofrep_values(url: str, key: str, targeting_keys) -> set[str]:
    values = set()
    for targeting_key in targeting_keys:
        answer = requests.post(f"{url}/ofrep/v1/evaluate/flags/{FLAG}", json={"context": {"targetingKey": targeting_key}},
                               headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        values.add(answer.json()["value"])
    return values


def started_rollout(acme, person) -> Rollout:
    rollout = rollout_create(project=acme, actor=person, name="sim agents 1.1", service=SERVICE,
                             baseline_version="1.0.0", canary_version="1.1.0", flag_key=FLAG, steps=STEPS)
    return rollout_start(rollout=rollout, actor=person)


def test_a_healthy_canary_passes_waits_for_approval_is_approved_and_promoted(stack, acme, tmp_path):
    release_manager = make_user("dana", acme, Role.APPROVER)
    key = make_key(acme)
    rollout = started_rollout(acme, release_manager)
    wait_for(lambda: rollout_now(rollout).weight == 50, 60,
             f"the tick to set the weight (logs in {tmp_path})", every=0.25)

    summary = agents_run(stack, key, "healthy")
    assert set(summary.versions.values()) == {"1.0.0", "1.1.0"}  # the flag split the agents
    wait_for(lambda: rollout_now(rollout).state == "paused", ANALYSIS_SECONDS + 90,
             f"the analysis (logs in {tmp_path})", every=0.25)
    rollout = rollout_now(rollout)
    run = AnalysisRun.objects.get(rollout=rollout)
    assert (rollout.pause_reason, run.verdict) == ("awaiting_approval", "successful"), (run.reason, run.results)
    assert {r["name"]: r["verdict"] for r in run.results}["error_rate"] == "passed"

    token = api_token_create(user=release_manager)
    approved = requests.post(f"{stack}/api/v1/rollouts/{rollout.pk}/approve/", json={"version": rollout.version},
                             headers={"Authorization": f"Token {token}"}, timeout=10)
    assert approved.status_code == 200, approved.text
    wait_for(lambda: rollout_now(rollout).state == "promoted", 60,
             f"the promotion (logs in {tmp_path})", every=0.25)
    assert rollout_now(rollout).known_good_version == "1.1.0"
    time.sleep(1.5)  # web processes keep a flag's rollout for OFREP_CACHE_SECONDS
    assert ofrep_values(stack, key, [f"agent-{i}" for i in range(40)]) == {"1.1.0"}


def test_a_regressed_canary_fails_its_analysis_and_is_rolled_back_to_the_baseline_everywhere(stack, acme, tmp_path):
    release_manager = make_user("dana", acme, Role.APPROVER)
    key = make_key(acme)
    rollout = started_rollout(acme, release_manager)
    wait_for(lambda: rollout_now(rollout).weight == 50, 60,
             f"the tick to set the weight (logs in {tmp_path})", every=0.25)
    assert ofrep_values(stack, key, [f"agent-{i}" for i in range(40)]) == {"1.0.0", "1.1.0"}

    agents_run(stack, key, "regressed", regression="all")
    wait_for(lambda: rollout_now(rollout).state == "rolled_back", ANALYSIS_SECONDS + 90,
             f"the automatic rollback (logs in {tmp_path})", every=0.25)
    run = AnalysisRun.objects.get(rollout=rollout)
    failed = {r["name"] for r in run.results if r["verdict"] == "failed"}
    assert run.verdict == "failed" and failed, (run.reason, run.results)
    canary_worse = {r["name"] for r in run.results if r["value"] is not None and r["canary"] is not None
                    and r["canary"] > r["baseline"] and r["kind"] != "idempotency_success"}
    assert {"error_rate", "latency_p95_ratio", "conflict_rate"} <= canary_worse, run.results
    time.sleep(1.5)
    assert ofrep_values(stack, key, [f"agent-{i}" for i in range(40)]) == {"1.0.0"}
