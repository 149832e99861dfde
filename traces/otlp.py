"""OTLP trace decoding: protobuf or OTLP/JSON bodies to SpanRecords.

No Django import, so `check_traces` and the gRPC receiver share it with the
HTTP endpoint.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traces.records import Link, SpanRecord, concurrency_fields, derive_identity
from traces.span_rules import CheckedBatch, spans_checked

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PROTOBUF_ALIASES = (PROTOBUF, "application/protobuf")
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class OtlpDecodeError(ValueError):
    """The body is not an OTLP trace export request; the message says why."""


class BodyTooLarge(ValueError):
    pass


def media_type(content_type: str) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding, refusing to inflate past `limit` bytes (gzip bombs)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"body is {len(body)} bytes, over the limit of {limit}")
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise OtlpDecodeError(f"body is truncated {encoding} data")
    return out


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Parse an ExportTraceServiceRequest from protobuf or OTLP/JSON."""
    kind = media_type(content_type)
    request = ExportTraceServiceRequest()
    if kind in PROTOBUF_ALIASES:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    if kind == JSON:
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError as exc:  # not UTF-8, not JSON, or an integer of more digits than Python reads
            raise OtlpDecodeError(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise OtlpDecodeError("body is JSON nested too deeply") from None
        return request_from_json(document)
    raise OtlpDecodeError(f"unsupported content type {kind!r}")


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(node: dict) -> None:
    # OTLP/JSON carries ids as hex where proto3 JSON expects base64. An id that
    # is not hex becomes empty bytes, so the span is rejected alone for its id.
    for name in _ID_FIELDS:
        value = node.get(name)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b"\x00"  # wrong length on purpose
            node[name] = base64.b64encode(raw).decode()


def _objects(node: dict, *names: str) -> list[dict]:
    """The list of objects under the first of `names` that node has; the OTLP/JSON shape, or OtlpDecodeError."""
    value = next((node[name] for name in names if node.get(name) is not None), None)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OtlpDecodeError(f"OTLP/JSON body has the wrong shape: {names[0]} must be a list of objects")
    return value


def request_from_json(document) -> ExportTraceServiceRequest:
    if not isinstance(document, dict):
        raise OtlpDecodeError("OTLP/JSON body must be a JSON object with resourceSpans")
    for resource_spans in _objects(document, "resourceSpans", "resource_spans"):
        for scope_spans in _objects(resource_spans, "scopeSpans", "scope_spans"):
            for span in _objects(scope_spans, "spans"):
                _hex_ids_to_base64(span)
                for link in _objects(span, "links"):
                    _hex_ids_to_base64(link)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"OTLP/JSON body does not match the trace export schema: {exc}") from None
    return request


def encode_response(response, content_type: str) -> tuple[bytes, str]:
    """Serialise a response message (ExportTraceServiceResponse or google.rpc.Status) in the request's encoding."""
    if media_type(content_type) == JSON:
        return json_format.MessageToJson(response, indent=None).encode(), JSON
    return response.SerializeToString(), PROTOBUF


def export_response(rejected: int, message: str) -> ExportTraceServiceResponse:
    """The answer to an export. A message with nothing rejected is a warning (spans stored normalised), which the
    OTLP specification lets partial_success carry with rejected_spans 0."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def key_values(pairs) -> dict:
    # any_value inlined for the scalar kinds, which are nearly all attributes (hot: every span and event).
    out = {}
    for kv in pairs:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind in _SCALARS else any_value(value)
    return out


class _KeyRecorder(dict):
    """An empty dict that remembers which keys were asked for with get()."""

    def __init__(self):
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return default


def _keys_read_by(function) -> frozenset[str]:
    recorder = _KeyRecorder()
    function(recorder)
    return frozenset(recorder.asked)


# Most spans carry none of the spec's concurrency attributes: they all get the same (empty) fields.
# The keys are the ones concurrency_fields reads, so the two cannot drift apart.
_CONCURRENCY_KEYS = _keys_read_by(concurrency_fields)
_NO_CONCURRENCY = concurrency_fields({})


def spans_from_request(request: ExportTraceServiceRequest) -> CheckedBatch:
    """The request's spans as SpanRecords, checked and normalised for storing (traces/span_rules.py)."""
    return spans_checked(_span_records(request))


def _span_records(request: ExportTraceServiceRequest):
    # Hot: each field of a upb message is read once into a local (every read builds a new object).
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        resource_schema = resource_spans.schema_url
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version, scope_schema = scope.name, scope.version, scope_spans.schema_url
            for span in scope_spans.spans:
                parent = span.parent_span_id
                attributes = key_values(span.attributes)
                service, version, instance, agent, thread, chain, clock = derive_identity(attributes, resource)
                concurrency = (
                    _NO_CONCURRENCY if _CONCURRENCY_KEYS.isdisjoint(attributes) else concurrency_fields(attributes)
                )
                status, events, links = span.status, span.events, span.links
                yield SpanRecord(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id="" if len(parent) == 8 and not any(parent) else parent.hex(),
                    name=span.name,
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=status.code,
                    status_message=status.message,
                    service_name=service,
                    service_version=version,
                    instance_id=instance,
                    agent=agent,
                    thread_id=thread,
                    chain=chain,
                    clock=clock,
                    attributes=attributes,
                    events=[
                        {"name": e.name, "time_ns": e.time_unix_nano, "attributes": key_values(e.attributes)}
                        for e in events
                    ] if events else [],
                    links=tuple(
                        Link(l.trace_id.hex(), l.span_id.hex(), key_values(l.attributes)) for l in links
                    ) if links else (),
                    resource_attributes=resource,
                    scope_name=scope_name,
                    scope_version=scope_version,
                    resource_schema_url=resource_schema,
                    scope_schema_url=scope_schema,
                    **concurrency,
                )


def read_otlp_file(path: str) -> list[ExportTraceServiceRequest]:
    """Requests stored in a file: .binpb/.pb (one protobuf request), .json (one
    OTLP/JSON request), .jsonl (one OTLP/JSON request per line); gzip allowed
    as a further .gz suffix."""
    name = path.removesuffix(".gz")
    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise OtlpDecodeError(f"not valid gzip: {exc}") from None
    if name.endswith((".binpb", ".pb")):
        return [decode_request(data, PROTOBUF)]
    if name.endswith(".jsonl"):
        requests = []
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                try:
                    requests.append(decode_request(line, JSON))
                except OtlpDecodeError as exc:
                    raise OtlpDecodeError(f"line {number}: {exc}") from None
        return requests
    if name.endswith(".json"):
        return [decode_request(data, JSON)]
    raise OtlpDecodeError("unknown file type: use .binpb, .pb, .json or .jsonl")


OTLP_SUFFIXES = (".binpb", ".pb", ".json", ".jsonl", ".binpb.gz", ".pb.gz", ".json.gz", ".jsonl.gz")
