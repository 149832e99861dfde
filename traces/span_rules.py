"""What a decoded span must be to be stored, and how it is made storable.

One place for the rules, between decoding (traces/otlp.py) and storing
(traces/ingest.py), so HTTP, gRPC and `check_traces` treat every span alike.
A span is rejected alone when what makes it a span is wrong (its ids, its
name, its times); anything else the database would refuse is stored
normalised, and where that loses information (a text cut, a kind or status
code replaced) the span says so in its `causeway.normalized` attribute.
docs/ingest.md lists the rules for people who send traces.

No Django import: the column limits are written here, and a test holds them
equal to traces/models.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from math import isfinite, isnan
from operator import attrgetter, gt

from traces.records import KIND_NAMES, STATUS_NAMES, SpanRecord, chain_and_clock

MAX_NS = 2**63 - 1  # start and end are signed 64-bit columns
NORMALIZED = "causeway.normalized"  # the span attribute listing what was changed
REPLACEMENT = "\ufffd"  # stands for a NUL byte, which no PostgreSQL text or jsonb value can hold
DIGEST_CHARS = 16

# (SpanRecord field, the name a sender knows it by, the Span column's max_length)
TEXT_LIMITS = (
    ("name", "name", 512),
    ("service_name", "service.name", 256),
    ("service_version", "service.version", 128),
    ("instance_id", "service.instance.id", 256),
    ("agent", "agent", 256),
    ("thread_id", "thread.id", 128),
    ("state_key", "state.key", 512),
    ("idempotency_key", "idempotency.key", 512),
    ("lock_name", "lock.name", 512),
    ("scope_name", "scope name", 256),
    ("scope_version", "scope version", 128),
    ("resource_schema_url", "resource schema_url", 512),
    ("scope_schema_url", "scope schema_url", 512),
)
_IDENTITY = frozenset(("instance_id", "thread_id", "agent"))
_TEXTS = attrgetter(*(field for field, _, _ in TEXT_LIMITS))
_LIMITS = tuple(limit for _, _, limit in TEXT_LIMITS)
_LEAST_LIMIT = min(_LIMITS)


@dataclass
class CheckedBatch:
    spans: list[SpanRecord]  # the spans to store, normalised
    rejected: int
    message: str  # why spans were rejected and what was normalised, "" when neither
    rejected_by: dict[str, int] = dataclasses.field(default_factory=dict)  # problem (span_problem's words) -> spans


def span_problem(span: SpanRecord) -> str:
    """Why the span cannot be stored at all, "" when it can."""
    if len(span.trace_id) != 32 or not span.trace_id.strip("0"):
        return "trace_id must be 16 non-zero bytes"
    if len(span.span_id) != 16 or not span.span_id.strip("0"):
        return "span_id must be 8 non-zero bytes"
    if len(span.parent_span_id) not in (0, 16):
        return "parent_span_id must be empty or 8 bytes"
    if not span.name:
        return "name is empty"
    if span.start_ns > MAX_NS or span.end_ns > MAX_NS:
        return "start or end time is at or after 2^63 ns (the year 2262)"
    if span.end_ns < span.start_ns:
        return "end_time_unix_nano is before start_time_unix_nano"
    return ""


def shortened(text: str, limit: int) -> str:
    """text cut to `limit` characters, ending in "…" and a digest of the whole, so long texts that differ stay apart."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]
    return f"{text[:limit - DIGEST_CHARS - 1]}…{digest}"


def json_safe(value):
    """value with NUL replaced in every string and key, and non-finite doubles spelled as proto3 JSON does."""
    kind = type(value)
    if kind is str:
        return value.replace("\x00", REPLACEMENT)
    if kind is float and not isfinite(value):
        # JSON has no number for these, and PostgreSQL's jsonb refuses them.
        return "NaN" if isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if kind is dict:
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if kind is list:
        return [json_safe(v) for v in value]
    return value


def span_normalise(span: SpanRecord) -> list[str]:
    """Make the columns of a valid span storable, in place; returns what was changed that the sender cannot see
    in the stored values (which is also added to the span's attributes). JSON columns are made safe as they are
    written (json_text)."""
    notes = []
    # Hot (every span): in C, and no text can be over its limit when all of them together are not over the least.
    texts = _TEXTS(span)
    joined = "".join(texts)
    if "\x00" in joined or (len(joined) > _LEAST_LIMIT and any(map(gt, map(len, texts), _LIMITS))):
        _texts_fit(span, texts, notes)
    if "\x00" in span.status_message:
        span.status_message = span.status_message.replace("\x00", REPLACEMENT)
    if not 0 <= span.kind < len(KIND_NAMES):
        span.kind = 0
        notes.append("unknown kind stored as unspecified")
    if not 0 <= span.status_code < len(STATUS_NAMES):
        span.status_code = 0
        notes.append("unknown status code stored as unset")
    if notes:
        span.attributes = {**span.attributes, NORMALIZED: notes}
    return notes


def _texts_fit(span: SpanRecord, texts: tuple[str, ...], notes: list[str]) -> None:
    identity_changed = False
    for (field, label, limit), text in zip(TEXT_LIMITS, texts):
        if len(text) <= limit and "\x00" not in text:
            continue
        text = text.replace("\x00", REPLACEMENT)
        if len(text) > limit:
            text = shortened(text, limit)
            notes.append(f"{label} cut to {limit} characters")
        setattr(span, field, text)
        identity_changed = identity_changed or field in _IDENTITY
    if identity_changed:
        span.chain, span.clock = chain_and_clock(span.instance_id, span.thread_id, span.agent)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode


def json_text(value) -> str:
    """The JSON text stored for an attributes, events or links value, made safe (json_safe) only when it must be:
    nearly every value costs one dump and one search."""
    try:
        text = _dumps(value)
    except ValueError:  # NaN or Infinity
        return _dumps(json_safe(value))
    # Even with ensure_ascii off, the encoder writes a NUL as the escape \u0000, which jsonb refuses.
    return _dumps(json_safe(value)) if "\\u0000" in text else text


def spans_checked(spans) -> CheckedBatch:
    """The spans that can be stored, normalised, and what the sender should be told about the others."""
    kept: list[SpanRecord] = []
    rejected: dict[str, int] = {}
    normalised: dict[str, int] = {}
    for span in spans:
        problem = span_problem(span)
        if problem:
            rejected[problem] = rejected.get(problem, 0) + 1
            continue
        for note in span_normalise(span):
            normalised[note] = normalised.get(note, 0) + 1
        kept.append(span)
    message = "; ".join(
        [f"{count} span(s): {problem}" for problem, count in sorted(rejected.items())]
        + [f"{count} span(s) stored normalised: {note}" for note, count in sorted(normalised.items())]
    )
    return CheckedBatch(kept, sum(rejected.values()), message, rejected)
