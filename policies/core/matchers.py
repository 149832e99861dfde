"""Compiled matchers: name globs, attribute conditions, versions and span selectors.

Everything here is compiled once when a policy is parsed. A selector splits
into a *static* part, decided once per span signature (service, agent, span
name, kind, state op, tool), and a *dynamic* part (state key globs, attribute
conditions) checked per span.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from traces.records import KIND_NAMES

MISSING = object()
GLOB_CHARS = frozenset("*?[")

# A span signature: the cheap, low-cardinality fields the rule index is keyed on. Its name field is
# the span name's class (the slots of the name selectors it matches), so unique span names still
# share plans.
SIG_SERVICE, SIG_AGENT, SIG_NAME, SIG_KIND, SIG_STATE_OP, SIG_TOOL, SIG_ROUTE, SIG_DESTINATION, SIG_OPERATION = range(9)

TOOL_ATTR = "gen_ai.tool.name"
ROUTE_ATTR = "http.route"
DESTINATION_ATTR = "messaging.destination.name"
OPERATION_ATTR = "messaging.operation.type"


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Names:
    """One or more names, each exact or a glob (`*`, `?`, `[abc]`), matched case-sensitively."""

    __slots__ = ("exact", "patterns", "regex")

    def __init__(self, patterns):
        self.patterns = tuple(as_list(patterns))
        self.exact = frozenset(p for p in self.patterns if not GLOB_CHARS & set(p))
        globs = [p for p in self.patterns if GLOB_CHARS & set(p)]
        self.regex = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None

    def __call__(self, value) -> bool:
        if value in self.exact:
            return True
        return self.regex is not None and isinstance(value, str) and self.regex.match(value) is not None

    def describe(self) -> str:
        return ", ".join(repr(p) for p in self.patterns)


def _tagged(value):
    # bool is an int in Python; an attribute `true` must not equal `1`.
    return (type(value) is bool, value)


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


CONDITION_OPS = ("equals", "in", "glob", "regex", "exists", "range")


def compile_condition(spec: dict, path: tuple, problems: list) -> Callable[[object], bool]:
    """A predicate over one attribute value (MISSING when absent) for a schema-valid condition."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return lambda v: False  # reported by the schema
    ((op, arg),) = spec.items()
    if op == "equals":
        expected = _tagged(arg)
        return lambda v: v is not MISSING and _tagged(v) == expected
    if op == "in":
        allowed = frozenset(_tagged(a) for a in arg)

        def in_set(v):
            try:
                return _tagged(v) in allowed
            except TypeError:  # an array attribute
                return False

        return in_set
    if op == "glob":
        rx = re.compile(fnmatch.translate(arg))
        return lambda v: isinstance(v, str) and rx.match(v) is not None
    if op == "regex":
        try:
            rx = re.compile(arg)
        except re.error as exc:
            problems.append((path + ("regex",), f"regex {arg!r} does not compile: {exc}"))
            return lambda v: False
        return lambda v: isinstance(v, str) and rx.search(v) is not None
    if op == "exists":
        return (lambda v: v is not MISSING) if arg else (lambda v: v is MISSING)
    if op == "range":
        lo, hi = arg.get("min"), arg.get("max")
        if lo is not None and hi is not None and lo > hi:
            problems.append((path + ("range",), f"range min {lo} is greater than max {hi}"))
        lo = float("-inf") if lo is None else lo
        hi = float("inf") if hi is None else hi

        def in_range(v):
            n = _number(v) if v is not MISSING else None
            return n is not None and lo <= n <= hi

        return in_range
    return lambda v: False  # unknown operator: reported by the schema


def compile_conditions(spec: dict | None, path: tuple, problems: list) -> tuple:
    return tuple((key, compile_condition(cond, path + (key,), problems)) for key, cond in (spec or {}).items())


# --- versions ---------------------------------------------------------------

_VERSION_RE = re.compile(r"^v?(\d+(?:\.\d+)*)$")


def parse_version(text) -> tuple[int, ...] | None:
    """'1.26.0' -> (1, 26); trailing zeros dropped so 1.26 == 1.26.0. None if not a version."""
    if isinstance(text, bool) or text is None:
        return None
    match = _VERSION_RE.match(str(text).strip())
    if not match:
        return None
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def url_version(url: str) -> str:
    """The version a schema URL names: its last path segment (https://opentelemetry.io/schemas/1.26.0)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class VersionSet:
    """Allowed versions: listed values (exact strings or versions) and/or an inclusive version range."""

    values: tuple = ()
    low: tuple | None = None
    high: tuple | None = None
    has_range: bool = False
    text: str = ""

    @classmethod
    def compile(cls, values, rng, path: tuple, problems: list) -> VersionSet:
        values = tuple(str(v) for v in (values or ()))
        low = high = None
        if rng:
            low = parse_version(rng["min"]) if "min" in rng else None
            high = parse_version(rng["max"]) if "max" in rng else None
            if low is not None and high is not None and low > high:
                problems.append((path + ("range",), f"version range min {rng['min']} is greater than max {rng['max']}"))
        shown = []
        if values:
            shown.append("one of " + ", ".join(values))
        if rng:
            shown.append(f"in {rng.get('min', '*')}..{rng.get('max', '*')}")
        return cls(values, low, high, bool(rng), " or ".join(shown))

    def allows(self, raw: str, version: str) -> bool:
        if raw in self.values or version in self.values:
            return True
        parsed = parse_version(version)
        if parsed is not None and any(parse_version(v) == parsed for v in self.values):
            return True
        if not self.has_range or parsed is None:
            return False
        return (self.low is None or parsed >= self.low) and (self.high is None or parsed <= self.high)


# --- selectors --------------------------------------------------------------

KIND_BY_NAME = {name: number for number, name in enumerate(KIND_NAMES)}


class Selector:
    """The `match:` block of a rule. Every field given must hold."""

    __slots__ = (
        "agent",
        "attributes",
        "kinds",
        "name",
        "name_slot",
        "resource",
        "service",
        "spec",
        "state_key",
        "state_op",
        "tool",
    )

    def __init__(self, spec: dict | None, path: tuple, problems: list):
        spec = spec or {}
        self.spec = spec
        self.service = Names(spec["service"]) if "service" in spec else None
        self.agent = Names(spec["agent"]) if "agent" in spec else None
        self.name = Names(spec["name"]) if "name" in spec else None
        self.name_slot = -1  # set by the policy: this selector's position in the signature's name class
        self.kinds = frozenset(KIND_BY_NAME[k] for k in as_list(spec["kind"])) if "kind" in spec else None
        self.state_op = spec.get("state_op")
        self.tool = Names(spec["tool"]) if "tool" in spec else None
        self.state_key = Names(spec["state_key"]) if "state_key" in spec else None
        self.attributes = compile_conditions(spec.get("attributes"), path + ("attributes",), problems)
        self.resource = compile_conditions(spec.get("resource"), path + ("resource",), problems)

    def static_ok(self, sig: tuple) -> bool:
        if self.service is not None and not self.service(sig[SIG_SERVICE]):
            return False
        if self.agent is not None and not self.agent(sig[SIG_AGENT]):
            return False
        if self.name is not None and self.name_slot not in sig[SIG_NAME]:
            return False
        if self.kinds is not None and sig[SIG_KIND] not in self.kinds:
            return False
        if self.state_op is not None and sig[SIG_STATE_OP] != self.state_op:
            return False
        return self.tool is None or (sig[SIG_TOOL] is not None and self.tool(sig[SIG_TOOL]))

    @property
    def dynamic(self) -> Callable | None:
        """The per-span part of the selector, or None when the signature decides everything."""
        key, attrs, res = self.state_key, self.attributes, self.resource
        if key is None and not attrs and not res:
            return None

        def check(span) -> bool:
            if key is not None and not (span.state_key and key(span.state_key)):
                return False
            if attrs:
                a = span.attributes
                for name, pred in attrs:
                    if not pred(a.get(name, MISSING)):
                        return False
            if res:
                r = span.resource_attributes
                for name, pred in res:
                    if not pred(r.get(name, MISSING)):
                        return False
            return True

        return check

    def document(self) -> dict:
        out = {}
        for field in ("service", "agent", "name", "kind", "state_key", "tool"):
            if field in self.spec:
                out[field] = as_list(self.spec[field])
        if "state_op" in self.spec:
            out["state_op"] = self.spec["state_op"]
        for field in ("attributes", "resource"):
            if self.spec.get(field):
                out[field] = {k: dict(v) for k, v in self.spec[field].items()}
        return out
