"""OTLP/HTTP: POST /v1/traces, protobuf or JSON, gzip or not."""

import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from google.rpc.status_pb2 import Status

from governance import metrics
from traces.otlp import (
    JSON,
    PROTOBUF,
    PROTOBUF_ALIASES,
    BodyTooLarge,
    OtlpDecodeError,
    encode_response,
    export_response,
    inflate,
    media_type,
)
from traces.receiver import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    IngestFailure,
    bearer_key,
    export,
    ingest_key_check,
    request_decode,
)


def _status_response(failure: IngestFailure, content_type: str) -> HttpResponse:
    body, kind = encode_response(Status(code=failure.grpc_code, message=failure.message), content_type)
    response = HttpResponse(body, status=failure.http_status, content_type=kind)
    if failure.retry_after:
        response["Retry-After"] = str(failure.retry_after)
    return response


def _read_body(request, limit: int) -> bytes:
    # Read at most limit+1 bytes of the (possibly compressed) body, never the whole of an oversized one.
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise IngestFailure(413, RESOURCE_EXHAUSTED, f"body of {declared} bytes is over the limit of {limit}")
    if not declared and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body without Content-Length as empty; gunicorn's input decodes chunked bodies
        # and says so with wsgi.input_terminated. A server that does not (Django's development server)
        # would hand us an empty body and the spans would be lost behind a 200: refuse instead.
        if not request.environ.get("wsgi.input_terminated"):
            raise IngestFailure(411, INVALID_ARGUMENT,
                                "a chunked body needs a server that decodes it: run Causeway under gunicorn "
                                "(scripts/run.sh does), or send Content-Length")
        body = request.environ["wsgi.input"].read(limit + 1)
    else:
        body = request.read(limit + 1)
    if len(body) > limit:
        raise IngestFailure(413, RESOURCE_EXHAUSTED, f"body is over the limit of {limit} bytes")
    return body


@csrf_exempt
def otlp_traces(request):
    began = time.perf_counter()
    response = _otlp_traces(request)
    metrics.INGEST_SECONDS.labels(protocol="http", status=str(response.status_code)).observe(
        time.perf_counter() - began)
    return response


def _otlp_traces(request):
    content_type = request.META.get("CONTENT_TYPE", "")
    kind = media_type(content_type)
    reply_type = JSON if kind == JSON else PROTOBUF
    try:
        if request.method != "POST":
            failure = IngestFailure(405, UNIMPLEMENTED, f"{request.method} is not allowed: POST OTLP trace data")
            response = _status_response(failure, reply_type)
            response["Allow"] = "POST"
            return response
        if kind != JSON and kind not in PROTOBUF_ALIASES:
            raise IngestFailure(415, INVALID_ARGUMENT,
                                f"unsupported content type {kind or '(none)'!r}: use application/x-protobuf or application/json")
        key = ingest_key_check(bearer_key(request.META.get("HTTP_AUTHORIZATION", "")))
        limit = settings.OTLP_MAX_BODY_BYTES
        body = _read_body(request, limit)
        try:
            body = inflate(body, request.META.get("HTTP_CONTENT_ENCODING", ""), limit)
        except BodyTooLarge as exc:
            raise IngestFailure(413, RESOURCE_EXHAUSTED, str(exc)) from None
        except OtlpDecodeError as exc:
            raise IngestFailure(400, INVALID_ARGUMENT, str(exc)) from None
        rejected, message = export(key.project_id, request_decode(body, kind))
    except IngestFailure as failure:
        return _status_response(failure, reply_type)
    body, kind = encode_response(export_response(rejected, message), reply_type)
    return HttpResponse(body, status=200, content_type=kind)
