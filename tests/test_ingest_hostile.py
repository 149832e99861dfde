"""Hostile and broken input at POST /v1/traces: one bad span costs only itself, what the database cannot hold is
stored normalised (the rules of docs/ingest.md), and no body gets a 500.

The gRPC receiver shares these rules; tests/test_otel_clients.py sends the same kinds of spans over gRPC.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.otlp_builders import key_values, request_json
from tests.test_ingest_http import JSON, PLANNER, T1, T2, otlp_request, post, rpc_status, span
from traces.models import Span, Trace

NAN, INF = float("nan"), float("inf")
GOOD = "00f067aa0ba902b7"  # the span id of the well-formed span sent beside each hostile one


def cut(text: str, limit: int) -> str:
    """What docs/ingest.md says a text over its column's limit is stored as."""
    return text[:limit - 17] + "…" + hashlib.sha256(text.encode()).hexdigest()[:16]


def send(client, key, *spans: PbSpan, resource: dict | None = None):
    """POST a good span and `spans` as protobuf; returns the partial_success of the 200 answer."""
    body = otlp_request((resource or PLANNER, [span(T1, GOOD, "good"), *spans])).SerializeToString()
    response = post(client, body, key)
    assert response.status_code == 200, response.content
    return ExportTraceServiceResponse.FromString(response.content).partial_success


def partial_success(response) -> tuple[int, str]:
    """(rejected_spans, error_message) of a 200 answer, in the encoding it claims."""
    if response["Content-Type"] == JSON:
        result = json.loads(response.content).get("partialSuccess", {})
        return int(result.get("rejectedSpans", 0)), result.get("errorMessage", "")
    result = ExportTraceServiceResponse.FromString(response.content).partial_success
    return result.rejected_spans, result.error_message


def stored(span_id: str) -> Span:
    return Span.objects.get(span_id=span_id)


def assert_the_good_span_is_stored_whole():
    good = stored(GOOD)
    assert (good.name, good.service_name, good.agent, good.attributes) == ("good", "planner", "planner", {})


# --- normalised: stored, changed as docs/ingest.md says ---------------------------------------------------------------


def test_a_name_over_512_characters_is_cut_with_a_digest_and_the_span_says_so(client, acme, acme_key):
    long_name, at_limit = "n" * 400 + "é" * 113, "m" * 512  # 513 and 512 characters (more bytes: limits count characters)
    result = send(client, acme_key, span(T1, "00000000000000a1", long_name, parent=GOOD),
                  span(T1, "00000000000000a2", at_limit, parent=GOOD))
    assert (result.rejected_spans, result.error_message) == (0, "1 span(s) stored normalised: name cut to 512 characters")
    row = stored("00000000000000a1")
    assert row.name == cut(long_name, 512) and len(row.name) == 512
    assert row.attributes == {"causeway.normalized": ["name cut to 512 characters"]}
    assert (stored("00000000000000a2").name, stored("00000000000000a2").attributes) == (at_limit, {})
    assert_the_good_span_is_stored_whole()
    assert Trace.objects.get(trace_id=T1).span_count == 3


def test_long_identities_and_keys_are_cut_and_two_that_differ_past_the_limit_stay_apart(client, acme, acme_key):
    service, instance = "s" * 257, "i" * 300
    key_a, key_b = "k" * 600 + "a", "k" * 600 + "b"
    resource = {**PLANNER, "service.name": service, "service.instance.id": instance}
    result = send(client, acme_key,
                  span(T1, "00000000000000a1", "write a", attributes={"state.key": key_a, "state.op": "write",
                                                                      "thread.id": "t" * 129}),
                  span(T1, "00000000000000a2", "write b", attributes={"state.key": key_b, "state.op": "write",
                                                                      "lock.name": "l" * 513,
                                                                      "idempotency.key": "p" * 513}),
                  resource=resource)
    assert result.rejected_spans == 0
    assert result.error_message == (
        "1 span(s) stored normalised: idempotency.key cut to 512 characters; "
        "1 span(s) stored normalised: lock.name cut to 512 characters; "
        "3 span(s) stored normalised: service.instance.id cut to 256 characters; "
        "3 span(s) stored normalised: service.name cut to 256 characters; "
        "2 span(s) stored normalised: state.key cut to 512 characters; "
        "1 span(s) stored normalised: thread.id cut to 128 characters")
    a, b = stored("00000000000000a1"), stored("00000000000000a2")
    assert (a.state_key, b.state_key) == (cut(key_a, 512), cut(key_b, 512)) and a.state_key != b.state_key
    assert (a.service_name, a.instance_id, a.thread_id) == (cut(service, 256), cut(instance, 256), cut("t" * 129, 128))
    assert (b.lock_name, b.idempotency_key) == (cut("l" * 513, 512), cut("p" * 513, 512))
    # The attributes keep what was sent, whole; only the columns are cut.
    assert a.attributes["state.key"] == key_a and a.resource_attributes["service.name"] == service
    assert a.attributes["causeway.normalized"] == [
        "service.name cut to 256 characters", "service.instance.id cut to 256 characters",
        "thread.id cut to 128 characters", "state.key cut to 512 characters"]
    assert Trace.objects.get(trace_id=T1).service_list == [cut(service, 256)]


def test_nul_bytes_are_replaced_in_every_string_and_key(client, acme, acme_key):
    hostile = span(T1, "00000000000000a1", "na\x00me", parent=GOOD, status=2, message="bo\x00om",
                   attributes={"state.key": "doc\x00:1", "state.op": "read", "ke\x00y": "va\x00lue",
                               "list": ["a\x00", "b"]})
    hostile.attributes.append(KeyValue(key="map", value=AnyValue(kvlist_value=KeyValueList(
        values=[KeyValue(key="in\x00ner", value=AnyValue(string_value="x\x00"))]))))
    hostile.events.add(name="ev\x00ent", time_unix_nano=1_000_000_001, attributes=key_values({"why": "be\x00cause"}))
    hostile.links.add(trace_id=bytes.fromhex(T2), span_id=bytes.fromhex(GOOD), attributes=key_values({"l\x00": "x\x00"}))
    request = otlp_request(({**PLANNER, "service.name": "plan\x00ner"}, [hostile]))
    request.resource_spans[0].scope_spans[0].scope.name = "sco\x00pe"
    response = post(client, request.SerializeToString(), acme_key)
    assert response.status_code == 200
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")  # nothing lost

    row = stored("00000000000000a1")
    assert (row.name, row.status_message, row.state_key, row.service_name, row.scope_name) == (
        "na\ufffdme", "bo\ufffdom", "doc\ufffd:1", "plan\ufffdner", "sco\ufffdpe")
    assert row.attributes == {"state.key": "doc\ufffd:1", "state.op": "read", "ke\ufffdy": "va\ufffdlue",
                              "list": ["a\ufffd", "b"], "map": {"in\ufffdner": "x\ufffd"}}
    assert row.events == [{"name": "ev\ufffdent", "time_ns": 1_000_000_001, "attributes": {"why": "be\ufffdcause"}}]
    assert row.links == [{"trace_id": T2, "span_id": GOOD, "attributes": {"l\ufffd": "x\ufffd"}}]
    assert row.resource_attributes["service.name"] == "plan\ufffdner"
    assert Trace.objects.get(trace_id=T1).service_list == ["plan\ufffdner"]


def test_nan_and_infinite_doubles_are_stored_as_their_proto3_json_strings(client, acme, acme_key):
    values = {"nan": NAN, "inf": INF, "-inf": -INF, "half": 0.5, "-zero": -0.0, "max": 1.7976931348623157e308,
              "mixed": [1.5, NAN, INF]}
    hostile = span(T1, "00000000000000a1", "odd numbers", parent=GOOD, attributes=values)
    hostile.events.add(name="e", time_unix_nano=1_000_000_001, attributes=key_values({"inf": INF}))
    hostile.links.add(trace_id=bytes.fromhex(T2), span_id=bytes.fromhex(GOOD), attributes=key_values({"nan": NAN}))
    response = post(client, otlp_request(({**PLANNER, "host.load": -INF}, [hostile])).SerializeToString(), acme_key)
    assert response.status_code == 200

    row = stored("00000000000000a1")
    # PostgreSQL's jsonb keeps 1.7976931348623157e+308 as its digits, which read back as an int of the same value.
    assert float(row.attributes.pop("max")) == 1.7976931348623157e308
    assert row.attributes == {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "half": 0.5, "-zero": -0.0,
                              "mixed": [1.5, "NaN", "Infinity"]}
    assert row.events[0]["attributes"] == {"inf": "Infinity"} and row.links[0]["attributes"] == {"nan": "NaN"}
    assert row.resource_attributes["host.load"] == "-Infinity"


def test_otlp_json_nan_and_infinity_spellings_are_stored_the_same_way(client, acme, acme_key):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "json doubles", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [{"key": k, "value": {"doubleValue": v}} for k, v in
                        (("a", "NaN"), ("b", "Infinity"), ("c", "-Infinity"), ("d", 2.5))]},
    ]}]}]}
    response = post(client, json.dumps(document).encode(), acme_key, JSON)
    assert response.status_code == 200 and json.loads(response.content) == {}
    assert stored(GOOD).attributes == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 2.5}


def test_a_kind_or_status_code_outside_otlp_is_stored_as_unspecified_and_the_span_says_so(client, acme, acme_key):
    result = send(client, acme_key, span(T1, "00000000000000a1", "odd kind", parent=GOOD, kind=40000),
                  span(T1, "00000000000000a2", "odd status", parent=GOOD, status=40000),
                  span(T1, "00000000000000a3", "negative kind", parent=GOOD, kind=-1, status=2))
    assert result.rejected_spans == 0
    assert result.error_message == ("2 span(s) stored normalised: unknown kind stored as unspecified; "
                                    "1 span(s) stored normalised: unknown status code stored as unset")
    odd_kind, odd_status, negative = stored("00000000000000a1"), stored("00000000000000a2"), stored("00000000000000a3")
    assert (odd_kind.kind, odd_kind.status_code) == (0, 0)
    assert odd_kind.attributes == {"causeway.normalized": ["unknown kind stored as unspecified"]}
    assert (odd_status.kind, odd_status.status_code) == (1, 0)
    assert odd_status.attributes == {"causeway.normalized": ["unknown status code stored as unset"]}
    assert (negative.kind, negative.status_code) == (0, 2)
    assert Trace.objects.get(trace_id=T1).error_count == 1


def test_concurrency_numbers_outside_64_bits_are_read_as_absent_and_kept_as_sent(client, acme, acme_key):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "huge versions", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [
             {"key": "state.key", "value": {"stringValue": "doc:1"}},
             {"key": "state.op", "value": {"stringValue": "write"}},
             {"key": "state.version", "value": {"stringValue": "99999999999999999999"}},
             {"key": "state.base_version", "value": {"stringValue": "-9223372036854775808"}},
             {"key": "lock.fencing_token", "value": {"doubleValue": 1e30}},
         ]},
    ]}]}]}
    response = post(client, json.dumps(document).encode(), acme_key, JSON)
    assert response.status_code == 200
    row = stored(GOOD)
    assert (row.state_key, row.state_version, row.state_base_version, row.lock_fencing_token) == (
        "doc:1", None, -2**63, None)
    assert row.attributes["state.version"] == "99999999999999999999"
    assert float(row.attributes["lock.fencing_token"]) == 1e30  # an int of the same value on PostgreSQL (jsonb)


# --- rejected: the span alone ----------------------------------------------------------------------------------------


def test_a_span_at_or_after_2_63_ns_is_rejected_alone(client, acme, acme_key):
    last = 2**63 - 1
    result = send(client, acme_key,
                  span(T1, "00000000000000a1", "starts at 2^63", parent=GOOD, start=2**63, end=2**63),
                  span(T1, "00000000000000a2", "ends at the last fixed64", parent=GOOD, start=1, end=2**64 - 1),
                  span(T1, "00000000000000a3", "at the last signed ns", parent=GOOD, start=last, end=last))
    assert result.rejected_spans == 2
    assert result.error_message == "2 span(s): start or end time is at or after 2^63 ns (the year 2262)"
    assert sorted(Span.objects.values_list("span_id", flat=True)) == ["00000000000000a3", GOOD]
    assert (stored("00000000000000a3").start_ns, stored("00000000000000a3").duration_ns) == (last, 0)
    assert Trace.objects.get(trace_id=T1).end_ns == last


@pytest.mark.parametrize("content_type", ["application/x-protobuf", JSON])
def test_a_batch_mixing_valid_and_invalid_spans_stores_the_valid_ones_and_answers_200(client, acme, acme_key,
                                                                                      content_type):
    valid = [span(T1, GOOD, "good"), span(T1, "00000000000000a1", "x" * 600, parent=GOOD, kind=9),
             span(T2, "00000000000000a2", "nul\x00", attributes={"nan": NAN, "state.key": "k" * 513})]
    invalid = [
        span(T1, "00000000000000b1", "late", start=2**63),
        span(T1, "00000000000000b2", ""),
        span(T1, "00000000000000b3", "backwards", start=5, end=4),
        PbSpan(trace_id=b"\x01" * 15, span_id=b"\x02" * 8, name="short trace id", end_time_unix_nano=1),
        PbSpan(trace_id=b"\x01" * 16, span_id=b"\x00" * 8, name="zero span id", end_time_unix_nano=1),
        PbSpan(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 9, name="long parent"),
    ]
    request = otlp_request((PLANNER, valid[:2] + invalid[:3]), (PLANNER, invalid[3:] + valid[2:]))
    # In OTLP/JSON the NaN goes as the string "NaN", as proto3 JSON writes it.
    body = json.dumps(request_json(request)).encode() if content_type == JSON else request.SerializeToString()
    response = post(client, body, acme_key, content_type)
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    rejected, message = partial_success(response)
    assert rejected == 6
    assert message == (
        "1 span(s): end_time_unix_nano is before start_time_unix_nano; 1 span(s): name is empty; "
        "1 span(s): parent_span_id must be empty or 8 bytes; 1 span(s): span_id must be 8 non-zero bytes; "
        "1 span(s): start or end time is at or after 2^63 ns (the year 2262); "
        "1 span(s): trace_id must be 16 non-zero bytes; "
        "1 span(s) stored normalised: name cut to 512 characters; "
        "1 span(s) stored normalised: state.key cut to 512 characters; "
        "1 span(s) stored normalised: unknown kind stored as unspecified")
    assert sorted(Span.objects.values_list("span_id", flat=True)) == ["00000000000000a1", "00000000000000a2", GOOD]
    assert stored("00000000000000a2").attributes["nan"] == "NaN"
    assert stored("00000000000000a2").name == "nul\ufffd"
    assert {t.trace_id: t.span_count for t in Trace.objects.all()} == {T1: 2, T2: 1}


# --- bodies that are not OTLP: 400 with the OTLP error body, nothing stored ------------------------------------------


def nested_any_value(depth: int) -> dict:
    value = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


MALFORMED_JSON = {
    "resourceSpans is a number": b'{"resourceSpans": 5}',
    "resourceSpans is true": b'{"resourceSpans": true}',
    "resourceSpans holds a number": b'{"resourceSpans": [5]}',
    "scopeSpans is a number": b'{"resourceSpans": [{"scopeSpans": 5}]}',
    "spans is a string": b'{"resource_spans": [{"scope_spans": [{"spans": "abc"}]}]}',
    "links is a number": json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "x", "links": 5}]}]}]}).encode(),
    "an id is a number": json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": 7, "spanId": GOOD, "name": "x"}]}]}]}).encode(),
    "a time past fixed64": json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "x", "startTimeUnixNano": str(2**64)}]}]}]}).encode(),
    "a kind past int32": json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "x", "kind": 2**31}]}]}]}).encode(),
    "an unpaired surrogate": b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\\ud800"}]}]}]}',
    "an integer of 5000 digits": b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": ' + b"9" * 5000
                                 + b"}]}]}]}",
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 100000 deep": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "an attribute nested past protobuf's depth": json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "deep", "value": nested_any_value(200)}]}}]}).encode(),
}


@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_otlp_json_is_400_with_the_otlp_error_body(client, acme, acme_key, body):
    response = post(client, body, acme_key, JSON)
    assert response.status_code == 400
    assert response["Content-Type"] == JSON
    code, message = rpc_status(response)
    assert code == 3 and message
    assert len(message) <= 1000
    assert not Span.objects.exists() and not Trace.objects.exists()


def test_an_attribute_nested_40_deep_is_stored_whole(client, acme, acme_key):
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": T1, "spanId": GOOD, "name": "deep", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [{"key": "deep", "value": nested_any_value(40)}]}]}]}]}
    response = post(client, json.dumps(document).encode(), acme_key, JSON)
    assert response.status_code == 200
    value = stored(GOOD).attributes["deep"]
    for _ in range(40):
        (value,) = value
    assert value == "bottom"


def test_a_protobuf_string_that_is_not_utf8_is_400(client, acme, acme_key):
    body = otlp_request((PLANNER, [span(T1, GOOD, "ab")])).SerializeToString().replace(b"ab", b"\xff\xfe")
    response = post(client, body, acme_key)
    assert response.status_code == 400
    assert rpc_status(response)[0] == 3 and "UTF-8" in rpc_status(response)[1]
    assert not Span.objects.exists()


def test_the_rules_know_the_limit_of_every_text_column_a_span_fills():
    from django.db import models

    from traces.span_rules import TEXT_LIMITS

    # Ids are checked for their exact length; state.op and idempotency.outcome are kept only when one of their words.
    checked_otherwise = {"trace_id", "span_id", "parent_span_id", "state_op", "idempotency_outcome"}
    limits = {f.name: f.max_length for f in Span._meta.get_fields() if isinstance(f, models.CharField)}
    assert {field: limit for field, _, limit in TEXT_LIMITS} == {
        name: limit for name, limit in limits.items() if name not in checked_otherwise}
    assert Trace._meta.get_field("root_name").max_length == limits["name"]  # a root span's name
