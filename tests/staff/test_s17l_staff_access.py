"""Staff access follow-ups: a token's "Last used" is recorded (at most once a minute), an admin resets a user's
two-factor set-up from the users page, the subject access export is a POST form with the CSRF check, and a login
over a live session ends the old session."""

from __future__ import annotations

import datetime as dt
import json
import re

import pyotp
import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core import auth
from core.clock import uk_date, utc_now
from core.models import ApiToken, AuditEntry, StaffSession, StaffUser
from core.runtime import Runtime
from tests.staff.conftest import PASSWORD, StaffAccount, add_supporter, csrf_of, log_in

# --- 1. a token's last use ------------------------------------------------------------------------------------


def _last_used_cell(html: str, name: str) -> str:
    row = re.search(rf"<td>{re.escape(name)}</td>(.*?)</tr>", html, re.S)
    assert row, f"no row for the token {name!r}"
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    return cells[3]  # user, created, expires, last used


def test_the_tokens_page_shows_when_a_token_was_last_used(client: TestClient, runtime: Runtime, logged_in) -> None:
    csrf = logged_in("admin")
    created = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": "finance@example.org", "name": "reporting", "days": "30"},
    )
    token = re.search(r'<code id="new-token">(gvg_[^<]+)</code>', created.text).group(1)  # type: ignore[union-attr]
    assert _last_used_cell(client.get("/staff/admin/tokens").text, "reporting") == "—"

    start = utc_now()
    with time_machine.travel(start, tick=False):
        assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert _last_used_cell(client.get("/staff/admin/tokens").text, "reporting") == f"{uk_date(start):%d/%m/%Y}"
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).one().last_used_at == start

    # Cheap: another call within the minute writes nothing; one after it records the new time.
    with time_machine.travel(start + dt.timedelta(seconds=30), tick=False):
        assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 200
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).one().last_used_at == start
    later = start + dt.timedelta(seconds=61)
    with time_machine.travel(later, tick=False):
        assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 200
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).one().last_used_at == later

    # A refused token (revoked) records no use.
    with runtime.unit_of_work() as uow:
        assert auth.revoke_api_token(uow, token)
    with time_machine.travel(later + dt.timedelta(minutes=5), tick=False):
        assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 401
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).one().last_used_at == later


# --- 2. resetting two-factor from the users page --------------------------------------------------------------


def _user(runtime: Runtime, email: str) -> StaffUser:
    with runtime.read_session() as session:
        user = auth.user_by_email(session, email)
        assert user is not None
        session.expunge(user)
        return user


def test_an_admin_resets_a_users_two_factor_and_they_enrol_anew(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount], logged_in
) -> None:
    finance = staff_accounts["finance"]
    other = TestClient(client.app)
    log_in(other, finance)  # their live session, in another browser
    assert other.get("/staff/").status_code == 200
    old_secret = _user(runtime, finance.email).totp_secret
    # Without the authenticator they tried codes from memory: wrong ones, enough to lock codes for the hour.
    for _ in range(auth.TOTP_FAILURES_PER_HOUR):
        form = other.get("/staff/login?next=/staff/")
        wrong = other.post(
            "/staff/login",
            data={"csrf_token": csrf_of(form.text), "email": finance.email, "password": PASSWORD, "totp": "000000"},
            follow_redirects=False,
        )
        assert wrong.status_code in (303, 400)

    csrf = logged_in("admin")
    finance_id = _user(runtime, finance.email).id
    answer = client.post(f"/staff/admin/users/{finance_id}", data={"csrf_token": csrf, "action": "reset-2fa"})
    assert answer.status_code == 200, answer.text
    uri = re.search(r"<code>(otpauth://totp/[^<]+)</code>", answer.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    new_secret = pyotp.parse_uri(uri).secret
    assert new_secret != old_secret and _user(runtime, finance.email).totp_secret == new_secret

    # Their session has ended; the old authenticator's codes no longer log in, the new one's do.
    assert other.get("/staff/", follow_redirects=False).status_code == 303
    other.cookies.clear()
    stale = StaffAccount(finance.email, finance.role, PASSWORD, old_secret)
    form = other.get("/staff/login")
    refused = other.post(
        "/staff/login",
        data={"csrf_token": csrf_of(form.text), "email": finance.email, "password": PASSWORD, "totp": stale.code()},
        follow_redirects=False,
    )
    assert refused.status_code == 400
    # The wrong codes given for the old secret do not lock out the new one.
    log_in(other, StaffAccount(finance.email, finance.role, PASSWORD, new_secret))

    with runtime.read_session() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "reset_2fa")).one()
        assert entry.actor == "admin@example.org" and entry.object_id == str(finance_id)


def test_an_admin_cannot_reset_their_own_two_factor_from_the_page(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount], logged_in
) -> None:
    csrf = logged_in("admin")
    admin = _user(runtime, "admin@example.org")
    answer = client.post(f"/staff/admin/users/{admin.id}", data={"csrf_token": csrf, "action": "reset-2fa"})
    assert answer.status_code == 400
    assert _user(runtime, "admin@example.org").totp_secret == admin.totp_secret
    with runtime.read_session() as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "reset_2fa")).first() is None


def test_the_users_page_offers_the_reset_for_other_users_with_two_factor(client: TestClient, logged_in) -> None:
    logged_in("admin")
    page = client.get("/staff/admin/users").text
    # The finance user only: not the admin looking (their own row has no form), nor the fundraiser (no secret).
    assert page.count('value="reset-2fa"') == 1
    assert re.search(r'Reset two-factor <span class="visually-hidden">of finance@example.org</span>', page)


# --- 3. the subject access export is a POST ---------------------------------------------------------------------


def test_the_export_is_a_form_post_and_a_cross_site_get_exports_nothing(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime, history=1)
    csrf = logged_in("admin")
    # What a link on another site makes a logged-in admin's browser do (SameSite=Lax sends the cookie).
    assert client.get(f"/staff/supporters/{supporter_id}/export").status_code == 405
    # A POST without this session's token is refused too.
    assert client.post(f"/staff/supporters/{supporter_id}/export", data={}).status_code == 403
    with runtime.read_session() as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "export")).first() is None

    page = client.get(f"/staff/supporters/{supporter_id}").text
    assert f'<form method="post" action="/staff/supporters/{supporter_id}/export"' in page
    answer = client.post(f"/staff/supporters/{supporter_id}/export", data={"csrf_token": csrf_of(page)})
    assert answer.status_code == 200
    assert json.loads(answer.content)["supporter_id"] == str(supporter_id)
    assert csrf_of(page) == csrf
    with runtime.read_session() as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "export")).one()


# --- 4. a login over a live session ---------------------------------------------------------------------------


def test_logging_in_over_a_live_session_ends_the_old_one(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount]
) -> None:
    log_in(client, staff_accounts["fundraiser"])
    old_cookie = client.cookies.get(auth.SESSION_COOKIE)
    assert old_cookie

    # The same browser logs in again (as someone else here) without logging out.
    log_in(client, staff_accounts["finance"])
    new_cookie = client.cookies.get(auth.SESSION_COOKIE)
    assert new_cookie and new_cookie != old_cookie
    with runtime.read_session() as session:
        old = session.get(StaffSession, auth.hash_token(old_cookie))
        assert old is not None and old.revoked_at is not None
        assert auth.session_principal(session, old_cookie) is None
        assert auth.session_principal(session, new_cookie) is not None

    # A copy of the old cookie no longer opens anything.
    stale = TestClient(client.app, cookies={auth.SESSION_COOKIE: old_cookie})
    assert stale.get("/staff/", follow_redirects=False).status_code == 303
