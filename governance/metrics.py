"""Causeway's own telemetry: every Prometheus metric object, in one place, and the /metrics exposition.

Several processes record into these metrics (gunicorn workers, Celery's prefork children), so
prometheus-client runs in its multiprocess mode: each process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (governance/multiproc.py, set by the settings before prometheus_client is
imported), and a scrape sums the files of every process. Files of processes that are gone are removed
when the stack starts (governance/stack.py) and when gunicorn starts (gunicorn.conf.py);
counters of live processes are never touched, so a restart of one kind of process does not reset
the others' counts.

Other code increments these objects directly, e.g. `metrics.ROLLOUT_TRANSITIONS.labels(to="promoted").inc()`.
"""

from __future__ import annotations

from governance.multiproc import multiproc_dir

multiproc_dir()  # before prometheus_client's first import, which picks its multiprocess mode from it

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

SPANS_RECEIVED = Counter("causeway_spans_received", "Spans in the OTLP requests that were decoded", ["protocol"])
SPANS_ACCEPTED = Counter("causeway_spans_accepted", "Spans stored (new or a retried batch's again)", ["protocol"])
SPANS_REJECTED = Counter("causeway_spans_rejected", "Spans not stored, by reason", ["reason"])
INGEST_SECONDS = Histogram(
    "causeway_ingest_request_duration_seconds", "OTLP export requests, from decoding to the answer",
    ["protocol", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TASK_SECONDS = Histogram(
    "causeway_task_duration_seconds", "Celery task runs, by task and outcome", ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900))
TASK_FAILURES = Counter("causeway_task_failures", "Celery task runs that raised, by task", ["task"])
NOTIFICATIONS_SENT = Counter("causeway_alert_notifications_sent", "Alert notifications delivered", ["channel_kind"])
NOTIFICATIONS_FAILED = Counter(
    "causeway_alert_notifications_failed", "Alert notification attempts that failed; final=true when given up",
    ["channel_kind", "final"])
ROLLOUT_TRANSITIONS = Counter(
    "causeway_rollout_transitions", "Rollout state transitions, by the state moved to", ["to"])

# Rejection reasons become label values: a closed set, so a hostile sender cannot grow the series.
REJECT_REASONS = {
    "trace_id must be 16 non-zero bytes": "bad_trace_id",
    "span_id must be 8 non-zero bytes": "bad_span_id",
    "parent_span_id must be empty or 8 bytes": "bad_parent_span_id",
    "name is empty": "empty_name",
    "start or end time is at or after 2^63 ns (the year 2262)": "time_out_of_range",
    "end_time_unix_nano is before start_time_unix_nano": "end_before_start",
}


def reject_reason(problem: str) -> str:
    return REJECT_REASONS.get(problem, "other")



class ScrapeTimeCollector:
    """Figures computed when Prometheus scrapes, not recorded by any process: the analysis lag."""

    def collect(self):
        from django.utils import timezone

        from governance.models import Project
        from traces.selectors import analysis_lag

        lag = GaugeMetricFamily("causeway_analysis_lag_seconds",
                                "Age of the oldest quiet trace not yet analysed (0 when none), by project",
                                labels=["project"])
        waiting = GaugeMetricFamily("causeway_analysis_waiting_traces",
                                    "Quiet traces not yet analysed, by project", labels=["project"])
        now = timezone.now()
        for project in Project.objects.only("slug"):
            found = analysis_lag(project=project, now=now)
            lag.add_metric([project.slug], found.seconds)
            waiting.add_metric([project.slug], found.waiting)
        yield lag
        yield waiting


def exposition() -> bytes:
    """The Prometheus text of every process's samples and the scrape-time figures."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ScrapeTimeCollector())
    return generate_latest(registry)
