"""OTLP/gRPC: TraceService.Export over the shared receiver (traces/receiver.py).

`build_server` returns a started-able grpc.Server so `manage.py otlp_grpc`
and the tests run the same thing; the tests bind port 0.

Export is registered to take the request's bytes and decode them itself, as
POST /v1/traces does: left to gRPC, a message that does not parse is answered
INTERNAL ("Exception deserializing request!") where it is the sender's error.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
from django.conf import settings
from django.db import close_old_connections
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from governance import metrics
from traces.otlp import PROTOBUF, export_response
from traces.receiver import IngestFailure, bearer_key, export, ingest_key_check, request_decode

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
logger = logging.getLogger(__name__)


def _metadata_key(context) -> str:
    for name, value in context.invocation_metadata() or ():
        if name.lower() == "authorization":
            return bearer_key(value if isinstance(value, str) else value.decode("latin-1"))
    return ""


def export_call(body: bytes, context) -> ExportTraceServiceResponse:
    """TraceService.Export on the request's bytes."""
    close_old_connections()
    began, status = time.perf_counter(), "OK"
    try:
        key = ingest_key_check(_metadata_key(context))
        rejected, message = export(key.project_id, request_decode(body, PROTOBUF), protocol="grpc")
    except IngestFailure as failure:
        status = _CODE_NAMES[failure.grpc_code]
        if failure.retry_after:
            # The OTLP exporters space their retries by this RetryInfo.
            info = RetryInfo(retry_delay=Duration(seconds=failure.retry_after))
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
        context.abort(grpc.StatusCode[_CODE_NAMES[failure.grpc_code]], failure.message)
    except Exception:
        status = "INTERNAL"
        # Left to gRPC, the answer would quote the exception (UNKNOWN "Exception calling application: ...").
        logger.exception("OTLP/gRPC Export failed")
        context.abort(grpc.StatusCode.INTERNAL, "the receiver failed; its log says why")
    finally:
        close_old_connections()
        metrics.INGEST_SECONDS.labels(protocol="grpc", status=status).observe(time.perf_counter() - began)
    return export_response(rejected, message)


# google.rpc.Code value -> grpc.StatusCode name
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def build_server(host: str = "127.0.0.1", port: int = 4317, workers: int = 8) -> tuple[grpc.Server, int]:
    """A gRPC server with the trace service added and bound (not started); returns it and the bound port."""
    limit = settings.OTLP_MAX_BODY_BYTES
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
        maximum_concurrent_rpcs=workers * 4,
    )
    export_method = grpc.unary_unary_rpc_method_handler(
        export_call, response_serializer=ExportTraceServiceResponse.SerializeToString)  # no request deserializer
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": export_method}),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"could not bind the OTLP/gRPC receiver to {address}")
    return server, bound
