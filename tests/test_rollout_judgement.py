"""The canary judgement core, by worked examples: each figure below can be checked by hand."""

from __future__ import annotations

import pytest

from governance.rollouts.core.judgement import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SUCCESSFUL,
    JudgementError,
    Metric,
    RunPlan,
    Scoring,
    VersionSample,
    judge,
    judge_metric,
    metrics_parse,
    quantile,
    run_verdict,
)
from governance.rollouts.core.plan import PlanError, analysis_parse, steps_parse, template_steps


def sample(spans=100, errors=0, durations=None, **counts) -> VersionSample:
    return VersionSample(spans=spans, errors=errors, durations_ms=list(durations or [10.0] * spans), **counts)


def metric(kind, **raw) -> Metric:
    return Metric.parse({"kind": kind, **raw})


def test_error_rate_two_points_worse_passes_and_twelve_points_worse_fails():
    baseline = sample(errors=1)  # 1 %
    assert judge_metric(metric("error_rate"), baseline, sample(errors=3)).verdict == PASSED  # +0.02 <= 0.02
    result = judge_metric(metric("error_rate"), baseline, sample(errors=13))  # +0.12 > 0.10
    assert (result.verdict, result.value, result.baseline, result.canary) == (FAILED, 0.12, 0.01, 0.13)


def test_a_value_between_pass_and_failure_is_inconclusive():
    result = judge_metric(metric("error_rate"), sample(errors=0), sample(errors=5))  # +0.05
    assert result.verdict == INCONCLUSIVE and result.value == 0.05


def test_without_a_failure_condition_a_metric_that_does_not_pass_fails():
    result = judge_metric(metric("error_rate", failure=None), sample(errors=0), sample(errors=5))
    assert result.verdict == FAILED


def test_too_few_samples_on_either_side_is_inconclusive_whatever_the_figures():
    result = judge_metric(metric("error_rate", min_samples=50), sample(spans=49, errors=49), sample(spans=200))
    assert result.verdict == INCONCLUSIVE and result.value is None and "49" in result.reason


def test_latency_p95_ratio():
    # Baseline durations 1..100 ms: p95 = 95.05; canary twice as slow: p95 = 190.1 -> ratio 2.0 > 1.5.
    baseline = sample(durations=[float(i) for i in range(1, 101)])
    canary = sample(durations=[2.0 * i for i in range(1, 101)])
    assert quantile(baseline.durations_ms, 0.95) == pytest.approx(95.05)
    result = judge_metric(metric("latency_p95_ratio"), baseline, canary)
    assert result.verdict == FAILED and result.value == 2.0
    assert judge_metric(metric("latency_p95_ratio"), baseline, baseline).value == 1.0


def test_mann_whitney_tells_a_shifted_distribution_from_the_same_one():
    baseline = sample(durations=[float(i % 50) for i in range(100)])
    same = sample(durations=[float((i + 25) % 50) for i in range(100)])  # same values, other order
    slower = sample(durations=[float(i % 50) + 20 for i in range(100)])
    assert judge_metric(metric("latency_mann_whitney"), baseline, same).verdict == PASSED
    result = judge_metric(metric("latency_mann_whitney"), baseline, slower)
    assert result.verdict == FAILED and result.value < 0.001


def test_idempotency_conflicts_findings_and_violations_compare_rates():
    base = sample(spans=1000, idempotent=100, idempotent_ok=100, writes=100, conflicts=1,
                  findings={"lost_update": 1}, violations=0)
    worse = sample(spans=1000, idempotent=100, idempotent_ok=90, writes=100, conflicts=20,
                   findings={"lost_update": 1, "duplicate_side_effect": 15}, violations=12)
    by_kind = {r.name: r for r in judge([metric("idempotency_success", min_samples=20),
                                         metric("conflict_rate", min_samples=20),
                                         metric("findings_per_1k", finding_kind="duplicate_side_effect"),
                                         metric("findings_per_1k", finding_kind="lost_update"),
                                         metric("violations_per_1k")], base, worse).metrics}
    assert by_kind["idempotency_success"].value == -0.1 and by_kind["idempotency_success"].verdict == FAILED
    assert by_kind["conflict_rate"].value == 0.19 and by_kind["conflict_rate"].verdict == FAILED
    assert by_kind["findings_per_1k:duplicate_side_effect"].value == 15.0
    assert by_kind["findings_per_1k:lost_update"].verdict == PASSED
    assert by_kind["violations_per_1k"].value == 12.0 and by_kind["violations_per_1k"].verdict == FAILED


def test_score_is_passing_metrics_over_judged_ones_with_pass_and_marginal_thresholds():
    # Four metrics judged on a canary with more errors only: error_rate fails, three pass -> 75.
    metrics = [metric("error_rate", failure=None), metric("latency_p95_ratio"), metric("conflict_rate", min_samples=1),
               metric("violations_per_1k")]
    base, canary = sample(writes=10), sample(errors=30, writes=10)
    measured = judge(metrics, base, canary, Scoring(pass_score=95, marginal_score=75))
    assert (measured.verdict, measured.score) == (INCONCLUSIVE, 75.0)  # marginal <= 75 < pass
    assert judge(metrics, base, canary, Scoring(pass_score=75, marginal_score=50)).verdict == SUCCESSFUL
    assert judge(metrics, base, canary, Scoring(pass_score=90, marginal_score=80)).verdict == FAILED


def test_a_failed_critical_metric_fails_the_measurement_whatever_the_score():
    metrics = [metric("error_rate", critical=True), *[metric(k) for k in ("latency_p95_ratio", "violations_per_1k",
                                                                          "findings_per_1k")]]
    measured = judge(metrics, sample(), sample(errors=20))
    assert (measured.verdict, measured.score) == (FAILED, 75.0) and "error_rate" in measured.reason


def test_too_little_data_for_a_critical_metric_or_for_all_is_inconclusive():
    assert judge([metric("error_rate", critical=True, min_samples=500), metric("latency_p95_ratio")],
                 sample(), sample()).verdict == INCONCLUSIVE
    nothing = judge(metrics_parse(None), VersionSample(), VersionSample())
    assert (nothing.verdict, nothing.score) == (INCONCLUSIVE, None)


def test_a_healthy_canary_passes_the_default_metrics():
    durations = [float(5 + i % 20) for i in range(300)]
    base = sample(spans=300, errors=3, durations=durations, idempotent=50, idempotent_ok=50, writes=60, conflicts=1)
    canary = sample(spans=300, errors=3, durations=list(reversed(durations)), idempotent=50, idempotent_ok=50,
                    writes=60, conflicts=1)
    measured = judge(metrics_parse(None), base, canary)
    assert (measured.verdict, measured.score) == (SUCCESSFUL, 100.0)


def test_runs_end_as_argo_rollouts_does():
    plan = RunPlan(count=3, failure_limit=1, inconclusive_limit=0)
    assert run_verdict([SUCCESSFUL], plan) is None
    assert run_verdict([SUCCESSFUL, FAILED], plan) is None  # one failure is within the limit
    assert run_verdict([SUCCESSFUL, FAILED, FAILED], plan) == FAILED
    assert run_verdict([INCONCLUSIVE], plan) == INCONCLUSIVE
    assert run_verdict([SUCCESSFUL, FAILED, SUCCESSFUL], plan) == SUCCESSFUL
    assert run_verdict([FAILED], RunPlan()) == FAILED


@pytest.mark.parametrize("raw, where", [
    ({"kind": "latency"}, "kind"), ({"kind": "error_rate", "pass": {"op": "=", "value": 1}}, "pass.op"),
    ({"kind": "error_rate", "min_samples": 0}, "min_samples"), ({"kind": "error_rate", "extra": 1}, "extra"),
    ({"kind": "error_rate", "finding_kind": "lost_update"}, "finding_kind"),
])
def test_bad_metrics_are_refused_saying_where(raw, where):
    with pytest.raises(JudgementError, match=where):
        metrics_parse([raw])


def test_plans_check_their_steps_and_options():
    assert steps_parse(template_steps("standard"))[0] == {"kind": "set_weight", "weight": 5}
    assert steps_parse([{"kind": "analysis"}]) == [{"kind": "analysis", "count": 1, "interval_seconds": 60,
                                                    "failure_limit": 0, "inconclusive_limit": 0}]
    for bad in ([], [{"kind": "set_weight", "weight": 101}], [{"kind": "pause"}], [{"kind": "approval", "x": 1}]):
        with pytest.raises(PlanError):
            steps_parse(bad)
    assert analysis_parse(None)["on_failure"] == "rollback"
    with pytest.raises(PlanError, match="marginal"):
        analysis_parse({"pass_score": 50, "marginal_score": 60})
