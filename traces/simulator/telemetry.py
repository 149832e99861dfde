"""OpenTelemetry plumbing for the simulator: providers, exporters, clocks.

Each simulated process builds its own TracerProvider per agent (never the
global one) and exports either over OTLP (HTTP protobuf or gRPC) or into one
OTLP protobuf file per provider: `DIR/<stem>.binpb` holding a single
`ExportTraceServiceRequest` with all of that provider's spans.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanKind

SCOPE_NAME = "causeway.simulator"
SCOPE_VERSION = "1"


@dataclass(frozen=True)
class ExportConfig:
    """Where spans go. Plain data so it can cross a spawn boundary."""

    mode: str  # "file" | "http" | "grpc"
    output_dir: str = ""
    endpoint: str = "http://127.0.0.1:8000"
    grpc_endpoint: str = "127.0.0.1:4317"
    key: str = ""
    timeout_s: float = 10.0

    def describe(self) -> str:
        if self.mode == "file":
            return f"OTLP protobuf files in {self.output_dir}"
        if self.mode == "grpc":
            return f"OTLP/gRPC to {self.grpc_endpoint}"
        return f"OTLP/HTTP to {traces_url(self.endpoint)}"


def traces_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/v1/traces"


class FileSpanExporter(SpanExporter):
    """Collects spans; on shutdown writes them as one ExportTraceServiceRequest."""

    def __init__(self, path: str):
        self.path = path
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._written = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._written:
                return SpanExportResult.FAILURE
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._written:
                return
            self._written = True
            payload = encode_spans(self._spans).SerializeToString()
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, self.path)


class CountingExporter(SpanExporter):
    """Counts the spans its inner exporter accepted and refused."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - an exporter that raises has failed to export
            result = SpanExportResult.FAILURE
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


class DroppingSpanProcessor(SpanProcessor):
    """Forwards ended spans to `inner`, except those marked to be dropped.

    Used by the `dropped-parent` bug: the parent span is recorded as usual but
    never reaches the exporter.
    """

    def __init__(self, inner: SpanProcessor):
        self.inner = inner
        self.ended = 0
        self.dropped = 0
        self._drop: set[int] = set()
        self._lock = threading.Lock()

    def drop(self, span_id: int) -> None:
        with self._lock:
            self._drop.add(span_id)

    def on_start(self, span, parent_context=None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            if span.context.span_id in self._drop:
                self.dropped += 1
                return
            self.ended += 1
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def make_exporter(export: ExportConfig, stem: str) -> SpanExporter:
    if export.mode == "file":
        return FileSpanExporter(os.path.join(export.output_dir, f"{stem}.binpb"))
    if export.mode == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        headers = (("authorization", f"Bearer {export.key}"),) if export.key else None
        return OTLPSpanExporter(endpoint=export.grpc_endpoint, insecure=True, headers=headers, timeout=export.timeout_s)
    if export.mode == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        headers = {"Authorization": f"Bearer {export.key}"} if export.key else None
        return OTLPSpanExporter(endpoint=traces_url(export.endpoint), headers=headers, timeout=export.timeout_s)
    raise ValueError(f"unknown export mode {export.mode!r}")


class Telemetry:
    """One TracerProvider with its own Resource, its exporter and counters."""

    def __init__(self, export: ExportConfig, stem: str, resource_attributes: dict):
        self.stem = stem
        self.exporter = CountingExporter(make_exporter(export, stem))
        if export.mode == "file":
            inner: SpanProcessor = SimpleSpanProcessor(self.exporter)
        else:
            inner = BatchSpanProcessor(
                self.exporter,
                max_queue_size=1_000_000,
                schedule_delay_millis=500,
                max_export_batch_size=512,
            )
        self.processor = DroppingSpanProcessor(inner)
        # Resource(...) rather than Resource.create: no env or SDK defaults mixed in.
        self.provider = TracerProvider(resource=Resource(resource_attributes))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer(SCOPE_NAME, SCOPE_VERSION)

    def shutdown(self) -> dict[str, int]:
        """Flush and shut down; nothing is exported after this."""
        self.provider.force_flush()
        self.provider.shutdown()
        return {
            "spans_ended": self.processor.ended,
            "spans_dropped": self.processor.dropped,
            "spans_exported": self.exporter.exported,
            "spans_failed": self.exporter.failed,
        }


class Clock:
    """A process clock; `offset_ns` simulates a skewed wall clock."""

    def __init__(self, offset_ns: int = 0):
        self.offset_ns = offset_ns

    def now(self) -> int:
        return time.time_ns() + self.offset_ns


class Spans:
    """Opens spans on one tracer with explicit timestamps from one clock.

    Every span gets `thread.id`, the OS thread it ran on, so that the
    program-order chain is (service.instance.id, thread.id).
    """

    def __init__(self, tracer: trace.Tracer, clock: Clock, processor: DroppingSpanProcessor):
        self.tracer = tracer
        self.clock = clock
        self.processor = processor
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict | None = None,
        links: Sequence[Link] | None = None,
        context=None,
        drop: bool = False,
    ) -> Iterator[trace.Span]:
        attrs = {"thread.id": threading.get_native_id(), "thread.name": threading.current_thread().name}
        if attributes:
            attrs.update(attributes)
        span = self.tracer.start_span(
            name, context=context, kind=kind, attributes=attrs, links=links, start_time=self.clock.now()
        )
        if drop:
            self.processor.drop(span.get_span_context().span_id)
        with self._lock:
            self.count += 1
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
                yield span
        finally:
            span.end(end_time=self.clock.now())
