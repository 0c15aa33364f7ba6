"""Guessing at the login: a stolen password does not open a two-factor account by trying codes, and the
forgotten-password form does the same work whether or not the address is staff (no enumeration by timing)."""

from __future__ import annotations

import datetime as dt
import re
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


def the_next_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)


def test_one_client_gets_a_few_dozen_password_guesses_an_hour_at_an_account_and_locks_out_only_itself(
    runtime: Runtime,
) -> None:
    """The per-minute limit alone let anyone try 10 passwords a minute against one fundraiser (no second factor)
    for ever: 14,400 a day. One client now gets LOGIN_ATTEMPTS_PER_HOUR_FACTOR times the per-minute limit an hour at
    one account; then even the right password waits for the hour (429, Retry-After) from that client. It used to be
    the account that waited, from everywhere: anyone who knew a staff email locked its owner out with 30 tries."""
    add_user(runtime, "f@example.org", "fundraiser")
    per_minute = runtime.settings.web.login_rate_per_minute
    per_hour = per_minute * auth.LOGIN_ATTEMPTS_PER_HOUR_FACTOR
    hour = the_next_hour()
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
        with TestClient(session_app(runtime)) as web:
            refused = log_in(web, "f@example.org")
            assert refused.status_code == 429
            assert web.get("/staff/me").status_code == 401
        with runtime.unit_of_work() as uow:
            result = auth.login(uow, "f@example.org", PASSWORD, client="testclient")
        assert result.rate_limited and result.retry_after == 3600 - minute * 60 - 5
        # The owner, anywhere else, is not locked out by the stranger's guesses.
        with TestClient(session_app(runtime), client=("198.51.100.7", 5000)) as web:
            assert log_in(web, "f@example.org").status_code == 200
            assert web.get("/staff/me").json()["email"] == "f@example.org"
    later = hour + dt.timedelta(hours=1, seconds=5)
    with time_machine.travel(later, tick=False), TestClient(session_app(runtime)) as web:
        assert log_in(web, "f@example.org").status_code == 200


def test_guesses_from_many_addresses_stop_at_the_accounts_ceiling_but_a_known_browser_still_logs_in(
    runtime: Runtime,
) -> None:
    """Counting per client alone would let a guesser with many addresses try for ever: every client together gets
    LOGIN_ACCOUNT_CEILING_FACTOR times the per-minute limit an hour at one account, after which an unknown browser is
    refused even the right password. A browser that logged in to the account before keeps its own count, so even
    the ceiling never locks its owner out. An IPv6 network counts as one client."""
    add_user(runtime, "f@example.org", "fundraiser")
    add_user(runtime, "g@example.org", "fundraiser")
    per_minute = runtime.settings.web.login_rate_per_minute
    ceiling = per_minute * auth.LOGIN_ACCOUNT_CEILING_FACTOR
    with time_machine.travel(the_next_hour() + dt.timedelta(minutes=5), tick=False):
        owner = TestClient(session_app(runtime), client=("192.0.2.10", 5000))
        other = TestClient(session_app(runtime), client=("192.0.2.11", 5000))
        with owner, other:
            assert log_in(owner, "f@example.org").status_code == 200
            assert log_in(other, "g@example.org").status_code == 200  # known to g, not to f
            assert owner.cookies.get(auth.DEVICE_COOKIE) and other.cookies.get(auth.DEVICE_COOKIE)
            # A guesser spreads its tries over many addresses, each within its own limits, up to the ceiling (the
            # owner's first login, from a browser not known yet, was one of the hour's attempts).
            for attempt in range(ceiling - 1):
                client = f"198.51.100.{attempt // per_minute}"
                with runtime.unit_of_work() as uow:
                    guess = auth.login(uow, "f@example.org", f"guess {attempt}", client=client)
                assert guess.error == auth.WRONG_LOGIN and not guess.rate_limited, attempt
            with runtime.unit_of_work() as uow:
                refused = auth.login(uow, "f@example.org", PASSWORD, client="203.0.113.50")
            assert refused.rate_limited and "browser that has logged in" in (refused.error or "")
            with TestClient(session_app(runtime), client=("203.0.113.51", 5000)) as stranger:
                assert log_in(stranger, "f@example.org").status_code == 429
            # The owner's browser still gets in; another account's known browser does not count as known here.
            assert log_in(owner, "f@example.org").status_code == 200
            assert log_in(other, "f@example.org").status_code == 429
    with runtime.read_session() as session:
        limited = [e.detail for e in session.exec(select(AuditEntry)).all() if e.action == "login_rate_limited"]
        assert {entry["limit"] for entry in limited} == {"email-hour"}


def test_a_known_browser_is_known_only_until_the_password_changes(runtime: Runtime) -> None:
    """Whoever knew the password once (and kept the cookie) is a stranger again after the password is changed."""
    add_user(runtime, "f@example.org", "fundraiser")
    per_minute = runtime.settings.web.login_rate_per_minute
    at = the_next_hour() + dt.timedelta(minutes=5)
    with time_machine.travel(at, tick=False), TestClient(session_app(runtime), client=("192.0.2.10", 5000)) as browser:
        assert log_in(browser, "f@example.org").status_code == 200
        with runtime.unit_of_work() as uow:
            user = auth.user_by_email(uow.session, "f@example.org")
            assert user is not None
            auth.set_password(uow, user.id, "a changed passphrase")
        for attempt in range(per_minute * auth.LOGIN_ACCOUNT_CEILING_FACTOR):
            with runtime.unit_of_work() as uow:
                auth.login(uow, "f@example.org", "guess", client=f"198.51.100.{attempt // per_minute}")
        assert log_in(browser, "f@example.org", password="a changed passphrase").status_code == 429


def test_ipv6_clients_are_counted_by_their_64() -> None:
    assert auth.client_network("2001:db8:1:2:aaaa::1") == auth.client_network("2001:db8:1:2:bbbb::7")
    assert auth.client_network("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert auth.client_network("2001:db8:1:3::1") != auth.client_network("2001:db8:1:2::1")
    assert auth.client_network("::ffff:198.51.100.7") == auth.client_network("198.51.100.7") == "198.51.100.7"
    assert auth.client_network("testclient") == "testclient"


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


def run_jobs(runtime: Runtime) -> None:
    """What a worker does: run every job queued so far, and those they queue."""
    worker = InlineWorker(runtime, threads=1)
    worker.start(scheduler=False)
    try:
        worker.join()
    finally:
        worker.stop()


def emailed_reset_tokens(mailbox, address: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The `token` of each reset link emailed to `address` (the link is the first URL of the text part)."""
    tokens = []
    for message in mailbox.to(address):
        text = message.get_body(("plain",)).get_content()
        link = re.search(r"https?://\S+", text).group(0)  # type: ignore[union-attr]
        tokens.append(link.split("token=", 1)[1])
    return tokens


def test_a_new_password_ends_every_other_reset_link_of_the_user(
    runtime: Runtime,
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    """Someone who asked twice (or an attacker who asked too) had a second link that still reset the password for
    the rest of the hour after the first was used: a password change now ends all of the user's links."""
    from core import signing

    mailbox, _ = smtp_server
    add_user(runtime, "jo@example.org", "fundraiser")
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, "jo@example.org")
        assert auth.request_password_reset(uow, "jo@example.org")
    run_jobs(runtime)
    first, second = emailed_reset_tokens(mailbox, "jo@example.org")
    with runtime.unit_of_work() as uow:
        secret = signing.signing_secret(uow.session, "")
    with runtime.unit_of_work() as uow:
        auth.reset_password(uow, first, "the owner's new passphrase", secret=secret)
    with pytest.raises(auth.ValidationFailed, match="used or has expired"), runtime.unit_of_work() as uow:
        auth.reset_password(uow, second, "somebody else's passphrase", secret=secret)
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, "jo@example.org", "the owner's new passphrase").ok


def test_a_database_reader_cannot_use_an_outstanding_reset(
    runtime: Runtime,
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    """The reset's key used to be stored as itself, in `password_resets` and in its email job's arguments: whoever
    could read the database (the signing secret too, kept in `app_secrets` when none is configured) could sign it
    and choose a staff member's password within the hour. Now the key exists only in the emailed link; the row
    keeps its SHA-256, and nothing stored, signed, opens the reset."""
    from core import signing

    mailbox, _ = smtp_server
    add_user(runtime, "jo@example.org", "fundraiser")
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, "jo@example.org")
    with runtime.read_session() as session:
        # Before the email job has run: the row and the job's arguments.
        stored = {row.token_hash for row in session.exec(select(PasswordReset)).all()}
        stored |= {str(value) for job in session.exec(select(Job)).all() for value in job.arguments.values()}
    run_jobs(runtime)
    [token] = emailed_reset_tokens(mailbox, "jo@example.org")
    with runtime.read_session() as session:
        secret = signing.signing_secret(session, "")  # what a reader of `app_secrets` has
        rows = session.exec(select(PasswordReset)).all()
        stored |= {row.token_hash for row in rows}
        stored |= {str(value) for job in session.exec(select(Job)).all() for value in job.arguments.values()}
    key = str(signing.unsign(secret, auth.PASSWORD_RESET_PURPOSE, token, max_age_seconds=3600))
    assert key not in stored
    assert [row.token_hash for row in rows] == [auth.hash_token(key)]
    # Another run of the email job for the same reset (a duplicate message) finds nothing to send.
    reset_ids = {job.arguments["reset_id"] for job in _jobs(runtime, "core.send_password_reset")}
    with runtime.unit_of_work() as uow:
        assert [auth.issue_password_reset_link(uow, r, base_url="x", secret=secret) for r in reset_ids] == [None]
    for value in stored:
        forged = auth.password_reset_link("http://testserver", secret, value).split("token=", 1)[1]
        with pytest.raises(auth.ValidationFailed, match="used or has expired"), runtime.unit_of_work() as uow:
            auth.reset_password(uow, forged, "the intruder's passphrase", secret=secret)
    with runtime.unit_of_work() as uow:
        assert auth.reset_password(uow, token, "the owner's new passphrase", secret=secret).email == "jo@example.org"


def _jobs(runtime: Runtime, actor_name: str) -> list[Job]:
    with runtime.read_session() as session:
        return list(session.exec(select(Job).where(Job.actor_name == actor_name)).all())
