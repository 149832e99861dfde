"""Alerts as Prometheus and Alertmanager define them: labels, fingerprints, states, silences.

An alert is identified by its labels: their fingerprint names one alert, however many
workers evaluate it. Its state follows its condition at each evaluation:

    inactive --true--> pending --true for `for`--> firing --false--> resolved
       ^                  |                                             |
       +------false-------+                     true again: pending ----+

With `for` 0 a true condition fires at once. Only firing and resolved are notified
(pending is a condition still waiting out its `for`). Each pending -> firing starts a new
episode, which is what notifications and acknowledgements are counted against.

Plain Python, no Django import.
"""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass, replace
from datetime import datetime

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
STATES = (INACTIVE, PENDING, FIRING, RESOLVED)
NOTIFIED_STATES = (FIRING, RESOLVED)

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits that name an alert by its labels, whatever their order."""
    text = "\x1e".join(f"{k}\x1f{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_labels(labels, *, what: str = "labels") -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ValueError(f"{what} must be an object of name: value")
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise ValueError(f"{what}: {name!r} is not a label name (letters, digits and _, not starting with a digit)")
        if not isinstance(value, str):
            raise ValueError(f"{what}: the value of {name} must be a string")
        if len(name) > 100 or len(value) > 500:
            raise ValueError(f"{what}: {name} is too long (names 100, values 500 characters)")
    return dict(labels)


@dataclass(frozen=True)
class AlertPhase:
    state: str = INACTIVE
    active_since: datetime | None = None  # when the condition last turned true (pending began)
    fired_at: datetime | None = None  # startsAt of the current episode
    resolved_at: datetime | None = None  # endsAt of the current episode
    episode: int = 0  # how many times it has fired


def alert_next(phase: AlertPhase, *, active: bool, now: datetime, for_seconds: float) -> AlertPhase:
    """The alert's phase after one evaluation of its condition at `now`."""
    if active:
        if phase.state in (INACTIVE, RESOLVED):
            phase = replace(phase, state=PENDING, active_since=now)
        if phase.state == PENDING and (now - phase.active_since).total_seconds() >= for_seconds:
            return replace(phase, state=FIRING, fired_at=now, resolved_at=None, episode=phase.episode + 1)
        return phase
    if phase.state == PENDING:
        return replace(phase, state=INACTIVE, active_since=None)
    if phase.state == FIRING:
        return replace(phase, state=RESOLVED, active_since=None, resolved_at=now)
    return phase


# --- threshold rules -------------------------------------------------------------------------

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


def threshold_holds(value: float | None, op: str, threshold: float) -> bool:
    """A rule's condition; no value (no events in the window for a ratio) never holds."""
    return value is not None and OPS[op](value, threshold)


# --- silences ----------------------------------------------------------------------------------

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager label matcher: name=value, name!=value, name=~regex, name!~regex."""

    name: str
    op: str
    value: str

    def __post_init__(self):
        if not LABEL_NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a label name")
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"matcher operator must be =, !=, =~ or !~, not {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"matcher {self.name}{self.op}{self.value}: the regex does not compile: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a matcher: write name=value, name!=value, name=~regex or name!~regex")
        value = match.group(3)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return cls(match.group(1), match.group(2), value)

    def matches(self, labels: dict[str, str]) -> bool:
        # A missing label matches as the empty string, and regexes match the whole value, as in Alertmanager.
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def as_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "value": self.value}


def matchers_clean(raw) -> list[Matcher]:
    """Matchers from a list of "name=value" strings or {name, op, value} objects; at least one,
    and at least one that does not match the empty string (else it would silence everything)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("give at least one matcher, e.g. alertname=\"orders-conflicts\"")
    matchers = []
    for item in raw:
        if isinstance(item, str):
            matchers.append(Matcher.parse(item))
        elif isinstance(item, dict) and set(item) <= {"name", "op", "value"} and "name" in item and "value" in item:
            matchers.append(Matcher(str(item["name"]), str(item.get("op", "=")), str(item["value"])))
        else:
            raise ValueError("a matcher is a string such as severity=\"page\" or an object {name, op, value}")
    if all(m.matches({}) for m in matchers):
        raise ValueError("these matchers also match alerts without those labels: at least one must need a label value")
    return matchers


def silenced(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
