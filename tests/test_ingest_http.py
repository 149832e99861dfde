"""OTLP/HTTP ingest at POST /v1/traces: what agents send, what they are told,
and who may read and write what."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import tracemalloc
import zlib
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from governance.models import AuditRecord, IngestKey, Project, hash_key
from governance.services import ingest_key_revoke
from tests.conftest import api_as
from tests.otlp_builders import key_values
from traces.models import Span, Trace

PROTOBUF, JSON = "application/x-protobuf", "application/json"
T1, T2, T3 = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736", "5b8aa5a2d2c872e8321cf37308d69df2"


# --- building requests ----------------------------------------------------------------------------------------------


def span(trace_id: str, span_id: str, name: str = "op", *, parent: str = "", start: int = 1_000_000_000,
         end: int | None = None, kind: int = 1, status: int = 0, message: str = "", attributes: dict | None = None) -> PbSpan:
    return PbSpan(
        trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id), parent_span_id=bytes.fromhex(parent),
        name=name, kind=kind, start_time_unix_nano=start, end_time_unix_nano=start + 5_000_000 if end is None else end,
        status=PbStatus(code=status, message=message), attributes=key_values(attributes or {}),
    )


def otlp_request(*resources: tuple[dict, list[PbSpan]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for resource, spans in resources:
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(key_values(resource))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "tests"
        scope_spans.spans.extend(spans)
    return request


PLANNER = {"service.name": "planner", "service.instance.id": "p-1", "gen_ai.agent.id": "planner"}
CODER = {"service.name": "coder", "service.instance.id": "c-1", "gen_ai.agent.id": "coder-bot"}


def small_batch() -> bytes:
    return otlp_request(
        (PLANNER, [span(T1, "00f067aa0ba902b7", "plan"),
                   span(T1, "00f067aa0ba902b8", "call", parent="00f067aa0ba902b7", kind=3)]),
        (CODER, [span(T1, "00f067aa0ba902b9", "write doc", parent="00f067aa0ba902b8", kind=2, status=2, message="conflict",
                      attributes={"state.key": "doc:1", "state.op": "write", "state.version": 4})]),
    ).SerializeToString()


def post(client, body: bytes, key: str | None, content_type: str = PROTOBUF, encoding: str | None = None, **extra):
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if encoding:
        extra["HTTP_CONTENT_ENCODING"] = encoding
    extra.setdefault("CONTENT_TYPE", content_type)  # the test client drops it for an empty body; exporters never do
    return client.post("/v1/traces", data=body, content_type=content_type, **extra)


def rpc_status(response) -> tuple[int, str]:
    """The google.rpc.Status of an error response, in the encoding it claims."""
    if response["Content-Type"] == JSON:
        document = json.loads(response.content)
        return document["code"], document["message"]
    assert response["Content-Type"] == PROTOBUF
    status = RpcStatus.FromString(response.content)
    return status.code, status.message


# --- OTLP/JSON and protobuf -----------------------------------------------------------------------------------------


def test_it_stores_otlp_json_with_hex_ids_string_and_number_ints_and_enum_ints(client, acme, acme_key):
    document = {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "planner"}},
            {"key": "service.instance.id", "value": {"stringValue": "p-1"}},
        ]},
        "scopeSpans": [{"scope": {"name": "agent-sdk", "version": "1.2"}, "spans": [
            {"traceId": T1, "spanId": "00f067aa0ba902b7", "name": "plan", "kind": 3,
             "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000005000000,
             "status": {"code": 2, "message": "boom"},
             "attributes": [
                 {"key": "state.key", "value": {"stringValue": "doc:1"}},
                 {"key": "state.op", "value": {"stringValue": "write"}},
                 {"key": "state.version", "value": {"intValue": "9007199254740993"}},
                 {"key": "state.base_version", "value": {"intValue": 41}},
                 {"key": "lock.fencing_token", "value": {"intValue": "77"}},
                 {"key": "ratio", "value": {"doubleValue": 0.5}},
                 {"key": "ok", "value": {"boolValue": True}},
                 {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}},
                 {"key": "meta", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}},
                 {"key": "blob", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
             ],
             "events": [{"timeUnixNano": "1700000000001000000", "name": "retry",
                         "attributes": [{"key": "attempt", "value": {"intValue": 2}}]}],
             "links": [{"traceId": T2, "spanId": "00f067aa0ba902b8",
                        "attributes": [{"key": "why", "value": {"stringValue": "caused"}}]}]},
            {"traceId": T1, "spanId": "00f067aa0ba902b9", "parentSpanId": "00f067aa0ba902b7", "name": "child",
             "kind": 2, "startTimeUnixNano": 1700000000001000000, "endTimeUnixNano": "1700000000002000000"},
        ]}],
    }]}
    response = post(client, json.dumps(document).encode(), acme_key, JSON)
    assert response.status_code == 200
    assert response["Content-Type"] == JSON
    assert json.loads(response.content) == {}

    stored = Span.objects.get(project=acme, span_id="00f067aa0ba902b7")
    assert (stored.trace_id, stored.parent_span_id, stored.kind) == (T1, "", 3)
    assert (stored.start_ns, stored.end_ns) == (1700000000000000000, 1700000000005000000)
    assert (stored.status_code, stored.status_message) == (2, "boom")
    assert (stored.state_key, stored.state_op, stored.state_version, stored.state_base_version) == (
        "doc:1", "write", 9007199254740993, 41)
    assert stored.lock_fencing_token == 77
    assert stored.attributes["state.version"] == 9007199254740993
    assert stored.attributes["ratio"] == 0.5 and stored.attributes["ok"] is True
    assert stored.attributes["tags"] == ["a", 2]
    assert stored.attributes["meta"] == {"k": "v"}
    assert stored.attributes["blob"] == "AAE="
    assert stored.events == [{"name": "retry", "time_ns": 1700000000001000000, "attributes": {"attempt": 2}}]
    assert stored.links == [{"trace_id": T2, "span_id": "00f067aa0ba902b8", "attributes": {"why": "caused"}}]
    assert (stored.scope_name, stored.scope_version, stored.service_name, stored.agent) == (
        "agent-sdk", "1.2", "planner", "planner/p-1")
    child = Span.objects.get(project=acme, span_id="00f067aa0ba902b9")
    assert (child.parent_span_id, child.kind, child.end_ns) == ("00f067aa0ba902b7", 2, 1700000000002000000)
    summary = Trace.objects.get(project=acme, trace_id=T1)
    assert (summary.span_count, summary.error_count, summary.root_name) == (2, 1, "plan")


def test_it_stores_json_with_proto_field_names_and_enum_names_as_the_cpp_exporter_sends(client, acme, acme_key):
    # opentelemetry-cpp's OTLP/HTTP JSON defaults: use_json_name=false (snake_case names), hex ids,
    # int64 as strings, enums by name.
    document = {"resource_spans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "cpp-agent"}}]},
        "scope_spans": [{"spans": [
            {"trace_id": T1, "span_id": "00f067aa0ba902b7", "parent_span_id": "00f067aa0ba902b8", "name": "step",
             "kind": "SPAN_KIND_CLIENT", "start_time_unix_nano": "1700000000000000000",
             "end_time_unix_nano": "1700000000002000000", "status": {"code": "STATUS_CODE_ERROR"},
             "links": [{"trace_id": T2, "span_id": "00f067aa0ba902b9"}]},
        ]}],
    }]}
    response = post(client, json.dumps(document).encode(), acme_key, "application/json; charset=utf-8")
    assert response.status_code == 200, response.content
    stored = Span.objects.get(project=acme)
    assert (stored.trace_id, stored.parent_span_id, stored.kind, stored.status_code) == (T1, "00f067aa0ba902b8", 3, 2)
    assert stored.service_name == "cpp-agent" and stored.end_ns == 1700000000002000000
    assert stored.links == [{"trace_id": T2, "span_id": "00f067aa0ba902b9", "attributes": {}}]


def test_it_answers_partial_success_in_json_for_json_requests(client, acme, acme_key):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": "00f067aa0ba902b7", "name": "good", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
        {"traceId": T1, "spanId": "00f067aa0ba902b8", "name": "", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
    ]}]}]}
    response = post(client, json.dumps(document).encode(), acme_key, f"{JSON}; charset=utf-8")
    assert response.status_code == 200
    assert json.loads(response.content) == {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "1 span(s): name is empty"}}
    assert list(Span.objects.values_list("name", flat=True)) == ["good"]


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_it_takes_gzip_bodies(client, acme, acme_key, content_type):
    request = ExportTraceServiceRequest.FromString(small_batch())
    if content_type == JSON:
        body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": T1, "spanId": s.span_id.hex(), "name": s.name, "startTimeUnixNano": str(s.start_time_unix_nano),
             "endTimeUnixNano": str(s.end_time_unix_nano)} for s in request.resource_spans[0].scope_spans[0].spans
        ]}]}]}).encode()
    else:
        body = request.SerializeToString()
    response = post(client, gzip.compress(body), acme_key, content_type, encoding="gzip")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert Span.objects.filter(project=acme).count() == (3 if content_type == PROTOBUF else 2)


def test_the_same_batch_sent_three_times_is_stored_once(client, acme, acme_key):
    body = small_batch()
    for _ in range(3):
        response = post(client, body, acme_key)
        assert response.status_code == 200
        assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert Span.objects.filter(project=acme).count() == 3
    summary = Trace.objects.get(project=acme, trace_id=T1)
    assert (summary.span_count, summary.error_count) == (3, 1)
    assert summary.services == "|coder|planner|"


def test_an_overlapping_batch_adds_only_its_new_spans(client, acme, acme_key):
    assert post(client, small_batch(), acme_key).status_code == 200
    more = otlp_request((CODER, [span(T1, "00f067aa0ba902b9", "write doc", parent="00f067aa0ba902b8"),
                                 span(T1, "00f067aa0ba902ba", "read doc", parent="00f067aa0ba902b8", start=500)]))
    assert post(client, more.SerializeToString(), acme_key).status_code == 200
    summary = Trace.objects.get(project=acme, trace_id=T1)
    assert summary.span_count == Span.objects.filter(project=acme).count() == 4
    assert summary.start_ns == 500


def test_an_empty_request_gets_200(client, acme, acme_key):
    assert post(client, b"", acme_key).status_code == 200
    response = post(client, b"{}", acme_key, JSON)
    assert response.status_code == 200 and json.loads(response.content) == {}
    assert post(client, ExportTraceServiceRequest().SerializeToString(), acme_key).status_code == 200
    assert not Span.objects.exists() and not Trace.objects.exists()


def test_bad_spans_are_rejected_one_by_one_and_the_others_stored(client, acme, acme_key):
    request = otlp_request((PLANNER, [
        span(T1, "00f067aa0ba902b7", "good one"),
        PbSpan(trace_id=b"\x01" * 8, span_id=b"\x02" * 8, name="short trace id", start_time_unix_nano=1, end_time_unix_nano=2),
        PbSpan(trace_id=b"\x01" * 16, span_id=b"\x02" * 4, name="short span id", start_time_unix_nano=1, end_time_unix_nano=2),
        PbSpan(trace_id=b"\x00" * 16, span_id=b"\x02" * 8, name="zero trace id", start_time_unix_nano=1, end_time_unix_nano=2),
        PbSpan(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 3, name="odd parent",
               start_time_unix_nano=1, end_time_unix_nano=2),
        span(T1, "00f067aa0ba902b8", "ends before it starts", start=2_000, end=1_000),
        span(T1, "00f067aa0ba902b9", ""),
        span(T2, "00f067aa0ba902ba", "good two"),
    ]))
    response = post(client, request.SerializeToString(), acme_key)
    assert response.status_code == 200
    result = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert result.rejected_spans == 6
    assert result.error_message == (
        "1 span(s): end_time_unix_nano is before start_time_unix_nano; 1 span(s): name is empty; "
        "1 span(s): parent_span_id must be empty or 8 bytes; 1 span(s): span_id must be 8 non-zero bytes; "
        "2 span(s): trace_id must be 16 non-zero bytes")
    assert sorted(Span.objects.filter(project=acme).values_list("name", flat=True)) == ["good one", "good two"]
    assert Trace.objects.filter(project=acme).count() == 2


# --- refusals: each has its status, a google.rpc.Status body, and stores nothing -------------------------------------


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_each_bad_request_gets_its_status_and_stores_nothing(client, acme, alice, acme_key, content_type):
    revoked_key = IngestKey.objects.create(project=acme, name="old", key_hash=hash_key("cwk_old"), hint="cwk_old")
    ingest_key_revoke(key=revoked_key, actor=alice)
    good = small_batch() if content_type == PROTOBUF else b'{"resourceSpans": []}'
    cases = [
        ("undecodable", b"\x0a\xff\xff\xff" if content_type == PROTOBUF else b'{"resourceSpans": [', acme_key, {}, 400, 3),
        ("no key", good, None, {}, 401, 16),
        ("unknown key", good, "cwk_unknown", {}, 401, 16),
        ("revoked key", good, "cwk_old", {}, 403, 7),
        ("not gzip", good, acme_key, {"encoding": "gzip"}, 400, 3),
        ("unknown encoding", good, acme_key, {"encoding": "br"}, 400, 3),
    ]
    for why, body, key, options, status, code in cases:
        response = post(client, body, key, content_type, **options)
        assert response.status_code == status, why
        assert rpc_status(response)[0] == code, why
        assert rpc_status(response)[1], why
    assert not Span.objects.exists() and not Trace.objects.exists()


def test_json_that_is_not_a_trace_export_is_refused(client, acme, acme_key):
    for body in (b"[1, 2]", b'{"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]}',
                 b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": {}}]}]}]}', b"\xff\xfe"):
        response = post(client, body, acme_key, JSON)
        assert response.status_code == 400, body
        assert rpc_status(response)[0] == 3
    assert not Span.objects.exists()


def test_get_is_405_with_allow_post(client, acme):
    response = client.get("/v1/traces")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert rpc_status(response) == (12, "GET is not allowed: POST OTLP trace data")
    response = client.get("/v1/traces", CONTENT_TYPE=JSON)
    assert response.status_code == 405 and rpc_status(response)[0] == 12 and response["Content-Type"] == JSON


def test_a_content_type_other_than_otlp_is_415(client, acme, acme_key):
    response = post(client, small_batch(), acme_key, "text/plain")
    assert response.status_code == 415
    assert rpc_status(response) == (
        3, "unsupported content type 'text/plain': use application/x-protobuf or application/json")
    assert not Span.objects.exists()


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_a_body_over_the_limit_is_413(client, acme, acme_key, content_type):
    with override_settings(OTLP_MAX_BODY_BYTES=100):
        response = post(client, b"x" * 101, acme_key, content_type)
        assert response.status_code == 413
        assert rpc_status(response)[0] == 8
        # Compressed small but inflating past the limit.
        response = post(client, gzip.compress(bytes(1_000)), acme_key, content_type, encoding="gzip")
        assert response.status_code == 413
        assert rpc_status(response) == (8, "body inflates past the limit of 100 bytes")
        assert post(client, b"\xff" * 100, acme_key, content_type).status_code == 400  # at the limit: read, then undecodable
    assert not Span.objects.exists()


def gzip_of_zeros(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    return b"".join([compressor.compress(chunk) for _ in range(megabytes)] + [compressor.flush()])


def test_a_gzip_bomb_is_413_without_inflating_past_the_limit(client, acme, acme_key):
    bomb = gzip_of_zeros(100)
    assert len(bomb) < 200_000
    with override_settings(OTLP_MAX_BODY_BYTES=1_000_000):
        tracemalloc.start()
        try:
            response = post(client, bomb, acme_key, encoding="gzip")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 413
    assert rpc_status(response) == (8, "body inflates past the limit of 1000000 bytes")
    assert peak < 10_000_000  # a few copies of the 1 MB limit at most, never the 100 MB
    assert not Span.objects.exists()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_it_answers_503_with_retry_after_when_the_database_is_unavailable(client, acme, acme_key, content_type):
    body = small_batch() if content_type == PROTOBUF else b'{"resourceSpans": []}'
    saved = dict(connection.settings_dict)
    connection.close()
    # The real failure, no mock: the next connection goes to a port nobody listens on (or a path that cannot exist).
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    else:
        connection.settings_dict["NAME"] = "/nonexistent/causeway/db.sqlite3"
    try:
        response = post(client, body, acme_key, content_type)
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    code, message = rpc_status(response)
    assert code == 14 and message.startswith("storage is unavailable, retry later")
    assert not Span.objects.exists()


# --- over real HTTP -------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_works_over_real_http_with_keep_alive(live_server, acme, acme_key):
    address = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    headers = {"Authorization": f"Bearer {acme_key}", "Content-Type": PROTOBUF, "Content-Encoding": "gzip"}
    conn.request("POST", "/v1/traces", body=gzip.compress(small_batch()), headers=headers)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == PROTOBUF
    assert ExportTraceServiceResponse.FromString(response.read()) == ExportTraceServiceResponse()
    with override_settings(OTLP_MAX_BODY_BYTES=1_000):
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        conn.request("POST", "/v1/traces", body=b"\x00" * 5_000, headers={**headers, "Content-Type": JSON})
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read()) == {"code": 8, "message": "body of 5000 bytes is over the limit of 1000"}
    assert Span.objects.filter(project=acme).count() == 3


def post_chunked(url: str, key: str, body: bytes) -> tuple[int, bytes]:
    """POST body in 1 kB chunks with Transfer-Encoding: chunked and no Content-Length, as the JS exporters do."""
    address = urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    chunks = (body[at:at + 1024] for at in range(0, len(body), 1024))
    conn.request("POST", "/v1/traces", body=chunks, encode_chunked=True,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": PROTOBUF, "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    return response.status, response.read()


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_stored_whole_under_gunicorn(gunicorn_url, acme, acme_key):
    status, body = post_chunked(gunicorn_url, acme_key, small_batch())
    assert status == 200 and ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()
    assert Span.objects.filter(project=acme).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_411_on_a_server_that_cannot_decode_it(live_server, acme, acme_key):
    # Django's development server hands the view an empty body: saying 200 would lose every span.
    status, body = post_chunked(live_server.url, acme_key, small_batch())
    assert status == 411
    assert RpcStatus.FromString(body).message.startswith("a chunked body needs a server that decodes it")
    assert not Span.objects.exists()


# --- projects, keys and who may do what -----------------------------------------------------------------------------


def test_a_key_of_one_project_cannot_write_to_another(client, acme, globex, acme_key, globex_key):
    assert post(client, small_batch(), acme_key).status_code == 200
    assert Span.objects.filter(project=acme).count() == 3
    assert not Span.objects.filter(project=globex).exists()
    # The same ids under globex's key are globex's own spans, not a duplicate of acme's.
    assert post(client, small_batch(), globex_key).status_code == 200
    assert Span.objects.filter(project=globex).count() == 3
    assert Trace.objects.get(project=acme, trace_id=T1).span_count == 3


def test_acme_people_cannot_read_globex_traces(client, acme, globex, alice, bob, charlie, globex_key):
    body = otlp_request((PLANNER, [span(T2, "00f067aa0ba902b7", "globex secret")])).SerializeToString()
    assert post(client, body, globex_key).status_code == 200
    assert api_as(charlie).get(f"/api/v1/traces/{T2}/").status_code == 200
    for user in (alice, bob):
        response = api_as(user).get(f"/api/v1/traces/{T2}/")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert api_as(user).get(f"/api/v1/traces/{T2}/?project=globex").status_code == 404
        assert api_as(user).get("/api/v1/traces/?project=globex").status_code == 404
        assert api_as(user).get("/api/v1/traces/").json()["count"] == 0
        client.force_login(user)
        assert client.get("/p/globex/traces/").status_code == 404
        assert client.get(f"/p/globex/traces/{T2}/").status_code == 404
        assert client.get(f"/p/acme/traces/{T2}/").status_code == 404
        assert client.get("/p/acme/traces/").status_code == 200
        assert b"globex secret" not in client.get("/p/acme/traces/").content


def test_a_viewer_cannot_create_keys_by_api_or_page(client, acme, bob):
    response = api_as(bob).post("/api/v1/projects/acme/ingest-keys/", {"name": "sneaky"}, format="json")
    assert response.status_code == 403
    assert response.json() == {"error": {"code": "permission_denied",
                                         "message": "this needs the admin role in project acme"}}
    client.force_login(bob)
    response = client.post("/p/acme/keys/new/", {"name": "sneaky"})
    assert response.status_code == 302
    assert b"this needs the admin role" in client.get(response["Location"]).content
    assert not IngestKey.objects.exists()
    assert not AuditRecord.objects.exists()


def test_an_admin_creates_and_revokes_keys_with_audit_records(client, acme, alice):
    response = api_as(alice).post("/api/v1/projects/acme/ingest-keys/", {"name": "agents"}, format="json")
    assert response.status_code == 201
    created = response.json()
    raw = created["key"]
    assert raw.startswith("cwk_") and created["name"] == "agents" and created["revoked"] is False
    assert post(client, small_batch(), raw).status_code == 200
    assert Span.objects.filter(project=acme).count() == 3

    response = api_as(alice).post(f"/api/v1/projects/acme/ingest-keys/{created['id']}/revoke/")
    assert response.status_code == 200 and response.json()["revoked"] is True
    assert post(client, small_batch(), raw).status_code == 403

    records = list(AuditRecord.objects.filter(project=acme).order_by("id").values_list(
        "action", "actor__username", "object_id", "detail"))
    assert records == [
        ("ingest_key.create", "alice", str(created["id"]), {"name": "agents", "hint": raw[:10]}),
        ("ingest_key.revoke", "alice", str(created["id"]), {"name": "agents", "hint": raw[:10]}),
    ]
    # The key itself is never kept, only its hash.
    assert not IngestKey.objects.filter(key_hash=raw).exists()
    assert IngestKey.objects.get(pk=created["id"]).key_hash == hash_key(raw)


def test_an_admin_creates_a_key_with_the_page_form(client, acme, alice):
    client.force_login(alice)
    response = client.post("/p/acme/keys/new/", {"name": "from the page"}, follow=True)
    assert response.status_code == 200
    raw = response.context["new_key"]
    assert raw.startswith("cwk_") and raw.encode() in response.content
    assert raw.encode() not in client.get("/p/acme/keys/").content  # shown once
    key = IngestKey.objects.get(project=acme)
    assert key.name == "from the page"
    assert AuditRecord.objects.get(project=acme).action == "ingest_key.create"


def test_create_ingest_key_prints_a_working_key_alone(client, db):
    out = StringIO()
    call_command("create_ingest_key", "New Proj", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cwk_")
    project = Project.objects.get(slug="new-proj")
    assert post(client, small_batch(), lines[0]).status_code == 200
    assert Span.objects.filter(project=project).count() == 3
    # Run again, the project is reused and a second key made.
    call_command("create_ingest_key", "new-proj", stdout=StringIO())
    assert Project.objects.filter(slug="new-proj").count() == 1
    assert project.ingest_keys.count() == 2


# --- reading back ---------------------------------------------------------------------------------------------------


def test_the_trace_list_api_filters_by_service_agent_name_and_status(client, acme, alice, acme_key):
    body = otlp_request(
        (PLANNER, [span(T1, "00f067aa0ba902b7", "plan", start=3_000_000_000)]),
        (CODER, [span(T2, "00f067aa0ba902b8", "code", start=2_000_000_000, status=2, message="failed"),
                 span(T2, "00f067aa0ba902b9", "write doc", parent="00f067aa0ba902b8", start=2_000_000_001)]),
        (PLANNER, [span(T3, "00f067aa0ba902ba", "plan", start=1_000_000_000)]),
        (CODER, [span(T3, "00f067aa0ba902bb", "write doc", parent="00f067aa0ba902ba", start=1_000_000_001)]),
    ).SerializeToString()
    assert post(client, body, acme_key).status_code == 200
    api = api_as(alice)

    def ids(query: str) -> list[str]:
        response = api.get(f"/api/v1/traces/{query}")
        assert response.status_code == 200, response.content
        return [t["trace_id"] for t in response.json()["results"]]

    assert ids("") == [T1, T2, T3]  # newest first
    assert ids("?service=coder") == [T2, T3]
    assert ids("?service=planner") == [T1, T3]
    assert ids("?agent=coder-bot") == [T2, T3]
    assert ids("?agent=planner") == [T1, T3]
    assert ids("?name=write%20doc") == [T2, T3]
    assert ids("?name=plan") == [T1, T3]
    assert ids("?status=error") == [T2]
    assert ids("?status=ok") == [T1, T3]
    assert ids("?service=planner&status=ok&name=write%20doc") == [T3]
    assert ids("?service=nobody") == []
    first = api.get("/api/v1/traces/?status=error").json()
    assert first["count"] == 1
    assert first["results"][0] == {
        "trace_id": T2, "root_name": "code", "root_span_id": "00f067aa0ba902b8", "services": ["coder"],
        "agents": ["coder-bot"], "span_count": 2, "error_count": 1, "start_ns": 2_000_000_000,
        "end_ns": 2_005_000_001, "duration_ns": 5_000_001, "state": "open", "open_findings": 0,
        "violations": 0}
    response = api.get("/api/v1/traces/?status=sideways")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
