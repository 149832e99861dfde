"""The OTLP receiver shared by HTTP and gRPC: authenticate, decode, store.

Outcomes map to HTTP statuses and gRPC codes in one table so both transports
answer the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, OperationalError

from governance import metrics
from governance.errors import RETRY_AFTER_SECONDS
from governance.services import IngestKeyRevoked, IngestKeyUnknown, ingest_key_authenticate
from traces.ingest import spans_store
from traces.otlp import OtlpDecodeError, decode_request, spans_from_request

logger = logging.getLogger(__name__)
MESSAGE_CHARS = 1000  # a decoder's message may quote the body; the answer quotes no more of it than this


@dataclass
class IngestFailure(Exception):
    http_status: int
    grpc_code: int  # google.rpc.Code
    message: str
    retry_after: int | None = None


# google.rpc.Code values
INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED = 3, 7, 8, 14, 16
UNIMPLEMENTED = 12


def bearer_key(header_value: str) -> str:
    value = (header_value or "").strip()
    if value.lower().startswith("bearer "):
        return value[7:].strip()
    return value


def ingest_key_check(raw_key: str):
    if not raw_key:
        raise IngestFailure(401, UNAUTHENTICATED, "missing ingest key: send 'Authorization: Bearer <key>'")
    try:
        return ingest_key_authenticate(raw_key)
    except IngestKeyUnknown:
        raise IngestFailure(401, UNAUTHENTICATED, "unknown ingest key") from None
    except IngestKeyRevoked:
        raise IngestFailure(403, PERMISSION_DENIED, "this ingest key was revoked") from None
    except (OperationalError, InterfaceError) as exc:
        raise _unavailable(exc) from None


def _unavailable(exc) -> IngestFailure:
    return IngestFailure(503, UNAVAILABLE, f"storage is unavailable, retry later ({type(exc).__name__})", retry_after=RETRY_AFTER_SECONDS)


def request_decode(body: bytes, content_type: str):
    """The ExportTraceServiceRequest in a (decompressed) body; a body that is not one is the sender's error."""
    try:
        return decode_request(body, content_type)
    except OtlpDecodeError as exc:
        raise IngestFailure(400, INVALID_ARGUMENT, str(exc)[:MESSAGE_CHARS]) from None


def export(project_id: int, request, *, protocol: str = "http") -> tuple[int, str]:
    """Store a decoded ExportTraceServiceRequest; returns (rejected spans, a message saying why and what was
    stored normalised)."""
    batch = spans_from_request(request)
    metrics.SPANS_RECEIVED.labels(protocol=protocol).inc(len(batch.spans) + batch.rejected)
    for problem, count in batch.rejected_by.items():
        metrics.SPANS_REJECTED.labels(reason=metrics.reject_reason(problem)).inc(count)
    try:
        spans_store(project_id=project_id, spans=batch.spans)
    except (OperationalError, InterfaceError) as exc:
        metrics.SPANS_REJECTED.labels(reason="storage_unavailable").inc(len(batch.spans))
        raise _unavailable(exc) from None
    except DatabaseError as exc:
        metrics.SPANS_REJECTED.labels(reason="storage_refused").inc(len(batch.spans))
        # traces/span_rules.py makes every span it keeps storable, so this is a rule missing there. The sender is
        # not shown the database's words (they name tables and columns); the log keeps them.
        logger.exception("the database refused a batch of %d spans", len(batch.spans))
        raise IngestFailure(400, INVALID_ARGUMENT,
                            f"the database refused the spans ({type(exc).__name__}); none were stored") from None
    metrics.SPANS_ACCEPTED.labels(protocol=protocol).inc(len(batch.spans))
    return batch.rejected, batch.message
