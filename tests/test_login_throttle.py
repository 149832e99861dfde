"""Login throttling (django-axes): too many wrong passwords for an account, or from an address,
and logging in is refused for a while, even with the right password; the page says so."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

LIMIT = settings.AXES_FAILURE_LIMIT


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Hundreds of logins: the production hasher's deliberate slowness would cost minutes here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def log_in(client, url: str, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_thirty_wrong_passwords_lock_the_account_even_against_the_right_one(client, alice, url):
    alice.is_staff = True
    alice.save()
    answers = [log_in(client, url, "alice", f"guess-{n}").status_code for n in range(30)]
    assert answers[:LIMIT - 1] == [200] * (LIMIT - 1)  # the form again, saying the password was wrong
    assert set(answers[LIMIT:]) == {429}
    response = log_in(client, url, "alice", "alice-password")
    assert response.status_code == 429 and not logged_in(client)
    page = response.content.decode()
    assert "Too many failed logins" in page and "15 minutes" in page and "even with the right password" in page


def test_an_account_is_locked_whatever_address_the_guesses_come_from(client, alice):
    for n in range(LIMIT):
        log_in(client, "/login/", "alice", f"guess-{n}", address=f"10.0.1.{n}")
    assert log_in(client, "/login/", "alice", "alice-password", address="10.0.2.1").status_code == 429
    assert not logged_in(client)


def test_an_address_is_locked_whatever_accounts_it_guesses(client, alice, bob):
    for n in range(LIMIT):
        log_in(client, "/login/", f"user-{n}", "guess", address="10.0.3.1")
    assert log_in(client, "/login/", "alice", "alice-password", address="10.0.3.1").status_code == 429
    # The guesses were never against bob's account: from elsewhere he logs in.
    assert log_in(client, "/login/", "bob", "bob-password", address="10.0.3.2").status_code == 302


def test_the_lockout_ends_after_the_cool_off(client, alice):
    from axes.models import AccessAttempt

    for n in range(LIMIT):
        log_in(client, "/login/", "alice", f"guess-{n}")
    assert log_in(client, "/login/", "alice", "alice-password").status_code == 429
    # As if the cool-off had passed: the failures are dated back rather than the test waiting.
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert log_in(client, "/login/", "alice", "alice-password").status_code == 302
    assert logged_in(client)


def test_a_successful_login_clears_the_accounts_failures(client, alice):
    for n in range(LIMIT - 1):
        log_in(client, "/login/", "alice", f"guess-{n}")
    assert log_in(client, "/login/", "alice", "alice-password").status_code == 302
    client.logout()
    for n in range(LIMIT - 1):
        log_in(client, "/login/", "alice", f"guess-{n}")
    assert log_in(client, "/login/", "alice", "alice-password").status_code == 302
