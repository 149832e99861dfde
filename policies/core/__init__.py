"""The policy core: parse, validate and evaluate governance policies over span records.

Plain Python, no Django import, so the CLI, the Celery tasks and the views
share one implementation. The format is documented in docs/policies.md and
described by policies/policy.schema.json.

    policy = parse_policy(text)          # raises PolicyError(.errors: [PolicyProblem])
    violations = evaluate(policy, spans) # spans: traces.records.SpanRecord
    policy_document(policy)              # canonical dict
"""

from .document import SCHEMA_PATH, PolicyError, PolicyProblem, policy_schema
from .engine import DEFAULT_RULE_ID, Policy, Violation, evaluate, parse_policy, policy_document
from .rules import ACTIONS, RULE_KINDS, Rule

__all__ = [
    "ACTIONS",
    "DEFAULT_RULE_ID",
    "RULE_KINDS",
    "SCHEMA_PATH",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "Rule",
    "Violation",
    "evaluate",
    "parse_policy",
    "policy_document",
    "policy_schema",
]
