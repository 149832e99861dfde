"""The simulator: real agent processes, real OpenTelemetry, spec v1 attributes.

Runs write OTLP protobuf files (`--output`), decoded here with
opentelemetry-proto directly; the last tests hand the same files to
`traces.otlp` and `traces.analysis` and expect exactly the finding each bug
flag injects, and none without a bug. No Django needed:

    .venv/bin/pytest -p no:django --noconftest tests/test_simulator.py
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from traces.simulator import BUGS, SimulationConfig, add_arguments, run_from_options
from traces.simulator.run import config_from_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_FILES = ["agent-0.binpb", "agent-1.binpb", "agent-2.binpb", "agent-3.binpb", "tool.binpb"]


# --- decoding the files with opentelemetry-proto ------------------------------------------------------------------


def any_value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def attrs_of(pairs) -> dict:
    return {kv.key: any_value(kv.value) for kv in pairs}


@dataclass
class S:
    """One decoded span with its resource, for assertions."""

    pb: Span
    resource: dict
    file: str
    attrs: dict = field(default_factory=dict)

    @property
    def id(self) -> bytes:
        return self.pb.span_id

    @property
    def parent(self) -> bytes:
        return self.pb.parent_span_id

    @property
    def start(self) -> int:
        return self.pb.start_time_unix_nano

    @property
    def end(self) -> int:
        return self.pb.end_time_unix_nano

    @property
    def instance(self) -> str:
        return self.resource["service.instance.id"]

    @property
    def chain(self) -> tuple:
        return (self.instance, self.attrs["thread.id"])

    @property
    def is_access(self) -> bool:
        return "state.key" in self.attrs

    @property
    def took_effect(self) -> bool:
        return (
            self.attrs.get("state.op") == "write"
            and not self.attrs.get("state.conflict")
            and self.pb.status.code != Status.STATUS_CODE_ERROR
        )


def decode_requests(requests, file: str = "") -> list[S]:
    spans = []
    for request in requests:
        for rs in request.resource_spans:
            resource = attrs_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    spans.append(S(span, resource, file, attrs_of(span.attributes)))
    return spans


def decode_dir(path: str) -> list[S]:
    spans = []
    for name in sorted(os.listdir(path)):
        request = ExportTraceServiceRequest()
        with open(os.path.join(path, name), "rb") as fh:
            request.ParseFromString(fh.read())
        spans += decode_requests([request], name)
    return spans


@dataclass
class Run:
    summary: object
    spans: list[S]
    dir: str
    db: str

    def by_id(self) -> dict[bytes, S]:
        return {s.id: s for s in self.spans}

    def named(self, name: str) -> list[S]:
        return [s for s in self.spans if s.pb.name == name]

    def effective_writes(self, key_prefix: str = "") -> list[S]:
        return [s for s in self.spans if s.took_effect and s.attrs["state.key"].startswith(key_prefix)]

    def inside_lock(self, span: S, by_id=None) -> bool:
        by_id = by_id or self.by_id()
        while span is not None:
            if "lock.name" in span.attrs:
                return True
            span = by_id.get(span.parent)
        return False


_RUNS: dict[tuple, Run] = {}


@pytest.fixture(scope="session")
def simulate(tmp_path_factory):
    """simulate("--bug", "no-cas", ...) -> Run; identical argument lists run once."""

    def run(*args: str) -> Run:
        if args not in _RUNS:
            base = tmp_path_factory.mktemp("sim")
            out, db = str(base / "out"), str(base / "store.sqlite3")
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            options = vars(parser.parse_args(["--output", out, "--db", db, "--no-progress", *args]))
            summary = run_from_options(options, io.StringIO(), io.StringIO())
            _RUNS[args] = Run(summary, decode_dir(out), out, db)
        return _RUNS[args]

    return run


@pytest.fixture(scope="session")
def clean(simulate) -> Run:
    return simulate()


# --- a run without bugs -----------------------------------------------------------------------------------------


def test_it_writes_one_otlp_file_per_agent_and_one_for_the_tool(clean):
    assert sorted(os.listdir(clean.dir)) == AGENT_FILES
    assert clean.summary.spans_failed == 0
    assert clean.summary.spans_exported == clean.summary.spans_ended == len(clean.spans)
    assert clean.summary.bugs == ()
    assert clean.summary.agents == 4
    assert clean.summary.counters["tool_calls_served"] == 4 * 2 * 20


def test_each_agent_process_has_its_own_resource(clean):
    resources = {s.file: s.resource for s in clean.spans}
    for i in range(4):
        r = resources[f"agent-{i}.binpb"]
        assert r["service.name"] == "causeway-sim-agent"
        assert r["service.version"] == "1.0.0"
        assert r["gen_ai.agent.id"] == f"agent-{i}"
    tool = resources["tool.binpb"]
    assert tool["service.name"] == "causeway-sim-tool"
    assert len({r["service.instance.id"] for r in resources.values()}) == 5
    assert len({r["process.pid"] for f, r in resources.items() if f != "tool.binpb"}) == 4


def test_every_span_names_its_thread(clean):
    assert all(isinstance(s.attrs.get("thread.id"), int) for s in clean.spans)


def test_accesses_are_leaf_spans_with_the_spec_attributes(clean):
    parents = {s.parent for s in clean.spans}
    accesses = [s for s in clean.spans if s.is_access]
    assert len(accesses) > 500
    for s in accesses:
        assert s.id not in parents
        assert s.attrs["state.op"] in ("read", "write")
        if s.attrs["state.op"] == "read":
            assert isinstance(s.attrs["state.version"], int)
        elif s.attrs.get("state.conflict"):
            assert s.attrs["state.conflict"] is True
            assert "state.version" not in s.attrs
            assert isinstance(s.attrs["state.base_version"], int)
        else:
            assert isinstance(s.attrs["state.version"], int)


def test_compare_and_set_writes_form_one_chain_per_key(clean):
    chains = defaultdict(list)
    for w in clean.effective_writes("account/"):
        chains[w.attrs["state.key"]].append((w.attrs["state.version"], w.attrs["state.base_version"]))
    assert len(chains) == 4
    for key, writes in chains.items():
        writes.sort()
        assert [v for v, _ in writes] == list(range(1, len(writes) + 1)), key
        assert all(base == v - 1 for v, base in writes), key


def test_compare_and_set_conflicts_are_retried_with_a_fresh_read(clean):
    conflicts = [s for s in clean.spans if s.attrs.get("state.conflict")]
    assert conflicts, "8 threads on 4 keys should collide at least once"
    assert clean.summary.counters["cas_conflicts"] == len(conflicts)
    siblings = defaultdict(list)
    for s in clean.spans:
        siblings[s.parent].append(s)
    for c in conflicts:
        after = sorted((s for s in siblings[c.parent] if s.start >= c.end), key=lambda s: s.start)
        assert after[0].attrs["state.op"] == "read"
        assert after[-1].took_effect


def test_every_ledger_access_is_inside_a_critical_section_with_a_fresh_token(clean):
    by_id = clean.by_id()
    sections = [s for s in clean.spans if s.attrs.get("lock.name") == "ledger"]
    tokens = [s.attrs["lock.fencing_token"] for s in sections]
    assert sorted(tokens) == list(range(1, 4 * 2 * 20 + 1))
    ledger = [s for s in clean.spans if s.attrs.get("state.key") == "ledger/total"]
    assert len(ledger) == 2 * len(sections)
    assert all(by_id[s.parent].attrs.get("lock.name") == "ledger" for s in ledger)
    assert all(s.attrs.get("state.base_version") is None for s in ledger if s.attrs["state.op"] == "write")


def test_the_tool_span_is_the_server_child_of_the_agent_client_span(clean):
    by_id = clean.by_id()
    servers = [s for s in clean.spans if s.pb.kind == Span.SPAN_KIND_SERVER]
    assert len(servers) == 4 * 2 * 20
    for server in servers:
        client = by_id[server.parent]
        assert client.pb.kind == Span.SPAN_KIND_CLIENT
        assert client.pb.trace_id == server.pb.trace_id
        assert client.file.startswith("agent-") and server.file == "tool.binpb"
        assert client.start <= server.start and server.end <= client.end
        assert client.attrs["http.response.status_code"] == 200
        assert client.attrs["gen_ai.tool.name"] == server.attrs["gen_ai.tool.name"] == "quote"
    reads = [s for s in clean.spans if s.file == "tool.binpb" and s.is_access]
    assert len(reads) == len(servers)
    assert all(by_id[r.parent].pb.kind == Span.SPAN_KIND_SERVER for r in reads)


def test_a_consumer_in_the_next_agent_links_to_the_producer_span(clean):
    by_id = clean.by_id()
    consumers = [s for s in clean.spans if s.pb.kind == Span.SPAN_KIND_CONSUMER]
    assert len(consumers) == 4 * 2 * 20
    children = defaultdict(list)
    for s in clean.spans:
        children[s.parent].append(s)
    for consumer in consumers:
        (link,) = consumer.pb.links
        producer = by_id[link.span_id]
        assert producer.pb.trace_id == link.trace_id
        assert producer.pb.kind == Span.SPAN_KIND_PRODUCER
        sender = int(producer.file.split("-")[1].split(".")[0])
        assert consumer.file == f"agent-{(sender + 1) % 4}.binpb"
        assert consumer.instance != producer.instance
        assert consumer.attrs["messaging.message.id"] == producer.attrs["messaging.message.id"]
        assert consumer.attrs["messaging.destination.name"] == producer.attrs["messaging.destination.name"]
        assert producer.attrs["messaging.operation.type"] == "send"
        assert consumer.attrs["messaging.operation.type"] == "process"
        # The producer wrote the message's key just before sending; the consumer writes it again.
        (write,) = children[consumer.id]
        sent = [
            s
            for s in children[producer.parent]
            if s.attrs.get("state.key") == write.attrs["state.key"] and s.end <= producer.start
        ]
        assert len(sent) == 1 and sent[0].attrs["state.version"] == 1
        assert write.attrs["state.version"] == 2 and "state.base_version" not in write.attrs


def test_each_idempotency_key_executes_exactly_once(clean):
    outcomes = defaultdict(Counter)
    for s in clean.spans:
        if "idempotency.key" in s.attrs:
            outcomes[s.attrs["idempotency.key"]][s.attrs["idempotency.outcome"]] += 1
    assert len(outcomes) == 20
    assert all(c == {"executed": 1, "deduplicated": 7} for c in outcomes.values())


def test_without_bugs_no_read_sees_a_version_older_than_its_own_threads_last_write(clean):
    assert not [s for s in clean.spans if s.pb.name == "cache.read"]


# --- each bug flag leaves its telltale raw data -------------------------------------------------------------------


def test_no_cas_lets_two_writes_with_the_same_base_version_take_effect(simulate):
    run = simulate("--bug", "no-cas")
    bases = Counter((w.attrs["state.key"], w.attrs["state.base_version"]) for w in run.effective_writes("account/"))
    assert max(bases.values()) >= 2
    assert not [s for s in run.spans if s.attrs.get("state.conflict")]
    assert run.summary.injections["no-cas"] > 0


def test_no_lock_writes_the_ledger_blindly_outside_any_critical_section(simulate):
    run = simulate("--bug", "no-lock")
    by_id = run.by_id()
    ledger = run.effective_writes("ledger/")
    assert len(ledger) == 4 * 2 * 20
    assert not any(run.inside_lock(w, by_id) for w in ledger)
    assert all("state.base_version" not in w.attrs for w in ledger)
    assert run.summary.injections["no-lock"] > 0


def test_idempotency_bypass_executes_one_key_more_than_once(simulate):
    run = simulate("--bug", "idempotency-bypass")
    executed = Counter(
        s.attrs["idempotency.key"] for s in run.spans if s.attrs.get("idempotency.outcome") == "executed"
    )
    assert executed and all(n == 8 for n in executed.values())
    with sqlite3.connect(run.db) as conn:
        counts = dict(conn.execute("SELECT key, COUNT(*) FROM side_effects GROUP BY key"))
    assert counts == dict(executed)
    assert run.summary.injections["idempotency-bypass"] == 20 * 7


def test_stale_cache_reads_an_older_version_after_the_same_thread_wrote_a_newer_one(simulate):
    run = simulate("--bug", "stale-cache")
    writes = defaultdict(list)
    for w in run.effective_writes():
        writes[(w.chain, w.attrs["state.key"])].append(w)
    stale = [
        r
        for r in run.named("cache.read")
        if any(
            w.end <= r.start and w.attrs["state.version"] > r.attrs["state.version"]
            for w in writes[(r.chain, r.attrs["state.key"])]
        )
    ]
    assert stale
    assert run.summary.injections["stale-cache"] == len(stale)


def test_double_grant_gives_two_critical_sections_one_token(simulate):
    run = simulate("--bug", "double-grant")
    tokens = Counter(s.attrs["lock.fencing_token"] for s in run.spans if s.attrs.get("lock.name") == "ledger")
    twice = [t for t, n in tokens.items() if n == 2]
    assert twice and max(tokens.values()) == 2
    assert run.summary.injections["double-grant"] == len(twice)


def test_clock_skew_makes_the_tool_start_before_agent_0_called_it(simulate):
    run = simulate("--bug", "clock-skew")
    by_id = run.by_id()
    for server in (s for s in run.spans if s.pb.kind == Span.SPAN_KIND_SERVER):
        client = by_id[server.parent]
        ahead = client.start - server.start
        if client.file == "agent-0.binpb":
            assert 1_900_000_000 < ahead < 2_100_000_000
        else:
            assert ahead <= 0
    assert run.summary.injections["clock-skew"] == len([s for s in run.spans if s.file == "agent-0.binpb"])


def test_dropped_parent_leaves_spans_whose_parent_was_never_exported(simulate):
    run = simulate("--bug", "dropped-parent")
    ids = {s.id for s in run.spans}
    orphans = [s for s in run.spans if s.parent and s.parent not in ids]
    assert orphans and {s.file for s in orphans} == {"agent-0.binpb"}
    assert len({s.parent for s in orphans}) == 1
    assert run.summary.injections["dropped-parent"] == 1
    assert run.summary.spans_exported == len(run.spans)


# --- canary ------------------------------------------------------------------------------------------------------


def test_a_canary_with_errors_reports_its_version_and_fails_tool_calls(simulate):
    run = simulate("--canary-version", "2.0.0", "--canary-share", "0.5", "--regression", "errors")
    versions = {
        s.resource["gen_ai.agent.id"]: s.resource["service.version"] for s in run.spans if s.file != "tool.binpb"
    }
    assert versions == {"agent-0": "1.0.0", "agent-1": "1.0.0", "agent-2": "2.0.0", "agent-3": "2.0.0"}
    failed = [
        s for s in run.spans if s.pb.kind == Span.SPAN_KIND_CLIENT and s.pb.status.code == Status.STATUS_CODE_ERROR
    ]
    assert failed and {s.resource["service.version"] for s in failed} == {"2.0.0"}
    assert all(s.attrs["http.response.status_code"] == 500 for s in failed)
    assert run.summary.canary_agents == ("agent-2", "agent-3")


def test_a_canary_with_a_latency_regression_is_slower(simulate):
    run = simulate("--canary-version", "2.0.0", "--regression", "latency", "--iterations", "5")
    durations = defaultdict(list)
    for s in run.spans:
        if s.pb.kind == Span.SPAN_KIND_CLIENT:
            durations[s.resource["service.version"]].append(s.end - s.start)
    mean = {v: sum(d) / len(d) for v, d in durations.items()}
    assert mean["2.0.0"] > mean["1.0.0"] + 15_000_000


# --- options and export over OTLP --------------------------------------------------------------------------------


def test_the_ingest_key_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("CAUSEWAY_INGEST_KEY", "from-env")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_options(vars(parser.parse_args([]))).export.key == "from-env"
    assert config_from_options(vars(parser.parse_args(["--key", "given"]))).export.key == "given"
    assert config_from_options({"output": "x"}).export.mode == "file"


def test_it_refuses_unknown_bugs_and_a_regression_without_a_canary():
    with pytest.raises(ValueError):
        SimulationConfig(bugs=("gremlins",))
    with pytest.raises(ValueError):
        SimulationConfig(regression="latency")
    assert set(BUGS) == {
        "no-cas",
        "no-lock",
        "idempotency-bypass",
        "stale-cache",
        "double-grant",
        "clock-skew",
        "dropped-parent",
    }


class _Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def test_it_exports_over_otlp_http_with_the_bearer_key():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = io.StringIO()
        options = {
            "endpoint": f"http://127.0.0.1:{server.server_port}",
            "key": "s3cret",
            "agents": 2,
            "threads": 1,
            "iterations": 3,
            "no_progress": True,
        }
        summary = run_from_options(options, out, io.StringIO())
    finally:
        server.shutdown()
    assert {path for path, _, _ in server.received} == {"/v1/traces"}
    assert all(h["authorization"] == "Bearer s3cret" for _, h, _ in server.received)
    assert all(h["content-type"] == "application/x-protobuf" for _, h, _ in server.received)
    requests = []
    for _, _, body in server.received:
        requests.append(ExportTraceServiceRequest.FromString(body))
    spans = decode_requests(requests)
    assert len(spans) == summary.spans_exported == summary.spans_ended > 0
    assert {s.resource["service.name"] for s in spans} == {"causeway-sim-agent", "causeway-sim-tool"}
    assert "OTLP/HTTP" in out.getvalue()


class _GrpcReceiver(TraceServiceServicer):
    def __init__(self):
        self.received = []

    def Export(self, request, context):
        self.received.append((dict(context.invocation_metadata()), request))
        return ExportTraceServiceResponse()


def test_it_exports_over_otlp_grpc_with_the_key_in_metadata():
    receiver = _GrpcReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        options = {
            "protocol": "grpc",
            "grpc_endpoint": f"127.0.0.1:{port}",
            "key": "s3cret",
            "agents": 2,
            "threads": 1,
            "iterations": 3,
            "no_progress": True,
        }
        summary = run_from_options(options, io.StringIO(), io.StringIO())
    finally:
        server.stop(None)
    assert receiver.received
    assert all(md["authorization"] == "Bearer s3cret" for md, _ in receiver.received)
    spans = decode_requests([r for _, r in receiver.received])
    assert len(spans) == summary.spans_exported == summary.spans_ended > 0


def test_the_module_entry_point_runs_with_a_progress_bar(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "traces.simulator",
            "--output",
            str(tmp_path),
            "--agents",
            "2",
            "--threads",
            "1",
            "--iterations",
            "2",
            "--bug",
            "no-cas",
            "--bug",
            "dropped-parent",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "simulate" in result.stderr  # tqdm
    assert "Bugs injected:" in result.stdout and "no-cas" in result.stdout and "dropped-parent" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["agent-0.binpb", "agent-1.binpb", "tool.binpb"]


# --- the analysis core finds what each flag injected, and nothing without one ------------------------------------

EXPECTED = {
    "no-cas": "lost_update",
    "no-lock": "write_race",
    "idempotency-bypass": "duplicate_side_effect",
    "stale-cache": "stale_read",
    "double-grant": "lock_overlap",
    "clock-skew": "causality_violation",
    "dropped-parent": "orphan_span",
}
ALSO_ALLOWED = {"no-cas": {"write_race"}}  # a lost update's survivors are unordered with later writes


def findings_in(*paths: str):
    analysis = pytest.importorskip("traces.analysis")
    otlp = pytest.importorskip("traces.otlp")
    spans = []
    for path in paths:
        for name in sorted(os.listdir(path)):
            for request in otlp.read_otlp_file(os.path.join(path, name)):
                batch = otlp.spans_from_request(request)
                assert batch.rejected == 0, batch.message
                spans += batch.spans
    return analysis.analyse(spans)


def test_the_analysis_finds_nothing_in_a_run_without_bugs(clean):
    assert findings_in(clean.dir) == []


@pytest.mark.parametrize(
    "args", [("--seed", "7", "--keys", "1", "--threads", "3"), ("--agents", "5", "--processes", "2")]
)
def test_the_analysis_finds_nothing_in_other_runs_without_bugs(simulate, args):
    assert findings_in(simulate(*args).dir) == []


@pytest.mark.parametrize("bug", sorted(EXPECTED))
def test_the_analysis_finds_what_each_bug_flag_injects(simulate, bug):
    findings = findings_in(simulate("--bug", bug).dir)
    kinds = {f.kind for f in findings}
    assert EXPECTED[bug] in kinds
    assert kinds <= {EXPECTED[bug]} | ALSO_ALLOWED.get(bug, set())


def test_runs_in_namespaces_of_their_own_find_no_bugs_between_them(simulate):
    # The run command's demo gives each start a namespace: a second start's agents, whose store
    # starts over at version 1, must not read as stale reads or lock overlaps of the first's.
    first = simulate("--namespace", "run-1", "--bug", "no-cas")
    second = simulate("--namespace", "run-2", "--bug", "no-cas")
    names = {s.attrs[a] for s in first.spans for a in ("state.key", "lock.name", "idempotency.key") if a in s.attrs}
    assert names and all(name.split("/")[1] == "run-1" for name in names)
    alone = len(findings_in(first.dir)) + len(findings_in(second.dir))
    assert alone > 0
    assert len(findings_in(first.dir, second.dir)) == alone


def test_a_canary_with_every_regression_is_worse_on_each_signal(simulate):
    # --regression alone: errors, latency, compare-and-set conflicts and duplicated side effects.
    run = simulate("--canary-version", "2.0.0", "--canary-share", "0.5", "--regression", "--iterations", "6")
    assert run.summary.regression == "all"

    def per_version(spans):
        counts = Counter(s.resource["service.version"] for s in spans)
        return counts["1.0.0"], counts["2.0.0"]

    agents = [s for s in run.spans if s.file != "tool.binpb"]
    assert per_version(s for s in agents if s.pb.status.code == Status.STATUS_CODE_ERROR)[0] == 0
    assert per_version(s for s in agents if s.pb.status.code == Status.STATUS_CODE_ERROR)[1] > 0
    baseline_conflicts, canary_conflicts = per_version(s for s in agents if s.attrs.get("state.conflict"))
    assert canary_conflicts >= 2 * 2 * 6 > baseline_conflicts  # at least one per canary account update
    executed = [s for s in agents if s.attrs.get("idempotency.outcome") == "executed"]
    per_key = Counter(s.attrs["idempotency.key"] for s in executed)
    assert any(n > 1 for n in per_key.values())
    assert {s.resource["service.version"] for s in executed if per_key[s.attrs["idempotency.key"]] > 1} >= {"2.0.0"}
    assert run.summary.counters["regression_duplicates"] > 0
    durations = defaultdict(list)
    for s in agents:
        if s.pb.kind == Span.SPAN_KIND_CLIENT:
            durations[s.resource["service.version"]].append(s.end - s.start)
    assert min(durations["2.0.0"]) >= 20_000_000  # each canary tool call waits 20-40 ms more (a loaded
    # machine slows the baseline's too, so this bound, not a comparison, is what holds every run)


def test_baseline_version_names_the_baseline():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = vars(parser.parse_args(["--baseline-version", "3.1.0", "--canary-version", "3.2.0", "--regression"]))
    config = config_from_options(options)
    assert (config.service_version, config.canary_version, config.regression) == ("3.1.0", "3.2.0", "all")
    assert config.regresses("duplicates") and config.regresses("latency")
