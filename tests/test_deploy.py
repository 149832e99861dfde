"""Production behaviour: `check --deploy` passes as configured, a database restart is survived,
an unreachable database is a 503 that says to retry, not a 500."""

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.test import Client

from tests.conftest import make_user
from tests.gunicorn import ROOT, free_port, gunicorn_serving

# What the README's production section asks for; everything else is left at its default.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "k3y-" + "a1B2c3D4e5F6g7H8i9J0" * 3,
    "ALLOWED_HOSTS": "causeway.example.com",
    "DATABASE_URL": "postgres://causeway:secret@db.example.com:5432/causeway",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
}


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    # Only what a production host would have besides env: not this test run's settings.
    host = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME") if k in os.environ}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**host, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_production_configuration_passes_check_deploy_at_warning_level(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    env={**PRODUCTION_ENV, "CAUSEWAY_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_what_a_plain_http_configuration_lacks(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    env={**PRODUCTION_ENV, "HTTPS": "false", "CAUSEWAY_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_https_settings_come_from_the_environment(tmp_path):
    env = {**PRODUCTION_ENV, "CAUSEWAY_DATA_DIR": str(tmp_path), "SECURE_HSTS_SECONDS": "600",
           "SECURE_HSTS_PRELOAD": "true", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto", "SECURE_SSL_REDIRECT": "false"}
    shown = manage("shell", "-v", "0", "-c", "from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, "
                   "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE)",
                   env=env)
    assert shown.stdout.split("\n")[0] == "600 True ('HTTP_X_FORWARDED_PROTO', 'https') False True"
    refused = manage("check", env={**env, "HTTPS": "maybe"})
    assert refused.returncode != 0 and "HTTPS must be true or false" in refused.stderr


def get(url: str, headers: dict) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@pytest.fixture
def alice_credentials(transactional_db, acme):
    """A session cookie and an API token for alice, admin of acme."""
    from governance.services import api_token_create

    alice = make_user("alice", acme, "admin")
    client = Client()
    client.force_login(alice)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}, {
        "Authorization": f"Token {api_token_create(user=alice)}"}


def test_pages_and_the_api_survive_a_database_restart(gunicorn_url, alice_credentials):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("persistent connections are kept on PostgreSQL only")
    session, token = alice_credentials
    assert get(f"{gunicorn_url}/api/v1/projects/", token)[0] == 200
    assert get(f"{gunicorn_url}/p/acme/traces/", session)[0] == 200
    # What a restart does to the server's kept connections: PostgreSQL ends them. Only the test
    # database's, which this test made, and never this test's own.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert cursor.fetchone()[0] >= 1
    assert get(f"{gunicorn_url}/api/v1/projects/", token)[0] == 200
    assert get(f"{gunicorn_url}/p/acme/traces/", session)[0] == 200


@pytest.fixture
def gunicorn_without_database(tmp_path):
    """gunicorn whose database does not answer: a PostgreSQL URL on a port where nothing listens."""
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/causeway", "DEBUG": "false",
           "SECRET_KEY": "tests", "CAUSEWAY_DATA_DIR": str(tmp_path), "HTTPS": "false"}
    with gunicorn_serving(env=env, log_path=tmp_path / "gunicorn.log", options=("--workers", "1")) as (url, _):
        yield url


def test_while_the_database_is_down_the_api_answers_503_json_with_retry_after(gunicorn_without_database):
    status, headers, body = get(f"{gunicorn_without_database}/api/v1/projects/", {"Authorization": "Token cwt_" + "0" * 64})
    assert status == 503
    assert headers["Content-Type"] == "application/json" and headers["Retry-After"] == "2"
    assert '"code":"unavailable"' in body.replace(" ", "")


def test_while_the_database_is_down_pages_answer_a_503_page(gunicorn_without_database):
    status, headers, body = get(f"{gunicorn_without_database}/p/acme/traces/", {"Cookie": "sessionid=" + "x" * 32})
    assert status == 503
    assert headers["Content-Type"].startswith("text/html") and headers["Retry-After"] == "2"
    assert "Service unavailable" in body and "database is unavailable" in body
