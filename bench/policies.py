"""Policy evaluation throughput: 50 rules of every kind against 1M spans.

    .venv/bin/python bench/policies.py [--spans 1000000] [--seed 7] [--stored]

Span generation is not timed; parsing the policy is timed separately; the
evaluation figure includes building the plan cache from cold and runs with the
garbage collector on, as in the worker. With --stored the spans are first
stored in the database named by DATABASE_URL (project "bench-policies",
through the ingest code), then read back as the worker reads them; the load
rate is printed beside the evaluation rate. The last line printed is JSON:
{"spans_per_s": ..., ...}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import gc
import json
import random
import time
from collections import Counter

import yaml

from policies.core import evaluate, parse_policy
from traces.records import (
    KIND_CLIENT,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    SpanRecord,
)

SERVICES = ["orders", "billing", "inventory", "support", "search", "ledger", "shipping", "payments",
            "notify", "catalog", "pricing", "fraud"]
SERVICE_TOOLS = {
    "orders": ["lookup_order", "cancel_order", "web_search", "summarize", "send_email"],
    "billing": ["charge_card", "issue_credit", "summarize", "read_file", "write_file"],
    "inventory": ["update_inventory", "list_skus", "sql_query"],
    "support": ["create_ticket", "lookup_order", "translate", "summarize", "post_slack", "vector_search"],
    "search": ["web_search", "vector_search", "fetch_url", "summarize"],
    "ledger": ["sql_query", "read_file"],
    "shipping": ["book_shipment", "geocode", "get_weather"],
    "payments": ["charge_card", "refund", "score_risk"],
    "notify": ["send_email", "post_slack", "translate"],
    "catalog": ["list_skus", "vector_search", "write_file"],
    "pricing": ["price_quote", "sql_query"],
    "fraud": ["score_risk", "sql_query", "fetch_url"],
}
ALL_TOOLS = sorted({t for tools in SERVICE_TOOLS.values() for t in tools} | {"drop_table", "run_code"})
OWNED_SPACES = {"orders": ["order", "cart"], "ledger": ["ledger"], "inventory": ["inventory"],
                "support": ["session", "ticket", "customer"], "billing": ["invoice"]}
KEY_SPACES = ["order", "ledger", "inventory", "session", "invoice", "cart", "ticket", "customer"]
SERVICE_TOPICS = {"orders": ["orders.created", "orders.cancelled"], "payments": ["payments.captured", "payments.refund"],
                  "inventory": ["inventory.changed"], "fraud": ["fraud.alerts"]}
ROUTES = ["/orders/{id}", "/orders", "/health", "/search", "/carts/{id}", "/skus/{sku}", "/tickets/{id}"]
LLM_NAMES = ["chat gpt-4o", "chat claude-sonnet", "embeddings text-3"]
PLAN_NAMES = ["plan", "reflect", "route_request", "invoke_agent"]
SCHEMA_URLS = ["https://opentelemetry.io/schemas/1.26.0"] * 30 + ["https://opentelemetry.io/schemas/1.24.0"] * 3 + [
    "https://opentelemetry.io/schemas/1.19.0"]


def _rare(rng, p=0.02) -> bool:
    return rng.random() < p


def generate_spans(n: int, seed: int = 7) -> list[SpanRecord]:
    """`n` realistic agent spans, mostly within policy, a few percent not.

    36 processes (12 services x 3 instances), 3 agents each. An agent works one
    request (trace) after another on its process clock: a SERVER root, then
    steps in sequence (LLM calls, tool calls, state reads/writes, publishes,
    outgoing requests), sometimes a parallel fan-out of tool calls.
    """
    rng = random.Random(seed)
    workers = []  # (service, instance, agent, agent index, resource, schema url)
    for service in SERVICES:
        for i in range(3):
            instance = f"{service}-{i}"
            resource = {"service.name": service, "service.instance.id": instance, "service.version": f"1.{i}.0"}
            url = rng.choice(SCHEMA_URLS)
            for j in range(3):
                workers.append((service, instance, f"{service}-agent-{j}", j, resource, url))
    free_at = {w[2] + w[1]: 1_700_000_000_000_000_000 + rng.randint(0, 10**9) for w in workers}
    spans: list[SpanRecord] = []
    trace_no = 0
    ms = 1_000_000

    def add(trace_id, parent, name, kind, start, end, attributes, common, events=(), **fields):
        span_id = f"{len(spans) + 1:016x}"
        spans.append(SpanRecord(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                                start_ns=start, end_ns=end, status_code=STATUS_ERROR if _rare(rng) else STATUS_OK,
                                attributes=attributes, events=list(events), **common, **fields))
        return span_id

    while len(spans) < n:
        trace_no += 1
        trace_id = f"{trace_no:032x}"
        service, instance, agent, agent_no, resource, url = rng.choice(workers)
        common = {"service_name": service, "service_version": resource["service.version"], "instance_id": instance,
                  "agent": agent, "chain": instance, "clock": instance, "resource_attributes": resource,
                  "resource_schema_url": url, "scope_name": "causeway.agent"}
        t0 = free_at[agent + instance] + rng.randint(1 * ms, 40 * ms)
        if _rare(rng, 0.05):
            t0 -= 200 * ms  # picked up a second request before finishing the last one
        route = rng.choice(ROUTES) if not _rare(rng, 0.01) else "/admin/users"
        root_attrs = {"gen_ai.agent.id": agent, "http.route": route}
        root = f"{len(spans) + 1:016x}"
        spans.append(None)  # the root is filled in once its end is known
        cursor = t0 + rng.randint(0, 2 * ms)
        for _ in range(rng.randint(3, 12)):
            if len(spans) >= n:
                break
            roll = rng.random()
            attrs = {"gen_ai.agent.id": agent}
            if roll < 0.25:
                duration = rng.randint(200 * ms, 2000 * ms)
                attrs["gen_ai.usage.input_tokens"] = rng.randint(100, 6000 if not _rare(rng) else 9000)
                add(trace_id, root, rng.choice(LLM_NAMES), KIND_CLIENT, cursor, cursor + duration, attrs, common)
            elif roll < 0.50:
                fan_out = 1 if rng.random() < 0.8 else rng.randint(2, 4 if not _rare(rng, 0.1) else 6)
                duration = 0
                for _ in range(fan_out):
                    tool = rng.choice(SERVICE_TOOLS[service]) if not _rare(rng, 0.01) else rng.choice(ALL_TOOLS)
                    tool_attrs = dict(attrs, **{"gen_ai.tool.name": tool})
                    fields = {}
                    if not _rare(rng, 0.03):
                        fields["idempotency_key"] = tool_attrs["idempotency.key"] = f"op-{trace_no}-{len(spans)}"
                        fields["idempotency_outcome"] = tool_attrs["idempotency.outcome"] = "executed"
                    if tool in ("charge_card", "refund", "issue_credit"):
                        tool_attrs["payment.amount"] = rng.choice([5, 20, 99.5, 250, 480]) if not _rare(rng) else 1200
                        tool_attrs["payment.currency"] = rng.choice(["EUR", "USD"]) if not _rare(rng) else "GBP"
                    events = ()
                    if tool in ("sql_query", "web_search", "vector_search"):
                        events = ({"name": "tool.result", "time_ns": cursor,
                                   "attributes": {"schema.version": "1.3" if not _rare(rng) else "1.1",
                                                  "rows": rng.randint(0, 100 if not _rare(rng) else 500)}},)
                    d = rng.randint(20 * ms, 800 * ms)
                    duration = max(duration, d)
                    add(trace_id, root, f"execute_tool {tool}", KIND_CLIENT, cursor, cursor + d, tool_attrs, common,
                        events, **fields)
            elif roll < 0.78:
                spaces = OWNED_SPACES.get(service, [])
                writer = spaces and (agent_no == 0 or _rare(rng, 0.03))
                op = "write" if writer and rng.random() < 0.5 else "read"
                space = rng.choice(spaces) if op == "write" else rng.choice(KEY_SPACES)
                key = f"{space}/{rng.randint(1, 5000)}"
                version = rng.randint(2, 50)
                fields = {"state_key": key, "state_op": op, "state_version": version}
                attrs.update({"state.key": key, "state.op": op, "state.version": version})
                if op == "write":
                    attrs["state.base_version"] = fields["state_base_version"] = version - 1
                    if service == "orders":
                        attrs["schema.version"] = "3" if not _rare(rng) else "2"
                    if _rare(rng, 0.05):
                        attrs["state.conflict"] = fields["state_conflict"] = True
                duration = rng.randint(1 * ms, 15 * ms)
                add(trace_id, root, f"state.{op} {space}", KIND_INTERNAL, cursor, cursor + duration, attrs, common,
                    **fields)
            elif roll < 0.84 and service in SERVICE_TOPICS:
                topic = rng.choice(SERVICE_TOPICS[service])
                attrs.update({"messaging.destination.name": topic, "messaging.operation.type": "send",
                              "messaging.system": "kafka"})
                duration = rng.randint(1 * ms, 5 * ms)
                add(trace_id, root, f"send {topic}", KIND_PRODUCER, cursor, cursor + duration, attrs, common)
            else:
                duration = rng.randint(5 * ms, 100 * ms)
                add(trace_id, root, rng.choice(PLAN_NAMES), KIND_INTERNAL, cursor, cursor + duration, attrs, common)
            cursor += duration + rng.randint(0, 3 * ms)
        end = cursor + rng.randint(0, 2 * ms)
        spans[int(root, 16) - 1] = SpanRecord(
            trace_id=trace_id, span_id=root, parent_span_id="", name=f"POST {route}", kind=KIND_SERVER,
            start_ns=t0, end_ns=end, status_code=STATUS_OK, attributes=root_attrs, **common)
        free_at[agent + instance] = max(free_at[agent + instance], end)
    return spans


def bench_policy() -> dict:
    """50 rules: 8 schema_version, 24 access (default deny), 7 single_writer, 6 idempotency_required, 5 bounded_parallelism."""
    rules = [
        {"id": "semconv-core", "kind": "schema_version", "match": {"service": ["orders", "billing", "payments"]},
         "schema_url": {"of": "resource", "versions": ["1.26.0"], "range": {"min": "1.24.0", "max": "1.27.0"}}},
        {"id": "semconv-all", "kind": "schema_version", "schema_url": {"range": {"min": "1.20.0"}}},
        {"id": "payload-version-orders", "kind": "schema_version", "match": {"service": "orders", "state_op": "write"},
         "attribute": {"name": "schema.version", "values": ["3", "4"], "required": False}},
        {"id": "payload-version-billing", "kind": "schema_version", "match": {"service": "billing"},
         "attribute": {"name": "schema.version", "values": ["3"], "required": False}},
        {"id": "tool-result-version", "kind": "schema_version", "match": {"tool": "*search*"},
         "attribute": {"name": "schema.version", "event": "tool.result", "range": {"min": "1.3", "max": "1.9"}}},
        {"id": "payment-attributes", "kind": "schema_version", "match": {"tool": ["charge_card", "refund", "issue_credit"]},
         "json_schema": {"schema": {"type": "object", "required": ["payment.amount", "payment.currency"],
                                    "properties": {"payment.amount": {"type": "number", "minimum": 0},
                                                   "payment.currency": {"enum": ["EUR", "USD"]}}}}},
        {"id": "tool-result-shape", "kind": "schema_version", "match": {"tool": "sql_query"},
         "json_schema": {"event": "tool.result",
                         "schema": {"properties": {"rows": {"type": "integer", "maximum": 100}}}}},
        {"id": "llm-usage", "kind": "schema_version", "match": {"name": "chat *", "service": "support"},
         "json_schema": {"schema": {"required": ["gen_ai.usage.input_tokens"],
                                    "properties": {"gen_ai.usage.input_tokens": {"type": "integer", "maximum": 6000}}}}},
    ]
    # access: every service reads everything, writes its own key spaces, calls its tools, publishes its topics
    owners = {"order": "orders", "ledger": "ledger", "inventory": "inventory", "session": "support",
              "invoice": "billing", "cart": "orders", "ticket": "support", "customer": "support"}
    rules.append({"id": "read-anything", "kind": "access", "effect": "permit", "action": "state.read"})
    for space, service in owners.items():
        rules.append({"id": f"write-{space}", "kind": "access", "effect": "permit", "principal": f"{service}-agent-*",
                      "action": "state.write", "resource": f"{space}/*"})
    rules += [
        {"id": "tools-general", "kind": "access", "effect": "permit", "action": "tool.call",
         "resource": ["web_search", "vector_search", "summarize", "translate", "get_weather", "geocode", "fetch_url"]},
        {"id": "tools-payments", "kind": "access", "effect": "permit", "principal": ["payments-*", "billing-*"],
         "action": "tool.call", "resource": ["charge_card", "refund", "issue_credit"]},
        {"id": "tools-data", "kind": "access", "effect": "permit", "action": "tool.call",
         "resource": ["sql_query", "score_risk"], "match": {"service": ["ledger", "fraud", "pricing", "payments"]}},
        {"id": "tools-ops", "kind": "access", "effect": "permit", "action": "tool.call",
         "match": {"service": ["orders", "shipping", "inventory", "support", "catalog", "pricing"]}},
        {"id": "tools-files-and-messages", "kind": "access", "effect": "permit", "action": "tool.call",
         "resource": ["*_file", "send_email", "post_slack"],
         "match": {"attributes": {"gen_ai.usage.input_tokens": {"exists": False}}}},
        {"id": "no-drop-table", "kind": "access", "effect": "forbid", "action": "tool.call", "resource": "drop_table"},
        {"id": "no-run-code-outside-search", "kind": "access", "effect": "forbid", "action": "tool.call",
         "resource": "run_code", "match": {"service": ["orders", "billing", "payments", "ledger"]}},
        {"id": "no-big-refunds", "kind": "access", "effect": "forbid", "action": "tool.call", "resource": "refund",
         "match": {"attributes": {"payment.amount": {"range": {"min": 1000}}}}},
        {"id": "publish-own-topics", "kind": "access", "effect": "permit", "action": "message.publish",
         "resource": ["orders.*", "inventory.*", "fraud.*", "audit.log"]},
        {"id": "publish-payments", "kind": "access", "effect": "permit", "principal": "payments-*",
         "action": "message.publish", "resource": "payments.*"},
        {"id": "routes-public", "kind": "access", "effect": "permit", "action": "http.request",
         "resource": ["/orders/{id}", "/orders", "/health", "/search", "/carts/{id}", "/skus/{sku}"]},
        {"id": "routes-tickets", "kind": "access", "effect": "permit", "action": "http.request",
         "resource": "/tickets/*", "match": {"service": ["support", "orders", "notify", "search", "catalog"]}},
        {"id": "routes-billing", "kind": "access", "effect": "permit", "action": "http.request",
         "resource": ["/invoices/{id}", "/refunds"], "match": {"service": ["billing", "payments", "support"]}},
        {"id": "no-admin-routes", "kind": "access", "effect": "forbid", "action": "http.request", "resource": "/admin/*",
         "match": {"kind": "server"}},
        {"id": "no-ledger-writes-by-support", "kind": "access", "effect": "forbid", "principal": "support-*",
         "action": "state.write", "resource": "ledger/*"},
    ]
    for space, service in list(owners.items())[:7]:
        rules.append({"id": f"single-writer-{space}", "kind": "single_writer", "key": f"{space}/*",
                      "writer": f"{service}-agent-0"})
    rules += [
        {"id": "idem-payments", "kind": "idempotency_required", "match": {"tool": ["charge_card", "refund", "issue_credit"]}},
        {"id": "idem-email", "kind": "idempotency_required", "match": {"tool": ["send_email", "post_slack"]}},
        {"id": "idem-shipments", "kind": "idempotency_required", "match": {"tool": "book_shipment", "kind": "client"}},
        {"id": "idem-tickets", "kind": "idempotency_required",
         "match": {"tool": "create_ticket", "resource": {"service.version": {"glob": "1.*"}}}},
        {"id": "idem-cancel", "kind": "idempotency_required", "match": {"tool": ["cancel_order"], "service": "orders"}},
        {"id": "idem-writes-files", "kind": "idempotency_required",
         "match": {"tool": "write_file", "attributes": {"gen_ai.agent.id": {"regex": "-agent-[12]$"}}}},
        {"id": "parallel-tools", "kind": "bounded_parallelism", "match": {"tool": "*"}, "max": 4},
        {"id": "parallel-llm", "kind": "bounded_parallelism", "match": {"name": "chat *"}, "max": 3},
        {"id": "parallel-writes-per-key", "kind": "bounded_parallelism", "match": {"state_op": "write"},
         "max": 1, "per": "state_key"},
        {"id": "parallel-payments", "kind": "bounded_parallelism", "match": {"service": "payments"}, "max": 6},
        {"id": "parallel-publish", "kind": "bounded_parallelism", "match": {"kind": "producer"}, "max": 2,
         "per": "service"},
    ]
    assert len(rules) == 50, len(rules)
    return {"policy": "bench", "default": "deny", "mode": "enforce", "rules": rules}


def run_evaluation(policy, spans) -> tuple[list, float]:
    gc.collect()
    started = time.perf_counter()
    violations = evaluate(policy, spans)
    return violations, time.perf_counter() - started


def store_and_load(spans: list[SpanRecord]) -> tuple[list[SpanRecord], float, float]:
    """Store the spans through the ingest code, then read them back as the worker does.
    Returns (loaded spans, store seconds, load seconds)."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from governance.models import Project
    from traces.ingest import spans_store
    from traces.models import Span, Trace
    from traces.selectors import span_records

    project, _ = Project.objects.get_or_create(slug="bench-policies", defaults={"name": "bench-policies"})
    Span.objects.filter(project=project).delete()
    Trace.objects.filter(project=project).delete()
    started = time.perf_counter()
    for start in range(0, len(spans), 5000):
        spans_store(project_id=project.pk, spans=spans[start:start + 5000])
    stored = time.perf_counter() - started
    started = time.perf_counter()
    loaded = list(span_records(Span.objects.filter(project=project), chunk_size=20_000))
    return loaded, stored, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stored", action="store_true", help="store the spans in DATABASE_URL and read them back")
    args = parser.parse_args()

    started = time.perf_counter()
    spans = generate_spans(args.spans, args.seed)
    print(f"generated {len(spans):,} spans in {time.perf_counter() - started:.1f}s (not timed)")
    load_rate = None
    if args.stored:
        spans, store_s, load_s = store_and_load(spans)
        load_rate = len(spans) / load_s
        print(f"stored {len(spans):,} spans in {store_s:.1f}s; read back in {load_s:.1f}s: {load_rate:,.0f} spans/s")

    text = yaml.safe_dump(bench_policy(), sort_keys=False)
    started = time.perf_counter()
    policy = parse_policy(text)
    parse_ms = (time.perf_counter() - started) * 1000
    kinds = Counter(rule.kind for rule in policy.rules)
    print(f"parsed {len(policy.rules)} rules ({', '.join(f'{k} {n}' for k, n in kinds.items())}) in {parse_ms:.1f} ms")

    violations, seconds = run_evaluation(policy, spans)
    rate = len(spans) / seconds
    print(f"evaluated {len(spans):,} spans in {seconds:.2f}s: {rate:,.0f} spans/s, "
          f"{len(policy._plans):,} span signatures planned")
    by_kind = Counter(v.rule_kind for v in violations)
    print(f"{len(violations):,} violations: " + ", ".join(f"{k} {n:,}" for k, n in sorted(by_kind.items())))
    print(json.dumps({"spans_per_s": round(rate), "spans": len(spans), "rules": len(policy.rules),
                      "seconds": round(seconds, 3), "violations": len(violations),
                      "load_spans_per_s": round(load_rate) if load_rate else None}))


if __name__ == "__main__":
    main()
