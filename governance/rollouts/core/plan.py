"""A rollout's plan: its steps, the templates for common plans, and its analysis options.

Steps, run in order by the rollout tick:

    {"kind": "set_weight", "weight": 25}            send 25 % of agents to the canary, go on at once
    {"kind": "pause", "seconds": 300}               wait five minutes
    {"kind": "approval"}                            wait until a person approves
    {"kind": "analysis", "count": 3, "interval_seconds": 60, "failure_limit": 0, "inconclusive_limit": 0}
                                                    measure canary against baseline `count` times

After the last step the rollout is promoted: every agent runs the canary, which becomes the
known-good version. Plain Python, no Django import.
"""

from __future__ import annotations

import copy

from governance.rollouts.core.judgement import JudgementError, RunPlan, Scoring

STEP_KINDS = ("set_weight", "pause", "approval", "analysis")
MAX_STEPS = 50

TEMPLATES: dict[str, dict] = {
    "standard": {
        "label": "5% -> analysis -> approve -> 25% -> analysis -> 50% -> approve -> 100%",
        "steps": [{"kind": "set_weight", "weight": 5}, {"kind": "analysis", "count": 2, "interval_seconds": 60},
                  {"kind": "approval"}, {"kind": "set_weight", "weight": 25},
                  {"kind": "analysis", "count": 2, "interval_seconds": 60}, {"kind": "set_weight", "weight": 50},
                  {"kind": "approval"}, {"kind": "set_weight", "weight": 100}],
    },
    "quick": {
        "label": "20% -> analysis -> approve -> 100%",
        "steps": [{"kind": "set_weight", "weight": 20}, {"kind": "analysis", "count": 1, "interval_seconds": 60},
                  {"kind": "approval"}, {"kind": "set_weight", "weight": 100}],
    },
    "hands-off": {
        "label": "10% -> 5 min -> analysis -> 50% -> analysis -> 100%, no approval",
        "steps": [{"kind": "set_weight", "weight": 10}, {"kind": "pause", "seconds": 300},
                  {"kind": "analysis", "count": 3, "interval_seconds": 60}, {"kind": "set_weight", "weight": 50},
                  {"kind": "analysis", "count": 3, "interval_seconds": 60}, {"kind": "set_weight", "weight": 100}],
    },
    "manual": {
        "label": "10% -> approve -> 50% -> approve -> 100%, no analysis",
        "steps": [{"kind": "set_weight", "weight": 10}, {"kind": "approval"}, {"kind": "set_weight", "weight": 50},
                  {"kind": "approval"}, {"kind": "set_weight", "weight": 100}],
    },
}

ANALYSIS_DEFAULTS = {"pass_score": 95.0, "marginal_score": 75.0, "on_failure": "rollback"}
ON_FAILURE = ("rollback", "pause")
GUARD_ACTIONS = ("rollback", "pause")


class PlanError(ValueError):
    """The steps or options are wrong; the message says where."""


def template_steps(name: str) -> list[dict]:
    if name not in TEMPLATES:
        raise PlanError(f"template: one of {', '.join(TEMPLATES)}")
    return copy.deepcopy(TEMPLATES[name]["steps"])


def _whole(step: dict, name: str, where: str, low: int, high: int, default: int | None = None) -> int:
    value = step.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PlanError(f"{where}.{name}: a whole number from {low} to {high}")
    return value


def steps_parse(raw) -> list[dict]:
    """The steps, checked and with their defaults filled in."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STEPS:
        raise PlanError(f"steps: a list of 1 to {MAX_STEPS} steps")
    clean = []
    for i, step in enumerate(raw):
        where = f"steps[{i}]"
        if not isinstance(step, dict) or step.get("kind") not in STEP_KINDS:
            raise PlanError(f"{where}.kind: one of {', '.join(STEP_KINDS)}")
        kind = step["kind"]
        allowed = {"set_weight": {"weight"}, "pause": {"seconds"}, "approval": set(),
                   "analysis": {"count", "interval_seconds", "failure_limit", "inconclusive_limit"}}[kind]
        unknown = set(step) - allowed - {"kind"}
        if unknown:
            raise PlanError(f"{where}: {kind} takes no {min(unknown)!r}")
        if kind == "set_weight":
            clean.append({"kind": kind, "weight": _whole(step, "weight", where, 0, 100)})
        elif kind == "pause":
            clean.append({"kind": kind, "seconds": _whole(step, "seconds", where, 1, 7 * 86400)})
        elif kind == "approval":
            clean.append({"kind": kind})
        else:
            clean.append({"kind": kind, "count": _whole(step, "count", where, 1, 100, 1),
                          "interval_seconds": _whole(step, "interval_seconds", where, 1, 86400, 60),
                          "failure_limit": _whole(step, "failure_limit", where, 0, 100, 0),
                          "inconclusive_limit": _whole(step, "inconclusive_limit", where, 0, 100, 0)})
    return clean


def run_plan(step: dict) -> RunPlan:
    return RunPlan(count=step["count"], interval_seconds=step["interval_seconds"],
                   failure_limit=step["failure_limit"], inconclusive_limit=step["inconclusive_limit"])


def analysis_parse(raw) -> dict:
    """{pass_score, marginal_score, on_failure: rollback|pause}, defaults filled in."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise PlanError("analysis: an object")
    unknown = set(raw) - set(ANALYSIS_DEFAULTS)
    if unknown:
        raise PlanError(f"analysis: unknown field {min(unknown)!r}")
    clean = {**ANALYSIS_DEFAULTS, **raw}
    for name in ("pass_score", "marginal_score"):
        value = clean[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PlanError(f"analysis.{name}: a number from 0 to 100")
        clean[name] = float(value)
    try:
        Scoring(clean["pass_score"], clean["marginal_score"])
    except JudgementError as exc:
        raise PlanError(f"analysis: {exc}") from None
    if clean["on_failure"] not in ON_FAILURE:
        raise PlanError(f"analysis.on_failure: one of {', '.join(ON_FAILURE)}")
    return clean


def scoring(analysis: dict) -> Scoring:
    return Scoring(analysis.get("pass_score", 95.0), analysis.get("marginal_score", 75.0))


def step_text(step: dict) -> str:
    kind = step["kind"]
    if kind == "set_weight":
        return f"{step['weight']}%"
    if kind == "pause":
        seconds = step["seconds"]
        return f"pause {seconds // 60} min" if seconds % 60 == 0 else f"pause {seconds} s"
    if kind == "approval":
        return "approve"
    return "analysis" + (f" x{step['count']}" if step.get("count", 1) > 1 else "")
