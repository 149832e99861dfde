"""One SLO evaluation tick: 100 SLOs over the rollups of 10 million spans in a 28-day window, on PostgreSQL.

    .venv/bin/python bench/slo.py [--spans 10000000] [--slos 100] [--days 28] [--ticks 5] [--seed 7]

It creates a PostgreSQL database of its own (a unique name on DATABASE_URL's server, else the
local one), migrates it and drops it at the end. The rollups are built by the rollup stage's own
counting code (governance.slo.core.sli.rollup, minute by minute over generated spans, then summed
into hours as the stage sums them) and copied into the table, not sent through HTTP and ingest:
what is timed is the tick, which reads rollups only. Building them is not timed.

The spans: 20 services, each with a few span names, about 250 spans a minute for 28 days, 0.05 %
errors, a lognormal latency (median 27 ms), idempotent actions and state writes with some
conflicts, and an incident on three services in the last 30 minutes (so some burn-rate alerts
fire). The SLOs: for each service, success, latency within 250 ms and within 1 s, idempotency and
conflicts, over 28 days, with objectives a healthy service meets. Counting runs in --processes
processes, a day each.

The tick is `evaluate_tick()` as the beat task runs it: window sums for every SLO, statuses,
alert transitions (none after the first tick), notifications. The first tick is printed apart
(it creates the alerts); the last line is JSON: {"tick_s": the median of the others, ...}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import random
import statistics
import tempfile
import time

from bench.databases import own_postgres_database

SERVICES = [f"svc-{i:02d}" for i in range(20)]
NAMES = ["call", "charge", "lookup", "write"]
INCIDENT_SERVICES = SERVICES[:3]
INCIDENT_MINUTES = 30
BASE_ERRORS = 0.0005
LATENCIES_MS = 4096  # a pool of lognormal latencies (median 27 ms), drawn from at random


def slo_definitions() -> list[tuple[str, float, dict]]:
    """(name, objective, SLI) of five SLOs per service, set so that a healthy service meets them."""
    slos = []
    for service in SERVICES:
        match = {"service": service}
        slos += [
            (f"{service}-success", 0.999, {"kind": "success", "match": match}),
            (f"{service}-fast", 0.99, {"kind": "latency", "match": match, "threshold_ms": 250}),
            (f"{service}-not-slow", 0.999, {"kind": "latency", "match": match, "threshold_ms": 1000}),
            (f"{service}-idempotent", 0.999, {"kind": "idempotency", "match": match}),
            (f"{service}-no-conflicts", 0.95, {"kind": "conflict", "match": match}),
        ]
    return slos


def minute_spans(rng: random.Random, latencies: list[float], minute: int, count: int, incident: bool) -> list:
    from governance.slo.core.sli import NS_PER_MINUTE, SliSpan
    from traces.records import KIND_SERVER, STATUS_ERROR, STATUS_OK

    spans = []
    base = minute * NS_PER_MINUTE
    draw = rng.random
    for i in range(count):
        service = SERVICES[int(draw() * 20)]
        burning = incident and service in INCIDENT_SERVICES
        start = base + int(draw() * NS_PER_MINUTE)
        ms = latencies[int(draw() * LATENCIES_MS)] * (10 if burning else 1)
        error = draw() < (0.3 if burning else BASE_ERRORS)
        roll = draw()
        span = SliSpan(trace_id=f"{minute:016x}{i:016x}", span_id=f"{i:016x}", name=NAMES[i % 4], kind=KIND_SERVER,
                       service_name=service, agent=f"{service}-agent", start_ns=start, end_ns=start + int(ms * 1e6),
                       status_code=STATUS_ERROR if error else STATUS_OK)
        if roll < 0.3:
            span.idempotency_key, span.idempotency_outcome = f"op/{minute}/{i}", "executed"
        elif roll < 0.5:
            span.state_op, span.state_conflict = "write", draw() < (0.3 if burning else 0.01)
        spans.append(span)
    return spans


COLUMNS = "sli_id, width, start, good, total, value_sum, hist, examples"


def _row(sli_id, width, start, c) -> tuple:
    return (sli_id, width, start, c.good, c.total, c.value_sum, json.dumps({str(k): v for k, v in c.hist.items()}),
            json.dumps(c.examples))


def count_day(task: tuple) -> tuple[int, int]:
    """Count one day of generated spans with the stage's code, minute by minute, sum the hours as the stage
    does, and copy the rows in. Runs in a worker process with its own connection."""
    from django.db import connection

    from governance.slo.core.sli import MinuteCounts, hist_merge, rollup

    slis, first, last, per_minute, incident_from, seed = task
    rng = random.Random(seed)
    latencies = [rng.lognormvariate(3.3, 0.8) for _ in range(LATENCIES_MS)]
    plans: dict = {}
    counted, rows = 0, []
    hours: dict[tuple, MinuteCounts] = {}
    for minute in range(first, last + 1):
        count = int(per_minute) + (rng.random() < per_minute % 1)
        generated = minute_spans(rng, latencies, minute, count, incident=minute >= incident_from)
        counted += len(generated)
        for (sli_id, _), c in rollup(slis, spans=generated, plans=plans).items():
            rows.append(_row(sli_id, 1, minute, c))
            h = hours.setdefault((sli_id, minute // 60 * 60), MinuteCounts())
            h.good += c.good
            h.total += c.total
            h.value_sum += c.value_sum
            hist_merge(h.hist, c.hist)
            h.examples.extend(c.examples[: 3 - len(h.examples)])
    rows += [_row(sli_id, 60, hour, c) for (sli_id, hour), c in hours.items()]
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY slo_slirollup ({COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    connection.close()
    return counted, len(rows)


def build_rollups(*, slis: dict, spans: int, days: int, seed: int, processes: int) -> tuple[int, int]:
    """Count the generated spans into minute and hour rows, a day (whole hours, so each hour row is whole)
    per task. Returns (spans counted, rows written)."""
    import multiprocessing

    from django.db import connections
    from django.utils import timezone

    now_minute = int(timezone.now().timestamp()) // 60
    first = (now_minute - days * 1440 + 1) // 60 * 60
    per_minute = spans / (now_minute - first + 1)
    tasks = [(slis, start, min(start + 1439, now_minute), per_minute, now_minute - INCIDENT_MINUTES + 1, seed + start)
             for start in range(first, now_minute + 1, 1440)]
    connections.close_all()  # the workers are forked: each opens its own
    counted = rows = 0
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for done, (n, r) in enumerate(pool.imap_unordered(count_day, tasks), start=1):
            counted, rows = counted + n, rows + r
            if done % 7 == 0:
                print(f"  {done} of {len(tasks)} days: {counted:,} spans, {rows:,} rows", flush=True)
    return counted, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--slos", type=int, default=100)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--processes", type=int, default=2, help="processes counting the spans (not timed)")
    args = parser.parse_args()

    with own_postgres_database("causeway_bench_slo") as url, tempfile.TemporaryDirectory() as data_dir:
        os.environ.update({"DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "governance.settings", "DEBUG": "true",
                           "CAUSEWAY_DATA_DIR": data_dir, "LOG_LEVEL": "ERROR"})
        os.environ.pop("CELERY_BROKER_URL", None)  # the new SLIs' backfill messages stay in a broker file of its own
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection

        from governance.models import Project
        from governance.slo.core.sli import Sli as CoreSli
        from governance.slo.evaluation import evaluate_tick
        from governance.slo.models import Alert, SliRollup
        from governance.slo.services import slo_create

        call_command("migrate", verbosity=0)
        actor = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        project = Project.objects.create(name="bench", slug="bench")
        definitions = slo_definitions()[: args.slos]
        started = time.perf_counter()
        slos = [slo_create(project=project, actor=actor, data={"name": name, "objective": objective,
                                                                "window_seconds": args.days * 86400, "sli": sli})
                for name, objective, sli in definitions]
        slis = {slo.sli_id: CoreSli.parse(slo.sli.definition) for slo in slos}
        print(f"{len(slos)} SLOs on {len(slis)} SLIs defined in {time.perf_counter() - started:.1f}s")

        started = time.perf_counter()
        counted, rows = build_rollups(slis=slis, spans=args.spans, days=args.days, seed=args.seed,
                                      processes=args.processes)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE slo_slirollup")
        print(f"counted {counted:,} spans into {rows:,} rollup rows in {time.perf_counter() - started:.0f}s "
              f"(not timed); {SliRollup.objects.filter(width=60).count():,} of them hours")

        timings = []
        for _ in range(args.ticks + 1):
            started = time.perf_counter()
            evaluate_tick()
            timings.append(time.perf_counter() - started)
        firing = Alert.objects.filter(state="firing").count()
        print(f"first tick {timings[0]:.3f}s ({firing} alerts firing); "
              f"then {', '.join(f'{t:.3f}' for t in timings[1:])}s")
        print(json.dumps({"tick_s": round(statistics.median(timings[1:]), 3), "first_tick_s": round(timings[0], 3),
                          "slos": len(slos), "spans": counted, "rollup_rows": rows, "days": args.days,
                          "alerts_firing": firing}))


if __name__ == "__main__":
    main()
