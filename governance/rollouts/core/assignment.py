"""Which version an agent runs: sticky canary assignment by a stable hash.

An agent's bucket is a stable hash of the flag key and its targeting key, normalised to 1..100.
It runs the canary when its bucket is at or below the current weight, so raising the weight only
ever moves agents from the baseline to the canary, never back; a rollback (weight 0, known-good
version) sends every agent to the known-good version at its next evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def bucket(flag_key: str, targeting_key: str) -> int:
    """1..100, the same for the same pair in every process and release (not Python's hash())."""
    digest = hashlib.sha256(f"{flag_key}\x00{targeting_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 + 1


@dataclass(frozen=True)
class Assignment:
    variant: str  # "canary" or "baseline"
    version: str
    split: bool  # True while traffic is split (reason SPLIT), False when everyone gets one version (STATIC)


def assign(*, flag_key: str, targeting_key: str, weight: int, baseline_version: str,
           canary_version: str) -> Assignment:
    """The version for one agent at the given canary weight (0..100)."""
    if weight <= 0:
        return Assignment("baseline", baseline_version, split=False)
    if weight >= 100:
        return Assignment("canary", canary_version, split=False)
    if bucket(flag_key, targeting_key) <= weight:
        return Assignment("canary", canary_version, split=True)
    return Assignment("baseline", baseline_version, split=True)
