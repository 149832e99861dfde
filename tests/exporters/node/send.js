#!/usr/bin/env node
/*
 * Sends a small agent workload through the official OpenTelemetry JS OTLP/HTTP
 * trace exporter, configured only through the standard environment variables:
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port        (the exporter appends /v1/traces)
 *   OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<ingest key>
 *   OTEL_EXPORTER_OTLP_COMPRESSION=gzip                  (optional)
 *
 * Usage: node send.js json|proto
 *
 * Prints one JSON object on stdout: the exporter used, the trace ids and, per
 * span name, its trace id, span id and parent span id (hex, as OTLP/JSON has
 * them). Exits 1 when an export failed or the server reported rejected spans
 * (partial success); the reason goes to stderr. Run by tests/test_node_exporter.py.
 */
'use strict';

const api = require('@opentelemetry/api');
const { ExportResultCode, W3CTraceContextPropagator } = require('@opentelemetry/core');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');

const EXPORTERS = {
  json: () => require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter,
  proto: () => require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter,
};

const which = process.argv[2];
if (!(which in EXPORTERS)) {
  process.stderr.write(`usage: node send.js ${Object.keys(EXPORTERS).join('|')}\n`);
  process.exit(2);
}
if (!process.env.OTEL_EXPORTER_OTLP_ENDPOINT && !process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
  process.stderr.write('OTEL_EXPORTER_OTLP_ENDPOINT is not set: refusing to export to the default localhost:4318\n');
  process.exit(2);
}

// The exporter reports failures (and partial successes: rejected spans) only through diag.
// WARN rather than ERROR so a partial success, which it logs as a warning, is seen too.
const problems = [];
api.diag.setLogger(
  {
    error: (...args) => { problems.push(['error', args]); process.stderr.write(`otel error: ${args.join(' ')}\n`); },
    warn: (...args) => { problems.push(['warn', args]); process.stderr.write(`otel warn: ${args.join(' ')}\n`); },
    info: () => {},
    debug: () => {},
    verbose: () => {},
  },
  { logLevel: api.DiagLogLevel.WARN, suppressOverrideMessage: true },
);

// The exporter as users build it: no options, everything from the environment.
const exporter = new (EXPORTERS[which]())();

// Every export's result, as the BatchSpanProcessor sees it.
const results = [];
const recording = {
  export(spans, done) {
    exporter.export(spans, (result) => {
      results.push({ code: result.code, spans: spans.length, error: result.error && String(result.error) });
      done(result);
    });
  },
  shutdown: () => exporter.shutdown(),
  forceFlush: () => exporter.forceFlush(),
};

const resource = resourceFromAttributes({
  'service.name': 'node-planner',
  'service.version': '4.2.0',
  'service.instance.id': `node-planner-${which}`,
  'gen_ai.agent.id': 'node-planner',
  'deployment.environment.name': 'test',
  'host.cpu.count': 4,
});
const provider = new BasicTracerProvider({
  resource,
  spanProcessors: [new BatchSpanProcessor(recording, { maxExportBatchSize: 4, scheduledDelayMillis: 50 })],
});
const tracer = provider.getTracer('causeway.tests.node', '3.1.4');
const propagator = new W3CTraceContextPropagator();

const ids = {};
function record(span, parentSpanId = '') {
  const ctx = span.spanContext();
  ids[span.name] = { trace_id: ctx.traceId, span_id: ctx.spanId, parent_span_id: parentSpanId };
}

function run() {
  // One trace: plan -> invoke (CLIENT) -> handle (SERVER, across a traceparent header) -> read, write.
  const root = tracer.startSpan('plan task', {
    attributes: {
      'task.id': 'task-node',
      'task.priority': 7,
      'task.negative': -3,
      'task.budget': 0.75,
      'task.urgent': true,
      'task.done': false,
      'task.tags': ['refactor', 'docs'],
      'task.retries': [0, 1, 2],
      'task.weights': [0.5, 1.5],
      'task.flags': [true, false],
      'task.note': 'héllo ✓',
    },
  });
  root.addEvent('plan.ready', { steps: 3, tools: ['search', 'edit'], confidence: 0.9, final: true });
  const rootCtx = api.trace.setSpan(api.ROOT_CONTEXT, root);

  const client = tracer.startSpan('invoke coder', {
    kind: api.SpanKind.CLIENT,
    attributes: { 'rpc.system': 'a2a', 'thread.id': 'main' },
  }, rootCtx);
  const clientCtx = api.trace.setSpan(rootCtx, client);

  // What travels in the request headers to the coder, and what the coder makes of them.
  const carrier = {};
  propagator.inject(clientCtx, carrier, api.defaultTextMapSetter);
  const remoteCtx = propagator.extract(api.ROOT_CONTEXT, carrier, api.defaultTextMapGetter);
  const server = tracer.startSpan('handle invoke', { kind: api.SpanKind.SERVER }, remoteCtx);
  const serverCtx = api.trace.setSpan(remoteCtx, server);

  const read = tracer.startSpan('read doc', {
    attributes: { 'state.key': 'doc:node', 'state.op': 'read', 'state.version': 2 },
  }, serverCtx);
  read.end();

  const write = tracer.startSpan('write doc', {
    attributes: {
      'state.key': 'doc:node',
      'state.op': 'write',
      'state.version': 3,
      'state.base_version': 2,
      'idempotency.key': 'write-node-1',
      'idempotency.outcome': 'executed',
      'thread.id': 'w1',
    },
  }, serverCtx);
  write.addEvent('lock.acquired', { 'lock.fencing_token': 101, waited_ms: 1.25 });
  write.end();

  server.end();
  client.end();
  root.end();

  // Another trace: a review that links to the invoke, and fails.
  const review = tracer.startSpan('review change', {
    kind: api.SpanKind.CONSUMER,
    links: [{ context: client.spanContext(), attributes: { 'link.reason': 'reviews', attempt: 1, strict: true } }],
    attributes: {
      'state.key': 'doc:node', 'state.op': 'write', 'state.version': 3, 'state.base_version': 1,
      'idempotency.key': 'review-node-1', 'idempotency.outcome': 'deduplicated',
    },
  }, api.ROOT_CONTEXT);
  review.addEvent('review.failed', { failures: 2, cases: ['a', 'b'], ratio: 0.5 });
  review.setStatus({ code: api.SpanStatusCode.ERROR, message: 'tests failed: 2 of 9' });
  review.end();

  record(root);
  record(client, root.spanContext().spanId);
  record(server, client.spanContext().spanId);
  record(read, server.spanContext().spanId);
  record(write, server.spanContext().spanId);
  record(review);
}

async function main() {
  run();
  let failure = '';
  try {
    await provider.forceFlush();
    await provider.shutdown();
  } catch (err) {
    failure = `flush/shutdown failed: ${err && err.stack ? err.stack : err}`;
  }
  const exported = results.filter((r) => r.code === ExportResultCode.SUCCESS).reduce((n, r) => n + r.spans, 0);
  const spanCount = Object.keys(ids).length;
  if (!failure && results.some((r) => r.code !== ExportResultCode.SUCCESS)) {
    failure = `export failed: ${JSON.stringify(results.filter((r) => r.code !== ExportResultCode.SUCCESS))}`;
  }
  if (!failure && exported !== spanCount) {
    failure = `exported ${exported} of ${spanCount} spans: ${JSON.stringify(results)}`;
  }
  if (!failure && problems.length) {
    failure = `the exporter logged ${problems.length} problem(s), see above`;
  }
  const traceIds = [...new Set(Object.values(ids).map((s) => s.trace_id))];
  process.stdout.write(`${JSON.stringify({ exporter: which, trace_ids: traceIds, spans: ids, exports: results })}\n`);
  if (failure) {
    process.stderr.write(`${failure}\n`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  process.stderr.write(`send.js crashed: ${err && err.stack ? err.stack : err}\n`);
  process.exitCode = 1;
});
