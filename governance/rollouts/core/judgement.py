"""Canary judgement: does the canary version behave as well as the baseline over the same interval?

Each metric compares one figure of the canary with the same figure of the baseline and gives a
*value* (a difference or a ratio, see METRIC_KINDS) that its conditions test:

    kind                 value                                                    samples (each side)
    error_rate           canary error rate - baseline error rate                  spans
    latency_p95_ratio    canary p95 duration / baseline p95 duration              spans
    latency_mann_whitney p-value of a one-sided Mann-Whitney U test that canary    spans
                         durations are larger (small p: the canary is slower);
                         the figures shown beside it are the medians
    idempotency_success  canary share of idempotent actions executed once and OK   idempotent actions
                         - the baseline's (negative: the canary is worse)
    conflict_rate        canary share of writes with state.conflict - baseline's  writes
    findings_per_1k      canary findings per 1,000 spans - baseline's (one finding spans
                         kind, or all)
    violations_per_1k    canary policy violations per 1,000 spans - baseline's    spans

A metric is *inconclusive* when either side has fewer samples than its `min_samples`; else
*failed* when its failure condition holds, *passed* when its pass condition holds, and
otherwise inconclusive. Without a failure condition, a metric that does not pass fails (as
Argo Rollouts reads a successCondition alone).

A *measurement* judges every metric once. Its score is Kayenta's: metrics passed over metrics
judged (inconclusive ones left out), 0..100. Its verdict: Failed when a critical metric failed;
Inconclusive when a critical metric had too little data or nothing could be judged; otherwise
Successful at or above `pass_score`, Failed below `marginal_score`, Inconclusive between.

An analysis *run* takes `count` measurements, one every `interval_seconds`, and ends as in Argo
Rollouts: Failed as soon as more than `failure_limit` measurements failed, Inconclusive as soon
as more than `inconclusive_limit` were inconclusive, Successful when all `count` were taken
without either.

Plain Python, no Django import.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

SUCCESSFUL, FAILED, INCONCLUSIVE = "successful", "failed", "inconclusive"
PASSED = "passed"  # a metric's verdict (a run's is SUCCESSFUL)

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class MetricKind:
    name: str
    label: str
    samples: str  # which count of VersionSample is the sample size
    default_pass: tuple[str, float]
    default_failure: tuple[str, float] | None


METRIC_KINDS: dict[str, MetricKind] = {k.name: k for k in (
    MetricKind("error_rate", "Error rate (canary - baseline)", "spans", ("<=", 0.02), (">", 0.10)),
    MetricKind("latency_p95_ratio", "Latency p95 (canary / baseline)", "spans", ("<=", 1.25), (">", 1.5)),
    MetricKind("latency_mann_whitney", "Latency, Mann-Whitney U p-value (canary slower)", "spans",
               (">=", 0.05), ("<", 0.001)),
    MetricKind("idempotency_success", "Idempotent actions once and OK (canary - baseline)", "idempotent",
               (">=", -0.01), ("<", -0.05)),
    MetricKind("conflict_rate", "Conflict rate of writes (canary - baseline)", "writes", ("<=", 0.02), (">", 0.10)),
    MetricKind("findings_per_1k", "Findings per 1,000 spans (canary - baseline)", "spans", ("<=", 1.0), (">", 10.0)),
    MetricKind("violations_per_1k", "Policy violations per 1,000 spans (canary - baseline)", "spans",
               ("<=", 1.0), (">", 10.0)),
)}


class JudgementError(ValueError):
    """A metric or analysis definition is wrong; the message says where."""


@dataclass(frozen=True)
class Condition:
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)

    def text(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Metric:
    kind: str
    pass_condition: Condition
    failure_condition: Condition | None = None
    min_samples: int = 50
    critical: bool = False
    finding_kind: str = ""  # findings_per_1k: one kind, or "" for all
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or (f"{self.kind}:{self.finding_kind}" if self.finding_kind else self.kind)

    @classmethod
    def parse(cls, raw: dict, where: str = "metrics") -> Metric:
        """From {kind, pass?: {op, value}, failure?: {op, value} | null, min_samples?, critical?, finding_kind?,
        name?}; the kind's defaults fill in what is left out."""
        if not isinstance(raw, dict):
            raise JudgementError(f"{where}: a metric is an object with a kind")
        unknown = set(raw) - {"kind", "pass", "failure", "min_samples", "critical", "finding_kind", "name"}
        if unknown:
            raise JudgementError(f"{where}: unknown field {min(unknown)!r}")
        kind = METRIC_KINDS.get(raw.get("kind"))
        if kind is None:
            raise JudgementError(f"{where}.kind: one of {', '.join(METRIC_KINDS)}")
        min_samples = raw.get("min_samples", 50)
        if not isinstance(min_samples, int) or isinstance(min_samples, bool) or not 1 <= min_samples <= 10_000_000:
            raise JudgementError(f"{where}.min_samples: a whole number from 1")
        critical = raw.get("critical", False)
        if not isinstance(critical, bool):
            raise JudgementError(f"{where}.critical: true or false")
        finding_kind = raw.get("finding_kind", "")
        if not isinstance(finding_kind, str) or "\x00" in finding_kind or len(finding_kind) > 32 or (
                finding_kind and kind.name != "findings_per_1k"):
            raise JudgementError(f"{where}.finding_kind: a finding kind, for findings_per_1k only")
        name = raw.get("name", "")
        if not isinstance(name, str) or len(name) > 100 or "\x00" in name:
            raise JudgementError(f"{where}.name: text up to 100 characters")
        failure = (_condition(raw["failure"], f"{where}.failure") if raw["failure"] is not None else None) \
            if "failure" in raw else Condition(*kind.default_failure) if kind.default_failure else None
        return cls(kind=kind.name, pass_condition=_condition(raw.get("pass", None), f"{where}.pass", kind.default_pass),
                   failure_condition=failure, min_samples=min_samples, critical=critical,
                   finding_kind=finding_kind, name=name)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "finding_kind": self.finding_kind,
                "pass": {"op": self.pass_condition.op, "value": self.pass_condition.threshold},
                "failure": ({"op": self.failure_condition.op, "value": self.failure_condition.threshold}
                            if self.failure_condition else None),
                "min_samples": self.min_samples, "critical": self.critical}


def _condition(raw, where: str, default: tuple[str, float] | None = None) -> Condition:
    if raw is None and default is not None:
        return Condition(*default)
    if not isinstance(raw, dict) or set(raw) != {"op", "value"}:
        raise JudgementError(f"{where}: give {{\"op\": one of {', '.join(OPS)}, \"value\": a number}}")
    value = raw["value"]
    if raw["op"] not in OPS:
        raise JudgementError(f"{where}.op: one of {', '.join(OPS)}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise JudgementError(f"{where}.value: a finite number")
    return Condition(raw["op"], float(value))


@dataclass
class VersionSample:
    """What one version did over the interval: counts summed from the per-minute aggregates."""

    spans: int = 0
    errors: int = 0
    durations_ms: list[float] = field(default_factory=list)  # a sample of span durations (capped per minute)
    idempotent: int = 0
    idempotent_ok: int = 0
    writes: int = 0
    conflicts: int = 0
    findings: dict[str, int] = field(default_factory=dict)  # kind -> findings
    violations: int = 0

    def add(self, other: VersionSample) -> None:
        self.spans += other.spans
        self.errors += other.errors
        self.durations_ms.extend(other.durations_ms)
        self.idempotent += other.idempotent
        self.idempotent_ok += other.idempotent_ok
        self.writes += other.writes
        self.conflicts += other.conflicts
        for kind, n in other.findings.items():
            self.findings[kind] = self.findings.get(kind, 0) + n
        self.violations += other.violations


@dataclass(frozen=True)
class MetricResult:
    name: str
    kind: str
    verdict: str  # passed | failed | inconclusive
    value: float | None
    baseline: float | None  # the figure compared, on each side (rate, p95 ms, ...)
    canary: float | None
    baseline_samples: int
    canary_samples: int
    critical: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    verdict: str  # successful | failed | inconclusive
    score: float | None  # 0..100, None when no metric could be judged
    metrics: tuple[MetricResult, ...]
    reason: str

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "score": self.score, "reason": self.reason,
                "metrics": [m.as_dict() for m in self.metrics]}


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    at = (len(ordered) - 1) * q
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def mann_whitney_greater(canary: Sequence[float], baseline: Sequence[float]) -> float:
    """p-value that canary durations tend to be larger than baseline ones (one-sided)."""
    from scipy.stats import mannwhitneyu  # imported here: only the judging worker pays for scipy

    return float(mannwhitneyu(canary, baseline, alternative="greater").pvalue)


def _rate(numerator: int, denominator: int, per: float = 1.0) -> float:
    return numerator / denominator * per if denominator else 0.0


def _figures(metric: Metric, side: VersionSample) -> float:
    kind = metric.kind
    if kind == "error_rate":
        return _rate(side.errors, side.spans)
    if kind == "latency_p95_ratio":
        return quantile(side.durations_ms, 0.95)
    if kind == "latency_mann_whitney":  # the U test compares whole distributions: their medians are shown
        return quantile(side.durations_ms, 0.5)
    if kind == "idempotency_success":
        return _rate(side.idempotent_ok, side.idempotent)
    if kind == "conflict_rate":
        return _rate(side.conflicts, side.writes)
    if kind == "findings_per_1k":
        found = side.findings.get(metric.finding_kind, 0) if metric.finding_kind else sum(side.findings.values())
        return _rate(found, side.spans, 1000.0)
    return _rate(side.violations, side.spans, 1000.0)


def _samples(metric: Metric, side: VersionSample) -> int:
    which = METRIC_KINDS[metric.kind].samples
    if which == "spans" and metric.kind.startswith("latency"):
        return len(side.durations_ms)
    return getattr(side, which)


def judge_metric(metric: Metric, baseline: VersionSample, canary: VersionSample) -> MetricResult:
    b_n, c_n = _samples(metric, baseline), _samples(metric, canary)

    def result(verdict, value, reason, b=None, c=None):
        return MetricResult(metric.label, metric.kind, verdict, value, b, c, b_n, c_n, metric.critical, reason)

    if min(b_n, c_n) < metric.min_samples:
        return result(INCONCLUSIVE, None, f"too little data: {c_n} canary and {b_n} baseline samples, "
                                          f"{metric.min_samples} needed on each side")
    b, c = _figures(metric, baseline), _figures(metric, canary)
    if metric.kind == "latency_p95_ratio":
        value = c / b if b > 0 else (1.0 if c <= 0 else math.inf)
    elif metric.kind == "latency_mann_whitney":
        value = mann_whitney_greater(canary.durations_ms, baseline.durations_ms)
    else:
        value = c - b
    value = round(value, 6) if math.isfinite(value) else value
    failure = metric.failure_condition
    if failure is not None and failure.holds(value):
        return result(FAILED, value, f"{value:g} {failure.text()} (failure condition)", b, c)
    if metric.pass_condition.holds(value):
        return result(PASSED, value, f"{value:g} {metric.pass_condition.text()}", b, c)
    if failure is None:
        return result(FAILED, value, f"{value:g} is not {metric.pass_condition.text()}", b, c)
    return result(INCONCLUSIVE, value, f"{value:g}: neither {metric.pass_condition.text()} nor "
                                       f"{failure.text()}", b, c)


@dataclass(frozen=True)
class Scoring:
    pass_score: float = 95.0
    marginal_score: float = 75.0

    def __post_init__(self):
        if not 0 <= self.marginal_score <= self.pass_score <= 100:
            raise JudgementError("scores: 0 <= marginal_score <= pass_score <= 100")


def judge(metrics: Iterable[Metric], baseline: VersionSample, canary: VersionSample,
          scoring: Scoring = Scoring()) -> Measurement:
    """One measurement: every metric judged, the Kayenta score, the verdict (see the module's text)."""
    results = tuple(judge_metric(m, baseline, canary) for m in metrics)
    judged = [r for r in results if r.verdict != INCONCLUSIVE or r.value is not None]
    decided = [r for r in results if r.verdict in (PASSED, FAILED)]
    score = round(100.0 * sum(r.verdict == PASSED for r in decided) / len(decided), 2) if decided else None
    critical_failed = [r.name for r in results if r.critical and r.verdict == FAILED]
    if critical_failed:
        return Measurement(FAILED, score, results, f"critical metric failed: {', '.join(critical_failed)}")
    critical_unsure = [r.name for r in results if r.critical and r.verdict == INCONCLUSIVE and r.value is None]
    if critical_unsure:
        return Measurement(INCONCLUSIVE, score, results, f"too little data for critical metric "
                                                        f"{', '.join(critical_unsure)}")
    if score is None:
        reason = "no metric could be judged" if not judged else "no metric passed or failed"
        return Measurement(INCONCLUSIVE, None, results, reason)
    if score >= scoring.pass_score:
        return Measurement(SUCCESSFUL, score, results, f"score {score:g} >= pass score {scoring.pass_score:g}")
    if score < scoring.marginal_score:
        return Measurement(FAILED, score, results, f"score {score:g} < marginal score {scoring.marginal_score:g}")
    return Measurement(INCONCLUSIVE, score, results,
                       f"score {score:g} between marginal {scoring.marginal_score:g} and pass {scoring.pass_score:g}")


@dataclass(frozen=True)
class RunPlan:
    """How an analysis step measures: Argo Rollouts' count, interval, failureLimit, inconclusiveLimit."""

    count: int = 1
    interval_seconds: int = 60
    failure_limit: int = 0
    inconclusive_limit: int = 0


def run_verdict(verdicts: Sequence[str], plan: RunPlan) -> str | None:
    """The run's verdict from its measurements so far, or None while it must measure on."""
    failed = sum(v == FAILED for v in verdicts)
    inconclusive = sum(v == INCONCLUSIVE for v in verdicts)
    if failed > plan.failure_limit:
        return FAILED
    if inconclusive > plan.inconclusive_limit:
        return INCONCLUSIVE
    if len(verdicts) >= plan.count:
        return SUCCESSFUL
    return None


DEFAULT_METRICS = (
    {"kind": "error_rate", "critical": True},
    {"kind": "latency_p95_ratio"},
    {"kind": "latency_mann_whitney"},
    {"kind": "idempotency_success", "min_samples": 20},
    {"kind": "conflict_rate", "min_samples": 20},
    {"kind": "findings_per_1k"},
    {"kind": "violations_per_1k"},
)


def metrics_parse(raw: list | None) -> list[Metric]:
    """A rollout's metrics, or DEFAULT_METRICS when it gives none; names must differ."""
    if raw is None or raw == []:
        raw = list(DEFAULT_METRICS)
    if not isinstance(raw, list) or len(raw) > 50:
        raise JudgementError("metrics: a list of up to 50 metrics")
    metrics = [Metric.parse(m, f"metrics[{i}]") for i, m in enumerate(raw)]
    labels = [m.label for m in metrics]
    for label in labels:
        if labels.count(label) > 1:
            raise JudgementError(f"metrics: two metrics are named {label!r}; give one a name")
    return metrics
