"""Synthetic agents for rollout tests: spans of a service's baseline and canary versions, stored and
analysed as the pipeline would (findings, violations, then the canary stage)."""

from __future__ import annotations

import itertools
import random
import time

from governance.rollouts.canary import canary_minutes_update
from policies.services import violations_record
from traces.ingest import spans_store
from traces.records import KIND_SERVER, STATUS_ERROR, STATUS_OK, make_span
from traces.services import findings_update

_traces = itertools.count(1)


def version_spans(version: str, count: int, *, seconds_ago: float = 30, error_share: float = 0.0, ms: float = 10.0,
                  service: str = "billing", seed: int = 1) -> list:
    """`count` one-span traces of `version`, spread over the last `seconds_ago` seconds (of the test's
    clock); durations ms +- 50 %, a share of them errors."""
    rng = random.Random(seed)
    spans = []
    now = time.time_ns()
    for i in range(count):
        trace = next(_traces)
        start = now - int(rng.uniform(1, seconds_ago) * 1e9)
        spans.append(make_span(
            trace_id=f"{trace:032x}", span_id=f"{trace:016x}", name="charge", kind=KIND_SERVER, start_ns=start,
            end_ns=start + int(ms * rng.uniform(0.5, 1.5) * 1e6),
            status_code=STATUS_ERROR if rng.random() < error_share else STATUS_OK,
            attributes={"gen_ai.agent.id": "billing-agent"},
            resource_attributes={"service.name": service, "service.version": version,
                                 "service.instance.id": f"{service}-{i % 7}"}))
    return spans


def agents_work(project, *, baseline="1.0.0", canary="1.1.0", count=120, canary_errors=0.0, canary_ms=10.0,
                seconds_ago: float = 30) -> list[str]:
    """Baseline and canary agents at work, stored and run through the pipeline's stages."""
    spans = version_spans(baseline, count, seconds_ago=seconds_ago, error_share=0.01, seed=1) + version_spans(
        canary, count, seconds_ago=seconds_ago, error_share=canary_errors, ms=canary_ms, seed=2)
    spans_store(project_id=project.pk, spans=spans)
    trace_ids = sorted({s.trace_id for s in spans})
    findings_update(project_id=project.pk, trace_ids=trace_ids)
    violations_record(project_id=project.pk, trace_ids=trace_ids)
    canary_minutes_update(project_id=project.pk, trace_ids=trace_ids)
    return trace_ids
