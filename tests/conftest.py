"""Named people and projects built in code, a real Celery worker, a real browser.

alice is admin of "acme", bob a viewer of "acme", charlie admin of "globex".
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

# Django is imported inside the fixtures, so the pure-core tests also run with `-p no:django`.
CHROMIUM = "/usr/bin/chromium"


def served_from_here(body: str) -> list[str]:
    """The page's script and stylesheet URLs, asserted to be this server's own (no CDN: the app works
    offline). Not `"cdn" not in body`: a random CSRF token can spell it."""
    urls = re.findall(r'<script[^>]* src="([^"]+)"', body) + re.findall(r'<link[^>]* href="([^"]+)"', body)
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    return urls


def make_user(username: str, project=None, role: str = "viewer"):
    from django.contrib.auth import get_user_model

    from governance.models import Membership

    user = get_user_model().objects.create_user(username=username, password=f"{username}-password")
    if project is not None:
        Membership.objects.create(user=user, project=project, role=role)
    return user


def make_project(name: str):
    from governance.models import Project

    return Project.objects.create(name=name, slug=name.lower())


def make_key(project) -> str:
    from governance.services import ingest_key_create

    return ingest_key_create(project=project, name=f"{project.slug} agents", check_role=False)[1]


@pytest.fixture
def acme(db):
    return make_project("Acme")


@pytest.fixture
def globex(db):
    return make_project("Globex")


@pytest.fixture
def alice(acme):
    return make_user("alice", acme, "admin")


@pytest.fixture
def bob(acme):
    return make_user("bob", acme, "viewer")


@pytest.fixture
def charlie(globex):
    return make_user("charlie", globex, "admin")


@pytest.fixture
def acme_key(acme):
    return make_key(acme)


@pytest.fixture
def globex_key(globex):
    return make_key(globex)


def api_as(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture(scope="session")
def celery_app_configured():
    from governance.celery import app

    return app


@pytest.fixture
def celery_worker(transactional_db, celery_app_configured):
    """A real Celery worker on the configured broker (Redis in CI), in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(celery_app_configured, pool="solo", perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker


# Instants at which a test that depended on today's date or the time of day would show it:
# counts are bucketed from the epoch and windows end "now", all in UTC.
INSTANTS = {
    # an epoch-aligned 3-day bucket began an hour ago (2026-12-03 00:00 UTC)
    "bucket-boundary": datetime(2026, 12, 3, 1, 0, tzinfo=UTC),
    # the last second of a day, a month and a year
    "year-end": datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    # half an hour after Europe's clocks went forward, with this process's local time Berlin's:
    # anything that used local time instead of UTC would be an hour out
    "dst-change": datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin")),
}
at_fixed_instants = pytest.mark.parametrize("clock", list(INSTANTS), indirect=True)


@pytest.fixture
def clock(request):
    """The clock stopped at one of INSTANTS ("bucket-boundary" unless parametrized with at_fixed_instants).

    time.time(), datetime.now() and so timezone.now() answer it in every thread of this
    process (the live server, the Celery worker); time.monotonic() and so timeouts run on.
    Processes started from here (gunicorn, Node.js, agents, Chromium) keep the real clock, so
    browser tests do without it: a session cookie dated from a stopped clock may have expired.
    """
    import time_machine

    with time_machine.travel(INSTANTS[getattr(request, "param", "bucket-boundary")], tick=False) as traveller:
        yield traveller


@pytest.fixture(scope="module")
def browser():
    """Chromium for the tests of one module: while Playwright runs, this thread has a running
    event loop and Django refuses database calls from it unless told the calls are safe. That
    permission ends with the module, so no other test runs with it."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does, as root)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as env, sync_playwright() as playwright:
        env.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def log_in(page, live_server, username: str):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-password")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


@pytest.fixture(autouse=True)
def _forget_quiet_spans():
    """The analysis keeps the quiet traces it read for its next run in the process (traces.services);
    a test starts with none, as a new worker does."""
    from traces.services import quiet_spans

    quiet_spans.clear()


@pytest.fixture(autouse=True, scope="session")
def _clean_embedded_broker():
    """Messages an earlier run left in the embedded broker must not reach this run's workers."""
    from django.conf import settings

    if settings.configured and settings.BROKER_IS_EMBEDDED:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.EMBEDDED_BROKER_PATH}{suffix}").unlink(missing_ok=True)
    yield


def _database_url(settings_dict: dict) -> str:
    """The URL of the database this test run uses (the test database, not the configured one)."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{settings_dict.get('HOST') or '127.0.0.1'}:"
            f"{settings_dict.get('PORT') or 5432}/{settings_dict['NAME']}")


def production_env(connection, data_dir) -> dict:
    """The environment of a web process as production runs it (DEBUG off), on the test database,
    over plain HTTP on 127.0.0.1."""
    return {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict), "DEBUG": "false",
            "SECRET_KEY": "tests", "CAUSEWAY_DATA_DIR": str(data_dir), "HTTPS": "false"}


@pytest.fixture
def gunicorn_url(transactional_db, tmp_path):
    """gunicorn serving governance.wsgi on the test database, as production runs it: DEBUG off."""
    from django.db import connection

    from tests.gunicorn import gunicorn_serving

    with gunicorn_serving(env=production_env(connection, tmp_path), log_path=tmp_path / "gunicorn.log", options=("--workers", "1", "--timeout", "60")) as (
            url, _):
        yield url


@pytest.fixture
def receiver():
    """A real local webhook receiver (tests/receivers.py): .url, .received, .answers."""
    from tests.receivers import webhook_receiver

    with webhook_receiver() as r:
        yield r
