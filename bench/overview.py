"""The overview page's and the trace search's server time on a project with 10 million spans, on PostgreSQL.

    .venv/bin/python bench/overview.py [--spans 10000000] [--days 28] [--requests 20]

It creates a PostgreSQL database of its own (a unique name on DATABASE_URL's server, else the local
one), migrates it and drops it at the end. The data is written by PostgreSQL itself in bulk
(INSERT ... SELECT over generate_series, in chunks; the span table's secondary indexes are built after
the load, as a restore does), not sent through ingest: what is timed is the page, not the loading.

The project: --spans spans over --days days, evenly (about 250 a minute at the defaults), in traces
of 10 spans, 40 agents of 20 services on two versions each, a fifth of the spans writing state keys;
a trace summary per trace, all analysed but the last few; 5,000 findings of six kinds, most open;
20,000 policy violations of 4 policies over the window; 100 SLOs with statuses as the tick stores
them; 20 firing alerts. Each request is a GET of /p/<slug>/ by a logged-in admin through Django's
test client, in this process: server time (views, queries, templates), no network. After two warm-up
requests, --requests are timed. Then the trace search page (/p/<slug>/traces/) is timed the same way with
each of SEARCHES; its figure is the median of the slowest search (its target is the page target, 300 ms).

The span table is partitioned by day as in production (traces.partitions): the days of the window are
created before the load. The last line is JSON {"overview_ms": the median, "p95_ms", "trace_search_ms", ...}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import statistics
import tempfile
import time

from bench.databases import own_postgres_database

NS_PER_DAY = 86400 * 10**9
CHUNK = 1_000_000
# The trace search page with the filters people use: the newest traces, by span name (which reads spans),
# by state key (the span index), by service and agent (trace summaries), by duration over the whole window.
SEARCHES = {
    "newest": "",
    "name_last_hour": "?name=charge&last=1h",
    "state_key_last_day": "?state_key=ledger/9&last=24h",
    "service_agent": "?service=svc-3&agent=agent-3",
    "slowest_first": "?sort=duration",
}
KINDS = ["lost_update", "write_race", "stale_read", "duplicate_side_effect", "lock_overlap", "orphan_span"]

SPANS_SQL = """
INSERT INTO traces_span (project_id, trace_id, span_id, parent_span_id, name, kind, service_name, service_version,
    instance_id, agent, thread_id, start_ns, end_ns, duration_ns, status_code, status_message, state_key, state_op,
    state_version, state_base_version, state_conflict, idempotency_key, idempotency_outcome, lock_name,
    lock_fencing_token, attributes, events, links, resource_attributes, scope_name, scope_version,
    resource_schema_url, scope_schema_url)
SELECT %(project)s, lpad(to_hex(i / 10 + 1), 32, '0'), lpad(to_hex(i + 1), 16, '0'),
    CASE WHEN i %% 10 = 0 THEN '' ELSE lpad(to_hex(i - i %% 10 + 1), 16, '0') END,
    (ARRAY['plan', 'call tool', 'charge', 'lookup', 'write'])[i %% 5 + 1], 1,
    'svc-' || ((i / 10) %% 20), CASE WHEN (i / 10) %% 3 = 0 THEN '1.1.0' ELSE '1.0.0' END,
    'svc-' || ((i / 10) %% 20) || '-1', 'agent-' || ((i / 10) %% 40), 't' || (i %% 4),
    %(first)s + i * %(step)s::bigint, %(first)s + i * %(step)s::bigint + 27000000, 27000000,
    CASE WHEN i %% 2000 = 0 THEN 2 ELSE 1 END, '',
    CASE WHEN i %% 5 = 4 THEN 'ledger/' || (i %% 1000) ELSE '' END, CASE WHEN i %% 5 = 4 THEN 'write' ELSE '' END,
    NULL, NULL, false, '', '', '', NULL, '{}'::jsonb, '[]'::jsonb, '[]'::jsonb, '{}'::jsonb, 'bench', '', '', ''
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
"""

TRACES_SQL = """
INSERT INTO traces_trace (project_id, trace_id, root_name, root_span_id, services, agents, span_count, error_count,
    start_ns, end_ns, last_received_at, state, completed_at, analysed_at)
SELECT %(project)s, lpad(to_hex(t + 1), 32, '0'), 'plan', lpad(to_hex(t * 10 + 1), 16, '0'),
    '|svc-' || (t %% 20) || '|', '|agent-' || (t %% 40) || '|', 10, 0,
    %(first)s + t * 10 * %(step)s::bigint, %(first)s + t * 10 * %(step)s::bigint + 10 * %(step)s::bigint,
    to_timestamp((%(first)s + t * 10 * %(step)s::bigint) / 1e9),
    CASE WHEN t >= %(traces)s - 5 THEN 'complete' ELSE 'analysed' END,
    to_timestamp((%(first)s + t * 10 * %(step)s::bigint) / 1e9),
    CASE WHEN t >= %(traces)s - 5 THEN NULL ELSE to_timestamp((%(first)s + t * 10 * %(step)s::bigint) / 1e9) END
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS t
"""

FINDINGS_SQL = """
INSERT INTO traces_finding (project_id, kind, key, trace_ids, span_ids, agents, detail, fingerprint, status,
    first_ns, created_at, withdrawn_reason)
SELECT %(project)s, (ARRAY%(kinds)s)[f %% 6 + 1], 'ledger/' || (f %% 1000), '[]'::jsonb, '[]'::jsonb,
    '|agent-' || (f %% 40) || '|', 'bench finding', md5(f::text),
    CASE WHEN f %% 7 = 0 THEN 'acknowledged' ELSE 'open' END,
    %(first)s + f::bigint * (%(span)s / 5000), now(), ''
FROM generate_series(0, 4999) AS f
"""

VIOLATIONS_SQL = """
INSERT INTO policies_violation (project_id, policy_id, version_id, rule_id, rule_kind, trace_id, span_id, agent,
    service, reason, start_ns, enforced, created_at)
SELECT %(project)s, (%(policies)s)[v %% 4 + 1], (%(versions)s)[v %% 4 + 1], 'owner', 'single_writer',
    lpad(to_hex(v + 1), 32, '0'), lpad(to_hex(v + 1), 16, '0'), 'agent-' || (v %% 40), 'svc-' || (v %% 20),
    'bench violation', %(first)s + v::bigint * (%(span)s / 20000), v %% 3 = 0, now()
FROM generate_series(0, 19999) AS v
"""

POLICY = """\
policy: {name}
rules:
  - id: owner
    kind: single_writer
    key: "ledger/{name}/*"
    writer: ledger-agent
"""


def load(*, project, actor, spans: int, days: int, now_ns: int) -> None:
    from django.db import connection

    from governance.slo.models import Alert, Sli, Slo
    from policies.services import policy_create
    from traces import partitions

    first = now_ns - days * NS_PER_DAY
    step = days * NS_PER_DAY // spans
    base = {"project": project.pk, "first": first, "step": step}
    created = partitions.partitions_create(partitions.days_between(first, now_ns))
    print(f"  {len(created)} day partitions created for the window (a span table of "
          f"{len(partitions.partitions_list())} days)", flush=True)
    with connection.cursor() as cursor:
        # The secondary indexes are built once after the load (as a restore does), not row by row.
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'traces_span' "
                       "AND indexname NOT LIKE '%%pkey'")
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for lo in range(0, spans, CHUNK):
            began = time.perf_counter()
            cursor.execute(SPANS_SQL, {**base, "lo": lo, "hi": min(spans, lo + CHUNK) - 1})
            print(f"  spans {min(spans, lo + CHUNK):,} of {spans:,} ({time.perf_counter() - began:.0f}s)", flush=True)
        for _, definition in indexes:
            # A partitioned table's index is defined "ON ONLY" the table, which would leave it empty
            # (INVALID) on its partitions: built on the table, it is built on every partition.
            cursor.execute(definition.replace(" ON ONLY ", " ON "))
        traces = (spans + 9) // 10
        for lo in range(0, traces, CHUNK):
            cursor.execute(TRACES_SQL, {**base, "traces": traces, "lo": lo, "hi": min(traces, lo + CHUNK) - 1})
        cursor.execute(FINDINGS_SQL % {"project": project.pk, "kinds": KINDS, "first": first,
                                       "span": days * NS_PER_DAY})
        policies = [policy_create(project=project, source=POLICY.format(name=f"policy-{i}"), actor=actor)
                    for i in range(4)]
        cursor.execute(VIOLATIONS_SQL % {
            "project": project.pk, "first": first, "span": days * NS_PER_DAY,
            "policies": f"ARRAY[{','.join(str(p.pk) for p in policies)}]",
            "versions": f"ARRAY[{','.join(str(p.versions.get().pk) for p in policies)}]"})
    slis = Sli.objects.bulk_create([Sli(project=project, key=f"k{i}", kind="success",
                                        definition={"kind": "success", "match": {"service": f"svc-{i}"}})
                                    for i in range(100)])
    status = {"total": 1000, "good": 999, "sli": 0.999, "budget_remaining": 0.62,
              "tiers": [{"name": "page-fast", "enabled": True, "long_rate": 1.4, "short_rate": 1.1, "factor": 14.4,
                         "active": False},
                        {"name": "ticket", "enabled": True, "long_rate": 0.9, "short_rate": 0.7, "factor": 1,
                         "active": False}]}
    slos = Slo.objects.bulk_create([Slo(project=project, name=f"slo-{i:03d}", sli=sli, objective=0.999,
                                        window_seconds=28 * 86400, tiers={}, status=status)
                                    for i, sli in enumerate(slis)])
    Alert.objects.bulk_create([Alert(project=project, fingerprint=f"{i:016x}", labels={"alertname": f"slo-{i:03d}"},
                                     slo=slo, tier="page-fast", state=Alert.State.FIRING)
                               for i, slo in enumerate(slos[:20])])
    with connection.cursor() as cursor:
        for table in ("traces_span", "traces_trace", "traces_finding", "policies_violation"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def timed_gets(client, url: str, requests: int) -> tuple[list[float], object]:
    """Server times (ms) of `requests` GETs of `url` after two warm-up GETs, and the last response."""
    timings = []
    for i in range(requests + 2):
        began = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - began) * 1000
        assert response.status_code == 200, (url, response.status_code)
        if i >= 2:
            timings.append(elapsed)
    return timings, response


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="print a profile of one request")
    parser.add_argument("--queries", action="store_true",
                        help="print the slowest queries of one request of each page, slowest first")
    args = parser.parse_args()

    with own_postgres_database("causeway_bench_overview") as url, tempfile.TemporaryDirectory() as data_dir:
        os.environ.update({"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "governance.settings", "DEBUG": "true",
                           "CAUSEWAY_DATA_DIR": data_dir, "LOG_LEVEL": "ERROR", "HTTPS": "false"})
        os.environ.pop("CELERY_BROKER_URL", None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client

        from governance.models import Project

        settings.ALLOWED_HOSTS = ["testserver"]
        call_command("migrate", verbosity=0)
        actor = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        project = Project.objects.create(name="bench", slug="bench")
        began = time.perf_counter()
        load(project=project, actor=actor, spans=args.spans, days=args.days, now_ns=time.time_ns())
        print(f"loaded {args.spans:,} spans and the rest in {time.perf_counter() - began:.0f}s (not timed)")

        client = Client()
        client.force_login(actor)
        timings, response = timed_gets(client, "/p/bench/", args.requests)
        searches = {}
        for label, query in SEARCHES.items():
            search_timings, search_response = timed_gets(client, f"/p/bench/traces/{query}", args.requests)
            assert "/p/bench/traces/000" in search_response.content.decode(), f"{label} finds traces"
            searches[label] = round(statistics.median(search_timings), 1)
            print(f"trace search {label}: median {searches[label]:.0f} ms", flush=True)
        if args.queries:
            from django.db import connection
            from django.test.utils import CaptureQueriesContext

            for url in ["/p/bench/", *(f"/p/bench/traces/{query}" for query in SEARCHES.values())]:
                with CaptureQueriesContext(connection) as captured:
                    client.get(url)
                print(url)
                for query in sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:4]:
                    print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:400]}")
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(client.get, "/p/bench/")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        body = response.content.decode()
        assert 'data-agent="agent-' in body and 'data-kind="lost_update"' in body, "the page shows the data"
        median = statistics.median(timings)
        p95 = sorted(timings)[max(0, round(0.95 * len(timings)) - 1)]
        print(f"overview: median {median:.0f} ms, p95 {p95:.0f} ms over {len(timings)} requests "
              f"({args.spans:,} spans; target < 300 ms)")
        print(json.dumps({"overview_ms": round(median, 1), "p95_ms": round(p95, 1),
                          "trace_search_ms": max(searches.values()), "searches_ms": searches, "spans": args.spans,
                          "requests": len(timings)}))


if __name__ == "__main__":
    main()
