"""Benchmark of OTLP/HTTP ingest: spans durably stored per second.

Run against a running server:
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8000 --key cwk_... [--duration 10]
(the stored count is read from DATABASE_URL, the server's database), or let it start one:
    .venv/bin/python bench/ingest.py --start-server [--workers 3 --threads 1] [--batches 400]

--start-server creates a PostgreSQL database of its own with a unique name (on DATABASE_URL's
server, default the local one; dropped at the end, and no other database is touched), migrates it, makes a key with
`manage.py create_ingest_key bench`, runs gunicorn `governance.wsgi` on a free port with
DEBUG=false, waits until it answers, and stops it at the end.

The batches are realistic multi-agent OTLP protobuf requests built with the
opentelemetry.proto messages and serialised before the clock starts: 500 spans each
(--spans), a few resources (agents) per batch, traces of a dozen nested spans (an agent
turn: LLM call, tool CLIENT/SERVER pairs, state reads and writes with compare-and-set,
idempotent side effects, fenced locks, links to earlier turns), state.* on about 30% of
spans, random ids so every span is new. --concurrency threads each keep one
http.client connection alive and post batches; a 429/502/503/504 or a dropped connection
is retried with exponential backoff (honouring Retry-After) like the OTLP exporters.

At the end the spans stored for the key's project are counted in the database. Printed:
spans stored per second (stored / wall time from the first request to the last answer),
request latency p50/p99 (each HTTP request), spans lost (sent minus stored). The last line
is JSON: {"spans_per_s", "p50_ms", "p99_ms", "lost"}. On stderr: the server's CPU per request
(gunicorn workers and PostgreSQL backends, from /proc) and the load average, since the
figures mean little on a machine that other work shares.

Server variants tried (2 cores shared with the client, PostgreSQL 15 and other people's jobs;
10 s at concurrency 8, spans stored per second): sync --workers 2: 9.2k; sync 3: 12.8k-15.7k;
sync 4: 17.1k; gthread 3 x 2 threads: 10.3k. Default: 4 sync workers (one per core computes
while another waits for its COPY to commit). Whatever the variant, a 500-span request cost
about 21 ms of gunicorn CPU and 25 ms of PostgreSQL CPU, so two cores topped out near 21k spans/s.
After the ingest rework (new traces inserted already summarised in one statement, no stored-span
query for them, span primary key (project, trace_id, span_id), no name or foreign key indexes):
about 15 ms gunicorn and 10 ms PostgreSQL CPU a request, 37-39k spans/s on a quiet machine;
sync 3, 4 and 5 workers and gthread 2 x 4 all within 36-38.5k.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from bench.databases import own_postgres_database
from tests.gunicorn import gunicorn_serving  # one way to start gunicorn for tests and benches
from tests.otlp_builders import key_values  # one OTLP encoder for tests and benches

# --- the workload ---------------------------------------------------------------------------------------------------

MODELS = ("gpt-4o", "claude-sonnet-4", "llama-3.1-70b")
TOOLS = ("search_docs", "edit_file", "run_tests", "send_email", "query_db", "fetch_url")
ROLES = ("planner", "coder", "reviewer", "tester", "support", "triage")


class World:
    """Agents and shared state keys; turns() makes the spans of one agent turn."""

    def __init__(self, rng: random.Random, agents: int = 24, keys: int = 2000):
        self.rng = rng
        self.agents = []
        for number in range(agents):
            role = ROLES[number % len(ROLES)]
            self.agents.append({
                "service.name": f"{role}-agent", "service.version": f"1.{number % 4}.{number % 7}",
                "service.instance.id": f"{role}-{number:03d}-{rng.getrandbits(24):06x}",
                "gen_ai.agent.id": f"{role}-{number:03d}", "gen_ai.agent.name": role,
                "deployment.environment": "prod", "host.name": f"node-{number % 5}",
                "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.27.0",
            })
        self.keys = [f"{('doc', 'ticket', 'repo', 'user')[k % 4]}:{k}" for k in range(keys)]
        self.versions = [1] * keys
        self.fencing = 0
        self.previous: list[tuple[int, bytes, bytes]] = []  # (end, trace_id, span_id) of earlier producer spans
        # State accesses wait for settle(), which gives them versions and fencing tokens in event-time
        # order, as the database agents share would: a write of v+1 happens after the write of v, and
        # a read sees the newest version written before it. Turns overlap in time, so handing versions
        # out as turns are built made writes of later versions seconds before earlier ones, a world
        # where effects come before their causes.
        self.accesses: list[tuple[int, int, str, object, dict, int, list]] = []

    def _key_index(self) -> int:
        return min(int(self.rng.paretovariate(1.2)) - 1, len(self.keys) - 1)  # hot keys

    def turn(self, scope_spans, start: int) -> int:
        """Append the spans of one agent turn (one trace) to scope_spans.spans; returns how many."""
        rng = self.rng
        trace_id = rng.randbytes(16)
        ids = iter(lambda: rng.randbytes(8), None)
        spans = scope_spans.spans
        count = 0

        def add(name, parent, kind, begin, length, attributes, status=0, message=""):
            nonlocal count
            span = spans.add(trace_id=trace_id, span_id=next(ids), parent_span_id=parent, name=name, kind=kind,
                             start_time_unix_nano=begin, end_time_unix_nano=begin + length)
            span.attributes.extend(key_values(attributes))
            if status:
                span.status.CopyFrom(Status(code=status, message=message))
            count += 1
            return span

        thread = f"t{rng.randrange(4)}"
        root = add("agent.turn", b"", 2, start, 0, {"gen_ai.operation.name": "invoke_agent", "thread.id": thread,
                                                     "turn.number": rng.randrange(1, 50), "user.tier": "pro"})
        ended = [(trace, span) for end, trace, span in self.previous if end < start]
        if ended and rng.random() < 0.3:
            link_trace, link_span = rng.choice(ended)
            link = root.links.add(trace_id=link_trace, span_id=link_span)
            link.attributes.extend(key_values({"link.reason": "message"}))
        t = start + 1000
        llm = add("chat " + rng.choice(MODELS), root.span_id, 3, t, rng.randrange(200, 4000) * 1_000_000, {
            "gen_ai.system": "openai", "gen_ai.request.model": rng.choice(MODELS), "gen_ai.usage.input_tokens": rng.randrange(200, 9000),
            "gen_ai.usage.output_tokens": rng.randrange(20, 900), "gen_ai.request.temperature": 0.2,
            "gen_ai.response.finish_reasons": ["stop"], "thread.id": thread,
        })
        llm.events.add(name="gen_ai.choice", time_unix_nano=llm.end_time_unix_nano - 1000)
        t = llm.end_time_unix_nano + 1000
        for _ in range(rng.randrange(2, 5)):
            tool = rng.choice(TOOLS)
            length = rng.randrange(5, 300) * 1_000_000
            client = add(f"execute_tool {tool}", root.span_id, 3, t, length, {
                "gen_ai.tool.name": tool, "gen_ai.tool.call.id": f"call_{rng.getrandbits(48):012x}", "thread.id": thread,
                "rpc.system": "mcp", "retry.count": 0,
            })
            server = add(f"tools/{tool}", client.span_id, 2, t + 200_000, length - 400_000, {
                "rpc.system": "mcp", "server.address": "tools.internal", "server.port": 8443, "http.response.status_code": 200,
            })
            # About 30% of spans touch shared state, some with idempotency or a fenced lock.
            index = self._key_index()
            key = self.keys[index]
            read = add("state.read", server.span_id, 1, t + 300_000, 400_000,
                       {"state.key": key, "state.op": "read", "db.system": "postgresql"})
            seen: list = []  # the version the read saw, for the write on top of it
            self._access(read, "read", {}, index, seen)
            t += length + 2_000_000
            if rng.random() < 0.5:
                continue  # a lookup only
            write_attrs = {"state.key": key, "state.op": "write", "db.system": "postgresql",
                           "compare_and_set": rng.random() < 0.5, "locked": rng.random() < 0.3}
            if tool == "send_email":
                write_attrs.update({"idempotency.key": f"mail-{rng.getrandbits(40):010x}",
                                    "idempotency.outcome": "deduplicated" if rng.random() < 0.1 else "executed"})
            write = add("state.write", server.span_id, 1, read.end_time_unix_nano + 1000, 600_000, {})
            self._access(write, "write", write_attrs, index, seen)
        producer = add("publish handoff", root.span_id, 4, t, 1_000_000,
                       {"messaging.system": "kafka", "messaging.destination.name": "handoffs", "thread.id": thread})
        root.end_time_unix_nano = t + 2_000_000
        self.previous.append((producer.end_time_unix_nano, trace_id, producer.span_id))
        del self.previous[:-200]
        return count

    def _access(self, span, op: str, attributes: dict, index: int, seen: list) -> None:
        self.accesses.append((span.start_time_unix_nano, len(self.accesses), op, span, attributes, index, seen))

    def settle(self) -> None:
        """Versions, conflicts and fencing tokens for the accesses made so far, in event-time order.
        A read sees the newest version (1 read in 50 a cached one a version behind: a stale read when
        the newer write happened-before it). A write is on top of the version its turn's read saw:
        with compare-and-set it fails if the key moved since; without, it takes effect anyway, a lost
        update when another write was on top of the same version."""
        rng = self.rng
        for _, _, op, span, attributes, index, seen in sorted(self.accesses, key=lambda a: a[:2]):
            current = self.versions[index]
            if op == "read":
                version = current - 1 if current > 1 and rng.random() < 0.02 else current
                seen.append(version)
                span.attributes.extend(key_values({"state.version": version}))
                continue
            base = seen[0]
            conflict = attributes.pop("compare_and_set") and base != current
            attributes.update({"state.version": current + 1, "state.base_version": base, "state.conflict": conflict})
            if attributes.pop("locked"):
                self.fencing += 1
                attributes.update({"lock.name": f"lock:{self.keys[index]}", "lock.fencing_token": self.fencing})
            span.attributes.extend(key_values(attributes))
            if conflict:
                span.status.CopyFrom(Status(code=2, message="version conflict"))
            else:
                self.versions[index] = current + 1
        self.accesses.clear()


def make_batches(count: int, spans_per_batch: int, resources: int, seed: int) -> tuple[list[bytes], list[int], float]:
    """`count` serialised requests of about spans_per_batch spans; returns them, their span counts and the
    fraction of spans with state.* attributes."""
    rng = random.Random(seed)
    world = World(rng)
    start = time.time_ns() - 3_600_000_000_000
    bodies, counts, with_state = [], [], 0
    requests = []
    for _ in range(count):
        request = ExportTraceServiceRequest()
        agents = rng.sample(world.agents, resources)
        scopes = []
        for agent in agents:
            resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.27.0")
            resource_spans.resource.attributes.extend(key_values(agent))
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = "agent-framework", "0.9.2"
            scopes.append(scope_spans)
        made = 0
        while made < spans_per_batch:
            made += world.turn(rng.choice(scopes), start)
            start += rng.randrange(1, 50) * 1_000_000
        requests.append(request)
        counts.append(made)
    world.settle()
    for request in requests:
        bodies.append(request.SerializeToString())
        with_state += sum(1 for rs in request.resource_spans for sp in rs.scope_spans[0].spans
                          if sp.name.startswith("state."))
    return bodies, counts, with_state / max(1, sum(counts))


# --- sending --------------------------------------------------------------------------------------------------------

RETRYABLE = {429, 502, 503, 504}


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    spans_sent: int = 0
    spans_acknowledged: int = 0
    failed_batches: int = 0
    retries: int = 0
    statuses: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sender(url: urllib.parse.SplitResult, key: str, queue: list, counts: list[int], results: Results, deadline: float,
           max_attempts: int = 6) -> None:
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    latencies = []
    while time.monotonic() < deadline:
        with results.lock:
            if not queue:
                break
            body = queue.pop()
            spans = counts.pop()
            results.spans_sent += spans
        delay = 1.0
        for attempt in range(max_attempts):
            began = time.perf_counter()
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status, retry_after = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnect on the next request
                status, retry_after = 0, None
            latencies.append(time.perf_counter() - began)
            with results.lock:
                results.statuses[status] = results.statuses.get(status, 0) + 1
            if status == 200:
                with results.lock:
                    results.spans_acknowledged += spans
                break
            if status not in RETRYABLE and status != 0 or attempt == max_attempts - 1:
                with results.lock:
                    results.failed_batches += 1
                break
            with results.lock:
                results.retries += 1
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay * random.uniform(0.8, 1.2)
            time.sleep(wait)
            delay *= 2
    conn.close()
    with results.lock:
        results.latencies.extend(latencies)


def run(url: str, key: str, bodies: list[bytes], counts: list[int], concurrency: int, duration: float | None) -> tuple[Results, float]:
    target = urllib.parse.urlsplit(url)
    results = Results()
    queue, spans = list(reversed(bodies)), list(reversed(counts))
    deadline = time.monotonic() + duration if duration else float("inf")
    threads = [threading.Thread(target=sender, args=(target, key, queue, spans, results, deadline))
               for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - began


# --- the database ---------------------------------------------------------------------------------------------------


def stored_spans(database_url: str, key: str) -> int:
    import hashlib

    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT project_id FROM governance_ingestkey WHERE key_hash = %s",
                           (hashlib.sha256(key.encode()).hexdigest(),)).fetchone()
        if row is None:
            raise SystemExit("the key is not in the database named by DATABASE_URL")
        return conn.execute("SELECT count(*) FROM traces_span WHERE project_id = %s", (row[0],)).fetchone()[0]


class Server:
    """gunicorn governance.wsgi on a database of its own, for the length of a `with`."""

    def __init__(self, workers: int, threads: int, worker_class: str):
        self.workers, self.threads, self.worker_class = workers, threads, worker_class
        self.data_dir = tempfile.mkdtemp(prefix="causeway-bench-")
        self.database_url = ""
        self.url = ""
        self.process = None
        self._database = None
        self._serving = None

    def manage(self, *args) -> str:
        done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def __enter__(self):
        self._database = own_postgres_database("causeway_bench_ingest")
        self.database_url = self._database.__enter__()
        self.env = {**os.environ, "DATABASE_URL": self.database_url, "DEBUG": "false", "HTTPS": "false", "SECRET_KEY": "bench",
                    "CAUSEWAY_DATA_DIR": self.data_dir, "LOG_LEVEL": "WARNING"}
        self.manage("migrate", "-v0")
        self.key = self.manage("create_ingest_key", "bench").strip()
        options = ["--workers", str(self.workers), "--worker-class", self.worker_class, "--keep-alive", "30",
                   "--backlog", "256", "--timeout", "120"]
        if self.worker_class == "gthread":
            options += ["--threads", str(self.threads)]
        self._serving = gunicorn_serving(env=self.env, log_path=os.path.join(self.data_dir, "gunicorn.log"),
                                         options=tuple(options))
        self.url, self.process = self._serving.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            if self._serving is not None:
                self._serving.__exit__(*exc)
        finally:
            if self._database is not None:
                self._database.__exit__(*exc)


# --- main -----------------------------------------------------------------------------------------------------------


def _cpu_seconds(pids) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def server_cpu(server: Server | None, database_url: str) -> tuple[float, float]:
    """CPU seconds used so far by the gunicorn workers and by the database's backends (Linux /proc)."""
    workers = []
    if server is not None and server.process is not None:
        try:
            with open(f"/proc/{server.process.pid}/task/{server.process.pid}/children") as handle:
                workers = [int(p) for p in handle.read().split()]
        except OSError:
            pass
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        backends = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    return _cpu_seconds(workers), _cpu_seconds(backends)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", help="ingest key for --url")
    parser.add_argument("--start-server", action="store_true", help="start gunicorn on a fresh PostgreSQL database")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (--start-server)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker, gthread only (--start-server)")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"], help="(--start-server)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads, one keep-alive connection each")
    parser.add_argument("--spans", type=int, default=500, help="spans per batch")
    parser.add_argument("--resources", type=int, default=4, help="resources (agents) per batch")
    parser.add_argument("--duration", type=float, default=None, help="seconds to send for (default 10 unless --batches)")
    parser.add_argument("--batches", type=int, default=None, help="send exactly this many batches")
    parser.add_argument("--warmup", type=int, default=16, help="batches sent before timing (not counted)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.start_server and not (args.url and args.key):
        parser.error("give --url and --key, or --start-server")
    duration = args.duration if args.duration or args.batches else 10.0
    # Enough distinct batches for the duration at a generous 40k spans/s.
    count = args.batches or max(40, round(duration * 40_000 / args.spans))
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)

    began = time.perf_counter()
    bodies, counts, state_share = make_batches(count + args.warmup, args.spans, args.resources, seed)
    print(f"built {len(bodies)} batches ({sum(counts)} spans, {state_share:.0%} with state.*, "
          f"{sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each) in {time.perf_counter() - began:.1f}s",
          file=sys.stderr)
    warm_bodies, warm_counts = bodies[:args.warmup], counts[:args.warmup]
    bodies, counts = bodies[args.warmup:], counts[args.warmup:]

    database_url = os.environ.get("DATABASE_URL", "")
    if not args.start_server and not database_url:
        parser.error("--url needs DATABASE_URL, the server's database, to count the stored spans")
    context = Server(args.workers, args.threads, args.worker_class) if args.start_server else None
    try:
        if context is not None:
            context.__enter__()
            url, key, database_url = context.url, context.key, context.database_url
            print(f"gunicorn: {args.workers} {args.worker_class} workers"
                  + (f" x {args.threads} threads" if args.worker_class == "gthread" else "") + f" at {url}", file=sys.stderr)
        else:
            url, key = args.url, args.key
        if warm_bodies:
            run(url, key, warm_bodies, warm_counts, args.concurrency, None)
        before = stored_spans(database_url, key)
        cpu_before = server_cpu(context, database_url)
        results, elapsed = run(url, key, bodies, counts, args.concurrency, duration if not args.batches else None)
        cpu_after = server_cpu(context, database_url)
        stored = stored_spans(database_url, key) - before
        requests = max(1, len(results.latencies))
        print(f"server CPU per request: gunicorn {(cpu_after[0] - cpu_before[0]) / requests * 1000:.1f} ms"
              + ("" if context is not None else " (not measured: not started here)")
              + f", PostgreSQL backends {(cpu_after[1] - cpu_before[1]) / requests * 1000:.1f} ms; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)
    finally:
        if context is not None:
            context.__exit__(None, None, None)

    lost = results.spans_sent - stored
    spans_per_s = stored / elapsed if elapsed else 0.0
    p50, p99 = percentile(results.latencies, 0.50) * 1000, percentile(results.latencies, 0.99) * 1000
    print(f"sent {results.spans_sent} spans in {len(results.latencies)} requests over {elapsed:.2f}s "
          f"at concurrency {args.concurrency}; answers {dict(sorted(results.statuses.items()))}, "
          f"{results.retries} retried, {results.failed_batches} batches failed")
    print(f"stored {stored} spans: {spans_per_s:,.0f} spans/s; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms; lost {lost}")
    print(json.dumps({"spans_per_s": round(spans_per_s), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "lost": lost}))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
