"""`giving users reset-2fa EMAIL`: a finance or admin user who lost their authenticator could never log in again
(nothing cleared a TOTP secret). The command gives them a new secret, printing its otpauth:// URI as `users add`
does, ends their sessions, and is audited."""

from __future__ import annotations

import pyotp
from sqlmodel import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core import auth
from core.models import AuditEntry, StaffSession
from core.runtime import Runtime
from tests.core.test_auth import cli, giving
from tests.crm.helpers import PASSWORD

__all__ = ["cli"]  # a fixture, used by name


def _secret(runtime: Runtime, email: str) -> str | None:
    with runtime.read_session() as session:
        user = auth.user_by_email(session, email)
        assert user is not None
        return user.totp_secret


def _log_in(client: TestClient, email: str, code: str) -> int:
    form = client.get("/staff/login")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf, "email": email, "password": PASSWORD, "totp": code},
        follow_redirects=False,
    )
    return answer.status_code


def test_reset_2fa_prints_a_new_uri_ends_sessions_and_the_old_codes_stop(
    runtime: Runtime, cli: CliRunner, client: TestClient
) -> None:
    added = giving(cli, "users", "add", "jo@example.org", "--role", "finance", stdin=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    old_secret = pyotp.parse_uri(added.stdout.strip()).secret
    assert _log_in(client, "jo@example.org", pyotp.TOTP(old_secret).now()) == 303

    result = giving(cli, "users", "reset-2fa", "Jo@Example.org")
    assert result.exit_code == 0, result.output
    [uri] = result.stdout.splitlines()  # the URI is the only thing on stdout, as `users add` prints it
    assert uri.startswith("otpauth://totp/") and "secret=" in uri
    new_secret = pyotp.parse_uri(uri).secret
    assert new_secret != old_secret and _secret(runtime, "jo@example.org") == new_secret

    with runtime.read_session() as session:
        assert all(s.revoked_at is not None for s in session.exec(select(StaffSession)).all())
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "reset_2fa")).one()
        assert entry.actor == "system"
    assert client.get("/staff/", follow_redirects=False).status_code == 303  # the session ended

    client.cookies.clear()
    assert _log_in(client, "jo@example.org", pyotp.TOTP(old_secret).now()) == 400
    # Codes of the new secret log in (the step the old secret used is not held against the new one).
    assert _log_in(client, "jo@example.org", pyotp.TOTP(new_secret).now()) == 303


def test_reset_2fa_of_an_unknown_user_fails_and_writes_nothing(runtime: Runtime, cli: CliRunner) -> None:
    result = giving(cli, "users", "reset-2fa", "nobody@example.org")
    assert result.exit_code == 1 and result.stdout == ""
    with runtime.read_session() as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "reset_2fa")).first() is None
