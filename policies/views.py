"""Policy pages: list, detail, editor with dry run, diff, activation; the violations page."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from governance.services import PermissionDenied, client_address
from governance.views import page_project
from policies.core import PolicyError
from policies.models import Policy
from policies.selectors import (
    policies_for_project,
    version_diff_html,
    version_get,
    versions_of,
    violation_counts,
    violation_filter_choices,
    violation_totals,
    violations_search,
    violations_with_findings,
)
from policies.serializers import LAST_CHOICES, MAX_DRY_RUN_HOURS, ViolationFilter, span_url
from policies.services import (
    APPROVE_ROLE,
    EDIT_ROLE,
    PolicyConflict,
    policy_create,
    policy_dry_run,
    policy_mode_set,
    policy_rollback,
    policy_version_activate,
    policy_version_create,
    rollback_target,
)

STARTER = """\
policy: my-policy
description: What this policy protects.
default: allow
rules:
  - id: ledger-owner
    kind: single_writer
    key: "ledger/*"
    writer: ledger-agent
"""
BUCKETS = {"1h": 300, "6h": 1800, "24h": 3600, "7d": 86400, "30d": 86400}


def _policy(project, policy_id: int) -> Policy:
    policy = policies_for_project(project=project).filter(pk=policy_id).first()
    if policy is None:
        raise Http404("no such policy")
    return policy


def _can(request, role) -> bool:
    return request.membership is not None and request.membership.allows(role)


def _hours(value, default=24.0) -> float:
    try:
        hours = float(value)
    except (TypeError, ValueError):
        return default
    return min(max(hours, 0.01), MAX_DRY_RUN_HOURS)


def _with_urls(project, dry_run) -> dict:
    result = dry_run.as_dict()
    for rule in result["rules"]:
        for example in rule["examples"]:
            example["url"] = span_url(project.slug, example["trace_id"], example["span_id"])
    return result


@login_required
def policy_list(request, slug):
    project = page_project(request, slug)
    since = timezone.now() - timedelta(hours=24)
    policies = list(policies_for_project(project=project))
    counts = dict(violation_totals(project=project, since=since, group_by="policy", limit=1000))
    for policy in policies:
        policy.violations_24h = counts.get(policy.name, 0)
    return render(request, "policies/list.html", {
        "project": project, "policies": policies, "can_edit": _can(request, EDIT_ROLE),
    })


@login_required
def policy_edit(request, slug, policy_id=None):
    """The editor: a new policy, or the next version of one. Save validates on the server; Dry run saves nothing."""
    project = page_project(request, slug)
    policy = _policy(project, policy_id) if policy_id else None
    can_edit = _can(request, EDIT_ROLE)
    problems, dry_run = [], None
    hours = _hours(request.POST.get("hours") if request.method == "POST" else request.GET.get("hours"))
    comment = ""
    if request.method == "POST":
        source = request.POST.get("source", "").replace("\r\n", "\n")
        comment = request.POST.get("comment", "").strip()[:500]
        try:
            if request.POST.get("action") == "dry-run":
                dry_run = _with_urls(project, policy_dry_run(project=project, source=source, hours=hours))
            elif policy is None:
                policy = policy_create(project=project, source=source, comment=comment, actor=request.user,
                                       address=client_address(request))
                messages.success(request, f"Policy {policy.name} saved as v1. Dry-run it and activate it when ready.")
                return redirect("policy-detail", slug=slug, policy_id=policy.pk)
            else:
                version = policy_version_create(policy=policy, source=source, comment=comment, actor=request.user,
                                                address=client_address(request))
                messages.success(request, f"Saved v{version.number} of {policy.name}. It is not active yet.")
                return redirect("policy-detail", slug=slug, policy_id=policy.pk)
        except PolicyError as exc:
            problems = exc.errors
        except (PermissionDenied, PolicyConflict) as exc:
            messages.error(request, str(exc))
    else:
        start = None
        if policy is not None:
            number = request.GET.get("from")
            start = version_get(policy=policy, number=int(number)) if number and number.isdigit() else None
            start = start or policy.active_version or versions_of(policy=policy).first()
        source = start.source if start is not None else STARTER
    return render(request, "policies/edit.html", {
        "project": project, "policy": policy, "source": source, "comment": comment, "problems": problems,
        "error_lines": sorted({p.line for p in problems if p.line}), "dry_run": dry_run, "hours": hours,
        "can_edit": can_edit,
    })


@login_required
def policy_detail(request, slug, policy_id):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    versions = list(versions_of(policy=policy))
    target, _ = rollback_target(policy=policy)
    since = timezone.now() - timedelta(hours=24)
    return render(request, "policies/detail.html", {
        "project": project, "policy": policy, "versions": versions, "rollback_to": target,
        "can_edit": _can(request, EDIT_ROLE), "can_approve": _can(request, APPROVE_ROLE),
        "rule_counts": _rule_counts(project, policy, since),
        "activations": list(policy.activations.select_related("version", "actor")[:10]),
        "modes": Policy.Mode.values,
    })


def _rule_counts(project, policy, since):
    """[(rule_id, count)] of this policy's violations since `since`, most frequent first."""
    return violation_totals(project=project, since=since, group_by="rule", policy_id=policy.pk)


@login_required
def version_detail(request, slug, policy_id, number):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    version = version_get(policy=policy, number=number)
    if version is None:
        raise Http404("no such version")
    return render(request, "policies/version.html", {
        "project": project, "policy": policy, "version": version, "lines": version.source.splitlines(),
        "can_approve": _can(request, APPROVE_ROLE),
    })


@login_required
def version_diff_page(request, slug, policy_id):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    try:
        new_n = int(request.GET.get("new", ""))
        old_n = int(request.GET.get("old", new_n - 1))
    except ValueError:
        raise Http404("name the versions with ?old=<n>&new=<m>") from None
    old, new = version_get(policy=policy, number=old_n), version_get(policy=policy, number=new_n)
    if old is None or new is None:
        raise Http404("no such version")
    return render(request, "policies/diff.html", {
        "project": project, "policy": policy, "old": old, "new": new,
        "table": mark_safe(version_diff_html(old=old, new=new)),
        "versions": versions_of(policy=policy),
    })


@login_required
def dry_run_page(request, slug, policy_id):
    """Dry run of a saved version (a read: GET)."""
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    number = request.GET.get("version", "")
    version = version_get(policy=policy, number=int(number)) if number.isdigit() else None
    if version is None:
        raise Http404("no such version")
    hours = _hours(request.GET.get("hours"))
    result = _with_urls(project, policy_dry_run(project=project, version=version, hours=hours))
    return render(request, "policies/dry_run.html", {
        "project": project, "policy": policy, "version": version, "dry_run": result, "hours": hours,
        "can_approve": _can(request, APPROVE_ROLE),
    })


def _expected(request) -> int | None:
    value = request.POST.get("if_active", "")
    return int(value) if value.isdigit() else None


@login_required
@require_POST
def activate(request, slug, policy_id, number):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    version = version_get(policy=policy, number=number)
    if version is None:
        raise Http404("no such version")
    try:
        policy_version_activate(policy=policy, version=version, actor=request.user, address=client_address(request),
                                expected_active=_expected(request))
        messages.success(request, f"v{number} of {policy.name} is now active.")
    except (PermissionDenied, PolicyConflict, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("policy-detail", slug=slug, policy_id=policy.pk)


@login_required
@require_POST
def rollback(request, slug, policy_id):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    try:
        rolled_back = policy_rollback(policy=policy, actor=request.user, address=client_address(request))
        messages.success(request, f"Rolled {rolled_back.name} back to v{rolled_back.active_version.number}.")
    except (PermissionDenied, PolicyConflict) as exc:
        messages.error(request, str(exc))
    return redirect("policy-detail", slug=slug, policy_id=policy.pk)


@login_required
@require_POST
def mode(request, slug, policy_id):
    project = page_project(request, slug)
    policy = _policy(project, policy_id)
    try:
        if policy_mode_set(policy=policy, mode=request.POST.get("mode", ""), actor=request.user,
                           address=client_address(request)):
            messages.success(request, f"{policy.name} is now in {policy.mode} mode.")
    except (PermissionDenied, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("policy-detail", slug=slug, policy_id=policy.pk)


@login_required
def violation_list(request, slug):
    project = page_project(request, slug)
    data = request.GET.copy()
    data.setdefault("last", "24h")
    filters = ViolationFilter(data=data)
    valid = filters.is_valid()
    kwargs = filters.search_kwargs() if valid else {}
    violations = violations_search(project=project, **kwargs) if valid else []
    page = Paginator(violations, 50).get_page(request.GET.get("page"))
    for v in violations_with_findings(project=project, violations=page):
        v.url = span_url(project.slug, v.trace_id, v.span_id)
    last = data.get("last") or ""
    over_time = {}
    buckets = []
    if valid and kwargs.get("since"):
        until = kwargs.get("until") or timezone.now()
        bucket_seconds = BUCKETS.get(last, 3600 if (until - kwargs["since"]).total_seconds() <= 2 * 86400 else 86400)
        for group_by in ("rule", "agent"):
            rows = violation_counts(project=project, since=kwargs["since"], until=until, bucket_seconds=bucket_seconds,
                                    group_by=group_by, policy_id=kwargs.get("policy_id"))
            over_time[group_by] = rows
            buckets.extend(b for b, _, _ in rows)
    buckets = sorted(set(buckets))
    tables = {}
    for group_by, rows in over_time.items():
        grid: dict[str, dict] = {}
        for bucket, group, count in rows:
            grid.setdefault(group, {})[bucket] = count
        tables[group_by] = [
            {"group": group, "total": sum(cells.values()), "cells": [cells.get(b, 0) for b in buckets]}
            for group, cells in sorted(grid.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        ]
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "policies/violations.html", {
        "project": project, "page": page, "filters": data, "errors": filters.errors if not valid else {},
        "last_choices": list(LAST_CHOICES), "query": query.urlencode(), "policies": policies_for_project(project=project),
        "choices": violation_filter_choices(project=project), "buckets": buckets, "tables": tables,
    })
