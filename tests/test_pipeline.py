"""The pipeline after ingest: every stage at least once on every quiet trace, retries with backoff,
dead letters people can see and retry, and a worker killed with SIGKILL mid-analysis."""

from __future__ import annotations

import random
import re
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from governance.models import AuditRecord
from governance.pipeline.models import StageBatch, StageHolder
from governance.pipeline.services import (
    BATCH_TRACES,
    batches_claim,
    batches_complete,
    batches_nudge_due,
    quiet_traces_hand_on,
    stage_run,
)
from governance.pipeline.stages import STAGES
from governance.task_base import RetryPolicy
from tests.conftest import log_in, make_user
from tests.processes import celery_env, own_redis, running, wait_for, worker, writes_held
from tests.services import manage
from tests.worlds import agent_world
from traces.analysis import analyse
from traces.ingest import spans_store
from traces.models import Finding, Trace
from traces.records import make_span

ANALYSIS, POLICIES, SLI_ROLLUPS, CANARY = STAGES
# A worker's claim runs out 2 s after it died; traces are handed on as soon as they are stored.
WORKER_SETTINGS = {"PIPELINE_LEASE_SECONDS": "2", "TRACE_QUIET_SECONDS": "0"}


def a_span(trace: int, *, agent="A"):
    return make_span(trace_id=f"{trace:032x}", span_id=f"{trace:016x}", name="turn", start_ns=10**18 + trace,
                     end_ns=10**18 + trace + 1000, resource_attributes={"service.name": "s", "gen_ai.agent.id": agent})


def stored_quiet(project, count: int) -> list[str]:
    spans_store(project_id=project.pk, spans=[a_span(n) for n in range(1, count + 1)])
    return sorted(f"{n:032x}" for n in range(1, count + 1))


def stage_failing_on(trace_ids: set[str], error=RuntimeError, **changes):
    """The analysis stage as declared, running nothing, failing while one of `trace_ids` is in its run."""

    def run(*, project_id, trace_ids: list[str]) -> int:
        if poisoned & set(trace_ids):
            raise error("this trace breaks the stage")
        return 0

    poisoned = set(trace_ids)
    return replace(ANALYSIS, run=run, retry=RetryPolicy(max_attempts=3, backoff_seconds=0), **changes)


# --- handing on, claims and leases ------------------------------------------------------------------------------------


def test_quiet_traces_are_handed_on_with_their_first_stage_batches_in_one_step(acme, globex, django_capture_on_commit_callbacks):
    ids = stored_quiet(acme, BATCH_TRACES + 3)
    spans_store(project_id=globex.pk, spans=[a_span(7)])
    with django_capture_on_commit_callbacks() as queued:
        assert quiet_traces_hand_on(quiet_seconds=0) == BATCH_TRACES + 4
    assert set(Trace.objects.values_list("state", flat=True)) == {Trace.State.COMPLETE}
    batches = list(StageBatch.objects.filter(project=acme).order_by("pk"))
    assert [b.stage for b in batches] == ["analysis", "analysis"]
    assert sorted(t for b in batches for t in b.trace_ids) == ids
    assert [len(b.trace_ids) for b in batches] == [BATCH_TRACES, 3]
    assert StageBatch.objects.get(project=globex).trace_ids == [f"{7:032x}"]
    assert len(queued) == 2, "one task queued per project, once the hand-on commits"
    assert quiet_traces_hand_on(quiet_seconds=0) == 0


def test_a_project_runs_one_analysis_at_a_time_and_a_dead_workers_lease_runs_out(acme, clock):
    stored_quiet(acme, 3)
    quiet_traces_hand_on(quiet_seconds=0)
    now = timezone.now()
    [claimed] = batches_claim(stage=ANALYSIS, project_id=acme.pk, now=now)
    assert claimed.state == StageBatch.State.RUNNING and claimed.attempts == 1
    assert batches_claim(stage=ANALYSIS, project_id=acme.pk, now=now + timedelta(seconds=5)) == []
    # Nobody renewed the lease: its worker died. The batch is given back, after the retry policy's backoff.
    expired = now + timedelta(seconds=31)
    assert batches_claim(stage=ANALYSIS, project_id=acme.pk, now=expired) == []
    given_back = StageBatch.objects.get()
    assert given_back.state == StageBatch.State.PENDING and "worker running it was lost" in given_back.last_error
    [again] = batches_claim(stage=ANALYSIS, project_id=acme.pk, now=expired + timedelta(seconds=3))
    assert again.attempts == 2
    # The first run finishing late changes nothing: the batch is the second run's now.
    assert batches_complete(stage=ANALYSIS, batches=[claimed]) is False
    assert StageBatch.objects.get().state == StageBatch.State.RUNNING
    assert batches_complete(stage=ANALYSIS, batches=[again]) is True
    assert StageBatch.objects.get().stage == "policies"


def test_a_run_takes_every_waiting_batch_of_its_project_up_to_its_size(acme):
    stored_quiet(acme, BATCH_TRACES * 2 + 1)
    quiet_traces_hand_on(quiet_seconds=0)
    claimed = batches_claim(stage=replace(ANALYSIS, max_traces=BATCH_TRACES * 2), project_id=acme.pk)
    assert [len(b.trace_ids) for b in claimed] == [BATCH_TRACES, BATCH_TRACES]


def test_the_sweep_queues_a_task_again_for_work_nobody_took(acme, clock):
    stored_quiet(acme, 2)
    quiet_traces_hand_on(quiet_seconds=0)  # its task was queued (and, here, never run)
    now = timezone.now()
    assert batches_nudge_due(now=now) == 0, "a task is queued already"
    assert batches_nudge_due(now=now + timedelta(seconds=31)) == 1, "that task was lost: queue another"
    assert batches_nudge_due(now=now + timedelta(seconds=32)) == 0


def test_the_last_stage_marks_the_traces_analysed(acme):
    ids = stored_quiet(acme, 2)
    quiet_traces_hand_on(quiet_seconds=0)
    stage_run(stage=ANALYSIS, project_id=acme.pk)
    stage_run(stage=POLICIES, project_id=acme.pk)
    assert set(Trace.objects.values_list("state", flat=True)) == {Trace.State.COMPLETE}
    stage_run(stage=SLI_ROLLUPS, project_id=acme.pk)
    stage_run(stage=CANARY, project_id=acme.pk)
    assert not StageBatch.objects.exists()
    assert sorted(Trace.objects.filter(state=Trace.State.ANALYSED, analysed_at__isnull=False)
                  .values_list("trace_id", flat=True)) == ids


def test_a_trace_reopened_by_late_spans_is_not_marked_analysed_by_its_earlier_pass(acme):
    stored_quiet(acme, 1)
    quiet_traces_hand_on(quiet_seconds=0)
    stage_run(stage=ANALYSIS, project_id=acme.pk)
    late = make_span(trace_id=f"{1:032x}", span_id="e" * 16, name="late", start_ns=10**18, end_ns=10**18 + 5,
                     resource_attributes={"service.name": "s"})
    spans_store(project_id=acme.pk, spans=[late])
    stage_run(stage=POLICIES, project_id=acme.pk)
    stage_run(stage=SLI_ROLLUPS, project_id=acme.pk)
    stage_run(stage=CANARY, project_id=acme.pk)
    assert Trace.objects.get().state == Trace.State.OPEN


# --- failures: backoff, isolation, dead letters ---------------------------------------------------------------------


def test_a_transient_error_backs_off_without_using_up_attempts(acme, clock):
    stored_quiet(acme, 2)
    quiet_traces_hand_on(quiet_seconds=0)
    flaky = replace(stage_failing_on({f"{1:032x}"}, error=OperationalError), retry=RetryPolicy(backoff_seconds=20))
    before = timezone.now()
    assert stage_run(stage=flaky, project_id=acme.pk) == 0
    batch = StageBatch.objects.get()
    assert (batch.state, batch.attempts, batch.failures) == (StageBatch.State.PENDING, 0, 1)
    assert "OperationalError" in batch.last_error
    assert before + timedelta(seconds=19) < batch.run_after < timezone.now() + timedelta(seconds=21)
    assert batches_claim(stage=flaky, project_id=acme.pk) == [], "not before its backoff"


def test_a_trace_that_keeps_failing_is_isolated_and_kept_as_a_dead_letter(acme):
    ids = stored_quiet(acme, 6)
    quiet_traces_hand_on(quiet_seconds=0)
    poison = ids[4]
    broken = stage_failing_on({poison})
    runs = 0
    while StageBatch.objects.filter(stage="analysis", state=StageBatch.State.PENDING).exists():
        stage_run(stage=broken, project_id=acme.pk)
        runs += 1
        assert runs < 40
    dead = StageBatch.objects.get(state=StageBatch.State.DEAD)
    assert dead.stage == "analysis" and dead.trace_ids == [poison] and dead.attempts == 3
    assert "RuntimeError: this trace breaks the stage" in dead.last_error
    handed_on = sorted(t for b in StageBatch.objects.filter(stage="policies") for t in b.trace_ids)
    assert handed_on == sorted(set(ids) - {poison}), "the other traces went on to the next stage"


# --- what people see ---------------------------------------------------------------------------------------------------


@pytest.fixture
def dead_letter(acme, clock):
    stored_quiet(acme, 1)
    quiet_traces_hand_on(quiet_seconds=0)
    StageBatch.objects.update(state=StageBatch.State.DEAD, attempts=3, failures=3, failed_at=timezone.now(),
                              last_error="Traceback ...\nRuntimeError: this trace breaks the stage")
    return StageBatch.objects.get()


def test_the_pipeline_page_lists_dead_letters_and_an_operator_retries_one(client, acme, dead_letter):
    operator = make_user("olive", acme, "operator")
    client.force_login(operator)
    page = client.get("/p/acme/pipeline/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f"/p/acme/traces/{dead_letter.trace_ids[0]}/" in text
    assert "RuntimeError: this trace breaks the stage" in text
    response = client.post(f"/p/acme/pipeline/dead-letters/{dead_letter.pk}/retry/")
    assert response.status_code == 302
    dead_letter.refresh_from_db()
    assert (dead_letter.state, dead_letter.attempts) == (StageBatch.State.PENDING, 0)
    audit = AuditRecord.objects.get(action="pipeline.retry")
    assert audit.actor == operator and audit.detail["trace_ids"] == dead_letter.trace_ids


def test_a_viewer_cannot_retry_a_dead_letter(client, bob, dead_letter):
    client.force_login(bob)
    assert b"Retry</button>" not in client.get("/p/acme/pipeline/").content
    client.post(f"/p/acme/pipeline/dead-letters/{dead_letter.pk}/retry/")
    dead_letter.refresh_from_db()
    assert dead_letter.state == StageBatch.State.DEAD
    assert not AuditRecord.objects.filter(action="pipeline.retry").exists()


def test_another_projects_dead_letter_is_not_found(client, charlie, dead_letter):
    client.force_login(charlie)
    assert client.post(f"/p/globex/pipeline/dead-letters/{dead_letter.pk}/retry/").status_code == 404


@override_settings(TRACE_QUIET_SECONDS=5.0)
def test_the_traces_list_shows_how_far_behind_analysis_is(client, alice, acme, clock):
    stored_quiet(acme, 3)
    Trace.objects.filter(trace_id=f"{1:032x}").update(last_received_at=timezone.now() - timedelta(seconds=42))
    Trace.objects.filter(trace_id=f"{2:032x}").update(last_received_at=timezone.now() - timedelta(seconds=20),
                                                       state=Trace.State.COMPLETE)
    client.force_login(alice)
    text = client.get("/p/acme/traces/").content.decode()
    assert "Analysis lag <strong>42 s</strong>" in text and "2 traces waiting for analysis" in text
    Trace.objects.update(state=Trace.State.ANALYSED)
    assert "Analysis is up to date" in client.get("/p/acme/traces/").content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_pipeline_page_in_a_browser(page, live_server, acme, alice, dead_letter, tmp_path):
    # The one wall-clock read: a lease 30 s ahead of the page's own now(), whatever the date or time of day
    # (the browser tests run on the real clock, see conftest.clock).
    StageHolder.objects.create(project=acme, stage="analysis", worker="analysis1@host",
                               until=timezone.now() + timedelta(seconds=30))
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/p/acme/pipeline/")
    assert page.locator("table.dead-letters tbody tr").count() == 1
    runs_on = page.locator("table.stages tbody tr td:nth-child(3)").all_inner_texts()
    assert runs_on == ["analysis1@host (holds the window)", "any worker", "any worker", "any worker"]
    page.screenshot(path=str(tmp_path / "pipeline.png"), full_page=True)
    page.click("table.dead-letters button")
    page.wait_for_load_state("networkidle")
    assert "will go through analysis again" in page.locator("ul.messages").inner_text()
    page.goto(f"{live_server.url}/p/acme/traces/")
    assert "Analysis lag" in page.locator("#analysis-lag").inner_text()
    page.screenshot(path=str(tmp_path / "traces.png"), full_page=True)


# --- a real worker, killed ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(PIPELINE_LEASE_SECONDS=2.0)
def test_a_worker_killed_mid_analysis_leaves_the_findings_stored_once_in_the_end(acme, tmp_path):
    spans = agent_world(random.Random(11), turns=2500)
    spans_store(project_id=acme.pk, spans=spans)
    quiet_traces_hand_on(quiet_seconds=0)
    first = worker(celery_env(**WORKER_SETTINGS), tmp_path, "first")
    with running(first):
        wait_for(lambda: StageBatch.objects.filter(stage="analysis", state=StageBatch.State.RUNNING).exists(), 120,
                 f"the first worker to claim the analysis (see {tmp_path}/first.log)")
        with writes_held(Finding):  # no analysis can store its findings until the block ends
            time.sleep(1.0)  # it analyses, then waits to store its findings
            first.sigkill()
    killed = set(StageBatch.objects.filter(stage="analysis").values_list("state", "attempts"))
    assert killed == {(StageBatch.State.RUNNING, 1)}, "it died holding the analysis"
    assert not Finding.objects.exists()
    with running(worker(celery_env(**WORKER_SETTINGS), tmp_path, "second")):
        def settled():
            batches_nudge_due()  # what beat's sweep does every 2 s
            return not Trace.objects.exclude(state=Trace.State.ANALYSED).exists()

        wait_for(settled, 180, f"the second worker to finish the pipeline (see {tmp_path}/second.log)", every=0.5)
    expected = sorted((f.kind, f.key, tuple(f.span_ids)) for f in analyse(spans))
    stored = sorted((f.kind, f.key, tuple(f.span_ids)) for f in Finding.objects.exclude(status=Finding.Status.WITHDRAWN))
    assert stored == expected
    assert Finding.objects.count() == len(expected), "each finding stored once"


@pytest.mark.django_db(transaction=True)
def test_a_worker_takes_the_later_stages_of_begun_traces_before_the_next_analysis(acme, tmp_path):
    # A trace's findings count as fresh once its last stage has run; with the stages taken in arrival
    # order each later stage of a batch waited behind the next batch's analysis (seconds each, under load).
    with own_redis(tmp_path) as redis:
        env = celery_env(CELERY_BROKER_URL=redis.url, ALERT_EVAL_INTERVAL_SECONDS="3600", ROLLOUT_TICK_SECONDS="3600")
        # Queued in pipeline order, as a busy worker leaves them: the next batch's analysis first.
        manage(env, "shell", "-c", "from governance.pipeline.services import stage_nudge\n"
                                   "from governance.pipeline.stages import STAGES\n"
                                   f"for stage in STAGES: stage_nudge(stage=stage, project_id={acme.pk})")
        late = worker(env, tmp_path, "late")
        with running(late):
            def ran() -> list[str]:
                return re.findall(r"task pipeline\.(\w+) ok", late.log_path.read_text())

            wait_for(lambda: len(ran()) == len(STAGES), 60, f"the worker to run every stage (see {tmp_path}/late.log)")
    assert ran() == [stage.name for stage in reversed(STAGES)]


@pytest.mark.django_db(transaction=True)
def test_a_projects_analysis_stays_on_the_worker_that_holds_its_window_while_another_is_idle(acme, alice, client,
                                                                                               tmp_path):
    # The analysis keeps the project's window in the worker that ran it; a second worker taking a run
    # over read the whole window again (12 s at 550,000 spans in bench/pipeline.py --workers 2).
    with own_redis(tmp_path) as redis:
        env = celery_env(CELERY_BROKER_URL=redis.url, ALERT_EVAL_INTERVAL_SECONDS="3600", ROLLOUT_TICK_SECONDS="3600")
        one, two = worker(env, tmp_path, "one"), worker(env, tmp_path, "two")
        with running(one, two):
            for round_ in range(8):
                spans_store(project_id=acme.pk, spans=[a_span(100 * round_ + n) for n in range(1, 4)])
                manage(env, "shell", "-c", "from governance.pipeline.services import quiet_traces_hand_on\n"
                                           "quiet_traces_hand_on(quiet_seconds=0)")
                wait_for(lambda: not Trace.objects.exclude(state=Trace.State.ANALYSED).exists(), 60,
                         f"round {round_} through the pipeline (see {tmp_path})", every=0.1)

    def analyses(process) -> int:
        return len(re.findall(r"task pipeline\.analysis ok", process.log_path.read_text()))

    assert sorted([analyses(one), analyses(two)]) == [0, 8]
    # The Pipeline page says where the project's analysis runs.
    holder = "one" if analyses(one) else "two"
    client.force_login(alice)
    assert re.search(rf"<code>{holder}@[^<]+</code> <span[^>]*>\(holds the window\)", client.get("/p/acme/pipeline/")
                     .content.decode())
