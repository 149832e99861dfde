"""OTLP trace decoding: protobuf or OTLP/JSON bodies to SpanRecords.

No Django import, so `check_traces` and the gRPC receiver share it with the
HTTP endpoint.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traces.records import Link, SpanRecord, concurrency_fields, derive_identity

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
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OtlpDecodeError(f"body is not valid JSON: {exc}") from None
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


def request_from_json(document) -> ExportTraceServiceRequest:
    if not isinstance(document, dict):
        raise OtlpDecodeError("OTLP/JSON body must be a JSON object with resourceSpans")
    try:
        for resource_spans in document.get("resourceSpans") or document.get("resource_spans") or []:
            for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []:
                for span in scope_spans.get("spans") or []:
                    _hex_ids_to_base64(span)
                    for link in span.get("links") or []:
                        _hex_ids_to_base64(link)
    except AttributeError:
        raise OtlpDecodeError("OTLP/JSON body has the wrong shape: resourceSpans[].scopeSpans[].spans[] must be objects") from None
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise OtlpDecodeError(f"OTLP/JSON body does not match the trace export schema: {exc}") from None
    return request


def encode_response(response, content_type: str) -> tuple[bytes, str]:
    """Serialise a response message (ExportTraceServiceResponse or google.rpc.Status) in the request's encoding."""
    if media_type(content_type) == JSON:
        return json_format.MessageToJson(response, indent=None).encode(), JSON
    return response.SerializeToString(), PROTOBUF


def export_response(rejected: int, message: str) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    if rejected:
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


@dataclass
class DecodedBatch:
    spans: list[SpanRecord]
    rejected: int
    message: str  # why spans were rejected, "" when none were


def _problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes, name: str, start: int, end: int) -> str:
    if len(trace_id) != 16 or not any(trace_id):
        return "trace_id must be 16 non-zero bytes"
    if len(span_id) != 8 or not any(span_id):
        return "span_id must be 8 non-zero bytes"
    if len(parent_span_id) not in (0, 8):
        return "parent_span_id must be empty or 8 bytes"
    if not name:
        return "name is empty"
    if end < start:
        return "end_time_unix_nano is before start_time_unix_nano"
    return ""


def spans_from_request(request: ExportTraceServiceRequest) -> DecodedBatch:
    """Turn a decoded request into SpanRecords; invalid spans are counted, not stored."""
    # Hot: each field of a upb message is read once into a local (every read builds a new object).
    records: list[SpanRecord] = []
    problems: dict[str, int] = {}
    for resource_spans in request.resource_spans:
        resource = key_values(resource_spans.resource.attributes)
        resource_schema = resource_spans.schema_url
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version, scope_schema = scope.name, scope.version, scope_spans.schema_url
            for span in scope_spans.spans:
                trace_id, span_id, parent, name = span.trace_id, span.span_id, span.parent_span_id, span.name
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                problem = _problem(trace_id, span_id, parent, name, start, end)
                if problem:
                    problems[problem] = problems.get(problem, 0) + 1
                    continue
                attributes = key_values(span.attributes)
                service, version, instance, agent, thread, chain, clock = derive_identity(attributes, resource)
                concurrency = (
                    _NO_CONCURRENCY if _CONCURRENCY_KEYS.isdisjoint(attributes) else concurrency_fields(attributes)
                )
                status, events, links = span.status, span.events, span.links
                records.append(
                    SpanRecord(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=parent.hex() if parent and any(parent) else "",
                        name=name,
                        kind=span.kind,
                        start_ns=start,
                        end_ns=end,
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
                )
    rejected = sum(problems.values())
    message = "; ".join(f"{count} span(s): {problem}" for problem, count in sorted(problems.items()))
    return DecodedBatch(records, rejected, message)


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
