"""Findings do not depend on when spans arrive: whenever the pipeline has settled, the open findings
stored equal what `analyse` (check_traces) reports over the same spans, for any split of the spans
into arrival groups that each went quiet before the next came. Driven through the real tasks:
the sweep, then each stage's task, run eagerly in this process."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django.test import Client

from governance.celery import app
from governance.models import Project
from governance.pipeline import services
from governance.pipeline.models import StageBatch
from governance.pipeline.stages import STAGES
from governance.pipeline.tasks import sweep
from tests.conftest import api_as, make_user
from tests.worlds import MS, T0, agent_world
from traces.analysis import analyse
from traces.ingest import spans_store
from traces.models import Finding, Trace
from traces.records import KIND_PRODUCER, KIND_SERVER, Link, make_span


@pytest.fixture(autouse=True)
def eager_tasks(settings):
    """Traces are quiet at once, and the tasks the pipeline queues run at once, in this process
    (the same code a worker runs)."""
    settings.TRACE_QUIET_SECONDS = 0.0
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def new_project() -> Project:
    slug = uuid.uuid4().hex[:12]
    return Project.objects.create(name=slug, slug=slug)


def settle(project) -> None:
    """What happens once the spans have been quiet for the quiet period: beat's sweep, and the
    stage tasks it queues (eager here)."""
    for _ in range(20):
        sweep()
        if not StageBatch.objects.filter(project=project).exists():
            break
    assert not StageBatch.objects.filter(project=project).exists(), "the pipeline settled"
    assert not Trace.objects.filter(project=project).exclude(state=Trace.State.ANALYSED).exists()


def stored(project) -> list[tuple]:
    return sorted((f.kind, f.key, tuple(f.span_ids))
                  for f in Finding.objects.filter(project=project).exclude(status=Finding.Status.WITHDRAWN))


def expected(spans) -> list[tuple]:
    return sorted((f.kind, f.key, f.span_ids) for f in analyse(spans))


def arrive_in_groups(project, groups) -> None:
    """Each group is stored, goes quiet and is analysed before the next arrives; after each, the
    stored findings are those of every span so far."""
    so_far = []
    for group in groups:
        spans_store(project_id=project.pk, spans=group)
        so_far += group
        settle(project)
        assert stored(project) == expected(so_far)


pytestmark = pytest.mark.django_db(transaction=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), turns=st.integers(2, 14), groups=st.integers(1, 4),
       by_trace=st.booleans())
def test_the_stored_findings_match_check_traces_for_any_arrival_split(seed, turns, groups, by_trace):
    rng = random.Random(seed)
    spans = agent_world(rng, turns=turns, agents=3, keys=2)
    if by_trace:  # whole traces arrive late
        traces = sorted({s.trace_id for s in spans})
        group_of = {t: rng.randrange(groups) for t in traces}
        split = [[s for s in spans if group_of[s.trace_id] == g] for g in range(groups)]
    else:  # any span may arrive late, apart from the rest of its trace
        split = [[] for _ in range(groups)]
        for s in spans:
            split[rng.randrange(groups)].append(s)
    arrive_in_groups(new_project(), [g for g in split if g])


def test_busier_worlds_split_at_random_match_check_traces():
    for seed in range(3):
        rng = random.Random(seed)
        spans = agent_world(rng, turns=120, agents=5, keys=4)
        rng.shuffle(spans)
        cuts = sorted(rng.sample(range(1, len(spans)), 3))
        arrive_in_groups(new_project(), [spans[a:b] for a, b in zip([0, *cuts], [*cuts, len(spans)])])


# --- the two cases the issue measured ---------------------------------------------------------------------------------


def span(trace: str, span_id: str, agent: str, name: str, start_ms: int, end_ms: int, *, parent="", kind=0,
         links=(), **attributes):
    return make_span(trace_id=trace * 32, span_id=span_id * 16, parent_span_id=parent * 16 if parent else "",
                     name=name, kind=kind or 1, start_ns=T0 + start_ms * MS, end_ns=T0 + end_ms * MS,
                     attributes=attributes, links=tuple(Link(t * 32, s * 16) for t, s in links),
                     resource_attributes={"service.name": "agents", "service.instance.id": f"proc-{agent}",
                                          "gen_ai.agent.id": agent})


def test_late_spans_on_a_third_trace_withdraw_a_race_between_two_others_and_say_why():
    """A writes the key and publishes; B, having consumed C's message, writes the key blindly. C's
    trace (it consumed A's message and published the one B consumed) arrives after the first two
    were analysed: it orders A's write before B's, so the race found without it is withdrawn."""
    project = new_project()
    a = [span("a", "1", "A", "turn", 0, 50, kind=KIND_SERVER),
         span("a", "2", "A", "write", 5, 10, parent="1", **{"state.key": "ledger", "state.op": "write",
                                                            "state.version": 2}),
         span("a", "3", "A", "publish", 12, 13, parent="1", kind=KIND_PRODUCER)]
    b = [span("b", "4", "B", "turn", 40, 90, kind=KIND_SERVER, links=[("c", "6")]),
         span("b", "5", "B", "write", 45, 50, parent="4", **{"state.key": "ledger", "state.op": "write",
                                                             "state.version": 3})]
    c = [span("c", "7", "C", "turn", 20, 35, kind=KIND_SERVER, links=[("a", "3")]),
         span("c", "6", "C", "publish", 25, 26, parent="7", kind=KIND_PRODUCER)]
    arrive_in_groups(project, [a + b])
    race = Finding.objects.get(project=project)
    assert race.kind == "write_race" and race.status == Finding.Status.OPEN
    arrive_in_groups(project, [c])
    race.refresh_from_db()
    assert race.status == Finding.Status.WITHDRAWN and race.withdrawn_at is not None
    assert "publish" in race.withdrawn_reason and "c" * 32 in race.withdrawn_reason, race.withdrawn_reason
    # People see it as withdrawn, with the reason, in the API and on the findings page.
    viewer = make_user(f"viewer-{project.slug}", project)
    [listed] = api_as(viewer).get(f"/api/v1/findings/?project={project.slug}&status=withdrawn").json()["results"]
    assert listed["id"] == race.pk and listed["withdrawn_reason"] == race.withdrawn_reason
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/p/{project.slug}/findings/?status=withdrawn").content.decode()
    assert "Later spans ordered these accesses" in page


def test_program_order_through_traces_that_touch_no_key_is_followed(monkeypatch):
    """A's write and B's write are ordered through traces that touch no key and that B's trace
    does not link to: A's next turn on the same thread publishes a message C consumes; C's next
    turn on its thread publishes the one B consumes. Analysed one trace per run, or each trace
    arriving on its own, there is no race."""
    thread = {"thread.id": "1"}
    a = [span("a", "1", "A", "turn 1", 0, 10, kind=KIND_SERVER, **thread),
         span("a", "2", "A", "write", 2, 4, parent="1", **thread, **{"state.key": "k", "state.op": "write",
                                                                     "state.version": 2})]
    d = [span("d", "3", "A", "turn 2", 20, 30, kind=KIND_SERVER, **thread),
         span("d", "4", "A", "publish", 22, 23, parent="3", kind=KIND_PRODUCER, **thread)]
    e = [span("e", "5", "C", "turn 1", 31, 35, kind=KIND_SERVER, links=[("d", "4")], **thread)]
    f = [span("f", "6", "C", "turn 2", 40, 45, kind=KIND_SERVER, **thread),
         span("f", "7", "C", "publish", 41, 42, parent="6", kind=KIND_PRODUCER, **thread)]
    b = [span("b", "8", "B", "turn", 50, 60, kind=KIND_SERVER, links=[("f", "7")]),
         span("b", "9", "B", "write", 52, 54, parent="8", **{"state.key": "k", "state.op": "write",
                                                             "state.version": 3})]
    every = a + d + e + f + b
    assert expected(every) == [] and expected(a + b) != [], "the chains order the writes"
    arrive_in_groups(new_project(), [a, d, e, f, b])
    # All at once, in runs of one trace each.
    monkeypatch.setattr(services, "BATCH_TRACES", 1)
    project = new_project()
    spans_store(project_id=project.pk, spans=every)
    services.quiet_traces_hand_on(quiet_seconds=0)
    one_trace = replace(STAGES[0], max_traces=1)
    while StageBatch.objects.filter(project=project, stage="analysis").exists():
        services.stage_run(stage=one_trace, project_id=project.pk)
    assert stored(project) == []


def test_a_trace_reopened_at_the_same_instant_is_read_again_not_taken_from_the_run_before(clock):
    """The analysis keeps the quiet traces it read for its next run. With the clock stopped, a trace
    that a late span reopens is completed again at the same instant: it must still be read again (its
    span count changed), or the late write's race would never be found."""
    project = new_project()
    first = [span("a", "1", "A", "turn", 0, 50, kind=KIND_SERVER),
             span("a", "2", "A", "write", 5, 10, parent="1", **{"state.key": "ledger", "state.op": "write",
                                                                "state.version": 2})]
    late = [span("a", "3", "B", "write", 6, 9, parent="1", **{"state.key": "ledger", "state.op": "write",
                                                              "state.version": 3})]
    spans_store(project_id=project.pk, spans=first)
    settle(project)
    assert stored(project) == []
    completed = Trace.objects.get(project=project).completed_at
    spans_store(project_id=project.pk, spans=late)
    settle(project)
    assert Trace.objects.get(project=project).completed_at == completed, "completed again at the same instant"
    assert stored(project) == expected(first + late) and [kind for kind, _, _ in stored(project)] == ["write_race"]


def test_traces_that_leave_the_horizon_are_dropped_from_the_window_and_the_findings_stay_right(settings):
    # The worker's window only grows; once a quarter of it has left the runs' range it is built
    # afresh from the traces in range, those it held already included (traces.services._QuietSpans).
    from traces.services import quiet_spans

    settings.ANALYSIS_HORIZON_SECONDS = 1.0
    project = new_project()
    groups = []
    for g in range(4):
        # Worlds of about 150 ms, 0.8 s apart in event time: a world's range (1 s either side) holds the
        # world before it, not the one before that. Each has its own traces and keys, so the findings
        # are each world's own, wherever the window's edges fall.
        def own(text: str, g=g) -> str:
            return f"g{g}:{text}" if text else text

        world = agent_world(random.Random(g), turns=40, t0=T0 + g * 800 * MS)
        groups.append([replace(s, trace_id=f"{g}{s.trace_id[1:]}", state_key=own(s.state_key),
                               idempotency_key=own(s.idempotency_key), lock_name=own(s.lock_name),
                               links=tuple(replace(link, trace_id=f"{g}{link.trace_id[1:]}") for link in s.links))
                       for s in world])
    for g, group in enumerate(groups):
        spans_store(project_id=project.pk, spans=group)
        settle(project)
        window, _ = quiet_spans._windows[project.pk]
        # The first two worlds in one window; from the third on, the world two back has left the range
        # and was dropped, and the world before was carried over from the window, not read again.
        assert len(window) == len(group) + (len(groups[g - 1]) if g else 0)
        assert stored(project) == sorted(f for done in groups[:g + 1] for f in expected(done))
