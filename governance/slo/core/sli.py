"""Service level indicators over spans, findings and violations, counted per minute.

An SLI is a kind (below) and a selector: which spans (service, agent, span name, span kind,
attribute conditions as in policies), which findings (kind, key, agent) or which violations
(policy, rule, agent, service, enforced only). Every kind counts events per minute as
(good, total): an SLO is the share good/total over a window. Latency and time to recovery
also keep each event's value (sum and a log histogram) for means and quantiles.

    kind         event                                   good
    throughput   a matching span                         every one (the SLI is the count)
    latency      a matching span                         duration <= threshold_ms
    success      a matching span                         status is not ERROR
    idempotency  a matching span with idempotency.key    not ERROR, and not a duplicate side effect
    conflict     a matching write (state.op=write)       no state.conflict
    recovery     a failing matching span's operation     recovered (next success of the same
                 (service, span name) succeeding again   operation) within threshold_ms
    findings     a concurrency finding                   none (the SLI is the count)
    violations   a policy violation                      none (the SLI is the count)

A span belongs to the minute it started in. A duplicate side effect is every execution of an
idempotency key after the first (the members of a duplicate_side_effect finding but its
earliest). A recovery belongs to the minute its success started in, and lasts from the start
of the first failure of the streak to the end of the success.

Plain Python, no Django import: the rollup stage, the live preview and the tests share it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from policies.core.matchers import CONDITION_OPS, KIND_BY_NAME, MISSING, Names, compile_conditions
from traces.records import STATUS_ERROR

NS_PER_MINUTE = 60_000_000_000
MAX_EXAMPLES = 3  # bad events kept per SLI and minute, so an alert can link to what caused it

# --- metrics a threshold rule can watch --------------------------------------------------------------

METRICS = {
    "count": "events in the window",
    "bad_count": "bad events in the window",
    "rate_per_minute": "events per minute over the window",
    "good_ratio": "good events / events",
    "bad_ratio": "bad events / events (error rate, conflict rate)",
    "mean": "mean value (ms)",
    "p50": "median value (ms)",
    "p95": "95th percentile value (ms)",
    "p99": "99th percentile value (ms)",
}
RATIO_METRICS = ("good_ratio", "bad_ratio")
QUANTILE_METRICS = ("p50", "p95", "p99")
VALUE_METRICS = ("mean", *QUANTILE_METRICS)


class SliKind:
    """One kind of SLI: what an event is and when it is good. Registered in SLI_KINDS."""

    name = ""
    source = "spans"  # spans | findings | violations
    label = ""
    ratio = True  # good/total says something: SLOs may use it
    values = False  # events carry a value (ms) for means and quantiles
    threshold = "none"  # none | optional | required: threshold_ms decides good
    metrics: tuple[str, ...] = ("count", "bad_count", "good_ratio", "bad_ratio")

    def event(self, span, duplicates: frozenset | set) -> tuple[bool, float | None] | None:
        """(good, value) for a matching span, or None when the span is not an event of this kind."""
        raise NotImplementedError


class Throughput(SliKind):
    name, label, ratio = "throughput", "Throughput (spans per minute)", False
    metrics = ("count", "rate_per_minute")

    def event(self, span, duplicates):
        return True, None


class Latency(SliKind):
    name, label, values, threshold = "latency", "Latency (share faster than a threshold)", True, "optional"
    metrics = ("count", "bad_count", "good_ratio", "bad_ratio", "mean", "p50", "p95", "p99")

    def event(self, span, duplicates):
        return True, (span.end_ns - span.start_ns) / 1e6


class Success(SliKind):
    name, label = "success", "Success rate (status not ERROR)"

    def event(self, span, duplicates):
        return span.status_code != STATUS_ERROR, None


class Idempotency(SliKind):
    name, label = "idempotency", "Idempotent actions executed once and OK"

    def event(self, span, duplicates):
        if not span.idempotency_key:
            return None
        return span.status_code != STATUS_ERROR and span.span_id not in duplicates, None


class Conflict(SliKind):
    name, label = "conflict", "Writes without state.conflict"

    def event(self, span, duplicates):
        if span.state_op != "write":
            return None
        return not span.state_conflict, None


class Recovery(SliKind):
    name, label, values, threshold = "recovery", "Time to recovery", True, "optional"
    metrics = ("count", "bad_count", "good_ratio", "bad_ratio", "mean", "p50", "p95", "p99")

    def event(self, span, duplicates):  # recoveries are found over sequences: see recoveries()
        return None


class Findings(SliKind):
    name, label, source, ratio = "findings", "Concurrency findings", "findings", False
    metrics = ("count", "rate_per_minute")


class Violations(SliKind):
    name, label, source, ratio = "violations", "Policy violations", "violations", False
    metrics = ("count", "rate_per_minute")


SLI_KINDS: dict[str, SliKind] = {k.name: k() for k in (Throughput, Latency, Success, Idempotency, Conflict, Recovery,
                                                       Findings, Violations)}

MATCH_FIELDS = {
    "spans": ("service", "agent", "name", "span_kind", "attributes", "resource"),
    "findings": ("finding_kind", "key", "agent"),
    "violations": ("policy", "rule", "agent", "service", "enforced"),
}


class SliError(ValueError):
    """The SLI definition is wrong; the message says where."""


def _names(value, field_name: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise SliError(f"match.{field_name}: give a name or a list of names (globs allowed: *, ?, [abc])")
    return sorted(set(items))


def _conditions(value, field_name: str) -> dict:
    if not isinstance(value, dict):
        raise SliError(f"match.{field_name}: give an object of attribute: condition, e.g. {{\"tool\": {{\"equals\": \"pay\"}}}}")
    clean = {}
    for key, condition in value.items():
        where = f"match.{field_name}.{key}"
        if isinstance(condition, (str, int, float, bool)):
            condition = {"equals": condition}
        if not isinstance(condition, dict) or len(condition) != 1:
            raise SliError(f"{where}: a condition is one of {', '.join(CONDITION_OPS)}, e.g. {{\"equals\": \"x\"}}")
        ((op, arg),) = condition.items()
        ok = {
            "equals": isinstance(arg, (str, int, float, bool)),
            "in": isinstance(arg, list) and bool(arg) and all(isinstance(a, (str, int, float, bool)) for a in arg),
            "glob": isinstance(arg, str), "regex": isinstance(arg, str), "exists": isinstance(arg, bool),
            "range": isinstance(arg, dict) and bool(arg) and set(arg) <= {"min", "max"}
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg.values()),
        }.get(op)
        if ok is None:
            raise SliError(f"{where}: unknown condition {op!r}: use one of {', '.join(CONDITION_OPS)}")
        if not ok:
            raise SliError(f"{where}: the argument of {op} has the wrong type")
        clean[key] = {op: arg}
    problems: list = []
    compile_conditions(clean, ("match", field_name), problems)
    if problems:
        path, message = problems[0]
        raise SliError(f"{'.'.join(path)}: {message}")
    return clean


def _clean_match(source: str, match) -> dict:
    if match is None:
        return {}
    if not isinstance(match, dict):
        raise SliError("match must be an object")
    allowed = MATCH_FIELDS[source]
    clean = {}
    for field_name, value in match.items():
        if field_name not in allowed:
            raise SliError(f"match.{field_name}: not a selector field here; use {', '.join(allowed)}")
        if field_name in ("attributes", "resource"):
            if value:
                clean[field_name] = _conditions(value, field_name)
        elif field_name == "span_kind":
            kinds = _names(value, field_name)
            unknown = [k for k in kinds if k not in KIND_BY_NAME]
            if unknown:
                raise SliError(f"match.span_kind: {unknown[0]!r} is not a span kind ({', '.join(KIND_BY_NAME)})")
            clean[field_name] = kinds
        elif field_name == "finding_kind":
            from traces.analysis import KINDS  # the finding kinds; imported late: analysis is heavy

            kinds = _names(value, field_name)
            unknown = [k for k in kinds if k not in KINDS]
            if unknown:
                raise SliError(f"match.finding_kind: {unknown[0]!r} is not a finding kind ({', '.join(KINDS)})")
            clean[field_name] = kinds
        elif field_name == "enforced":
            if not isinstance(value, bool):
                raise SliError("match.enforced must be true or false")
            if value:
                clean[field_name] = True
        else:
            clean[field_name] = _names(value, field_name)
    return clean


@dataclass
class Sli:
    """A compiled SLI definition. `key` names the definition: equal definitions share rollups."""

    kind: SliKind
    match: dict
    threshold_ms: float | None = None
    _static: tuple = field(default=(), repr=False)
    _dynamic: object = field(default=None, repr=False)

    @classmethod
    def parse(cls, spec) -> Sli:
        if not isinstance(spec, dict):
            raise SliError("an SLI is an object {kind, match, threshold_ms}")
        unknown = set(spec) - {"kind", "match", "threshold_ms"}
        if unknown:
            raise SliError(f"unknown SLI field {min(unknown)!r}: an SLI has kind, match and threshold_ms")
        kind = SLI_KINDS.get(spec.get("kind"))
        if kind is None:
            raise SliError(f"SLI kind must be one of {', '.join(SLI_KINDS)}")
        threshold = spec.get("threshold_ms")
        if threshold is not None:
            if kind.threshold == "none":
                raise SliError(f"a {kind.name} SLI has no threshold_ms")
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 86_400_000:
                raise SliError("threshold_ms must be a number of milliseconds above 0 and at most a day")
            threshold = float(threshold)
        elif kind.threshold == "required":
            raise SliError(f"a {kind.name} SLI needs threshold_ms")
        sli = cls(kind=kind, match=_clean_match(kind.source, spec.get("match")), threshold_ms=threshold)
        sli._compile()
        return sli

    def _compile(self) -> None:
        m = self.match
        self._static = (
            Names(m["service"]) if "service" in m else None,
            Names(m["agent"]) if "agent" in m else None,
            Names(m["name"]) if "name" in m else None,
            frozenset(KIND_BY_NAME[k] for k in m["span_kind"]) if "span_kind" in m else None,
        )
        attrs = compile_conditions(m.get("attributes"), (), [])
        res = compile_conditions(m.get("resource"), (), [])
        if attrs or res:
            def dynamic(span) -> bool:
                a, r = span.attributes, span.resource_attributes
                return (all(pred(a.get(k, MISSING)) for k, pred in attrs)
                        and all(pred(r.get(k, MISSING)) for k, pred in res))
            self._dynamic = dynamic
        self._finding = (Names(m["finding_kind"]) if "finding_kind" in m else None,
                         Names(m["key"]) if "key" in m else None)
        self._violation = (Names(m["policy"]) if "policy" in m else None,
                           Names(m["rule"]) if "rule" in m else None, bool(m.get("enforced")))

    def document(self) -> dict:
        doc = {"kind": self.kind.name, "match": self.match}
        if self.threshold_ms is not None:
            doc["threshold_ms"] = self.threshold_ms
        return doc

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.document(), sort_keys=True).encode()).hexdigest()[:32]

    @property
    def needs_attributes(self) -> bool:
        return "attributes" in self.match or "resource" in self.match

    def describe(self) -> str:
        parts = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in self.match.items()
                 if k not in ("attributes", "resource")]
        for scope in ("attributes", "resource"):
            for key, cond in self.match.get(scope, {}).items():
                ((op, arg),) = cond.items()
                parts.append(f"{key} {op} {arg}")
        threshold = f" within {self.threshold_ms:g} ms" if self.threshold_ms is not None else ""
        return f"{self.kind.name}{threshold}" + (f" of {'; '.join(parts)}" if parts else "")

    # --- matching ------------------------------------------------------------------------------------

    def static_ok(self, service: str, agent: str, name: str, kind: int) -> bool:
        services, agents, names, kinds = self._static
        return ((services is None or services(service)) and (agents is None or agents(agent))
                and (names is None or names(name)) and (kinds is None or kind in kinds))

    def span_matches(self, span) -> bool:
        return (self.static_ok(span.service_name, span.agent, span.name, span.kind)
                and (self._dynamic is None or self._dynamic(span)))

    def finding_matches(self, finding) -> bool:
        kinds, keys = self._finding
        agents = self._static[1]
        return ((kinds is None or kinds(finding.kind)) and (keys is None or keys(finding.key))
                and (agents is None or any(agents(a) for a in finding.agents)))

    def violation_matches(self, violation) -> bool:
        policies, rules, enforced_only = self._violation
        services, agents = self._static[0], self._static[1]
        return ((policies is None or policies(violation.policy)) and (rules is None or rules(violation.rule_id))
                and (not enforced_only or violation.enforced)
                and (services is None or services(violation.service)) and (agents is None or agents(violation.agent)))

    def good(self, value_ms: float | None, good: bool) -> bool:
        """Latency and recovery events are good within the threshold (all are, without one)."""
        if self.threshold_ms is not None and value_ms is not None:
            return value_ms <= self.threshold_ms
        return good

    def check_metric(self, metric: str) -> None:
        if metric not in self.kind.metrics:
            raise SliError(f"a {self.kind.name} SLI offers the metrics {', '.join(self.kind.metrics)}, not {metric!r}")
        if metric in RATIO_METRICS + ("bad_count",) and self.kind.threshold != "none" and self.threshold_ms is None:
            raise SliError(f"{metric} of a {self.kind.name} SLI needs its threshold_ms (what counts as good)")

    def check_slo(self) -> None:
        if not self.kind.ratio:
            raise SliError(f"an SLO needs an SLI of good and bad events; a {self.kind.name} SLI is a count: "
                           "watch it with a threshold alert rule instead")
        if self.kind.threshold != "none" and self.threshold_ms is None:
            raise SliError(f"an SLO on {self.kind.name} needs threshold_ms: the events within it are the good ones")


# --- plain events the database layer hands in ----------------------------------------------------------


@dataclass(slots=True)
class SliSpan:
    """The span fields SLIs read (a traces.records.SpanRecord also serves)."""

    trace_id: str
    span_id: str
    name: str
    kind: int
    service_name: str
    agent: str
    start_ns: int
    end_ns: int
    status_code: int
    state_op: str = ""
    state_conflict: bool = False
    idempotency_key: str = ""
    idempotency_outcome: str = ""
    attributes: dict = field(default_factory=dict)
    resource_attributes: dict = field(default_factory=dict)


@dataclass(slots=True)
class FindingEvent:
    kind: str
    key: str
    agents: tuple[str, ...]
    first_ns: int
    trace_id: str
    span_id: str


@dataclass(slots=True)
class ViolationEvent:
    policy: str
    rule_id: str
    agent: str
    service: str
    enforced: bool
    start_ns: int
    trace_id: str
    span_id: str


# --- histograms: log buckets 2^(1/8) wide (about 9 %), mergeable by adding counts ---------------------------

HIST_BASE_MS = 0.001
HIST_STEPS_PER_DOUBLING = 8


def hist_index(ms: float) -> int:
    if ms <= HIST_BASE_MS:
        return 0
    return math.ceil(math.log2(ms / HIST_BASE_MS) * HIST_STEPS_PER_DOUBLING - 1e-9)


def hist_upper(index: int) -> float:
    return HIST_BASE_MS * 2 ** (index / HIST_STEPS_PER_DOUBLING)


def hist_merge(into: dict[int, int], other: dict) -> dict[int, int]:
    for index, count in other.items():
        index = int(index)
        into[index] = into.get(index, 0) + count
    return into


def hist_quantile(hist: dict, q: float) -> float | None:
    """The q-quantile (0..1) of the values counted, as its bucket's upper bound; None if empty."""
    items = sorted((int(i), c) for i, c in hist.items() if c)
    total = sum(c for _, c in items)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in items:
        seen += count
        if seen >= rank:
            return hist_upper(index)
    return hist_upper(items[-1][0])


# --- per-minute counts ---------------------------------------------------------------------------------


@dataclass(slots=True)
class MinuteCounts:
    good: int = 0
    total: int = 0
    value_sum: float = 0.0
    hist: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)  # [trace_id, span_id] of bad events

    def add(self, good: bool, value_ms: float | None, trace_id: str, span_id: str) -> None:
        self.total += 1
        if good:
            self.good += 1
        elif len(self.examples) < MAX_EXAMPLES:
            self.examples.append([trace_id, span_id])
        if value_ms is not None:
            self.value_sum += value_ms
            index = hist_index(value_ms)
            self.hist[index] = self.hist.get(index, 0) + 1


def minute_of(ns: int) -> int:
    return ns // NS_PER_MINUTE


def duplicate_span_ids(findings: Iterable[tuple[str, list[tuple[int, str]]]]) -> set[str]:
    """Span ids of duplicate side effects: each duplicate_side_effect finding's members but its earliest.
    `findings` gives (kind, [(start_ns, span_id) of its members])."""
    duplicates = set()
    for kind, members in findings:
        if kind == "duplicate_side_effect" and len(members) > 1:
            duplicates.update(span_id for _, span_id in sorted(members)[1:])
    return duplicates


def rollup(slis: dict, *, spans: Iterable = (), findings: Iterable = (), violations: Iterable = (),
           duplicates: frozenset | set = frozenset(), plans: dict | None = None) -> dict[tuple, MinuteCounts]:
    """Per-minute counts {(sli id, minute): MinuteCounts} of `slis` {id: Sli} over the events given.
    Recovery SLIs are counted separately (recoveries()), over the sequences of their operations.
    `plans` may carry the per-signature plans from one call to the next with the same `slis`."""
    out: dict[tuple, MinuteCounts] = {}

    def count(sli_id, sli, good, value, ns, trace_id, span_id):
        at = (sli_id, ns // NS_PER_MINUTE)
        counts = out.get(at)
        if counts is None:
            counts = out[at] = MinuteCounts()
        counts.add(sli.good(value, good), value, trace_id, span_id)

    by_source: dict[str, list] = {"spans": [], "findings": [], "violations": []}
    for sli_id, sli in slis.items():
        if sli.kind.name != "recovery":
            by_source[sli.kind.source].append((sli_id, sli))
    if by_source["spans"]:
        # The static part of every selector is decided once per signature (service, agent, name, kind).
        plans = {} if plans is None else plans
        for span in spans:
            sig = (span.service_name, span.agent, span.name, span.kind)
            plan = plans.get(sig)
            if plan is None:
                plan = plans[sig] = [(i, s) for i, s in by_source["spans"] if s.static_ok(*sig)]
            for sli_id, sli in plan:
                if sli._dynamic is not None and not sli._dynamic(span):
                    continue
                event = sli.kind.event(span, duplicates)
                if event is not None:
                    count(sli_id, sli, event[0], event[1], span.start_ns, span.trace_id, span.span_id)
    for finding in findings if by_source["findings"] else ():
        for sli_id, sli in by_source["findings"]:
            if sli.finding_matches(finding):
                count(sli_id, sli, False, None, finding.first_ns, finding.trace_id, finding.span_id)
    for violation in violations if by_source["violations"] else ():
        for sli_id, sli in by_source["violations"]:
            if sli.violation_matches(violation):
                count(sli_id, sli, False, None, violation.start_ns, violation.trace_id, violation.span_id)
    return out


def recoveries(sli: Sli, spans: Iterable, *, horizon_ns: int | None = None) -> dict[int, MinuteCounts]:
    """Per-minute recoveries of a recovery SLI: for each operation (service, span name) in start order,
    a success right after failures is one recovery, from the start of the first failure of that streak
    to the end of the success. With `horizon_ns`, the streak is looked for only that far back from the
    success, so a recovery depends on that stretch alone and recounting it gives the same value."""
    by_operation: dict[tuple, list] = {}
    for span in spans:
        if sli.span_matches(span):
            by_operation.setdefault((span.service_name, span.name), []).append(span)
    out: dict[int, MinuteCounts] = {}
    for sequence in by_operation.values():
        sequence.sort(key=lambda s: (s.start_ns, s.trace_id, s.span_id))
        for at, span in enumerate(sequence):
            if span.status_code == STATUS_ERROR or at == 0 or sequence[at - 1].status_code != STATUS_ERROR:
                continue
            earliest = span.start_ns - horizon_ns if horizon_ns is not None else None
            first = at - 1
            while first > 0 and sequence[first - 1].status_code == STATUS_ERROR and (
                    earliest is None or sequence[first - 1].start_ns >= earliest):
                first -= 1
            failure = sequence[first]
            if earliest is not None and failure.start_ns < earliest:
                continue  # the whole streak is older than the horizon
            value = (span.end_ns - failure.start_ns) / 1e6
            counts = out.setdefault(span.start_ns // NS_PER_MINUTE, MinuteCounts())
            counts.add(sli.good(value, True), value, failure.trace_id, failure.span_id)
    return out


# --- sums over a window ----------------------------------------------------------------------------------


@dataclass
class WindowSums:
    good: float = 0
    total: float = 0
    value_sum: float = 0.0
    hist: dict = field(default_factory=dict)

    def add(self, good, total, value_sum=0.0, hist=None) -> None:
        self.good += good
        self.total += total
        self.value_sum += value_sum
        if hist:
            hist_merge(self.hist, hist)


def metric_value(metric: str, sums: WindowSums, minutes: int) -> float | None:
    """A threshold rule's metric over a window of `minutes`; None when a ratio or value has no events."""
    good, total = sums.good, sums.total
    if metric == "count":
        return float(total)
    if metric == "bad_count":
        return float(total - good)
    if metric == "rate_per_minute":
        return total / minutes
    if total <= 0:
        return None
    if metric == "good_ratio":
        return good / total
    if metric == "bad_ratio":
        return (total - good) / total
    if metric == "mean":
        return sums.value_sum / total
    return hist_quantile(sums.hist, {"p50": 0.5, "p95": 0.95, "p99": 0.99}[metric])
