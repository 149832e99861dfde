"""A non-Python client: the OpenTelemetry JavaScript SDK's OTLP/HTTP exporters
(@opentelemetry/exporter-trace-otlp-http for JSON, -proto for protobuf), run by
Node.js as users run them, configured only through the standard environment
variables, send a small workload to the live server, and every span arrives whole.

tests/exporters/node/send.js is the client; its dependencies are pinned in
package.json/package-lock.json there and installed with `npm ci` (by .ci/run, or
here when node_modules is missing). Node.js is required: without it the test fails.

The JS exporters stream every request body (gzip or not) with Transfer-Encoding:
chunked and no Content-Length. gunicorn, which serves Causeway in production,
decodes such bodies, so the exporters talk to a real gunicorn here; Django's
development server does not, and Causeway answers it 411 rather than lose the
spans (tests/test_ingest_http.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from traces.models import Span, Trace

pytestmark = pytest.mark.django_db(transaction=True)

NODE_DIR = Path(__file__).parent / "exporters" / "node"
SEND = NODE_DIR / "send.js"
INSTALLED = NODE_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-proto" / "package.json"

# OTLP span kinds (the JS SDK's SpanKind counts from INTERNAL=0, OTLP from UNSPECIFIED=0).
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5
UNSET, ERROR = 0, 2

RESOURCE = {
    "service.name": "node-planner",
    "service.version": "4.2.0",
    "gen_ai.agent.id": "node-planner",
    "deployment.environment.name": "test",
    "host.cpu.count": 4,
}
ROOT_ATTRIBUTES = {
    "task.id": "task-node",
    "task.priority": 7,
    "task.negative": -3,
    "task.budget": 0.75,
    "task.urgent": True,
    "task.done": False,
    "task.tags": ["refactor", "docs"],
    "task.retries": [0, 1, 2],
    "task.weights": [0.5, 1.5],
    "task.flags": [True, False],
    "task.note": "héllo ✓",
}


@pytest.fixture(scope="module")
def node_setup() -> tuple[str, str]:
    """(path of `node`, "") with tests/exporters/node's pinned packages installed, or ("", why not)."""
    node = shutil.which("node")
    if node is None:
        return "", ("Node.js is not on PATH: this test runs the OpenTelemetry JS exporters under `node` "
                    "(install Node.js 20 or newer, e.g. Debian's nodejs and npm packages)")
    if not INSTALLED.exists():
        npm = shutil.which("npm")
        if npm is None:
            return "", f"npm is not on PATH: cannot install the packages of {NODE_DIR / 'package-lock.json'}"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], check=False, cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not INSTALLED.exists():
            return "", f"`npm ci` in {NODE_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return node, ""


def require_node(node_setup) -> str:
    path, problem = node_setup
    if problem:
        pytest.fail(problem, pytrace=False)  # a failure, never a skip: CI machines have node
    return path


def send(node: str, exporter: str, url: str, key: str, compression: str | None) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OTEL_", "NODE_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,  # the exporter appends /v1/traces
        # The JS SDK reads this as W3C-baggage-style key=value pairs and URL-decodes each value,
        # so the space after Bearer is written %20, as the OpenTelemetry docs show.
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{key}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "10000",
    })
    if compression:
        env["OTEL_EXPORTER_OTLP_COMPRESSION"] = compression
    done = subprocess.run([node, str(SEND), exporter], check=False, cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"node send.js {exporter} failed ({done.returncode}):\n{done.stderr}\n{done.stdout}"
    assert done.stderr == "", done.stderr  # the exporter logs every problem (diag) to stderr
    sent = json.loads(done.stdout)
    assert sent["exporter"] == exporter and all(e["code"] == 0 for e in sent["exports"]), sent
    return sent


@pytest.mark.parametrize(("exporter", "compression"), [
    ("json", None),
    ("proto", None),
    ("proto", "gzip"),
    ("json", "gzip"),
])
def test_js_exporter_spans_arrive_whole(node_setup, gunicorn_url, acme, acme_key, exporter, compression):
    node = require_node(node_setup)
    before_ns = time.time_ns()
    sent = send(node, exporter, gunicorn_url, acme_key, compression)
    after_ns = time.time_ns()
    ids = sent["spans"]
    assert set(ids) == {"plan task", "invoke coder", "handle invoke", "read doc", "write doc", "review change"}
    main_trace, review_trace = ids["plan task"]["trace_id"], ids["review change"]["trace_id"]
    assert sorted(sent["trace_ids"]) == sorted({main_trace, review_trace}) and main_trace != review_trace

    stored = {s.span_id: s for s in Span.objects.filter(project=acme)}
    assert len(stored) == len(ids), f"{len(stored)} of {len(ids)} spans stored"
    rows = {}
    for name, sdk in ids.items():
        row = stored[sdk["span_id"]]
        rows[name] = row
        assert (row.trace_id, row.name, row.parent_span_id) == (sdk["trace_id"], name, sdk["parent_span_id"])
        assert before_ns <= row.start_ns <= row.end_ns <= after_ns
        assert row.duration_ns == row.end_ns - row.start_ns
        assert (row.scope_name, row.scope_version) == ("causeway.tests.node", "3.1.4")
        # The Resource as the SDK built it, typed (host.cpu.count stays an int).
        assert row.resource_attributes == {**RESOURCE, "service.instance.id": f"node-planner-{exporter}"}
        assert type(row.resource_attributes["host.cpu.count"]) is int
        assert (row.service_name, row.service_version, row.instance_id, row.agent) == (
            "node-planner", "4.2.0", f"node-planner-{exporter}", "node-planner")

    root, client, server = rows["plan task"], rows["invoke coder"], rows["handle invoke"]
    read, write, review = rows["read doc"], rows["write doc"], rows["review change"]

    # Parents: plan -> invoke (CLIENT) -> handle (SERVER, through a traceparent header) -> read, write.
    assert root.parent_span_id == "" and root.trace_id == main_trace
    assert client.parent_span_id == root.span_id and server.parent_span_id == client.span_id
    assert read.parent_span_id == write.parent_span_id == server.span_id
    assert {r.trace_id for r in (root, client, server, read, write)} == {main_trace}
    assert review.parent_span_id == "" and review.trace_id == review_trace
    assert [(n, rows[n].kind) for n in ids] == [
        ("plan task", INTERNAL), ("invoke coder", CLIENT), ("handle invoke", SERVER),
        ("read doc", INTERNAL), ("write doc", INTERNAL), ("review change", CONSUMER)]

    # Typed attributes: an int stays an int, a double a float, a bool a bool, arrays arrays.
    assert root.attributes == ROOT_ATTRIBUTES
    for name, value in ROOT_ATTRIBUTES.items():
        assert type(root.attributes[name]) is type(value), name
    assert [type(v) for v in root.attributes["task.retries"]] == [int, int, int]
    assert [type(v) for v in root.attributes["task.weights"]] == [float, float]
    assert [type(v) for v in root.attributes["task.flags"]] == [bool, bool]
    assert client.attributes == {"rpc.system": "a2a", "thread.id": "main"} and client.thread_id == "main"
    assert server.attributes == {} and server.thread_id == ""

    # Events, with typed attributes and their own timestamps.
    (ready,) = root.events
    assert ready["name"] == "plan.ready" and root.start_ns <= ready["time_ns"] <= root.end_ns
    assert ready["attributes"] == {"steps": 3, "tools": ["search", "edit"], "confidence": 0.9, "final": True}
    assert type(ready["attributes"]["steps"]) is int and type(ready["attributes"]["confidence"]) is float
    (acquired,) = write.events
    assert acquired["name"] == "lock.acquired"
    assert acquired["attributes"] == {"lock.fencing_token": 101, "waited_ms": 1.25}
    (failed,) = review.events
    assert failed["name"] == "review.failed"
    assert failed["attributes"] == {"failures": 2, "cases": ["a", "b"], "ratio": 0.5}
    assert all(r.events == [] for r in (client, server, read))

    # A link across traces, with attributes; status.
    assert review.links == [{"trace_id": main_trace, "span_id": client.span_id,
                             "attributes": {"link.reason": "reviews", "attempt": 1, "strict": True}}]
    assert all(r.links == [] for r in (root, client, server, read, write))
    assert (review.status_code, review.status_message) == (ERROR, "tests failed: 2 of 9")
    assert all((r.status_code, r.status_message) == (UNSET, "") for r in (root, client, server, read, write))

    # The spec's concurrency attributes, typed into their columns.
    assert (write.state_key, write.state_op, write.state_version, write.state_base_version, write.state_conflict) == (
        "doc:node", "write", 3, 2, False)
    assert (write.idempotency_key, write.idempotency_outcome, write.thread_id) == ("write-node-1", "executed", "w1")
    assert write.attributes["state.version"] == 3 and type(write.attributes["state.version"]) is int
    assert (read.state_key, read.state_op, read.state_version, read.state_base_version, read.idempotency_key) == (
        "doc:node", "read", 2, None, "")
    assert (review.state_key, review.state_op, review.state_version, review.state_base_version) == (
        "doc:node", "write", 3, 1)
    assert (review.idempotency_key, review.idempotency_outcome) == ("review-node-1", "deduplicated")
    assert (root.state_key, root.state_version, root.idempotency_key, root.lock_fencing_token) == ("", None, "", None)

    # The trace summaries.
    summaries = {t.trace_id: t for t in Trace.objects.filter(project=acme)}
    assert set(summaries) == {main_trace, review_trace}
    main, other = summaries[main_trace], summaries[review_trace]
    assert (main.span_count, main.error_count, main.root_name, main.root_span_id) == (5, 0, "plan task", root.span_id)
    assert (main.start_ns, main.end_ns) == (root.start_ns, max(r.end_ns for r in (root, client, server, read, write)))
    assert (other.span_count, other.error_count, other.root_name) == (1, 1, "review change")
    assert main.service_list == other.service_list == ["node-planner"]
    assert main.agent_list == ["node-planner"]
