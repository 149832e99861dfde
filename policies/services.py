"""Writes for policies: versions, activation, rollback, mode, and recording violations.

Every change a person makes checks their role and writes an audit record in
the same transaction. Activation and version numbering lock the policy row,
so two people acting at once are serialised by the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from django.db import IntegrityError, transaction
from django.db.models import Max

from governance.models import Project, Role
from governance.services import PermissionDenied, audit_record, role_require  # noqa: F401 - re-exported for views
from policies.core import PolicyError, PolicyProblem, evaluate, parse_policy, policy_document
from policies.models import Policy, PolicyActivation, PolicyVersion, Violation
from traces.models import Span
from traces.selectors import span_records

EDIT_ROLE = Role.APPROVER  # create policies and save versions (drafts)
APPROVE_ROLE = Role.APPROVER  # activate, roll back, change mode
SPAN_CHUNK = 2000


class PolicyConflict(Exception):
    """The change lost a race or names something that exists already (HTTP 409)."""


def _parse(source: str, *, name: str | None = None):
    """Parse, and when saving to an existing policy, check the document keeps its name."""
    policy = parse_policy(source)
    if name is not None and policy.name != name:
        raise PolicyError([_name_problem(source, policy.name, name)])
    return policy


def _name_problem(source: str, found: str, expected: str) -> PolicyProblem:
    line, column = None, None
    try:
        import yaml

        root = yaml.compose(source, Loader=yaml.SafeLoader)
        for key, value in getattr(root, "value", []):
            if getattr(key, "value", None) == "policy":
                line, column = value.start_mark.line + 1, value.start_mark.column + 1
    except Exception:  # noqa: BLE001, S110 - the location is a courtesy; the message stands without it
        pass
    return PolicyProblem(f"this policy is named {expected!r}; a version cannot rename it to {found!r}", line, column, "policy")


def policy_create(*, project: Project, source: str, comment: str = "", actor, address=None) -> Policy:
    """A new policy named by its document's `policy` field, with version 1 (not active yet)."""
    role_require(user=actor, project=project, role=EDIT_ROLE)
    compiled = _parse(source)
    try:
        with transaction.atomic():
            policy = Policy.objects.create(project=project, name=compiled.name, description=compiled.description,
                                           mode=compiled.mode, created_by=actor)
            version = PolicyVersion.objects.create(policy=policy, number=1, source=source,
                                                   document=policy_document(compiled), author=actor, comment=comment)
            audit_record(project=project, actor=actor, action="policy.create", obj_type="policy", obj_id=policy.pk,
                         detail={"name": policy.name, "version": version.number, "mode": policy.mode}, address=address)
    except IntegrityError:
        raise PolicyConflict(f"project {project.slug} already has a policy named {compiled.name!r}") from None
    return policy


def policy_version_create(*, policy: Policy, source: str, comment: str = "", actor, address=None) -> PolicyVersion:
    """Validate and save the next version. A bad policy raises PolicyError and saves nothing."""
    role_require(user=actor, project=policy.project, role=EDIT_ROLE)
    compiled = _parse(source, name=policy.name)
    with transaction.atomic():
        # The row lock numbers versions one at a time; the unique constraint backs it up.
        Policy.objects.select_for_update().filter(pk=policy.pk).get()
        number = (policy.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = PolicyVersion.objects.create(policy=policy, number=number, source=source,
                                               document=policy_document(compiled), author=actor, comment=comment)
        audit_record(project=policy.project, actor=actor, action="policy.version.create", obj_type="policy",
                     obj_id=policy.pk, detail={"name": policy.name, "version": number, "comment": comment},
                     address=address)
    return version


def policy_version_activate(*, policy: Policy, version: PolicyVersion, actor, address=None,
                            expected_active: int | None = None, action: str = PolicyActivation.Action.ACTIVATE,
                            previous: PolicyVersion | None = None, _skip_role=False) -> Policy:
    """Make `version` the one active version. With `expected_active` (a version number, 0 for none),
    refuse with PolicyConflict when someone changed the active version since the caller looked."""
    if not _skip_role:
        role_require(user=actor, project=policy.project, role=APPROVE_ROLE)
    if version.policy_id != policy.pk:
        raise ValueError("that version belongs to another policy")
    with transaction.atomic():
        # Lock first, then read the active version in a new statement: a join in the locking
        # query would show the row as it was before a concurrent activation committed.
        locked = Policy.objects.select_for_update().get(pk=policy.pk)
        current = PolicyVersion.objects.filter(pk=locked.active_version_id).first() if locked.active_version_id else None
        if expected_active is not None and (current.number if current else 0) != expected_active:
            raise PolicyConflict(
                f"the active version changed to {f'v{current.number}' if current else 'none'} meanwhile; reload and retry"
            )
        if current is not None and current.pk == version.pk:
            raise PolicyConflict(f"v{version.number} is already active")
        changed = Policy.objects.filter(pk=policy.pk, active_version=current).update(active_version=version)
        if changed != 1:  # cannot happen under the row lock; the guard states the rule
            raise PolicyConflict("the active version changed meanwhile; reload and retry")
        PolicyActivation.objects.create(policy=policy, version=version, action=action, actor=actor,
                                        previous=current if action == PolicyActivation.Action.ACTIVATE else previous)
        audit_record(project=policy.project, actor=actor, action=f"policy.{action}", obj_type="policy", obj_id=policy.pk,
                     detail={"name": policy.name, "version": version.number,
                             "previous": current.number if current else None},
                     address=address)
    policy.active_version = version
    return policy


def rollback_target(*, policy: Policy) -> tuple[PolicyVersion | None, PolicyVersion | None]:
    """(the version a rollback returns to, what a rollback from that one would return to next)."""
    history = list(policy.activations.select_related("version", "previous").order_by("-id")[:200])
    if not history or history[0].previous is None:
        return None, None
    target = history[0].previous
    # Follow the stack: the activation that once made `target` active knows what preceded it.
    for entry in history[1:]:
        if entry.version_id == target.pk:
            return target, entry.previous
    return target, None


def policy_rollback(*, policy: Policy, actor, address=None) -> Policy:
    """Return to the version that was active before the current one; recorded as a rollback."""
    role_require(user=actor, project=policy.project, role=APPROVE_ROLE)
    with transaction.atomic():
        locked = Policy.objects.select_for_update().get(pk=policy.pk)
        target, before = rollback_target(policy=locked)
        if target is None:
            raise PolicyConflict("there is no earlier active version to roll back to")
        return policy_version_activate(policy=locked, version=target, actor=actor, address=address,
                                       expected_active=locked.active_version.number if locked.active_version else 0,
                                       action=PolicyActivation.Action.ROLLBACK, previous=before, _skip_role=True)


def policy_mode_set(*, policy: Policy, mode: str, actor, address=None) -> bool:
    """Switch between enforce and monitor. Returns whether anything changed."""
    role_require(user=actor, project=policy.project, role=APPROVE_ROLE)
    if mode not in Policy.Mode.values:
        raise ValueError(f"mode must be one of {', '.join(Policy.Mode.values)}")
    with transaction.atomic():
        changed = Policy.objects.filter(pk=policy.pk).exclude(mode=mode).update(mode=mode)
        if changed:
            audit_record(project=policy.project, actor=actor, action="policy.mode", obj_type="policy", obj_id=policy.pk,
                         detail={"name": policy.name, "mode": mode, "previous": policy.mode}, address=address)
    policy.mode = mode
    return bool(changed)


# --- evaluation ---------------------------------------------------------------


@lru_cache(maxsize=256)
def compiled_version(version_id: int, source: str):
    """A saved version compiled once per process (versions never change, so the id is a safe key)."""
    return parse_policy(source)


def violations_record(*, project_id: int, trace_ids: list[str]) -> int:
    """Evaluate the active version of every policy of the project on these traces; store new violations.

    Deterministic: the same spans give the same violations, and a violation
    already stored (same version, rule, trace, span) is never stored twice.
    """
    policies = list(Policy.objects.filter(project_id=project_id, active_version__isnull=False)
                    .select_related("active_version").order_by("pk"))
    if not policies or not trace_ids:
        return 0
    spans = list(span_records(Span.objects.filter(project_id=project_id, trace_id__in=trace_ids)
                              .order_by("trace_id", "start_ns", "span_id"), chunk_size=SPAN_CHUNK))
    if not spans:
        return 0
    start_of = {(s.trace_id, s.span_id): s.start_ns for s in spans}
    rows = []
    for policy in policies:
        version = policy.active_version
        found = evaluate(compiled_version(version.pk, version.source), spans)
        rows.extend(
            Violation(project_id=project_id, policy=policy, version=version, rule_id=v.rule_id, rule_kind=v.rule_kind,
                      trace_id=v.trace_id, span_id=v.span_id, agent=v.agent, service=v.service, reason=v.reason,
                      start_ns=start_of.get((v.trace_id, v.span_id), 0), enforced=policy.mode == Policy.Mode.ENFORCE)
            for v in found
        )
    before = Violation.objects.filter(project_id=project_id, trace_id__in=trace_ids).count()
    Violation.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return Violation.objects.filter(project_id=project_id, trace_id__in=trace_ids).count() - before


# --- dry run --------------------------------------------------------------------


@dataclass
class RuleResult:
    rule_id: str
    rule_kind: str
    count: int
    examples: list  # first violations, each a dict with trace_id, span_id, agent, service, reason, start_ns


@dataclass
class DryRun:
    policy_name: str
    hours: float
    since_ns: int
    spans: int
    truncated: bool
    total: int
    rules: list[RuleResult]

    def as_dict(self) -> dict:
        return {
            "policy": self.policy_name, "hours": self.hours, "since_ns": self.since_ns, "spans_scanned": self.spans,
            "truncated": self.truncated, "violations": self.total,
            "rules": [{"rule_id": r.rule_id, "rule_kind": r.rule_kind, "count": r.count, "examples": r.examples}
                      for r in self.rules],
        }


DRY_RUN_MAX_SPANS = 500_000
DRY_RUN_EXAMPLES = 5


def policy_dry_run(*, project: Project, source: str | None = None, version: PolicyVersion | None = None,
                   hours: float = 24, now_ns: int | None = None, max_spans: int = DRY_RUN_MAX_SPANS) -> DryRun:
    """What a draft (text) or a saved version would flag on the project's spans of the last `hours`.

    Nothing is stored. A draft that does not parse raises PolicyError.
    """
    import time

    compiled = compiled_version(version.pk, version.source) if version is not None else parse_policy(source or "")
    now_ns = now_ns if now_ns is not None else time.time_ns()
    since_ns = now_ns - int(hours * 3600 * 1_000_000_000)
    qs = Span.objects.filter(project=project, start_ns__gte=since_ns, start_ns__lte=now_ns).order_by("start_ns", "pk")
    scanned = 0
    start_of: dict = {}

    def counted():
        nonlocal scanned
        for record in span_records(qs, chunk_size=SPAN_CHUNK):
            if scanned >= max_spans:
                return
            scanned += 1
            start_of[(record.trace_id, record.span_id)] = record.start_ns
            yield record

    found = evaluate(compiled, counted())
    truncated = scanned >= max_spans and qs[max_spans:max_spans + 1].exists()
    by_rule: dict[str, RuleResult] = {}
    order = {rule.id: i for i, rule in enumerate(compiled.rules)}
    for v in found:
        result = by_rule.setdefault(v.rule_id, RuleResult(v.rule_id, v.rule_kind, 0, []))
        result.count += 1
        if len(result.examples) < DRY_RUN_EXAMPLES:
            result.examples.append({"trace_id": v.trace_id, "span_id": v.span_id, "agent": v.agent,
                                    "service": v.service, "reason": v.reason,
                                    "start_ns": start_of.get((v.trace_id, v.span_id), 0)})
    rules = sorted(by_rule.values(), key=lambda r: order.get(r.rule_id, len(order)))
    return DryRun(policy_name=compiled.name, hours=hours, since_ns=since_ns, spans=scanned, truncated=truncated,
                  total=len(found), rules=rules)


def problems_json(error: PolicyError) -> list[dict]:
    return [{"message": p.message, "line": p.line, "column": p.column, "path": p.path} for p in error.errors]


def source_pretty(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False)
