"""OFREP: agents ask which version to run, and get the answers and error codes the protocol defines.

These go through Django's test client; tests/test_ofrep_sdk.py asks a real gunicorn through the
real OpenFeature SDK and OFREP provider.
"""

import json

import pytest

from tests.conftest import make_key

FLAG = "agents-version"
URL = f"/ofrep/v1/evaluate/flags/{FLAG}"
BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture(autouse=True)
def _fresh_ofrep_caches():
    # The caches live in this process; the test database is rolled back and its ids reused.
    from governance.rollouts.ofrep import caches_clear

    caches_clear()
    yield
    caches_clear()


def make_rollout(project, *, flag=FLAG, state="progressing", weight=0, baseline="1.0.0", canary="1.1.0",
                 known_good="1.0.0"):
    from governance.rollouts.models import Rollout

    return Rollout.objects.create(project=project, name=f"{flag} {canary}", service="agents", flag_key=flag,
                                  baseline_version=baseline, canary_version=canary, known_good_version=known_good,
                                  state=state, weight=weight)


def evaluate(client, key, body, url=URL, **headers):
    payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=payload, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}",
                       **headers)


def agent(n: int) -> dict:
    return {"context": {"targetingKey": f"agent-instance-{n}"}}


def test_it_answers_split_with_the_version_each_agent_runs(client, acme, acme_key):
    rollout = make_rollout(acme, weight=30)
    answers = [evaluate(client, acme_key, agent(n)).json() for n in range(200)]
    first = answers[0]
    assert set(first) == {"key", "reason", "variant", "value", "metadata"}
    assert first["key"] == FLAG and first["reason"] == "SPLIT"
    assert first["metadata"] == {"rolloutId": rollout.id, "rolloutState": "progressing", "weight": 30}
    pairs = {(a["variant"], a["value"]) for a in answers}
    assert pairs == {("canary", "1.1.0"), ("baseline", "1.0.0")}
    on_canary = sum(a["variant"] == "canary" for a in answers)
    assert 40 <= on_canary <= 80  # about 30% of 200


@pytest.mark.parametrize(("state", "weight", "variant", "value"), [
    ("pending", 0, "baseline", "1.0.0"),
    ("progressing", 0, "baseline", "1.0.0"),
    ("progressing", 100, "canary", "1.1.0"),
    ("promoted", 100, "canary", "1.1.0"),
    ("aborted", 25, "known_good", "0.9.0"),
    ("rolled_back", 25, "known_good", "0.9.0"),
])
def test_it_answers_static_when_everyone_runs_one_version(client, acme, acme_key, state, weight, variant, value):
    make_rollout(acme, state=state, weight=weight, known_good="0.9.0")
    for n in range(20):
        answer = evaluate(client, acme_key, agent(n))
        assert answer.status_code == 200
        assert answer.json() | {"metadata": None} == {"key": FLAG, "reason": "STATIC", "variant": variant,
                                                      "value": value, "metadata": None}


def test_the_latest_rollout_of_the_flag_decides(client, acme, acme_key):
    make_rollout(acme, state="promoted", canary="1.1.0")
    make_rollout(acme, state="pending", baseline="1.1.0", canary="1.2.0")
    assert evaluate(client, acme_key, agent(1)).json()["value"] == "1.1.0"


def test_a_rollback_reaches_every_agent_at_its_next_evaluation_after_the_cache(client, acme, acme_key, settings):
    settings.OFREP_CACHE_SECONDS = 0
    from governance.rollouts.models import Rollout

    rollout = make_rollout(acme, weight=50)
    before = {evaluate(client, acme_key, agent(n)).json()["value"] for n in range(50)}
    assert before == {"1.0.0", "1.1.0"}
    Rollout.objects.filter(pk=rollout.pk).update(state="rolled_back", weight=0)
    after = {evaluate(client, acme_key, agent(n)).json()["value"] for n in range(50)}
    assert after == {"1.0.0"}


def test_the_flag_of_another_project_is_not_found(client, acme, acme_key, globex):
    make_rollout(globex)
    answer = evaluate(client, acme_key, agent(1))
    assert answer.status_code == 404
    assert answer.json() == {"key": FLAG, "errorCode": "FLAG_NOT_FOUND",
                             "errorDetails": f"no rollout in this project has the flag '{FLAG}'"}


@pytest.mark.parametrize(("body", "code"), [
    ({}, "TARGETING_KEY_MISSING"),
    ({"context": {}}, "TARGETING_KEY_MISSING"),
    ({"context": {"targetingKey": ""}}, "TARGETING_KEY_MISSING"),
    ({"context": {"region": "eu"}}, "TARGETING_KEY_MISSING"),
    ({"context": {"targetingKey": 7}}, "INVALID_CONTEXT"),
    ({"context": ["agent-1"]}, "INVALID_CONTEXT"),
    ({"context": "agent-1"}, "INVALID_CONTEXT"),
    ("{not json", "PARSE_ERROR"),
    ("[1, 2]", "PARSE_ERROR"),
    (b"\xff\xfe", "PARSE_ERROR"),
])
def test_a_bad_request_is_refused_with_the_protocols_error_code(client, acme, acme_key, body, code):
    make_rollout(acme, weight=50)
    answer = evaluate(client, acme_key, body)
    assert answer.status_code == 400
    payload = answer.json()
    assert payload["key"] == FLAG and payload["errorCode"] == code and payload["errorDetails"]


def test_a_body_over_the_limit_is_a_parse_error(client, acme, acme_key, settings):
    settings.OFREP_MAX_BODY_BYTES = 100
    make_rollout(acme)
    answer = evaluate(client, acme_key, {"context": {"targetingKey": "a" * 200}})
    assert answer.status_code == 400 and answer.json()["errorCode"] == "PARSE_ERROR"


def test_bulk_errors_have_no_flag_key(client, acme, acme_key):
    answer = evaluate(client, acme_key, {"context": {}}, url=BULK)
    assert answer.status_code == 400
    assert set(answer.json()) == {"errorCode", "errorDetails"}
    assert answer.json()["errorCode"] == "TARGETING_KEY_MISSING"


def test_keys_missing_unknown_or_revoked_are_refused(client, acme, acme_key, alice):
    from governance.models import IngestKey
    from governance.services import ingest_key_revoke

    make_rollout(acme)
    assert client.post(URL, data=json.dumps(agent(1)), content_type="application/json").status_code == 401
    assert evaluate(client, "cwk_unknown", agent(1)).status_code == 401
    revoked = make_key(acme)
    ingest_key_revoke(key=IngestKey.objects.get(hint=revoked[:10]), actor=alice)
    answer = evaluate(client, revoked, agent(1))
    assert answer.status_code == 403 and answer.json()["errorDetails"] == "this ingest key was revoked"
    assert evaluate(client, acme_key, agent(1)).status_code == 200


def test_the_protocols_api_key_header_is_accepted_too(client, acme, acme_key):
    make_rollout(acme)
    answer = client.post(URL, data=json.dumps(agent(1)), content_type="application/json", HTTP_X_API_KEY=acme_key)
    assert answer.status_code == 200


def test_over_the_rate_limit_an_agent_is_told_when_to_retry(client, acme, acme_key, settings):
    settings.OFREP_RATE_LIMIT_PER_SECOND = 5
    make_rollout(acme)
    statuses = [evaluate(client, acme_key, agent(n)) for n in range(8)]
    refused = [answer for answer in statuses if answer.status_code == 429]
    # 8 evaluations may straddle a second's boundary: at least one window is over its 5.
    assert refused, [answer.status_code for answer in statuses]
    assert refused[0]["Retry-After"] == "1"
    assert refused[0].json()["errorDetails"] == "over 5 evaluations a second for this key"


def test_bulk_evaluates_every_flag_of_the_project_with_an_etag(client, acme, acme_key, globex, settings):
    settings.OFREP_CACHE_SECONDS = 0
    from governance.rollouts.models import Rollout

    make_rollout(acme, flag="planner-version", state="promoted", canary="2.0.0")
    rollout = make_rollout(acme, weight=0)
    make_rollout(globex, flag="globex-version")
    answer = evaluate(client, acme_key, agent(1), url=BULK)
    assert answer.status_code == 200
    assert [(f["key"], f["value"]) for f in answer.json()["flags"]] == [
        (FLAG, "1.0.0"), ("planner-version", "2.0.0")]
    etag = answer["ETag"]
    unchanged = evaluate(client, acme_key, agent(1), url=BULK, HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged["ETag"] == etag
    Rollout.objects.filter(pk=rollout.pk).update(state="promoted", weight=100)
    changed = evaluate(client, acme_key, agent(1), url=BULK, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["flags"][0]["value"] == "1.1.0"


def test_only_post_is_allowed(client, acme, acme_key):
    make_rollout(acme)
    answer = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {acme_key}")
    assert answer.status_code == 405 and answer["Allow"] == "POST"


def test_a_flag_key_with_a_nul_byte_is_not_found(acme, acme_key):
    from governance.rollouts.ofrep import ofrep_answer

    make_rollout(acme)
    status, _, body = ofrep_answer(method="POST", path=f"{URL}\x00", body=json.dumps(agent(1)).encode(),
                                   authorization=f"Bearer {acme_key}")
    assert status == 404 and json.loads(body)["errorCode"] == "FLAG_NOT_FOUND"
