"""The tool: a small HTTP server in its own process, called synchronously.

It has its own TracerProvider and Resource. A call arrives with a W3C
`traceparent` header; the server span (kind SERVER) is extracted as the child
of the caller's CLIENT span, and reads the requested key from the store in a
leaf span. The span ends before the response is written, so the caller's
span always encloses it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .store import VersionedStore
from .telemetry import Clock, ExportConfig, Spans, Telemetry

PROPAGATOR = TraceContextTextMapPropagator()
TOOL_NAME = "quote"
TOOL_STEM = "tool"


@dataclass(frozen=True)
class ToolConfig:
    run_id: str
    db_path: str
    export: ExportConfig
    service_name: str = "causeway-sim-tool"
    service_version: str = "1.0.0"


def read_span_attributes(key: str, version: int) -> dict:
    return {
        "state.key": key,
        "state.op": "read",
        "state.version": version,
        "db.system.name": "sqlite",
        "db.operation.name": "SELECT",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _ToolServer

    def log_message(self, format, *args) -> None:
        pass

    def do_POST(self) -> None:
        tool = self.server
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        ctx = PROPAGATOR.extract(self.headers)
        status, payload = 200, {}
        attrs = {
            "http.request.method": "POST",
            "url.path": self.path,
            "http.route": "/" + TOOL_NAME,
            "server.address": tool.server_address[0],
            "server.port": tool.server_address[1],
            "gen_ai.tool.name": TOOL_NAME,
        }
        with tool.spans.span(f"POST /{TOOL_NAME}", kind=SpanKind.SERVER, attributes=attrs, context=ctx) as span:
            key = body.get("key")
            if self.path != "/" + TOOL_NAME or not isinstance(key, str) or not key:
                status, payload = 500, {"error": "bad request: a string 'key' is required"}
                span.set_attribute("error.type", "500")
                span.set_status(Status(StatusCode.ERROR, payload["error"]))
            else:
                with tool.spans.span("store.read", attributes={"state.key": key, "state.op": "read"}) as read:
                    value, version = tool.store.read(key)
                    read.set_attributes(read_span_attributes(key, version))
                payload = {"key": key, "value": value, "version": version}
            span.set_attribute("http.response.status_code", status)
            with tool.lock:
                tool.calls += 1
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ToolServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, store: VersionedStore, spans: Spans):
        super().__init__(address, _Handler)
        self.store = store
        self.spans = spans
        self.lock = threading.Lock()
        self.calls = 0


def tool_process_main(config: ToolConfig, ready_q, stop_event, result_q) -> None:
    """Entry point of the tool process: serve until `stop_event` is set."""
    telemetry = Telemetry(
        config.export,
        TOOL_STEM,
        {
            "service.name": config.service_name,
            "service.version": config.service_version,
            "service.instance.id": f"{config.run_id}-tool",
        },
    )
    spans = Spans(telemetry.tracer, Clock(), telemetry.processor)
    server = _ToolServer(("127.0.0.1", 0), VersionedStore(config.db_path), spans)
    thread = threading.Thread(target=server.serve_forever, name="tool-server", daemon=True)
    thread.start()
    ready_q.put(server.server_address[1])
    try:
        stop_event.wait()
    finally:
        server.shutdown()
        server.server_close()
        stats = telemetry.shutdown()
        result_q.put({"role": "tool", "name": TOOL_STEM, "tool_calls": server.calls, **stats})
