"""Guessing at the login: a stolen password does not open a two-factor account by trying codes, and the
forgotten-password form does the same work whether or not the address is staff (no enumeration by timing)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core import auth
from core.models import AuditEntry, Job, PasswordReset
from core.runtime import InlineWorker, Runtime
from core.settings import Settings
from tests.core.test_auth import add_user, log_in, session_app
from tests.crm.helpers import PASSWORD
from tests.fixtures.app import make_settings
from tests.staff.conftest import csrf_of


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server) -> Settings:  # type: ignore[no-untyped-def]
    _, port = smtp_server
    return make_settings(database_url, tmp_path, email={"smtp_port": port})


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    import argon2

    monkeypatch.setattr(auth, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def wrong_code(totp: pyotp.TOTP, step: int) -> str:
    """A six-digit code accepted at none of the steps around `step`."""
    accepted = {totp.generate_otp(step + drift) for drift in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)


def test_wrong_codes_after_the_right_password_stop_codes_for_the_hour(runtime: Runtime) -> None:
    """Ten tries a minute, three codes accepted out of a million each: a known password used to find a code in
    about three weeks. Now, after TOTP_FAILURES_PER_HOUR wrong codes with the right password, codes are refused
    (answered as any wrong login, so the form never confirms the password) until the hour ends."""
    created = add_user(runtime, "money@example.org", "finance")
    assert created.otpauth_uri is not None
    totp = pyotp.TOTP(pyotp.parse_uri(created.otpauth_uri).secret)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)

    def at(minutes: int) -> time_machine.travel:
        return time_machine.travel(hour + dt.timedelta(minutes=minutes, seconds=5), tick=False)

    def step() -> int:
        return totp.timecode(dt.datetime.now(dt.UTC))

    with at(0), TestClient(session_app(runtime)) as web:
        # Wrong passwords never count against the codes: a stranger cannot lock a user's codes.
        for _ in range(auth.TOTP_FAILURES_PER_HOUR + 1):
            guess = log_in(web, "money@example.org", password="not the password", totp=wrong_code(totp, step()))
            assert guess.status_code == 401
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step())).status_code == 200
    with at(2), TestClient(session_app(runtime)) as web:
        for _ in range(auth.TOTP_FAILURES_PER_HOUR):
            wrong = log_in(web, "money@example.org", totp=wrong_code(totp, step()))
            assert (wrong.status_code, wrong.text) == (401, auth.WRONG_LOGIN)
    with at(4), TestClient(session_app(runtime)) as web:
        refused = log_in(web, "money@example.org", totp=totp.generate_otp(step()))
        assert (refused.status_code, refused.text) == (401, auth.WRONG_LOGIN)
        assert web.get("/staff/me").status_code == 401
    with at(60), TestClient(session_app(runtime)) as web:
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step())).status_code == 200
    with runtime.read_session() as session:
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
        assert actions.count("login_totp_locked") == 1


def test_one_account_gets_a_few_dozen_password_guesses_an_hour_not_fourteen_thousand_a_day(runtime: Runtime) -> None:
    """The per-minute limit alone let anyone try 10 passwords a minute against one fundraiser (no second factor)
    for ever: 14,400 a day. Each email now also gets LOGIN_ATTEMPTS_PER_HOUR_FACTOR times the per-minute limit an
    hour, from any number of addresses; then even the right password waits for the hour (429, Retry-After)."""
    add_user(runtime, "f@example.org", "fundraiser")
    per_minute = runtime.settings.web.login_rate_per_minute
    per_hour = per_minute * auth.LOGIN_ATTEMPTS_PER_HOUR_FACTOR
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    tried = 0
    minute = 0
    while tried < per_hour:
        at = hour + dt.timedelta(minutes=minute, seconds=5)
        with time_machine.travel(at, tick=False), TestClient(session_app(runtime)) as web:
            for _ in range(min(per_minute, per_hour - tried)):
                assert log_in(web, "f@example.org", password="another guess").status_code == 401
                tried += 1
        minute += 1
    with time_machine.travel(hour + dt.timedelta(minutes=minute, seconds=5), tick=False):
        with TestClient(session_app(runtime), client=("198.51.100.7", 5000)) as web:
            refused = log_in(web, "f@example.org")
            assert refused.status_code == 429
            assert web.get("/staff/me").status_code == 401
        with runtime.unit_of_work() as uow:
            result = auth.login(uow, "f@example.org", PASSWORD, client="203.0.113.9")
        assert result.rate_limited and result.retry_after == 3600 - minute * 60 - 5
    later = hour + dt.timedelta(hours=1, seconds=5)
    with time_machine.travel(later, tick=False), TestClient(session_app(runtime)) as web:
        assert log_in(web, "f@example.org").status_code == 200


def row_counts(runtime: Runtime) -> dict[str, int]:
    with runtime.read_session() as session:
        return {
            model.__name__: int(session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one())
            for model in (PasswordReset, Job, AuditEntry)
        }


def test_the_forgotten_password_form_does_the_same_work_for_any_address(
    runtime: Runtime,
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    """A staff address used to cost a reset row, a job, an audit entry, a second commit and a send inside the
    request, an unknown one nothing: the answer's time told who is staff. The request now only queues the
    address; the worker looks it up and emails only a staff user."""
    from giving.app import create_app

    mailbox, _ = smtp_server
    add_user(runtime, "jo@example.org", "fundraiser")
    with TestClient(create_app(runtime=runtime, start_inline_worker=False)) as client:
        token = csrf_of(client.get("/staff/forgot-password").text)
        work: dict[str, dict[str, int]] = {}
        for email in ("nobody@example.org", "jo@example.org"):
            # No worker runs yet: the counts are what the request itself wrote.
            before = row_counts(runtime)
            answer = client.post("/staff/forgot-password", data={"csrf_token": token, "email": email})
            assert answer.status_code == 200 and "If that address belongs to a staff account" in answer.text
            after = row_counts(runtime)
            work[email] = {name: after[name] - before[name] for name in after}
        assert work["nobody@example.org"] == work["jo@example.org"]
    worker = InlineWorker(runtime, threads=1)
    worker.start(scheduler=False)
    try:
        worker.join()
    finally:
        worker.stop()
    assert len(mailbox.to("jo@example.org")) == 1
    assert mailbox.to("nobody@example.org") == []
    with runtime.read_session() as session:
        assert len(session.exec(select(PasswordReset)).all()) == 1


def test_a_new_password_ends_every_other_reset_link_of_the_user(runtime: Runtime) -> None:
    """Someone who asked twice (or an attacker who asked too) had a second link that still reset the password for
    the rest of the hour after the first was used: a password change now ends all of the user's links."""
    from core import signing

    add_user(runtime, "jo@example.org", "fundraiser")
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, "jo@example.org")
        assert auth.request_password_reset(uow, "jo@example.org")
    with runtime.unit_of_work() as uow:
        secret = signing.signing_secret(uow.session, "")
        first, second = (
            auth.password_reset_link("http://testserver", secret, row.token_hash).split("token=")[1]
            for row in uow.session.exec(select(PasswordReset)).all()
        )
    with runtime.unit_of_work() as uow:
        auth.reset_password(uow, first, "the owner's new passphrase", secret=secret)
    with pytest.raises(auth.ValidationFailed, match="used or has expired"), runtime.unit_of_work() as uow:
        auth.reset_password(uow, second, "somebody else's passphrase", secret=secret)
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, "jo@example.org", "the owner's new passphrase").ok
