"""The policy core: format, located errors, and every rule kind on hand-built spans.

Runs without Django: .venv/bin/pytest -p no:django tests/test_policy_core.py
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.core import (
    SCHEMA_PATH,
    PolicyError,
    Violation,
    evaluate,
    parse_policy,
    policy_document,
)
from traces.records import KIND_CLIENT, KIND_INTERNAL, KIND_PRODUCER, KIND_SERVER, STATUS_ERROR, make_span

REPO = Path(__file__).resolve().parent.parent
_ids = itertools.count(1)


# --- named helpers ------------------------------------------------------------


def a_span(*, agent="alice", service="orders", instance="orders-1", name="step", kind=KIND_INTERNAL,
           start=0, end=10, attributes=None, trace="t1", **extra):
    """A span by `agent` in process `instance` of `service`; timestamps in ns on that process's clock."""
    return make_span(
        trace_id=trace.ljust(32, "0"),
        span_id=f"{next(_ids):016x}",
        name=name,
        kind=kind,
        start_ns=start,
        end_ns=end,
        attributes={"gen_ai.agent.id": agent, **(attributes or {})},
        resource_attributes={"service.name": service, "service.instance.id": instance},
        **extra,
    )


def a_write(agent, key, **kw):
    attributes = {"state.key": key, "state.op": "write", **kw.pop("attributes", {})}
    return a_span(agent=agent, name=kw.pop("name", "state.write"), attributes=attributes, **kw)


def a_read(agent, key, **kw):
    return a_span(agent=agent, name=kw.pop("name", "state.read"), attributes={"state.key": key, "state.op": "read"}, **kw)


def a_tool_call(agent, tool, **kw):
    attributes = {"gen_ai.tool.name": tool, **kw.pop("attributes", {})}
    return a_span(agent=agent, name=f"execute_tool {tool}", kind=KIND_CLIENT, attributes=attributes, **kw)


def a_publish(agent, destination, **kw):
    attributes = {"messaging.destination.name": destination, "messaging.operation.type": "send"}
    return a_span(agent=agent, name=f"send {destination}", kind=KIND_PRODUCER, attributes=attributes, **kw)


def a_request(agent, route, **kw):
    return a_span(agent=agent, name=f"GET {route}", kind=KIND_SERVER, attributes={"http.route": route}, **kw)


def policy_of(*rules, **top) -> object:
    return parse_policy(yaml.safe_dump({"policy": "test-policy", **top, "rules": list(rules)}, sort_keys=False))


def flagged(policy, *spans) -> list[tuple[str, str]]:
    """(rule_id, span name) of each violation."""
    by_id = {s.span_id: s for s in spans}
    return [(v.rule_id, by_id[v.span_id].name) for v in evaluate(policy, spans)]


def problems_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text))
    return [(p.line, p.path, p.message) for p in caught.value.errors]


# --- schema_version -------------------------------------------------------------

SEMCONV = {
    "id": "semconv",
    "kind": "schema_version",
    "schema_url": {"of": "resource", "versions": ["1.27.0"], "range": {"min": "1.21.0", "max": "1.26.0"}},
}


def test_it_flags_a_resource_schema_url_outside_the_allowed_versions():
    policy = policy_of(SEMCONV)
    old = a_span(name="old", resource_schema_url="https://opentelemetry.io/schemas/1.19.0")
    newest = a_span(name="newest", resource_schema_url="https://opentelemetry.io/schemas/1.27.0")
    ranged = a_span(name="ranged", resource_schema_url="https://opentelemetry.io/schemas/1.24")
    violations = evaluate(policy, [old, newest, ranged])
    assert [(v.rule_id, v.rule_kind, v.span_id) for v in violations] == [("semconv", "schema_version", old.span_id)]
    assert "1.19.0" in violations[0].reason and "1.21.0..1.26.0" in violations[0].reason


def test_it_flags_a_missing_schema_url_only_when_required():
    strict = policy_of(SEMCONV)
    lenient = policy_of({**SEMCONV, "schema_url": {**SEMCONV["schema_url"], "required": False}})
    bare = a_span(name="bare")
    assert flagged(strict, bare) == [("semconv", "bare")]
    assert flagged(lenient, bare) == []


def test_it_prefers_the_scope_schema_url_over_the_resource_one_by_default():
    policy = policy_of({"id": "semconv", "kind": "schema_version", "schema_url": {"versions": ["1.26.0"]}})
    scoped = a_span(name="scoped", resource_schema_url="https://x/schemas/1.0.0", scope_schema_url="https://x/schemas/1.26.0")
    assert flagged(policy, scoped) == []


def test_it_flags_a_schema_version_attribute_outside_the_allowed_set():
    policy = policy_of({
        "id": "payload-version", "kind": "schema_version",
        "match": {"service": "orders"},
        "attribute": {"name": "schema.version", "values": ["2", 3]},
    })
    two, three = a_span(name="two", attributes={"schema.version": "2"}), a_span(name="three", attributes={"schema.version": 3})
    four, missing = a_span(name="four", attributes={"schema.version": "4"}), a_span(name="missing")
    elsewhere = a_span(name="elsewhere", service="billing", attributes={"schema.version": "9"})
    assert flagged(policy, two, three, four, missing, elsewhere) == [("payload-version", "four"), ("payload-version", "missing")]


def test_it_checks_a_version_attribute_on_events_of_the_given_name():
    policy = policy_of({
        "id": "result-version", "kind": "schema_version",
        "attribute": {"name": "schema.version", "event": "tool.result", "range": {"min": "1.2", "max": "1.9"}},
    })
    good = a_span(name="good", events=[{"name": "tool.result", "time_ns": 5, "attributes": {"schema.version": "1.4.1"}}])
    bad = a_span(name="bad", events=[
        {"name": "tool.result", "time_ns": 5, "attributes": {"schema.version": "1.4"}},
        {"name": "tool.result", "time_ns": 6, "attributes": {"schema.version": "2.0"}},
    ])
    other_event = a_span(name="other", events=[{"name": "log", "time_ns": 5, "attributes": {"schema.version": "0.1"}}])
    violations = evaluate(policy, [good, bad, other_event])
    assert [v.span_id for v in violations] == [bad.span_id]
    assert violations[0].reason.startswith("event 'tool.result' attribute 'schema.version' = '2.0'")


PAYMENT_SCHEMA = {
    "id": "payment-attrs", "kind": "schema_version",
    "match": {"tool": "charge_*"},
    "json_schema": {"schema": {
        "type": "object",
        "required": ["payment.amount", "payment.currency"],
        "properties": {"payment.amount": {"type": "number", "minimum": 0}, "payment.currency": {"enum": ["EUR", "USD"]}},
    }},
}


def test_it_names_the_field_when_span_attributes_fail_the_json_schema():
    policy = policy_of(PAYMENT_SCHEMA)
    wrong_type = a_tool_call("alice", "charge_card", attributes={"payment.amount": "ten", "payment.currency": "EUR"})
    missing = a_tool_call("alice", "charge_card", attributes={"payment.amount": 10})
    fine = a_tool_call("alice", "charge_card", attributes={"payment.amount": 10, "payment.currency": "USD"})
    not_a_charge = a_tool_call("alice", "search", attributes={"payment.amount": "ten"})
    reasons = {v.span_id: v.reason for v in evaluate(policy, [wrong_type, missing, fine, not_a_charge])}
    assert set(reasons) == {wrong_type.span_id, missing.span_id}
    assert reasons[wrong_type.span_id].startswith("attribute 'payment.amount' ($['payment.amount']):")
    assert "'ten' is not of type 'number'" in reasons[wrong_type.span_id]
    assert reasons[missing.span_id] == "missing required attribute 'payment.currency'"


def test_it_validates_the_attributes_of_named_events_against_the_json_schema():
    policy = policy_of({
        "id": "result-shape", "kind": "schema_version",
        "json_schema": {"event": "tool.result", "schema": {"properties": {"rows": {"type": "integer", "maximum": 100}}}},
    })
    big = a_span(name="big", events=[{"name": "tool.result", "time_ns": 1, "attributes": {"rows": 500}}])
    small = a_span(name="small", events=[{"name": "tool.result", "time_ns": 1, "attributes": {"rows": 5}}])
    [violation] = evaluate(policy, [big, small])
    assert violation.span_id == big.span_id
    assert violation.reason.startswith("event 'tool.result': attribute 'rows' ($.rows): 500 is greater than the maximum of 100")


# --- access -----------------------------------------------------------------------


def test_it_lets_a_matching_forbid_override_a_permit():
    policy = policy_of(
        {"id": "tools-ok", "kind": "access", "effect": "permit", "principal": "alice", "action": "tool.call"},
        {"id": "no-drop", "kind": "access", "effect": "forbid", "action": "tool.call", "resource": "drop_*"},
        default="deny",
    )
    drop, search = a_tool_call("alice", "drop_table"), a_tool_call("alice", "search")
    violations = evaluate(policy, [drop, search])
    assert [(v.rule_id, v.span_id) for v in violations] == [("no-drop", drop.span_id)]
    assert violations[0].reason == "forbidden: agent 'alice' tool.call 'drop_table'"


def test_it_denies_by_default_an_action_no_rule_permits():
    policy = policy_of(
        {"id": "billing-writes-invoices", "kind": "access", "effect": "permit",
         "principal": "billing-*", "action": "state.write", "resource": "invoice/*"},
        default="deny",
    )
    ok = a_write("billing-7", "invoice/1", name="ok")
    other_key = a_write("billing-7", "order/1", name="other-key")
    other_agent = a_write("support", "invoice/1", name="other-agent")
    read = a_read("billing-7", "invoice/1", name="read")
    violations = evaluate(policy, [ok, other_key, other_agent, read])
    assert {v.span_id for v in violations} == {other_key.span_id, other_agent.span_id, read.span_id}
    assert all(v.rule_id == "default" and v.rule_kind == "access" for v in violations)
    reasons = {v.span_id: v.reason for v in violations}
    assert reasons[other_key.span_id] == (
        "not permitted: agent 'billing-7' state.write 'order/1' matches no permit rule and the default is deny"
    )


def test_it_allows_unmatched_actions_when_the_default_is_allow():
    policy = policy_of({"id": "no-prod-db", "kind": "access", "effect": "forbid", "action": "state.write", "resource": "prod/*"})
    assert flagged(policy, a_write("alice", "dev/1", name="dev"), a_write("alice", "prod/1", name="prod")) == [("no-prod-db", "prod")]


def test_it_does_not_subject_spans_that_are_no_action_to_access_rules():
    policy = policy_of({"id": "nothing", "kind": "access", "effect": "forbid", "principal": "*"}, default="deny")
    thinking = a_span(agent="alice", name="plan next step")
    assert evaluate(policy, [thinking]) == []
    assert flagged(policy, a_tool_call("alice", "search")) == [("nothing", "execute_tool search")]


def test_it_checks_publishes_by_destination_and_requests_by_route():
    policy = policy_of(
        {"id": "publish-orders", "kind": "access", "effect": "permit", "action": "message.publish", "resource": "orders.*"},
        {"id": "public-routes", "kind": "access", "effect": "permit", "action": "http.request", "resource": ["/health", "/orders/{id}"]},
        default="deny",
    )
    spans = [a_publish("alice", "orders.created"), a_publish("alice", "payments.refund"),
             a_request("alice", "/orders/{id}"), a_request("alice", "/admin")]
    assert flagged(policy, *spans) == [("default", "send payments.refund"), ("default", "GET /admin")]


def test_it_applies_access_rules_only_when_their_attribute_conditions_hold():
    policy = policy_of({
        "id": "no-big-refunds", "kind": "access", "effect": "forbid", "action": "tool.call", "resource": "refund",
        "match": {"attributes": {"refund.amount": {"range": {"min": 1000}}}},
    })
    small = a_tool_call("alice", "refund", attributes={"refund.amount": 20})
    big = a_tool_call("alice", "refund", attributes={"refund.amount": 5000})
    assert [v.span_id for v in evaluate(policy, [small, big])] == [big.span_id]


def test_it_reports_a_span_with_several_denied_actions_once_per_rule():
    policy = policy_of({"id": "read-only", "kind": "access", "effect": "permit", "action": "state.read"}, default="deny")
    tool_that_writes = a_tool_call("alice", "save", attributes={"state.key": "k", "state.op": "write"})
    assert flagged(policy, tool_that_writes) == [("default", "execute_tool save")]


# --- single_writer ----------------------------------------------------------------


def test_it_flags_every_other_writer_of_a_single_writer_key_even_rejected_writes():
    policy = policy_of({"id": "ledger-owner", "kind": "single_writer", "key": "ledger/*", "writer": "ledger-agent"})
    owner = a_write("ledger-agent", "ledger/1", name="owner")
    intruder = a_write("alice", "ledger/1", name="intruder")
    rejected = a_write("bob", "ledger/2", name="rejected", attributes={"state.conflict": True})
    failed = a_write("carol", "ledger/3", name="failed", status_code=STATUS_ERROR)
    reader = a_read("alice", "ledger/1", name="reader")
    elsewhere = a_write("alice", "orders/1", name="elsewhere")
    violations = evaluate(policy, [owner, intruder, rejected, failed, reader, elsewhere])
    assert {v.span_id for v in violations} == {intruder.span_id, rejected.span_id, failed.span_id}
    reasons = {v.span_id: v.reason for v in violations}
    assert reasons[intruder.span_id] == (
        "agent 'alice' wrote state key 'ledger/1' (the write took effect); only 'ledger-agent' may write keys matching 'ledger/*'"
    )
    assert "(the write was rejected)" in reasons[rejected.span_id]


# --- idempotency_required ---------------------------------------------------------


def test_it_flags_side_effecting_tool_calls_without_an_idempotency_key():
    policy = policy_of({"id": "idempotent-payments", "kind": "idempotency_required",
                        "match": {"kind": "client", "tool": ["charge_card", "refund"]}})
    keyless = a_tool_call("alice", "charge_card")
    keyed = a_tool_call("alice", "refund", attributes={"idempotency.key": "op-1"})
    harmless = a_tool_call("alice", "search")
    violations = evaluate(policy, [keyless, keyed, harmless])
    assert [(v.rule_id, v.span_id, v.reason) for v in violations] == [
        ("idempotent-payments", keyless.span_id, "span 'execute_tool charge_card' has no idempotency.key")
    ]


# --- bounded_parallelism ----------------------------------------------------------


def test_it_flags_the_span_that_opens_beyond_the_parallelism_limit():
    policy = policy_of({"id": "two-tools-at-once", "kind": "bounded_parallelism", "match": {"tool": "*"}, "max": 2})
    first = a_tool_call("alice", "a", start=0, end=100)
    second = a_tool_call("alice", "b", start=10, end=25)
    third = a_tool_call("alice", "c", start=20, end=30)
    after = a_tool_call("alice", "d", start=30, end=40)  # second and third have closed: two open
    violations = evaluate(policy, [after, third, second, first])
    assert [v.span_id for v in violations] == [third.span_id]
    assert violations[0].reason == "3 matching spans open at once for agent 'alice' on clock 'orders-1' (max 2)"


def test_it_counts_parallelism_on_one_process_clock_only():
    policy = policy_of({"id": "one-at-a-time", "kind": "bounded_parallelism", "match": {"tool": "*"}, "max": 1})
    on_one = a_tool_call("alice", "a", instance="orders-1", start=0, end=100)
    on_other = a_tool_call("alice", "b", instance="orders-2", start=0, end=100)  # same agent, another clock
    assert evaluate(policy, [on_one, on_other]) == []
    overlapping = a_tool_call("alice", "c", instance="orders-2", start=50, end=60)
    assert [v.span_id for v in evaluate(policy, [on_one, on_other, overlapping])] == [overlapping.span_id]


def test_it_groups_parallelism_per_state_key_when_asked():
    policy = policy_of({"id": "one-writer-per-key", "kind": "bounded_parallelism",
                        "match": {"state_op": "write"}, "max": 1, "per": "state_key"})
    a = a_write("alice", "k1", start=0, end=10)
    b = a_write("bob", "k2", start=0, end=10)
    c = a_write("carol", "k1", start=5, end=10)
    assert [v.span_id for v in evaluate(policy, [a, b, c])] == [c.span_id]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p1", "p2"]), st.integers(0, 50), st.integers(0, 20)), max_size=25),
       st.integers(1, 3))
def test_it_counts_open_spans_like_a_brute_force_count_on_each_clock(intervals, limit):
    policy = policy_of({"id": "limit", "kind": "bounded_parallelism", "match": {"tool": "*"}, "max": limit})
    spans = [a_tool_call("alice", "t", instance=clock, start=start, end=start + length)
             for clock, start, length in intervals]
    order = sorted(spans, key=lambda s: (s.start_ns, s.trace_id, s.span_id))
    expected = {
        s.span_id for i, s in enumerate(order)
        if 1 + sum(1 for t in order[:i] if t.clock == s.clock and t.end_ns > s.start_ns) > limit
    }
    assert {v.span_id for v in evaluate(policy, spans)} == expected


# --- selectors ---------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "hits"), [
    ({"equals": "eu"}, ["eu"]),
    ({"in": ["eu", 1]}, ["eu", "one"]),
    ({"glob": "e*"}, ["eu"]),
    ({"regex": "^u[sk]$"}, ["us"]),
    ({"exists": False}, ["none"]),
    ({"range": {"min": 0.5, "max": 2}}, ["one"]),
    ({"equals": True}, ["true"]),
])
def test_it_matches_attribute_conditions(condition, hits):
    policy = policy_of({"id": "c", "kind": "idempotency_required", "match": {"attributes": {"region": condition}}})
    values = {"eu": "eu", "us": "us", "one": 1, "true": True}
    spans = [a_span(name=n, attributes={"region": v}) for n, v in values.items()] + [a_span(name="none")]
    assert sorted(name for _, name in flagged(policy, *spans)) == sorted(hits)


def test_it_matches_selector_names_exactly_or_by_glob_and_resource_attributes():
    policy = policy_of({"id": "s", "kind": "idempotency_required", "match": {
        "service": ["orders", "pay*"], "agent": "a?", "name": "step", "kind": ["internal"],
        "resource": {"service.instance.id": {"glob": "*-1"}},
    }})
    spans = [
        a_span(name="step", service="payments", agent="a1"),
        a_span(name="step", service="orders", agent="a2", instance="orders-2"),
        a_span(name="step", service="shipping", agent="a3"),
        a_span(name="step", service="orders", agent="abc"),
        a_span(name="other", service="orders", agent="a4"),
    ]
    assert [v.agent for v in evaluate(policy, spans)] == ["a1"]


# --- evaluation order ---------------------------------------------------------------


def test_it_orders_violations_by_rule_then_trace_then_span_whatever_the_input_order():
    policy = policy_of(
        {"id": "z-first", "kind": "idempotency_required", "match": {"tool": "*"}},
        {"id": "a-second", "kind": "access", "effect": "forbid", "action": "tool.call"},
        default="deny",
    )
    spans = [a_tool_call("alice", "x", trace=t) for t in ("t2", "t1", "t3", "t1")]
    forward, backward = evaluate(policy, spans), evaluate(policy, list(reversed(spans)))
    assert forward == backward
    keys = [(v.rule_id, v.trace_id, v.span_id) for v in forward]
    assert [k[0] for k in keys] == ["z-first"] * 4 + ["a-second"] * 4
    assert keys == sorted(keys, key=lambda k: (k[0] != "z-first", k[1], k[2]))
    assert all(isinstance(v, Violation) and v.policy == "test-policy" and v.service == "orders" for v in forward)


def test_it_reports_one_violation_per_rule_and_span_even_for_duplicate_spans():
    policy = policy_of({"id": "idem", "kind": "idempotency_required", "match": {"tool": "*"}})
    span = a_tool_call("alice", "x")
    assert len(evaluate(policy, [span, span])) == 1


# --- the format and located problems ----------------------------------------------


def test_it_locates_a_yaml_syntax_error():
    [(line, path, message)] = problems_of("""\
        policy: p
        rules:
          - id: a
            kind: access
            effect: "permit
    """)
    assert line == 5 and path == "" and message.startswith("YAML syntax error")


def test_it_locates_an_unknown_rule_kind():
    assert problems_of("""\
        policy: p
        rules:
          - id: a
            kind: idempotency_required
            match: {}
          - id: b
            kind: teleport
    """) == [(7, "rules[1].kind", (
        "unknown rule kind 'teleport'; expected one of: schema_version, access, "
        "single_writer, idempotency_required, bounded_parallelism"
    ))]


def test_it_locates_a_missing_field_at_its_rule():
    assert problems_of("""\
        policy: p
        rules:
          - id: owner
            kind: single_writer
            key: "ledger/*"
    """) == [(3, "rules[0].writer", "missing required field 'writer'")]


def test_it_locates_a_regex_that_does_not_compile():
    [(line, path, message)] = problems_of("""\
        policy: p
        rules:
          - id: a
            kind: idempotency_required
            match:
              attributes:
                gen_ai.tool.name: {regex: "charge_(card"}
    """)
    assert (line, path) == (7, 'rules[0].match.attributes["gen_ai.tool.name"].regex')
    assert message.startswith("regex 'charge_(card' does not compile")


def test_it_locates_a_duplicate_rule_id_at_its_second_use():
    assert problems_of("""\
        policy: p
        rules:
          - id: same
            kind: idempotency_required
            match: {tool: "*"}
          - id: same
            kind: idempotency_required
            match: {tool: "*"}
    """) == [(6, "rules[1].id", "duplicate rule id 'same' (first used by rules[0])")]


def test_it_reports_every_problem_at_once_in_source_order():
    problems = problems_of("""\
        policy: p
        mode: loud
        rules:
          - id: a
            kind: bounded_parallelism
            max: 0
            colour: red
          - id: b
            kind: schema_version
            schema_url: {range: {min: "2.0", max: "1.0"}}
            json_schema: {schema: {type: 12}}
          - id: c
            kind: access
            effect: permit
            match:
              attributes:
                size: {range: {min: 10, max: 1}}
    """)
    assert [(line, path) for line, path, _ in problems] == [
        (2, "mode"),
        (6, "rules[0].max"),
        (7, "rules[0].colour"),
        (10, "rules[1].schema_url.range"),
        (11, "rules[1].json_schema.schema.type"),
        (17, "rules[2].match.attributes.size.range"),
    ]
    messages = [m for _, _, m in problems]
    assert messages[2] == "unknown field 'colour' for rule kind 'bounded_parallelism'"
    assert messages[3] == "version range min 2.0 is greater than max 1.0"
    assert messages[4].startswith("invalid JSON Schema:")


def test_it_locates_problems_in_json_policies_too():
    text = '{\n  "policy": "p",\n  "rules": [\n    {"id": "a", "kind": "access",\n     "effect": "maybe"}\n  ]\n}\n'
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    [problem] = caught.value.errors
    assert (problem.line, problem.column, problem.path) == (5, 16, "rules[0].effect")
    with pytest.raises(PolicyError) as caught:
        parse_policy('{"policy": "p",\n "rules": [,]}')
    assert caught.value.errors[0].line == 2 and "JSON syntax error" in caught.value.errors[0].message


def test_it_reads_json_and_yaml_into_the_same_canonical_document():
    yaml_text = textwrap.dedent("""\
        policy: payments
        default: deny
        rules:
          - id: writes
            kind: access
            effect: permit
            principal: billing
            action: state.write
            resource: "invoice/*"
          - id: owner
            kind: single_writer
            key: "ledger/*"
            writer: ledger-agent
    """)
    from_yaml = policy_document(parse_policy(yaml_text))
    from_json = policy_document(parse_policy(json.dumps(yaml.safe_load(yaml_text), indent=2)))
    assert from_yaml == from_json
    assert from_yaml["mode"] == "enforce"
    assert from_yaml["rules"][0] == {"id": "writes", "kind": "access", "effect": "permit", "principal": ["billing"],
                                     "action": ["state.write"], "resource": ["invoice/*"]}
    assert policy_document(parse_policy(json.dumps(from_yaml))) == from_yaml


def test_the_canonical_document_is_valid_against_the_published_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    policy = policy_of(SEMCONV, PAYMENT_SCHEMA, {"id": "p", "kind": "bounded_parallelism", "max": 3})
    jsonschema.Draft202012Validator(schema).validate(policy_document(policy))


def test_every_example_in_the_policy_docs_parses():
    docs = (REPO / "docs" / "policies.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL)
    assert len(examples) >= 5
    kinds = set()
    for example in examples:
        if example.startswith("# invalid"):
            with pytest.raises(PolicyError) as caught:
                parse_policy(example)
            promised = [int(n) for n in re.findall(r"# line (\d+):", example)]
            assert [p.line for p in caught.value.errors] == promised
            continue
        policy = parse_policy(example)
        kinds |= {rule.kind for rule in policy.rules}
        document = policy_document(policy)
        assert policy_document(parse_policy(json.dumps(document))) == document
    assert kinds == {"schema_version", "access", "single_writer", "idempotency_required", "bounded_parallelism"}


def test_the_core_imports_no_django():
    code = "import sys; import policies.core; print(any(m.startswith('django') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
