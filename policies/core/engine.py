"""Compiled policies and their evaluation over span records.

Speed comes from a plan cache: a span's *signature* (service, agent, span
name, kind, state op, tool, route, messaging destination and operation) is a
handful of low-cardinality fields. The first span with a signature builds its
plan: the per-span checks of only the rules whose static selector parts can
match it, with access decisions folded as far as the signature allows. Every
later span with that signature runs just those checks; a span no rule can
touch costs one dict lookup.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .document import Document, PolicyError, PolicyProblem
from .matchers import DESTINATION_ATTR, OPERATION_ATTR, ROUTE_ATTR, TOOL_ATTR
from .rules import RULE_KINDS, AccessRule, BoundedParallelismRule, Rule, span_actions

DEFAULT_RULE_ID = "default"
PLAN_CACHE_LIMIT = 200_000
CLASS_CACHE_LIMIT = 500_000


@dataclass(frozen=True)
class Violation:
    rule_id: str
    rule_kind: str
    policy: str
    trace_id: str
    span_id: str
    agent: str
    service: str
    reason: str


@dataclass(frozen=True, eq=False)
class Policy:
    name: str
    default: str  # "allow" | "deny": access decision for an action no rule permits or forbids
    mode: str  # "enforce" | "monitor"
    description: str
    rules: tuple[Rule, ...]
    _plans: dict = field(default_factory=dict, repr=False)
    _name_classes: dict = field(default_factory=dict, repr=False)
    _name_matchers: tuple = field(default=(), repr=False)

    def __eq__(self, other) -> bool:
        return isinstance(other, Policy) and policy_document(self) == policy_document(other)

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.rules]


def parse_policy(text: str) -> Policy:
    """YAML or JSON text -> a validated, compiled Policy. Raises PolicyError listing every problem."""
    doc = Document(text)
    if doc.problems:
        raise PolicyError(_ordered(doc.problems))
    if doc.data is None:
        raise PolicyError([PolicyProblem("the policy is empty", 1, 1, "")])
    bad_paths = doc.check_schema()
    data = doc.data
    rules: list[Rule] = []
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        first_index: dict[str, int] = {}
        for i, spec in enumerate(data["rules"]):
            rid = spec.get("id") if isinstance(spec, dict) else None
            if isinstance(rid, str):
                if rid in first_index:
                    doc.add(("rules", i, "id"), f"duplicate rule id {rid!r} (first used by rules[{first_index[rid]}])")
                else:
                    first_index[rid] = i
            problems: list = []
            if any(p[:2] == ("rules", i) for p in bad_paths) or ("rules",) in bad_paths:
                _salvage_problems(spec, i, problems)  # still report bad regexes, ranges, schemas
            else:
                rules.append(RULE_KINDS[spec["kind"]](i, spec, ("rules", i), problems))
            for path, message in problems:
                doc.add(path, message)
    if doc.problems:
        raise PolicyError(_ordered(doc.problems))
    name_matchers = []
    for rule in rules:
        if rule.selector.name is not None:
            rule.selector.name_slot = len(name_matchers)
            name_matchers.append(rule.selector.name)
    return Policy(
        name=data["policy"],
        default=data.get("default", "allow"),
        mode=data.get("mode", "enforce"),
        description=data.get("description", ""),
        rules=tuple(rules),
        _name_matchers=tuple(name_matchers),
    )


def _salvage_problems(spec, index: int, problems: list) -> None:
    """Compile a rule that failed the schema only to collect its other problems; a crash ends the attempt."""
    cls = RULE_KINDS.get(spec.get("kind")) if isinstance(spec, dict) else None
    if cls is None:
        return
    with contextlib.suppress(Exception):  # malformed parts are already reported by the schema
        cls(index, spec, ("rules", index), problems)


def _ordered(problems: list[PolicyProblem]) -> list[PolicyProblem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0, p.path))


def policy_document(policy: Policy) -> dict:
    """The canonical dict: defaults filled in, name lists as lists. parse_policy(json.dumps(it)) round-trips."""
    out = {"policy": policy.name}
    if policy.description:
        out["description"] = policy.description
    out["default"] = policy.default
    out["mode"] = policy.mode
    out["rules"] = [rule.document() for rule in policy.rules]
    return out


# --- planning ---------------------------------------------------------------

_EMPTY = ((), ())


def _forbid_check(rule: AccessRule, actions: list) -> callable:
    """Reason when any of the span's actions hits this forbid rule. actions: [(action, resource, pred)]."""

    def check(span):
        for action, resource, pred in actions:
            if pred is None or pred(span):
                shown = span.state_key if resource is None else resource
                return f"forbidden: agent {span.agent!r} {action} {shown!r}"
        return None

    return check


def _default_deny_check(actions: list) -> callable:
    """actions: [(action, resource, permit_preds, forbid_preds)], each pred list non-empty only with real predicates."""

    def check(span):
        for action, resource, permits, forbids in actions:
            if any(p(span) for p in permits) or any(f(span) for f in forbids):
                continue
            shown = span.state_key if resource is None else resource
            return f"not permitted: agent {span.agent!r} {action} {shown!r} matches no permit rule and the default is deny"
        return None

    return check


def _build_plan(policy: Policy, sig: tuple):
    checks = []
    collectors = []
    access = []
    for rule in policy.rules:
        if isinstance(rule, AccessRule):
            access.append(rule)
        elif isinstance(rule, BoundedParallelismRule):
            group = rule.group_for(sig)
            if group is not None:
                collectors.append((rule, group))
        else:
            check = rule.check_for(sig)
            if check is not None:
                checks.append((rule, check))
    if access or policy.default == "deny":
        checks.extend(_access_checks(policy, access, sig))
        checks.sort(key=lambda rc: rc[0].index if rc[0] is not None else len(policy.rules))
    if not checks and not collectors:
        return _EMPTY
    return tuple(checks), tuple(collectors)


def _access_checks(policy: Policy, access: list[AccessRule], sig: tuple) -> list:
    actions = span_actions(sig)
    if not actions:
        return []  # not an action: access rules do not apply
    forbids: dict[AccessRule, list] = defaultdict(list)
    deny_actions = []
    for action, resource in actions:
        permit_preds, forbid_preds = [], []
        always_permitted = always_forbidden = False
        for rule in access:
            applies, pred = rule.applies(sig, action, resource)
            if not applies:
                continue
            if rule.effect == "forbid":
                forbids[rule].append((action, resource, pred))
                always_forbidden |= pred is None
                forbid_preds.append(pred)
            else:
                always_permitted |= pred is None
                permit_preds.append(pred)
        if policy.default == "deny" and not always_permitted and not always_forbidden:
            deny_actions.append((action, resource, [p for p in permit_preds], [f for f in forbid_preds]))
    out = [(rule, _forbid_check(rule, acts)) for rule, acts in forbids.items()]
    if deny_actions:
        out.append((None, _default_deny_check(deny_actions)))
    return out


# --- evaluation -------------------------------------------------------------


def _name_class(cache: dict, matchers: tuple, name: str) -> tuple:
    """The slots of the name selectors `name` matches."""
    if len(cache) >= CLASS_CACHE_LIMIT:
        cache.clear()
    return tuple(i for i, matches in enumerate(matchers) if matches(name))


def _hashable_signature(sig: tuple) -> tuple:
    return tuple(v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for v in sig)


def evaluate(policy: Policy, spans: Iterable) -> list[Violation]:
    """Violations of `policy` by `spans`, ordered by rule order, trace_id, span_id; one per (rule, span) at most.

    Access violations under the policy's default deny carry rule_id "default"
    and sort after every rule.
    """
    plans, name_classes, name_matchers = policy._plans, policy._name_classes, policy._name_matchers
    found = []  # (rule or None, span, reason)
    buckets: dict = defaultdict(lambda: defaultdict(list))
    append = found.append
    tool, route, dest, op = TOOL_ATTR, ROUTE_ATTR, DESTINATION_ATTR, OPERATION_ATTR
    for span in spans:
        a = span.attributes
        name_class = name_classes.get(span.name) if name_matchers else ()
        if name_class is None:
            name_class = name_classes[span.name] = _name_class(name_classes, name_matchers, span.name)
        sig = (span.service_name, span.agent, name_class, span.kind, span.state_op,
               a.get(tool), a.get(route), a.get(dest), a.get(op))
        try:
            plan = plans.get(sig)
        except TypeError:  # an unhashable attribute value
            sig = _hashable_signature(sig)
            plan = plans.get(sig)
        if plan is None:
            if len(plans) >= PLAN_CACHE_LIMIT:
                plans.clear()
            plan = plans[sig] = _build_plan(policy, sig)
        if plan is _EMPTY:
            continue
        checks, collectors = plan
        for rule, check in checks:
            reason = check(span)
            if reason is not None:
                append((rule, span, reason))
        for rule, group in collectors:
            key = group(span)
            if key is not None:
                buckets[rule][key].append(span)
    for rule, groups in buckets.items():
        for group, members in groups.items():
            for span, reason in rule.sweep(group, members):
                append((rule, span, reason))
    return _violations(policy, found)


def _violations(policy: Policy, found: list) -> list[Violation]:
    default_index = len(policy.rules)
    keyed = {}
    for rule, span, reason in found:
        index = rule.index if rule is not None else default_index
        key = (index, span.trace_id, span.span_id)
        if key in keyed:
            continue
        keyed[key] = Violation(
            rule_id=rule.id if rule is not None else DEFAULT_RULE_ID,
            rule_kind=rule.kind if rule is not None else AccessRule.kind,
            policy=policy.name,
            trace_id=span.trace_id,
            span_id=span.span_id,
            agent=span.agent,
            service=span.service_name,
            reason=reason,
        )
    return [keyed[k] for k in sorted(keyed)]


__all__ = [
    "DEFAULT_RULE_ID",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Violation",
    "evaluate",
    "parse_policy",
    "policy_document",
]
