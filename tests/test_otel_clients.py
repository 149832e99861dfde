"""The real clients: the OpenTelemetry SDK and its OTLP exporters (HTTP and
gRPC) send a multi-agent workload, and every span arrives whole.

The HTTP exporter posts to pytest-django's live_server; the gRPC exporter to
the receiver of `manage.py otlp_grpc`, started in this process on a free port.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import grpc
import pytest
from django.db import connection
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from governance.models import IngestKey, hash_key
from governance.services import ingest_key_revoke
from tests.conftest import api_as
from tests.otlp_strategies import batches, damaged
from traces.grpc_receiver import SERVICE, build_server
from traces.models import Span, Trace

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = {
    "planner": {"service.name": "planner", "service.version": "1.4.0", "service.instance.id": "planner-0",
                "gen_ai.agent.id": "planner", "deployment.environment": "test"},
    "coder": {"service.name": "coder", "service.version": "2.0.1", "service.instance.id": "coder-7",
              "gen_ai.agent.id": "coder", "host.cpu.count": 2},
    "reviewer": {"service.name": "reviewer", "service.version": "0.9.0", "service.instance.id": "reviewer-1",
                 "gen_ai.agent.id": "reviewer"},
}
TASKS = 3
BIG = 2**53 + 1  # not exact as a double: an int must stay an int end to end
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


# --- the workload ---------------------------------------------------------------------------------------------------


class Workload:
    """Three agents, each its own TracerProvider and Resource, exporting through `make_exporter()`."""

    def __init__(self, make_exporter):
        self.memory = InMemorySpanExporter()  # what the SDK finished, to compare with what was stored
        self.results: list[SpanExportResult] = []
        self.providers = {}
        for name, attributes in AGENTS.items():
            provider = TracerProvider(resource=Resource.create(attributes))
            exporter = make_exporter()
            export = exporter.export

            def recording_export(spans, _export=export):
                result = _export(spans)
                self.results.append(result)
                return result

            exporter.export = recording_export
            provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=7))
            provider.add_span_processor(SimpleSpanProcessor(self.memory))
            self.providers[name] = provider
        self.tracers = {name: p.get_tracer(f"causeway.tests.{name}", "3.1.4") for name, p in self.providers.items()}

    def run(self) -> list:
        planner, coder, reviewer = self.tracers["planner"], self.tracers["coder"], self.tracers["reviewer"]
        propagator = TraceContextTextMapPropagator()
        for task in range(TASKS):
            with planner.start_as_current_span("plan task", attributes={
                "task.id": f"task-{task}", "task.priority": 3 + task, "task.budget": 0.75, "task.urgent": task == 0,
                "task.tags": ("refactor", "docs"), "task.retries": (0, 1, 2), "task.weights": (0.5, 1.5),
                "task.flags": (True, False), "task.big": BIG, "task.negative": -7,
            }) as root:
                root.add_event("plan.ready", {"steps": 3, "tools": ("search", "edit"), "confidence": 0.9})
                with planner.start_as_current_span("invoke coder", kind=SpanKind.CLIENT,
                                                   attributes={"rpc.system": "a2a", "thread.id": "main"}) as client:
                    carrier: dict[str, str] = {}
                    propagator.inject(carrier)  # what travels in the request headers to the coder
                    with coder.start_as_current_span("handle invoke", context=propagator.extract(carrier),
                                                      kind=SpanKind.SERVER):
                        with coder.start_as_current_span("read doc", attributes={
                            "state.key": f"doc:{task}", "state.op": "read", "state.version": task + 1,
                        }):
                            pass
                        with coder.start_as_current_span("write doc", attributes={
                            "state.key": f"doc:{task}", "state.op": "write", "state.version": task + 2,
                            "state.base_version": task + 1, "state.conflict": False,
                            "idempotency.key": f"write-{task}", "idempotency.outcome": "executed",
                            "lock.name": f"lock:doc:{task}", "lock.fencing_token": 100 + task, "thread.id": "w1",
                        }) as write:
                            write.add_event("lock.acquired", {"lock.fencing_token": 100 + task, "waited_ms": 1.25})
                        with coder.start_as_current_span("send email", kind=SpanKind.PRODUCER, attributes={
                            "idempotency.key": f"mail-{task}", "idempotency.outcome": "deduplicated",
                        }):
                            pass
                    handoff = client.get_span_context()
            with reviewer.start_as_current_span(
                "review change", kind=SpanKind.CONSUMER,
                links=[Link(handoff, {"link.reason": "reviews", "attempt": 1, "strict": True})],
                attributes={"state.key": f"doc:{task}", "state.op": "write", "state.version": task + 2,
                            "state.base_version": task, "state.conflict": True},
            ) as review:
                review.add_event("review.failed", {"failures": 2, "cases": ("a", "b")})
                review.set_status(Status(StatusCode.ERROR, f"tests failed: 2 of {9 + task}"))
        for provider in self.providers.values():
            assert provider.force_flush(10_000)
        for provider in self.providers.values():
            provider.shutdown()
        return list(self.memory.get_finished_spans())


def plain(value):
    """SDK attribute values as they come back from JSON: tuples become lists."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: plain(v) for k, v in value.items()}
    return value


def hex_trace(trace_id: int) -> str:
    return format(trace_id, "032x")


def hex_span(span_id: int) -> str:
    return format(span_id, "016x")


# --- what must have arrived -----------------------------------------------------------------------------------------


def assert_all_stored(project, finished: list) -> None:
    assert len(finished) == TASKS * 7
    assert Span.objects.filter(project=project).count() == len(finished)
    stored = {(s.trace_id, s.span_id): s for s in Span.objects.filter(project=project)}
    for sdk in finished:
        ctx = sdk.get_span_context()
        row = stored[(hex_trace(ctx.trace_id), hex_span(ctx.span_id))]
        assert row.parent_span_id == (hex_span(sdk.parent.span_id) if sdk.parent else "")
        assert row.name == sdk.name
        assert row.kind == sdk.kind.value + 1  # the SDK counts from INTERNAL=0, OTLP from UNSPECIFIED=0
        assert (row.start_ns, row.end_ns, row.duration_ns) == (sdk.start_time, sdk.end_time, sdk.end_time - sdk.start_time)
        assert row.status_code == sdk.status.status_code.value
        assert row.status_message == (sdk.status.description or "")
        assert row.attributes == plain(sdk.attributes)
        assert row.events == [{"name": e.name, "time_ns": e.timestamp, "attributes": plain(e.attributes)}
                              for e in sdk.events]
        assert row.links == [{"trace_id": hex_trace(l.context.trace_id), "span_id": hex_span(l.context.span_id),
                              "attributes": plain(l.attributes)} for l in sdk.links]
        assert row.resource_attributes == plain(sdk.resource.attributes)
        assert (row.scope_name, row.scope_version) == (sdk.instrumentation_scope.name, "3.1.4")
        resource = sdk.resource.attributes
        assert (row.service_name, row.service_version, row.instance_id, row.agent) == (
            resource["service.name"], resource["service.version"], resource["service.instance.id"],
            resource["gen_ai.agent.id"])
        assert row.thread_id == sdk.attributes.get("thread.id", "")

    # A few spans in full, as the analysis reads them.
    root = stored_one(project, "plan task", "task-0")
    assert root.parent_span_id == "" and root.kind == 1
    assert root.attributes["task.big"] == BIG and isinstance(root.attributes["task.big"], int)
    assert root.attributes["task.budget"] == 0.75 and root.attributes["task.urgent"] is True
    assert root.attributes["task.tags"] == ["refactor", "docs"] and root.attributes["task.flags"] == [True, False]
    assert root.events[0]["attributes"] == {"steps": 3, "tools": ["search", "edit"], "confidence": 0.9}

    client = Span.objects.get(project=project, trace_id=root.trace_id, name="invoke coder")
    server = Span.objects.get(project=project, trace_id=root.trace_id, name="handle invoke")
    assert (client.kind, server.kind) == (3, 2)  # CLIENT, SERVER
    assert client.parent_span_id == root.span_id and server.parent_span_id == client.span_id
    assert (client.agent, server.agent) == ("planner", "coder")
    assert server.resource_attributes["host.cpu.count"] == 2
    assert client.thread_id == "main"

    for task in range(TASKS):
        write = Span.objects.get(project=project, name="write doc", state_key=f"doc:{task}")
        assert (write.state_op, write.state_version, write.state_base_version, write.state_conflict) == (
            "write", task + 2, task + 1, False)
        assert (write.idempotency_key, write.idempotency_outcome) == (f"write-{task}", "executed")
        assert (write.lock_name, write.lock_fencing_token) == (f"lock:doc:{task}", 100 + task)
        assert write.thread_id == "w1" and write.instance_id == "coder-7"
        read = Span.objects.get(project=project, name="read doc", state_key=f"doc:{task}")
        assert (read.state_op, read.state_version, read.state_base_version, read.lock_fencing_token) == (
            "read", task + 1, None, None)
        mail = Span.objects.get(project=project, idempotency_key=f"mail-{task}")
        assert (mail.idempotency_outcome, mail.kind, mail.state_key) == ("deduplicated", 4, "")
        review = Span.objects.get(project=project, name="review change", state_key=f"doc:{task}")
        assert (review.status_code, review.status_message) == (2, f"tests failed: {2} of {9 + task}")
        assert (review.state_conflict, review.state_version, review.state_base_version, review.kind) == (True, task + 2, task, 5)
        assert review.parent_span_id == "" and review.trace_id != write.trace_id
        assert review.links[0]["trace_id"] == write.trace_id
        assert review.links[0]["attributes"] == {"link.reason": "reviews", "attempt": 1, "strict": True}

    by_trace = defaultdict(list)
    for sdk in finished:
        by_trace[hex_trace(sdk.get_span_context().trace_id)].append(sdk)
    assert Trace.objects.filter(project=project).count() == len(by_trace) == 2 * TASKS
    for trace_id, spans in by_trace.items():
        summary = Trace.objects.get(project=project, trace_id=trace_id)
        assert summary.span_count == len(spans)
        assert summary.error_count == sum(1 for s in spans if s.status.status_code == StatusCode.ERROR)
        assert summary.start_ns == min(s.start_time for s in spans)
        assert summary.end_ns == max(s.end_time for s in spans)
        root_span = next(s for s in spans if s.parent is None)
        assert (summary.root_name, summary.root_span_id) == (root_span.name, hex_span(root_span.context.span_id))
        assert summary.service_list == sorted({s.resource.attributes["service.name"] for s in spans})
        assert summary.agent_list == sorted({s.resource.attributes["gen_ai.agent.id"] for s in spans})


def stored_one(project, name: str, task_id: str) -> Span:
    return next(s for s in Span.objects.filter(project=project, name=name) if s.attributes.get("task.id") == task_id)


def assert_api_shows(user, finished: list) -> None:
    root = next(s for s in finished if s.name == "plan task" and s.attributes["task.id"] == "task-1")
    trace_id = hex_trace(root.context.trace_id)
    response = api_as(user).get(f"/api/v1/traces/{trace_id}/")
    assert response.status_code == 200
    data = response.json()
    assert data["trace_id"] == trace_id and HEX32.match(data["trace_id"])
    assert data["root_name"] == "plan task" and data["root_span_id"] == hex_span(root.context.span_id)
    assert (data["services"], data["agents"]) == (["coder", "planner"], ["coder", "planner"])
    assert data["span_count"] == 6 and data["error_count"] == 0 and data["state"] == "open"
    spans = {s["name"]: s for s in data["spans"]}
    assert set(spans) == {"plan task", "invoke coder", "handle invoke", "read doc", "write doc", "send email"}
    for span in data["spans"]:
        assert HEX32.match(span["trace_id"]) and HEX16.match(span["span_id"])
        assert span["parent_span_id"] == "" or HEX16.match(span["parent_span_id"])
        assert isinstance(span["attributes"], dict) and isinstance(span["resource_attributes"], dict)
        assert isinstance(span["events"], list) and isinstance(span["links"], list)
    assert spans["plan task"]["attributes"]["task.big"] == BIG
    assert spans["plan task"]["attributes"]["task.weights"] == [0.5, 1.5]
    assert spans["plan task"]["events"][0]["name"] == "plan.ready"
    assert (spans["invoke coder"]["kind"], spans["handle invoke"]["kind"]) == ("client", "server")
    assert spans["handle invoke"]["parent_span_id"] == spans["invoke coder"]["span_id"]
    assert spans["write doc"]["attributes"]["lock.fencing_token"] == 101
    assert spans["write doc"]["resource_attributes"]["service.instance.id"] == "coder-7"
    assert spans["plan task"]["status"] == {"code": "unset", "message": ""}

    review = next(s for s in finished if s.name == "review change" and s.links[0].context.span_id
                  == next(c for c in finished if c.name == "invoke coder" and c.context.trace_id == root.context.trace_id).context.span_id)
    data = api_as(user).get(f"/api/v1/traces/{hex_trace(review.context.trace_id)}/").json()
    (span,) = data["spans"]
    assert span["kind"] == "consumer" and span["status"] == {"code": "error", "message": "tests failed: 2 of 10"}
    assert span["links"] == [{"trace_id": trace_id, "span_id": spans["invoke coder"]["span_id"],
                              "attributes": {"link.reason": "reviews", "attempt": 1, "strict": True}}]
    assert data["error_count"] == 1


# --- OTLP/HTTP ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def test_it_stores_a_multi_agent_workload_sent_by_the_http_exporter(live_server, acme, alice, acme_key, compression):
    workload = Workload(lambda: HttpSpanExporter(endpoint=f"{live_server.url}/v1/traces",
                                                 headers={"Authorization": f"Bearer {acme_key}"},
                                                 compression=compression, timeout=10))
    finished = workload.run()
    assert workload.results and set(workload.results) == {SpanExportResult.SUCCESS}
    assert_all_stored(acme, finished)
    assert_api_shows(alice, finished)


def test_it_tells_the_http_exporter_an_unknown_key_fails(live_server, acme):
    workload = Workload(lambda: HttpSpanExporter(endpoint=f"{live_server.url}/v1/traces",
                                                 headers={"Authorization": "Bearer cwk_nope"}, timeout=5))
    workload.run()
    assert set(workload.results) == {SpanExportResult.FAILURE}
    assert not Span.objects.exists()


# --- OTLP/gRPC ------------------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_port(transactional_db, monkeypatch):
    # Like live_server's threads, close each call's connection when the call ends, so no
    # connection outlives the test in an idle worker thread.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    server, port = build_server("127.0.0.1", 0, 4)
    server.start()
    yield port
    server.stop(None).wait()


@pytest.fixture
def stub(grpc_port):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        yield TraceServiceStub(channel)


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip], ids=["plain", "gzip"])
def test_it_stores_a_multi_agent_workload_sent_by_the_grpc_exporter(grpc_port, acme, alice, acme_key, compression):
    workload = Workload(lambda: GrpcSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True,
                                                 headers={"authorization": f"Bearer {acme_key}"},
                                                 compression=compression, timeout=10))
    finished = workload.run()
    assert workload.results and set(workload.results) == {SpanExportResult.SUCCESS}
    assert_all_stored(acme, finished)
    assert_api_shows(alice, finished)


def one_span_request(name="op", trace_id=b"\x01" * 16, span_id=b"\x02" * 8) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    span = scope_spans.spans.add(trace_id=trace_id, span_id=span_id, name=name, kind=1,
                                 start_time_unix_nano=1_000, end_time_unix_nano=2_000)
    span.attributes.add(key="state.key", value={"string_value": "k"})
    return request


def test_it_takes_a_bare_key_over_grpc(stub, acme, acme_key):
    response = stub.Export(one_span_request(), metadata=(("authorization", acme_key),), timeout=10)
    assert not response.HasField("partial_success")
    assert Span.objects.get(project=acme).state_key == "k"


def test_it_refuses_an_unknown_or_missing_key_over_grpc_with_unauthenticated(stub, acme):
    for metadata in ((("authorization", "Bearer cwk_unknown"),), ()):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(one_span_request(), metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "ingest key" in caught.value.details()
    assert not Span.objects.exists()


def test_it_refuses_a_revoked_key_over_grpc_with_permission_denied(stub, acme, alice, acme_key):
    assert ingest_key_revoke(key=IngestKey.objects.get(key_hash=hash_key(acme_key)), actor=alice)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Export(one_span_request(), metadata=(("authorization", f"Bearer {acme_key}"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "this ingest key was revoked"
    assert not Span.objects.exists()


def test_it_counts_rejected_spans_in_partial_success_over_grpc(stub, acme, acme_key):
    request = one_span_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, name="", start_time_unix_nano=1, end_time_unix_nano=2)
    spans.add(trace_id=b"\x01" * 15, span_id=b"\x04" * 8, name="short id", start_time_unix_nano=1, end_time_unix_nano=2)
    response = stub.Export(request, metadata=(("authorization", f"Bearer {acme_key}"),), timeout=10)
    assert response.partial_success.rejected_spans == 2
    assert "name is empty" in response.partial_success.error_message
    assert "trace_id must be 16 non-zero bytes" in response.partial_success.error_message
    assert list(Span.objects.filter(project=acme).values_list("name", flat=True)) == ["op"]


def test_a_mixed_batch_over_grpc_stores_the_valid_spans_normalised_and_counts_the_rest(stub, acme, acme_key):
    request = one_span_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    long_name = spans.add(trace_id=b"\x01" * 16, span_id=b"\x03" * 8, name="n" * 600, kind=40000,
                          start_time_unix_nano=1, end_time_unix_nano=2)
    long_name.attributes.add(key="nan", value={"double_value": float("nan")})
    long_name.attributes.add(key="nul", value={"string_value": "a\x00b"})
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x04" * 8, name="late", start_time_unix_nano=2**63,
              end_time_unix_nano=2**64 - 1)
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x05" * 8, name="", start_time_unix_nano=1, end_time_unix_nano=2)
    response = stub.Export(request, metadata=(("authorization", acme_key),), timeout=10)
    assert response.partial_success.rejected_spans == 2
    assert response.partial_success.error_message == (
        "1 span(s): name is empty; 1 span(s): start or end time is at or after 2^63 ns (the year 2262); "
        "1 span(s) stored normalised: name cut to 512 characters; "
        "1 span(s) stored normalised: unknown kind stored as unspecified")
    assert sorted(Span.objects.values_list("span_id", flat=True)) == ["0202020202020202", "0303030303030303"]
    row = Span.objects.get(span_id="0303030303030303")
    assert (len(row.name), row.kind) == (512, 0)
    assert row.attributes == {"nan": "NaN", "nul": "a\ufffdb", "causeway.normalized": [
        "name cut to 512 characters", "unknown kind stored as unspecified"]}


def test_a_message_that_does_not_parse_is_invalid_argument_over_grpc_and_stores_nothing(grpc_port, acme, acme_key):
    good = one_span_request(name="ab").SerializeToString()
    bodies = {"not protobuf": b"\x0a\xff\xff\xff\x0f", "cut short": good[:-3],
              "a name that is not UTF-8": good.replace(b"ab", b"\xff\xfe")}
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        # The raw bytes, as a sender whose encoder is broken would send them.
        export = channel.unary_unary(f"/{SERVICE}/Export")
        for why, body in bodies.items():
            with pytest.raises(grpc.RpcError) as caught:
                export(body, metadata=(("authorization", acme_key),), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, why
            assert caught.value.details().startswith("body is not a protobuf ExportTraceServiceRequest"), why
    assert not Span.objects.exists()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_damaged_body_over_grpc_is_stored_whole_or_refused_as_invalid_argument(grpc_port, acme, acme_key, data):
    body = data.draw(damaged(data.draw(batches()).request().SerializeToString()))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        export = channel.unary_unary(f"/{SERVICE}/Export", response_deserializer=ExportTraceServiceResponse.FromString)
        try:
            export(body, metadata=(("authorization", acme_key),), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.details().startswith("body is not a protobuf ExportTraceServiceRequest")
    # Whatever was stored was stored whole: each trace's summary counts its spans (examples share the database).
    stored = Counter(Span.objects.filter(project=acme).values_list("trace_id", flat=True))
    assert dict(Trace.objects.filter(project=acme).values_list("trace_id", "span_count")) == stored


HOSTILE_ATTRIBUTES = {"nan": float("nan"), "-inf": float("-inf"), "nul": "a\x00b", "state.key": "k" * 600,
                      "state.op": "write", "state.version": 3}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_sdk_exporters_deliver_spans_the_database_cannot_hold_as_sent(request, acme, acme_key, transport):
    if transport == "http":
        live_server = request.getfixturevalue("live_server")
        exporter = HttpSpanExporter(endpoint=f"{live_server.url}/v1/traces",
                                    headers={"Authorization": f"Bearer {acme_key}"}, timeout=10)
    else:
        port = request.getfixturevalue("grpc_port")
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                                    headers={"authorization": f"Bearer {acme_key}"}, timeout=10)
    results = []
    export = exporter.export
    exporter.export = lambda spans: results.append(export(spans)) or results[-1]
    provider = TracerProvider(resource=Resource.create({**AGENTS["coder"], "service.name": "c\x00der"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("hostile")
    with tracer.start_as_current_span("x" * 600, attributes=HOSTILE_ATTRIBUTES) as hostile:
        hostile.add_event("e\x00", {"inf": float("inf")})
        with tracer.start_as_current_span("normal child", attributes={"ok": 1.5}):
            pass
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
    child, parent = Span.objects.get(name="normal child"), Span.objects.get(parent_span_id="")
    assert child.parent_span_id == parent.span_id and child.attributes == {"ok": 1.5}
    assert (len(parent.name), parent.service_name, len(parent.state_key), parent.state_version) == (
        512, "c\ufffdder", 512, 3)
    assert parent.attributes == {"nan": "NaN", "-inf": "-Infinity", "nul": "a\ufffdb", "state.key": "k" * 600,
                                 "state.op": "write", "state.version": 3, "causeway.normalized": [
                                     "name cut to 512 characters", "state.key cut to 512 characters"]}
    assert parent.events[0]["name"] == "e\ufffd" and parent.events[0]["attributes"] == {"inf": "Infinity"}


def test_it_refuses_a_message_over_the_limit_over_grpc_with_resource_exhausted(transactional_db, acme, acme_key):
    with override_settings(OTLP_MAX_BODY_BYTES=2_000):
        server, port = build_server("127.0.0.1", 0, 2)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = one_span_request(name="x" * 3_000)
            with pytest.raises(grpc.RpcError) as caught:
                TraceServiceStub(channel).Export(request, metadata=(("authorization", acme_key),), timeout=10)
    finally:
        server.stop(None).wait()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not Span.objects.exists()


def test_the_same_batch_sent_twice_over_grpc_is_stored_once(stub, acme, acme_key):
    for _ in range(2):
        stub.Export(one_span_request(), metadata=(("authorization", acme_key),), timeout=10)
    assert Span.objects.filter(project=acme).count() == 1
    assert Trace.objects.get(project=acme).span_count == 1


def test_a_key_of_one_project_writes_only_to_it_over_grpc(stub, acme, globex, globex_key):
    stub.Export(one_span_request(), metadata=(("authorization", f"Bearer {globex_key}"),), timeout=10)
    assert Span.objects.filter(project=globex).count() == 1
    assert not Span.objects.filter(project=acme).exists()

