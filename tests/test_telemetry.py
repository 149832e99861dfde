"""Causeway's own telemetry: /metrics summed over several gunicorn workers and Celery, /healthz for load
balancers, and structured logs carrying request and task ids. Secrets never reach the logs."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import make_key, production_env
from tests.gunicorn import free_port, gunicorn_serving
from tests.otlp_builders import export_request
from traces.records import make_span

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-" + secrets.token_hex(8)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post_spans(url: str, key: str, spans, headers: dict | None = None) -> int:
    body = export_request(spans).SerializeToString()
    request = urllib.request.Request(f"{url}/v1/traces", data=body, method="POST", headers={
        "Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}", "Connection": "close",
        **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def spans(trace: int, count: int, *, bad: int = 0):
    good = [make_span(trace_id=f"{trace:032x}", span_id=f"{i + 1:016x}", name="step", start_ns=10**18 + i,
                      end_ns=10**18 + i + 5) for i in range(count)]
    broken = [make_span(trace_id=f"{trace:032x}", span_id=f"{100 + i:016x}", name="late", start_ns=10**18 + 9,
                        end_ns=10**18) for i in range(bad)]  # ends before it starts
    return good + broken


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    # Imported here, after the settings chose the metrics directory (prometheus_client reads it at import).
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def web_env(transactional_db, tmp_path):
    env = production_env(connection, tmp_path)
    env.update(METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    return env


def test_metrics_need_the_bearer_token(web_env, tmp_path):
    with gunicorn_serving(env=web_env, log_path=tmp_path / "web.log", options=("--workers", "1")) as (url, _):
        assert get(f"{url}/metrics")[0] == 401
        status, headers, _ = get(f"{url}/metrics", {"Authorization": "Bearer wrong"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        status, headers, _ = get(f"{url}/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and headers["Content-Type"].startswith("text/plain")


def test_span_counts_are_summed_over_every_gunicorn_worker(web_env, tmp_path, acme):
    key = make_key(acme)
    requests = 24
    with gunicorn_serving(env=web_env, log_path=tmp_path / "web.log",
                          options=("--workers", "3", "--timeout", "60")) as (url, _):
        # Sent from several threads at once: a sync worker serves one request at a time, so overlapping
        # requests are spread over the workers (one after another, one idle worker may take them all).
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda trace: post_spans(url, key, spans(trace + 1, 5, bad=1)), range(requests)))
        assert statuses == [200] * requests
        text = get(f"{url}/metrics", {"Authorization": f"Bearer {TOKEN}"})[2].decode()
    found = samples(text)
    assert found[("causeway_spans_received_total", (("protocol", "http"),))] == requests * 6
    assert found[("causeway_spans_accepted_total", (("protocol", "http"),))] == requests * 5
    assert found[("causeway_spans_rejected_total", (("reason", "end_before_start"),))] == requests
    assert found[("causeway_ingest_request_duration_seconds_count", (("protocol", "http"), ("status", "200")))] == requests
    assert found[("causeway_analysis_lag_seconds", (("project", "acme"),))] >= 0
    workers = {p.name.rsplit("_", 1)[1] for p in (tmp_path / "prometheus").glob("counter_*.db")}
    assert len(workers) >= 2, "the requests were spread over several workers, and every one was counted"


def test_gunicorn_clears_the_samples_of_dead_processes_at_start(web_env, tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = directory / f"counter_{int(dead.stdout)}.db"
    stale.write_bytes(b"")
    with gunicorn_serving(env=web_env, log_path=tmp_path / "web.log", options=("--workers", "1")):
        assert not stale.exists()


def test_task_durations_and_failures_are_counted_by_task(db):
    from governance import metrics
    from governance.task_base import instrumented_task

    @instrumented_task(name="tests.telemetry.fails", queue="control", time_limit=10)
    def fails():
        raise RuntimeError("boom")

    @instrumented_task(name="tests.telemetry.works", queue="control", time_limit=10)
    def works():
        return 1

    def value(name, **labels):
        return samples(metrics.exposition().decode()).get((name, tuple(sorted(labels.items()))), 0)

    before = value("causeway_task_failures_total", task="tests.telemetry.fails")
    works.apply()
    fails.apply()
    assert value("causeway_task_failures_total", task="tests.telemetry.fails") == before + 1
    assert value("causeway_task_duration_seconds_count", task="tests.telemetry.works", outcome="ok") >= 1


def test_healthz_answers_without_login_and_names_what_failed(web_env, tmp_path):
    with gunicorn_serving(env=web_env, log_path=tmp_path / "ok.log", options=("--workers", "1")) as (url, _):
        status, _, body = get(f"{url}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok"}
    dead_port = free_port()
    broken_broker = {**web_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{dead_port}/0"}
    with gunicorn_serving(env=broken_broker, log_path=tmp_path / "broker.log", options=("--workers", "1")) as (url, _):
        status, _, body = get(f"{url}/healthz")
        assert status == 503 and json.loads(body)["failed"] == ["broker"]
    broken_database = {**web_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{dead_port}/nothing"}
    with gunicorn_serving(env=broken_database, log_path=tmp_path / "db.log", options=("--workers", "1")) as (url, _):
        status, _, body = get(f"{url}/healthz")
        assert status == 503 and json.loads(body)["failed"] == ["database"]


def test_json_logs_carry_the_callers_request_id(web_env, tmp_path):
    env = {**web_env, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    log = tmp_path / "web.log"
    with gunicorn_serving(env=env, log_path=log, options=("--workers", "1")) as (url, _):
        _, headers, _ = get(f"{url}/nowhere-at-all/", {"X-Request-ID": "lb-42"})
        assert headers["X-Request-ID"] == "lb-42"
        _, headers, _ = get(f"{url}/nowhere-at-all/", {"X-Request-ID": "not\tsane"})
        assert headers["X-Request-ID"] != "not\tsane" and len(headers["X-Request-ID"]) == 32
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert records, "the web process wrote JSON lines"
    assert any(r["request_id"] == "lb-42" and r["level"] == "WARNING" for r in records), records


def test_json_logs_carry_the_task_id(db):
    from governance.logs import logging_config
    from governance.task_base import instrumented_task

    @instrumented_task(name="tests.telemetry.logs", queue="control", time_limit=10)
    def logs():
        logging.getLogger("tests.telemetry").warning("working")

    config = logging_config(log_format="json", level="INFO")
    handler = logging.StreamHandler(StringIO())
    handler.setFormatter(logging.Formatter())
    from governance.logs import ContextIds, json_formatter

    handler.setFormatter(json_formatter())
    handler.addFilter(ContextIds())
    logger = logging.getLogger("tests.telemetry")
    logger.addHandler(handler)
    try:
        result = logs.apply(task_id="task-7")
    finally:
        logger.removeHandler(handler)
    assert config["handlers"]["console"]["filters"] == ["context_ids"]
    line = json.loads(handler.stream.getvalue().splitlines()[0])
    assert (line["message"], line["task_id"], line["request_id"]) == ("working", "task-7", "")
    assert result.successful()


def test_passwords_keys_and_tokens_never_reach_the_logs(web_env, tmp_path, acme):
    from io import StringIO as Out

    from django.core.management import call_command

    from tests.conftest import make_user

    password = "pw-" + secrets.token_hex(12)
    user = make_user("dana", acme, "admin")
    user.set_password(password)
    user.save()
    key = make_key(acme)
    out = Out()
    call_command("create_api_token", "dana", stdout=out)
    token = out.getvalue().strip().split()[-1]
    unknown_key = "cwk_" + secrets.token_urlsafe(32)
    env = {**web_env, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    log = tmp_path / "web.log"
    with gunicorn_serving(env=env, log_path=log, options=("--workers", "1", "--log-level", "debug")) as (url, _):
        for attempt in (password, password + "-wrong"):
            body = f"username=dana&password={attempt}".encode()
            request = urllib.request.Request(f"{url}/login/", data=body, method="POST",
                                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            try:
                urllib.request.urlopen(request, timeout=30).read()
            except urllib.error.HTTPError:
                pass  # no CSRF cookie: refused, and logged as such
        assert post_spans(url, key, spans(77, 2)) == 200
        with pytest.raises(urllib.error.HTTPError):
            post_spans(url, unknown_key, spans(78, 1))
        assert get(f"{url}/api/v1/projects/", {"Authorization": f"Token {token}"})[0] == 200
        assert get(f"{url}/api/v1/projects/", {"Authorization": f"Token {token}x"})[0] == 401
        assert get(f"{url}/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    text = log.read_text()
    assert "Unauthorized" in text or "Forbidden" in text, "the refusals were logged"
    for secret in (password, key, token, unknown_key, TOKEN):
        assert secret not in text
