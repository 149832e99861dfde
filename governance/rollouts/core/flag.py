"""What a rollout's flag answers one agent: the OFREP evaluation of a rollout in a given state.

Pending: the baseline for everyone. Progressing or paused: split by the weight (sticky, see
assignment.py). Promoted: the canary for everyone. Aborted or rolled back: the known-good version
for everyone, whatever the weight was, so a rollback reaches every agent at its next evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.rollouts.core.assignment import assign

SPLIT, STATIC = "SPLIT", "STATIC"


@dataclass(frozen=True)
class FlagRollout:
    """The columns of the flag's current rollout that an evaluation reads."""

    id: int
    flag_key: str
    state: str
    weight: int
    baseline_version: str
    canary_version: str
    known_good_version: str


def flag_evaluate(rollout: FlagRollout, targeting_key: str) -> dict:
    """An OFREP evaluation success: key, reason, variant, value (the version to run), metadata."""
    reason = STATIC
    if rollout.state in ("progressing", "paused"):
        assignment = assign(flag_key=rollout.flag_key, targeting_key=targeting_key, weight=rollout.weight,
                            baseline_version=rollout.baseline_version, canary_version=rollout.canary_version)
        variant, value = assignment.variant, assignment.version
        if assignment.split:
            reason = SPLIT
    elif rollout.state == "promoted":
        variant, value = "canary", rollout.canary_version
    elif rollout.state in ("aborted", "rolled_back"):
        variant, value = "known_good", rollout.known_good_version
    else:  # pending: not started, nobody moves yet
        variant, value = "baseline", rollout.baseline_version
    return {"key": rollout.flag_key, "reason": reason, "variant": variant, "value": value,
            "metadata": {"rolloutId": rollout.id, "rolloutState": rollout.state, "weight": rollout.weight}}
