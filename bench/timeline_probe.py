"""How long the server takes to build a big trace's timeline.

    .venv/bin/python bench/timeline_probe.py            # 10k and 50k spans, records only
    DEBUG=true .venv/bin/python bench/timeline_probe.py --view   # also the whole page on a test DB

`measure_timeline_10k_ms()` times what the trace page does after loading the spans:
timeline data (critical path, clock skew, causal edges, lanes), the Plotly figure and
the JSON put in the page. `measure_view_10k_ms()` times the whole trace page with the
Django test client on a database holding a stored 10,000-span trace.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import unique_name
from traces.records import KIND_CLIENT, KIND_CONSUMER, KIND_INTERNAL, KIND_PRODUCER, KIND_SERVER, Link, make_span

SERVICES = {  # service -> instances; each instance runs a few agents
    "planner": ["planner-1"],
    "researcher": ["researcher-1", "researcher-2"],
    "booking": ["booking-1", "booking-2", "booking-3"],
    "billing": ["billing-1", "billing-2"],
}
SKEWED_INSTANCE = "booking-2"  # its clock runs 120 ms ahead


def make_trace(n_spans: int = 10_000, *, trace_id: str = "ab" * 16, seed: int = 7, t0_ns: int | None = None):
    """A realistic multi-agent trace of about n_spans spans: a planner fans tasks out over RPC
    to agents of three services (two to three agents per process), each task reads and writes
    shared state, calls a model and a tool, sometimes takes a lock, charges once
    (idempotency), and hands a message to the next agent (producer -> consumer link)."""
    rnd = random.Random(seed)
    t0 = t0_ns if t0_ns is not None else 1_760_000_000_000_000_000
    ids = iter(range(1, 10**9))

    def sid() -> str:
        return f"{next(ids):016x}"

    resources = {}
    workers = []
    for service, instances in SERVICES.items():
        for instance in instances:
            for k in range(1 if service == "planner" else 3):
                agent = f"{service}-agent-{instance[-1]}{'abc'[k]}"
                resources[agent] = {"service.name": service, "service.version": "1.4.2",
                                    "service.instance.id": instance, "gen_ai.agent.id": agent}
                if service != "planner":
                    workers.append(agent)
    planner = "planner-agent-1a"
    spans = []
    root_id = sid()
    versions: dict[str, int] = {}
    n_tasks = max(1, (n_spans - 1) // 10)
    end_all = t0 + n_tasks * 2_000_000 + 400_000_000
    spans.append(make_span(trace_id=trace_id, span_id=root_id, name="plan trip", start_ns=t0, end_ns=end_all,
                           kind=KIND_SERVER, attributes={"gen_ai.operation.name": "invoke_agent"},
                           resource_attributes=resources[planner]))
    last_producer = None
    for task in range(n_tasks):
        agent = workers[task % len(workers)]
        res = resources[agent]
        skew = 120_000_000 if res["service.instance.id"] == SKEWED_INSTANCE else 0
        start = t0 + 1_000_000 + task * 2_000_000
        dur = rnd.randint(40, 200) * 1_000_000
        client = sid()
        spans.append(make_span(trace_id=trace_id, span_id=client, parent_span_id=root_id, name=f"call {agent}",
                               start_ns=start, end_ns=start + dur, kind=KIND_CLIENT,
                               attributes={"rpc.system": "grpc", "task.id": task},
                               resource_attributes=resources[planner]))
        s0 = start + 500_000 + skew
        server = sid()
        spans.append(make_span(trace_id=trace_id, span_id=server, parent_span_id=client, name="handle task",
                               start_ns=s0, end_ns=s0 + dur - 1_000_000, kind=KIND_SERVER,
                               attributes={"task.id": task}, resource_attributes=res))
        t = s0 + 200_000
        key = f"order/{task % 97}"
        v = versions.get(key, 0)
        step = (dur - 3_000_000) // 8
        children = [
            ("read order", {"state.key": key, "state.op": "read", "state.version": v}, KIND_INTERNAL),
            ("chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                             "gen_ai.usage.input_tokens": rnd.randint(200, 4000)}, KIND_CLIENT),
            ("tool search_flights", {"gen_ai.tool.name": "search_flights"}, KIND_INTERNAL),
            ("write order", {"state.key": key, "state.op": "write", "state.version": v + 1,
                             "state.base_version": v}, KIND_INTERNAL),
            ("charge card", {"idempotency.key": f"charge/{task}", "idempotency.outcome": "executed"}, KIND_CLIENT),
            ("hold lock", {"lock.name": f"inventory/{task % 13}", "lock.fencing_token": task + 1}, KIND_INTERNAL),
            ("publish handoff", {"messaging.system": "kafka", "messaging.operation.type": "send"}, KIND_PRODUCER),
            ("consume handoff", {"messaging.system": "kafka", "messaging.operation.type": "process"}, KIND_CONSUMER),
        ]
        versions[key] = v + 1
        for name, attributes, kind in children:
            span_id = sid()
            links = ()
            if kind == KIND_CONSUMER and last_producer is not None:
                links = (Link(trace_id, last_producer),)
            spans.append(make_span(trace_id=trace_id, span_id=span_id, parent_span_id=server, name=name,
                                   start_ns=t, end_ns=t + step - 100_000, kind=kind,
                                   attributes={**attributes, "thread.id": "main"}, resource_attributes=res,
                                   links=links,
                                   events=[{"name": "log", "time_ns": t + 1000, "attributes": {"msg": name}}]))
            if kind == KIND_PRODUCER:
                last_producer = span_id
            t += step
    while len(spans) < n_spans:  # top up with model calls under the root
        start = t0 + rnd.randint(0, n_tasks * 2_000_000)
        spans.append(make_span(trace_id=trace_id, span_id=sid(), parent_span_id=root_id, name="chat gpt-4o-mini",
                               start_ns=start, end_ns=start + 3_000_000, kind=KIND_CLIENT,
                               attributes={"gen_ai.request.model": "gpt-4o-mini"},
                               resource_attributes=resources[planner]))
    return spans[:n_spans]


def _build_page_payload(spans, findings=()):
    from traces.timeline import figure_build, timeline_build, timeline_json

    data = timeline_build(spans, findings=findings)
    data["figure"] = figure_build(data)
    return timeline_json(data)


def measure_timeline_ms(n_spans: int, repeat: int = 3) -> float:
    """Median server time (ms) to build the timeline data, figure and page JSON for n spans."""
    spans = make_trace(n_spans)
    findings = [{"id": 1, "kind": "lost_update", "key": "order/3", "detail": "two writes based on v0",
                 "status": "open", "span_ids": [spans[5].span_id, spans[25].span_id],
                 "trace_ids": [spans[0].trace_id], "agents": []}]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        _build_page_payload(spans, findings)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure_timeline_10k_ms() -> float:
    return measure_timeline_ms(10_000)


def measure_view_10k_ms(repeat: int = 3) -> float:
    """The whole trace page (DB read included) with the Django test client, on a fresh test database."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    django.setup()
    from django.conf import settings
    from django.test import Client
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment()
    # A database of its own, so a probe never drops the test database of a pytest run.
    db = settings.DATABASES["default"]
    db.setdefault("TEST", {})["NAME"] = (
        str(Path(settings.DATA_DIR) / f"{unique_name('bench_timeline')}.sqlite3") if db["ENGINE"].endswith("sqlite3")
        else unique_name("test_causeway_timeline_bench"))
    old = setup_databases(verbosity=0, interactive=False)
    try:
        from django.contrib.auth import get_user_model

        from governance.models import Membership, Project, Role
        from traces.ingest import spans_store

        project = Project.objects.create(name="Bench", slug="bench")
        user = get_user_model().objects.create_user(username="bench", password="bench-password")
        Membership.objects.create(user=user, project=project, role=Role.ADMIN)
        spans = make_trace(10_000)
        spans_store(project_id=project.pk, spans=spans)
        client = Client()
        client.force_login(user)
        url = f"/p/bench/traces/{spans[0].trace_id}/"
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200, response.status_code
        print(f"page size {len(response.content) / 1e6:.1f} MB on {settings.DATABASES['default']['ENGINE']}")
        return statistics.median(times)
    finally:
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    print(f"timeline 10k spans: {measure_timeline_10k_ms():.0f} ms")
    print(f"timeline 50k spans: {measure_timeline_ms(50_000, repeat=1):.0f} ms")
    if "--view" in sys.argv:
        print(f"trace page, 10k stored spans: {measure_view_10k_ms():.0f} ms")
