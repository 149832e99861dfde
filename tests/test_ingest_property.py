"""Properties of ingest over generated hostile input (tests/otlp_strategies.py):

- the decoder answers any body, random or damaged, protobuf or JSON, with a request or OtlpDecodeError, nothing else;
- POST /v1/traces never answers 500: every valid span of a batch is stored, whole and as docs/ingest.md says,
  every invalid one is counted in partial_success and leaves nothing behind, and the trace summaries agree.

The gRPC receiver runs the same decoder and rules; tests/test_otel_clients.py sends damaged bodies to it.
"""

from __future__ import annotations

import json

from django.db import transaction
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.otlp_builders import request_json
from tests.otlp_strategies import batches, damaged, same, stored_text, stored_value, typed_int
from tests.test_ingest_http import post
from traces.models import Span, Trace
from traces.otlp import JSON, PROTOBUF, OtlpDecodeError, decode_request, spans_from_request

DECODER = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example posts a batch and reads it back; the database is rolled back between examples, so the
# function-scoped fixtures (project, key, client) are the same for all of them on purpose.
STORE = settings(max_examples=80, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def decoded_or_refused(body: bytes, content_type: str):
    """decode_request and the rules, allowing only OtlpDecodeError: None when refused."""
    try:
        request = decode_request(body, content_type)
    except OtlpDecodeError as exc:
        assert str(exc)
        return None
    return spans_from_request(request)


# --- the decoder ----------------------------------------------------------------------------------------------------


@DECODER
@given(st.binary(max_size=300))
def test_random_bytes_are_a_request_or_refused_as_not_otlp(body):
    decoded_or_refused(body, PROTOBUF)
    decoded_or_refused(body, JSON)


@DECODER
@given(st.data())
def test_a_damaged_protobuf_body_is_a_request_or_refused_as_not_otlp(data):
    body = data.draw(batches()).request().SerializeToString()
    decoded_or_refused(data.draw(damaged(body)), PROTOBUF)


@DECODER
@given(st.data())
def test_a_damaged_otlp_json_body_is_a_request_or_refused_as_not_otlp(data):
    body = json.dumps(request_json(data.draw(batches().map(lambda b: b.request())))).encode()
    decoded_or_refused(data.draw(damaged(body)), JSON)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
OTLP_NAMES = ("resourceSpans", "scopeSpans", "spans", "links", "events", "attributes", "traceId", "spanId",
              "startTimeUnixNano", "kind", "value", "stringValue", "arrayValue", "values", "key")


@st.composite
def json_in_otlp_shape(draw, depth: int = 0):
    """JSON objects keyed by OTLP's field names with anything under them, so the decoder meets each wrong shape."""
    if depth > 4 or draw(st.integers(0, 3)) == 0:
        return draw(json_values)
    children = st.lists(json_in_otlp_shape(depth + 1), max_size=2)
    return draw(st.dictionaries(st.sampled_from(OTLP_NAMES),
                                json_in_otlp_shape(depth + 1) | children, min_size=1, max_size=3))


@DECODER
@given(json_in_otlp_shape() | json_values)
def test_json_of_any_shape_is_a_request_or_refused_as_not_otlp(document):
    decoded_or_refused(json.dumps(document).encode(), JSON)


# --- the store, over POST /v1/traces --------------------------------------------------------------------------------


def assert_stored_as_sent(row: Span, sent, batch) -> None:
    """The stored row is what docs/ingest.md says the sent span becomes; it is whole (every column)."""
    attrs, resource = sent.attributes, batch.resource
    assert row.parent_span_id == ("" if not any(sent.parent_span_id) else sent.parent_span_id.hex())
    assert row.name == stored_text(sent.name, 512)
    assert row.kind == (sent.kind if 0 <= sent.kind <= 5 else 0)
    assert row.status_code == (sent.status_code if 0 <= sent.status_code <= 2 else 0)
    assert row.status_message == stored_text(sent.status_message)
    assert (row.start_ns, row.end_ns, row.duration_ns) == (sent.start, sent.end, sent.end - sent.start)
    service, instance = resource["service.name"], resource["service.instance.id"]
    agent = resource["gen_ai.agent.id"] or (f"{service}/{instance}" if instance else service)
    assert (row.service_name, row.instance_id, row.agent) == (
        stored_text(service, 256), stored_text(instance, 256), stored_text(agent, 256))
    assert row.thread_id == stored_text(attrs.get("thread.id", ""), 128)
    assert row.state_key == stored_text(attrs.get("state.key", ""), 512)
    assert row.state_op == (attrs.get("state.op") if attrs.get("state.op") in ("read", "write") else "")
    assert row.lock_name == stored_text(attrs.get("lock.name", ""), 512)
    assert row.idempotency_key == stored_text(attrs.get("idempotency.key", ""), 512)
    assert row.state_version == typed_int(attrs.get("state.version"))
    assert row.lock_fencing_token == typed_int(attrs.get("lock.fencing_token"))
    assert row.scope_name == stored_text(batch.scope_name, 256)

    attributes = dict(row.attributes)
    notes = attributes.pop("causeway.normalized", None)
    assert same(attributes, stored_value(attrs))
    was_cut = any(len(stored_text(text)) > limit for text, limit in (
        (sent.name, 512), (service, 256), (instance, 256), (agent, 256), (attrs.get("thread.id", ""), 128),
        (attrs.get("state.key", ""), 512), (attrs.get("lock.name", ""), 512),
        (attrs.get("idempotency.key", ""), 512), (batch.scope_name, 256)))
    assert bool(notes) == (was_cut or not 0 <= sent.kind <= 5 or not 0 <= sent.status_code <= 2)
    assert same(row.events, [{"name": stored_text(name), "time_ns": time, "attributes": stored_value(a)}
                             for name, time, a in sent.events])
    assert same(row.links, [{"trace_id": t.hex(), "span_id": s.hex(), "attributes": stored_value(a)}
                            for t, s, a in sent.links])
    assert same(row.resource_attributes, stored_value(resource))


@STORE
@given(batch=batches(), as_json=st.booleans())
def test_every_valid_span_is_stored_whole_and_every_invalid_one_is_counted(client, acme, acme_key, batch, as_json):
    request = batch.request()
    if as_json:
        body, content_type = json.dumps(request_json(request)).encode(), JSON
    else:
        body, content_type = request.SerializeToString(), PROTOBUF
    valid = [s for s in batch.spans if s.valid]
    with transaction.atomic():
        response = post(client, body, acme_key, content_type)
        assert response.status_code == 200, response.content
        if as_json:
            result = json_format.Parse(response.content, ExportTraceServiceResponse()).partial_success
        else:
            result = ExportTraceServiceResponse.FromString(response.content).partial_success
        assert result.rejected_spans == len(batch.spans) - len(valid)

        rows = {(row.trace_id, row.span_id): row for row in Span.objects.filter(project=acme)}
        assert rows.keys() == {(s.trace_id.hex(), s.span_id.hex()) for s in valid}
        for sent in valid:
            assert_stored_as_sent(rows[sent.trace_id.hex(), sent.span_id.hex()], sent, batch)
        for trace in Trace.objects.filter(project=acme):
            spans = [row for row in rows.values() if row.trace_id == trace.trace_id]
            assert trace.span_count == len(spans) > 0
            assert (trace.start_ns, trace.end_ns) == (min(s.start_ns for s in spans), max(s.end_ns for s in spans))
        assert Trace.objects.filter(project=acme).count() == len({s.trace_id for s in valid})
        transaction.set_rollback(True)
