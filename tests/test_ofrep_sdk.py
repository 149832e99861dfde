"""OFREP through the real OpenFeature SDK and OFREP provider, against a real gunicorn, as agents use it.

gunicorn serves /ofrep/ from governance/wsgi.py, past Django's middleware, with its one-second
cache: changes to a rollout are made here in the test database and seen by the server within it.
"""

import http.client
import json
import time
import urllib.parse

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.conftest import make_key, make_project, make_user, production_env
from tests.gunicorn import gunicorn_serving

FLAG = "planner-version"
AGENTS = [f"planner-{n}" for n in range(200)]
CACHE_SECONDS = 1.0


@pytest.fixture
def serve(transactional_db, tmp_path):
    """serve(**env) -> the URL of a gunicorn (2 workers) on the test database with those settings."""
    from contextlib import ExitStack

    from django.db import connection

    with ExitStack() as stack:
        def start(**env):
            environment = {**production_env(connection, tmp_path), **{k: str(v) for k, v in env.items()}}
            url, _ = stack.enter_context(gunicorn_serving(
                env=environment, log_path=tmp_path / f"gunicorn-{len(env)}.log",
                options=("--workers", "2", "--timeout", "60")))
            return url
        yield start


@pytest.fixture
def acme_rollout(transactional_db):
    from governance.rollouts.models import Rollout

    project = make_project("Acme")
    rollout = Rollout.objects.create(project=project, name="planner 1.5", service="planner", flag_key=FLAG,
                                     baseline_version="1.4.0", canary_version="1.5.0", known_good_version="1.4.0",
                                     state="progressing", weight=10)
    return project, rollout


def openfeature_client(url: str, key: str, domain: str):
    provider = OFREPProvider(url, headers_factory=lambda: {"Authorization": f"Bearer {key}"})
    api.set_provider(provider, domain=domain)
    return api.get_client(domain), provider


def versions(client, agents=AGENTS) -> dict[str, str]:
    answers = {}
    for agent in agents:
        details = client.get_string_details(FLAG, "unset", EvaluationContext(targeting_key=agent))
        assert details.error_code is None, details.error_message
        answers[agent] = details.value
    return answers


def set_rollout(rollout, **fields):
    from governance.rollouts.models import Rollout

    Rollout.objects.filter(pk=rollout.pk).update(**fields)
    time.sleep(CACHE_SECONDS + 0.1)  # every gunicorn worker's copy has expired


def post(url: str, path: str, body, headers=None) -> tuple[int, dict, bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_the_sdk_evaluates_the_flag_to_the_version_to_run(serve, acme_rollout):
    project, rollout = acme_rollout
    client, _ = openfeature_client(serve(), make_key(project), "evaluate")
    details = client.get_string_details(FLAG, "unset", EvaluationContext(targeting_key="planner-1"))
    assert details.error_code is None
    assert details.reason == Reason.SPLIT and details.variant in ("canary", "baseline")
    assert details.value == {"canary": "1.5.0", "baseline": "1.4.0"}[details.variant]
    assert details.flag_metadata == {"rolloutId": rollout.id, "rolloutState": "progressing", "weight": 10}


def test_agents_stay_on_the_canary_as_the_weight_rises_and_all_return_on_rollback(serve, acme_rollout):
    project, rollout = acme_rollout
    client, _ = openfeature_client(serve(), make_key(project), "sticky")
    on_canary: set[str] = set()
    for weight in (10, 25, 50, 75):
        set_rollout(rollout, weight=weight)
        answers = versions(client)
        now_on_canary = {agent for agent, version in answers.items() if version == "1.5.0"}
        assert on_canary <= now_on_canary, f"agents moved back to the baseline at {weight}%"
        assert abs(len(now_on_canary) - weight * len(AGENTS) / 100) <= 0.1 * len(AGENTS)
        assert set(answers.values()) == {"1.4.0", "1.5.0"}
        on_canary = now_on_canary

    from governance.rollouts.models import Rollout

    a_canary = min(on_canary)
    Rollout.objects.filter(pk=rollout.pk).update(state="rolled_back", weight=0)
    rolled_back_at = time.monotonic()
    while versions(client, [a_canary])[a_canary] != "1.4.0":
        assert time.monotonic() - rolled_back_at < CACHE_SECONDS + 0.5, "the rollback took longer than the cache"
    time.sleep(CACHE_SECONDS + 0.1)  # every gunicorn worker's copy has expired
    assert set(versions(client).values()) == {"1.4.0"}
    details = client.get_string_details(FLAG, "unset", EvaluationContext(targeting_key="planner-1"))
    assert (details.reason, details.variant, details.value) == (Reason.STATIC, "known_good", "1.4.0")


def test_the_sdk_reports_the_protocols_errors(serve, acme_rollout):
    from governance.models import IngestKey
    from governance.services import ingest_key_revoke

    project, _ = acme_rollout
    url = serve()
    client, _ = openfeature_client(url, make_key(project), "errors")
    missing = client.get_string_details(FLAG, "default", EvaluationContext())
    assert (missing.error_code, missing.value) == (ErrorCode.TARGETING_KEY_MISSING, "default")
    assert "targetingKey" in missing.error_message
    unknown = client.get_string_details("no-such-flag", "default", EvaluationContext(targeting_key="planner-1"))
    assert unknown.error_code == ErrorCode.FLAG_NOT_FOUND

    stranger, _ = openfeature_client(url, "cwk_not-a-key", "stranger")
    refused = stranger.get_string_details(FLAG, "default", EvaluationContext(targeting_key="planner-1"))
    assert (refused.error_code, refused.error_message) == (ErrorCode.GENERAL, "unauthorized")
    revoked_key = make_key(project)
    ingest_key_revoke(key=IngestKey.objects.get(hint=revoked_key[:10]), actor=make_user("alice", project, "admin"))
    revoked, _ = openfeature_client(url, revoked_key, "revoked")
    forbidden = revoked.get_string_details(FLAG, "default", EvaluationContext(targeting_key="planner-1"))
    assert (forbidden.error_code, forbidden.error_message) == (ErrorCode.GENERAL, "forbidden")


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "PARSE_ERROR"),
    ({"context": {"targetingKey": ["planner-1"]}}, "INVALID_CONTEXT"),
    ({"context": {}}, "TARGETING_KEY_MISSING"),
])
def test_gunicorn_answers_bad_requests_with_the_protocols_codes(serve, acme_rollout, body, code):
    project, _ = acme_rollout
    status, headers, payload = post(serve(), f"/ofrep/v1/evaluate/flags/{FLAG}", body,
                                    {"Authorization": f"Bearer {make_key(project)}"})
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(payload)["errorCode"] == code and json.loads(payload)["key"] == FLAG


def test_bulk_evaluation_answers_304_while_nothing_changed(serve, acme_rollout):
    project, rollout = acme_rollout
    url, auth = serve(), {"Authorization": f"Bearer {make_key(project)}"}
    body = {"context": {"targetingKey": "planner-1"}}
    status, headers, payload = post(url, "/ofrep/v1/evaluate/flags", body, auth)
    assert status == 200 and [flag["key"] for flag in json.loads(payload)["flags"]] == [FLAG]
    etag = headers["ETag"]
    status, headers, payload = post(url, "/ofrep/v1/evaluate/flags", body, {**auth, "If-None-Match": etag})
    assert (status, headers["ETag"], payload) == (304, etag, b"")
    set_rollout(rollout, state="promoted", weight=100)
    status, headers, payload = post(url, "/ofrep/v1/evaluate/flags", body, {**auth, "If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert json.loads(payload)["flags"][0]["value"] == "1.5.0"


def test_over_the_rate_limit_the_sdk_is_told_when_to_retry(serve, acme_rollout):
    project, _ = acme_rollout
    client, provider = openfeature_client(serve(OFREP_RATE_LIMIT_PER_SECOND=3), make_key(project),
                                          "limited")
    outcomes = [client.get_string_details(FLAG, "default", EvaluationContext(targeting_key=f"planner-{n}"))
                for n in range(20)]
    limited = [details for details in outcomes if details.error_code is not None]
    assert limited and all(details.error_code == ErrorCode.GENERAL for details in limited)
    assert "Rate limited, retry after: 1" in limited[0].error_message
    assert sum(details.error_code is None for details in outcomes) >= 3
    assert provider.retry_after is not None  # the provider holds back until Retry-After has passed
