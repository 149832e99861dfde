"""Benchmark of the post-ingest pipeline: how many spans per second it keeps up with, and how stale the
findings are while it does.

    .venv/bin/python bench/pipeline.py                      # search for the highest sustained rate
    .venv/bin/python bench/pipeline.py --rate 8000          # one run at a fixed rate
    .venv/bin/python bench/pipeline.py --workers 2          # with a second Celery worker

Each run (a trial) starts the whole product on services of its own: a PostgreSQL database with a
unique name (bench/databases.py; dropped at the end), a redis-server on a free port in a temporary
directory (so no Redis database number of anyone else is touched; stopped at the end), gunicorn
`governance.wsgi`, `--workers` Celery workers (prefork, concurrency 1, all queues) and Celery beat,
as production runs them. An OTLP/HTTP client then posts bench/ingest.py's traffic (multi-agent turns,
hot state keys written by many agents, locks, idempotency keys, links; 500 spans a request, built
before the clock starts) at a fixed rate for `--duration` seconds (default 60), from a few threads
that each keep one connection, each request sent at its due time (late if the server is slow: then
the rate was not reached and the run does not count as sustained).

Lag, per trace: from the arrival of its last span (`Trace.last_received_at`) to the pipeline having
stored its findings and policy violations (`Trace.analysed_at`, written when the last stage
completes). It includes the quiet period (TRACE_QUIET_SECONDS, 5 s) and the sweep's 2 s tick. After
sending, a run waits up to `--drain` seconds for every trace to be analysed; a trace still waiting
then counts with its lag so far. A rate is sustained when ingest kept to the schedule (within 5 %),
every trace was analysed by the end of the drain and the lag p99 is under `--lag-bound` (15 s).

Without --rate, the search starts at --start-rate, multiplies by 1.5 after a sustained run and
bisects after a failed one, for --trials runs (default 3, under 8 minutes in all with 60 s runs).
The last line is JSON: {"sustained_spans_per_s", "lag_p50_s", "lag_p99_s"} of the best sustained run
(when none was: 0 spans/s and the lags of the slowest rate tried), with "workers" and every trial's figures besides. On stderr: progress, the
load average (other work on the machine lowers the figures) and each run's logs directory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.databases import own_postgres_database
from bench.ingest import RETRYABLE, make_batches
from tests.gunicorn import gunicorn_serving
from tests.processes import beat, own_redis, running, wait_for, worker
from tests.services import manage

SPANS_PER_REQUEST = 500
SENDERS = 6


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the services of one run ------------------------------------------------------------------------------------------


@contextmanager
def product(workers: int):
    """(env, URL, ingest key) of a running web, `workers` Celery workers and beat on services of their own."""
    directory = tempfile.mkdtemp(prefix="causeway-bench-pipeline-")
    with ExitStack() as stack:
        database_url = stack.enter_context(own_postgres_database("causeway_bench_pipeline"))
        broker_url = stack.enter_context(own_redis(directory)).url
        env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url, "DEBUG": "false",
               "HTTPS": "false", "SECRET_KEY": "bench", "CAUSEWAY_DATA_DIR": directory, "LOG_LEVEL": "WARNING",
               "PYTHONPATH": ROOT}
        manage(env, "migrate", "-v0")
        key = manage(env, "create_ingest_key", "bench").strip()
        url, _ = stack.enter_context(gunicorn_serving(
            env=env, log_path=Path(directory) / "gunicorn.log",
            options=("--workers", "3", "--keep-alive", "30", "--backlog", "256", "--timeout", "120")))
        # A warm shutdown would wait for a long analysis run: stopped after 5 s.
        started = [worker(env, directory, f"bench{number}", stop_seconds=5) for number in range(workers)]
        stack.enter_context(running(*started, beat(env, directory, loglevel="WARNING")))
        # Sending starts once every worker's pool process has its compiled kernels (compiled, the first
        # time after an install): a worker in production starts once, not at each burst of traffic.
        wait_for(lambda: all("analysis kernels loaded" in w.log_path.read_text() for w in started), 180,
                 "the workers' analysis kernels")
        say(f"  services up; logs in {directory}")
        yield env, url, key
    say(f"  stopped; logs kept in {directory}")


# --- sending at a fixed rate ------------------------------------------------------------------------------------------


class Schedule:
    """Requests due at fixed intervals; each sender takes the next one and sends it at its due time."""

    def __init__(self, bodies: list[bytes], interval: float):
        self.bodies, self.interval = bodies, interval
        self.next = 0
        self.lock = threading.Lock()
        self.began = 0.0
        self.late = 0.0  # the longest a request went out after its due time
        self.failed = 0

    def take(self) -> tuple[bytes, float] | None:
        with self.lock:
            if self.next >= len(self.bodies):
                return None
            i = self.next
            self.next += 1
        return self.bodies[i], self.began + i * self.interval


def send(url: urllib.parse.SplitResult, key: str, schedule: Schedule) -> None:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    while (taken := schedule.take()) is not None:
        body, due = taken
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            with schedule.lock:
                schedule.late = max(schedule.late, -wait)
        for attempt in range(6):
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            if status == 200:
                break
            if status not in RETRYABLE and status != 0 or attempt == 5:
                with schedule.lock:
                    schedule.failed += 1
                break
            time.sleep(0.5 * 2 ** attempt)
    conn.close()


def send_at_rate(url: str, key: str, bodies: list[bytes], rate: float) -> tuple[float, Schedule]:
    schedule = Schedule(bodies, SPANS_PER_REQUEST / rate)
    target = urllib.parse.urlsplit(url)
    threads = [threading.Thread(target=send, args=(target, key, schedule)) for _ in range(SENDERS)]
    schedule.began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - schedule.began, schedule


# --- measuring --------------------------------------------------------------------------------------------------------


def pipeline_state(database_url: str) -> tuple[int, int, list[float]]:
    """(traces, traces analysed, lag in seconds of each trace: analysed ones to analysed_at, the others so far)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT analysed_at IS NOT NULL, EXTRACT(EPOCH FROM COALESCE(analysed_at, now()) - last_received_at) "
            "FROM traces_trace").fetchall()
    return len(rows), sum(1 for done, _ in rows if done), [float(lag) for _, lag in rows]


def trial(*, rate: float, duration: float, workers: int, drain: float, lag_bound: float, bodies: list[bytes]) -> dict:
    needed = max(1, int(rate * duration / SPANS_PER_REQUEST))
    say(f"trial at {rate:.0f} spans/s for {duration:.0f} s ({needed} requests), {workers} worker(s); "
        f"load average {os.getloadavg()[0]:.1f}")
    with product(workers) as (env, url, key):
        elapsed, schedule = send_at_rate(url, key, bodies[:needed], rate)
        sent_rate = needed * SPANS_PER_REQUEST / elapsed
        deadline = time.monotonic() + drain
        while True:
            traces, analysed, lags = pipeline_state(env["DATABASE_URL"])
            if analysed == traces or time.monotonic() > deadline:
                break
            time.sleep(1)
    p50, p99 = percentile(lags, 0.50), percentile(lags, 0.99)
    kept_schedule = sent_rate >= 0.95 * rate and not schedule.failed
    sustained = kept_schedule and analysed == traces and p99 < lag_bound
    result = {"rate": round(rate), "sent_spans_per_s": round(sent_rate), "traces": traces, "analysed": analysed,
              "lag_p50_s": round(p50, 2), "lag_p99_s": round(p99, 2), "sustained": sustained,
              "failed_requests": schedule.failed, "load_average": round(os.getloadavg()[0], 1)}
    say(f"  {json.dumps(result)}")
    return result


def rates_to_try(start: float, trials: int, outcomes: list[dict]) -> float | None:
    if len(outcomes) >= trials:
        return None
    if not outcomes:
        return start
    good = [o["rate"] for o in outcomes if o["sustained"]]
    bad = [o["rate"] for o in outcomes if not o["sustained"]]
    low, high = max(good, default=None), min(bad, default=None)
    if high is None:
        return low * 1.5
    if low is None:
        return high / 2
    return (low + high) / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, help="one run at this many spans/s (no search)")
    parser.add_argument("--start-rate", type=float, default=10_000, help="where the search starts (spans/s)")
    parser.add_argument("--trials", type=int, default=3, help="runs in the search (about 2 minutes each)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of sending per run")
    parser.add_argument("--drain", type=float, default=20, help="seconds to wait for the pipeline after sending")
    parser.add_argument("--lag-bound", type=float, default=15, help="lag p99 (s) a sustained rate stays under")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (concurrency 1 each)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not on PATH")
    bodies: list[bytes] = []

    def requests_for(rate: float) -> list[bytes]:
        # Built before each run's clock starts, as many as the run sends, from one world (each run has
        # a database of its own, so runs may send the same requests; two worlds would write the same
        # keys' versions twice over).
        count = int(rate * args.duration / SPANS_PER_REQUEST) + 1
        if count > len(bodies):
            began = time.monotonic()
            bodies[:] = make_batches(count, SPANS_PER_REQUEST, 4, args.seed)[0]
            say(f"{count} requests of {SPANS_PER_REQUEST} spans built in {time.monotonic() - began:.0f} s")
        return bodies

    outcomes: list[dict] = []
    if args.rate:
        outcomes.append(trial(rate=args.rate, duration=args.duration, workers=args.workers, drain=args.drain,
                              lag_bound=args.lag_bound, bodies=requests_for(args.rate)))
    else:
        while (rate := rates_to_try(args.start_rate, args.trials, outcomes)) is not None:
            outcomes.append(trial(rate=rate, duration=args.duration, workers=args.workers, drain=args.drain,
                                  lag_bound=args.lag_bound, bodies=requests_for(rate)))
    best = max((o for o in outcomes if o["sustained"]), key=lambda o: o["rate"], default=None)
    # With no rate sustained, the lags are the slowest rate's: zeros read as a met lag target in run_all's table.
    lags = best or min(outcomes, key=lambda o: o["rate"])
    print(json.dumps({
        "sustained_spans_per_s": best["sent_spans_per_s"] if best else 0,
        "lag_p50_s": lags["lag_p50_s"],
        "lag_p99_s": lags["lag_p99_s"],
        "workers": args.workers,
        "trials": outcomes,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
