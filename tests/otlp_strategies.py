"""Hypothesis strategies for hostile OTLP: spans with texts of every length around each column limit, every numeric
edge of the fields OTLP carries, ids of wrong lengths, NUL bytes and non-finite doubles; bodies cut short or with
bytes changed.

A drawn batch is a list of SentSpan: what was sent, from which the tests work out what must be stored
(docs/ingest.md) without asking the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

MAX_NS = 2**63 - 1
LIMITS = (128, 256, 512)  # the text columns' limits
U64_EDGES = (0, 1, 2**31, 2**32, 2**53 + 1, 2**63 - 2, MAX_NS, 2**63, 2**64 - 2, 2**64 - 1)
I32_EDGES = (-(2**31), -1, 0, 1, 2, 3, 5, 6, 32767, 32768, 40000, 2**31 - 1)
I64_EDGES = (-(2**63), -(2**53) - 1, -1, 0, 1, 2**53 + 1, 2**63 - 1)
DOUBLE_EDGES = (float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 1e16, 0.1)
# state.version and friends as OTLP/JSON senders write them, with what the typed column must hold.
NUMERIC_STRINGS = {"7": 7, " 12 ": 12, "-9223372036854775808": -(2**63), "9223372036854775807": 2**63 - 1,
                   "9223372036854775808": None, "99999999999999999999": None, "1e3": None, "": None, "x": None}


def texts(max_plain: int = 12):
    """Short texts, and texts of each limit's length give or take one, of one- to four-byte characters and NULs,
    ending in a few random characters so that long texts differ."""
    lengths = st.sampled_from(sorted({limit + d for limit in LIMITS for d in (-1, 0, 1)}))
    long_texts = st.builds(lambda n, fill, tail: (fill * n)[:max(n - len(tail), 0)] + tail,
                           lengths, st.sampled_from(["a", "é", "\x00", "😀", "ab\x00"]), st.text(max_size=3))
    return st.one_of(st.text(max_size=max_plain), long_texts)


def keys():
    # No U+FFFD: a NUL becomes one, and two keys must not become the same key.
    return st.text(st.characters(codec="utf-8", exclude_characters="\ufffd"), max_size=6) | st.sampled_from(["k\x00", "\x00"])


scalars = st.one_of(
    texts(),
    st.sampled_from(I64_EDGES) | st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(DOUBLE_EDGES) | st.floats(),
    st.booleans(),
    st.binary(max_size=4),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys(), inner, max_size=3),
                      max_leaves=4)
attributes = st.dictionaries(keys(), values, max_size=4)
flat_attributes = st.dictionaries(keys(), scalars, max_size=2)  # of events and links: the same rules, drawn cheaper


@st.composite
def concurrency_attributes(draw) -> dict:
    out = {}
    for name in ("state.key", "lock.name", "idempotency.key", "thread.id"):
        if draw(st.booleans()):
            out[name] = draw(texts())
    if out.get("state.key") is not None:
        out["state.op"] = draw(st.sampled_from(["read", "write", "WRITE", ""]))
    for name in ("state.version", "lock.fencing_token"):
        if draw(st.booleans()):
            out[name] = draw(st.sampled_from(I64_EDGES) | st.sampled_from(sorted(NUMERIC_STRINGS))
                             | st.sampled_from(DOUBLE_EDGES))
    return out


@dataclass
class SentSpan:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    status_code: int
    status_message: str
    start: int
    end: int
    attributes: dict
    events: list = field(default_factory=list)  # [(name, time, attributes)]
    links: list = field(default_factory=list)  # [(trace_id, span_id, attributes)]

    @property
    def valid(self) -> bool:
        """The OTLP and storage rules of docs/ingest.md for rejecting a span, restated."""
        return (len(self.trace_id) == 16 and any(self.trace_id) and len(self.span_id) == 8 and any(self.span_id)
                and len(self.parent_span_id) in (0, 8) and self.name != ""
                and self.start <= MAX_NS and self.end <= MAX_NS and self.start <= self.end)


@dataclass
class SentBatch:
    resource: dict
    scope_name: str
    spans: list[SentSpan]

    def request(self) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(key_values(self.resource))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = self.scope_name
        for sent in self.spans:
            span = scope_spans.spans.add(
                trace_id=sent.trace_id, span_id=sent.span_id, parent_span_id=sent.parent_span_id, name=sent.name,
                kind=sent.kind, start_time_unix_nano=sent.start, end_time_unix_nano=sent.end)
            span.status.code, span.status.message = sent.status_code, sent.status_message
            span.attributes.extend(key_values(sent.attributes))
            for name, time, attrs in sent.events:
                span.events.add(name=name, time_unix_nano=time, attributes=key_values(attrs))
            for trace_id, span_id, attrs in sent.links:
                span.links.add(trace_id=trace_id, span_id=span_id, attributes=key_values(attrs))
        return request


@st.composite
def ids(draw, size: int) -> bytes:
    """Mostly right ids (random, never zero), else zeros or a wrong length."""
    choice = draw(st.integers(0, 7))
    if choice == 0:
        return bytes(size)
    if choice == 1:
        return draw(st.binary(max_size=size + 1))
    right = draw(st.binary(min_size=size, max_size=size))
    return right if any(right) else bytes(size - 1) + b"\x01"


@st.composite
def times(draw) -> tuple[int, int]:
    """(start, end): mostly a span's, else any edge of fixed64 in either place."""
    any_time = st.one_of(st.sampled_from(U64_EDGES), st.integers(0, 2**64 - 1))
    if draw(st.integers(0, 3)) == 0:
        return draw(any_time), draw(any_time)
    start = draw(st.integers(0, MAX_NS - 10**12))
    return start, start + draw(st.integers(0, 10**12))


@st.composite
def batches(draw, max_spans: int = 4) -> SentBatch:
    trace_ids = draw(st.lists(ids(16), min_size=1, max_size=2))
    spans = []
    for number in range(draw(st.integers(1, max_spans))):
        span_id = draw(ids(8))
        if len(span_id) == 8 and any(span_id):
            span_id = number.to_bytes(2, "big") + span_id[2:]  # unique in the batch: a repeat is a retry, not a test
            span_id = span_id if any(span_id) else b"\x00" * 7 + b"\x01"
        parent = draw(st.one_of(st.just(b""), st.just(bytes(8)), ids(8)))
        start, end = draw(times())
        spans.append(SentSpan(
            trace_id=draw(st.sampled_from(trace_ids)), span_id=span_id, parent_span_id=parent, name=draw(texts()),
            kind=draw(st.sampled_from(I32_EDGES)), status_code=draw(st.sampled_from(I32_EDGES)),
            status_message=draw(texts()),
            start=start, end=end,
            attributes={**draw(attributes), **draw(concurrency_attributes())},
            events=draw(st.lists(st.tuples(texts(), st.sampled_from(U64_EDGES), flat_attributes), max_size=2)),
            links=draw(st.lists(st.tuples(ids(16), ids(8), flat_attributes), max_size=1)),
        ))
    resource = {"service.name": draw(texts()), "service.instance.id": draw(texts()),
                "gen_ai.agent.id": draw(texts()), **draw(attributes)}
    return SentBatch(resource=resource, scope_name=draw(texts()), spans=spans)


@st.composite
def damaged(draw, body: bytes) -> bytes:
    """body cut short, or with a few bytes changed."""
    if not body or draw(st.booleans()):
        return body[:draw(st.integers(0, max(len(body) - 1, 0)))]
    out = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


# --- building and expecting ------------------------------------------------------------------------------------------


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=key_values(value)))
    return AnyValue(string_value=value)


def key_values(attributes: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def stored_text(text: str, limit: int | None = None) -> str:
    """docs/ingest.md: NUL becomes U+FFFD; a text over its limit is cut and ends in "…" and 16 hex of its SHA-256."""
    text = text.replace("\x00", "\ufffd")
    if limit is None or len(text) <= limit:
        return text
    return text[:limit - 17] + "…" + hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_value(value):
    """docs/ingest.md: what a JSON column holds for an attribute value."""
    if isinstance(value, str):
        return stored_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [stored_value(v) for v in value]
    if isinstance(value, dict):
        return {stored_text(k): stored_value(v) for k, v in value.items()}
    return value


def same(stored, expected) -> bool:
    """stored == expected, but a double may come back from PostgreSQL's jsonb as an int of the same value."""
    if isinstance(expected, bool) or isinstance(stored, bool):
        return stored is expected
    if isinstance(expected, float):
        return isinstance(stored, (int, float)) and float(stored) == expected
    if isinstance(expected, list):
        return isinstance(stored, list) and len(stored) == len(expected) and all(map(same, stored, expected))
    if isinstance(expected, dict):
        return (isinstance(stored, dict) and stored.keys() == expected.keys()
                and all(same(stored[k], v) for k, v in expected.items()))
    return type(stored) is type(expected) and stored == expected


def typed_int(value) -> int | None:
    """What a typed concurrency column holds for an attribute value."""
    if isinstance(value, str):
        return NUMERIC_STRINGS.get(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    return value if -(2**63) <= value <= MAX_NS else None
