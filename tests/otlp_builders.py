"""Build OTLP export requests from SpanRecords, for tests that send or write real OTLP."""

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=str(value))


def key_values(attributes: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def export_request(records) -> ExportTraceServiceRequest:
    """One ResourceSpans per distinct resource, in first-seen order."""
    request = ExportTraceServiceRequest()
    by_resource = {}
    for record in records:
        marker = tuple(sorted(record.resource_attributes.items()))
        scope_spans = by_resource.get(marker)
        if scope_spans is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(key_values(record.resource_attributes))
            scope_spans = by_resource[marker] = resource_spans.scope_spans.add()
            scope_spans.scope.name = "tests"
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(record.trace_id)
        span.span_id = bytes.fromhex(record.span_id)
        if record.parent_span_id:
            span.parent_span_id = bytes.fromhex(record.parent_span_id)
        span.name = record.name
        span.kind = record.kind
        span.start_time_unix_nano = record.start_ns
        span.end_time_unix_nano = record.end_ns
        span.status.code = record.status_code
        span.status.message = record.status_message
        span.attributes.extend(key_values(record.attributes))
        for event in record.events:
            span.events.add(name=event["name"], time_unix_nano=event["time_ns"],
                            attributes=key_values(event.get("attributes", {})))
        for link in record.links:
            span.links.add(trace_id=bytes.fromhex(link.trace_id), span_id=bytes.fromhex(link.span_id),
                           attributes=key_values(link.attributes))
    return request


def _base64_ids_to_hex(node):
    import base64

    if isinstance(node, dict):
        for name in ("traceId", "spanId", "parentSpanId"):
            if isinstance(node.get(name), str):
                node[name] = base64.b64decode(node[name]).hex()
        for value in node.values():
            _base64_ids_to_hex(value)
    elif isinstance(node, list):
        for value in node:
            _base64_ids_to_hex(value)


def request_json(request: ExportTraceServiceRequest) -> dict:
    """A request in the OTLP/JSON mapping (hex ids, int64 as strings)."""
    document = json_format.MessageToDict(request)
    _base64_ids_to_hex(document)
    return document


def export_json(records) -> dict:
    return request_json(export_request(records))
