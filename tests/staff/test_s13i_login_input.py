"""What the login and the staff forms do with text an attacker chooses: a code or a CSRF token that is not ASCII
gets the ordinary answer (wrong login, form expired), never a 500; and a 500 after the right password would have
told a guesser that the password was right without a valid code, with the attempt's count rolled back."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from tests.staff.conftest import StaffAccount, csrf_of, log_in

# The six digits of a code in other scripts: `str.isdigit` takes them all, `hmac.compare_digest` refuses non-ASCII.
FULLWIDTH = {ord("0") + n: 0xFF10 + n for n in range(10)}  # U+FF10 to U+FF19
ARABIC_INDIC = {ord("0") + n: 0x0660 + n for n in range(10)}  # U+0660 to U+0669


def _attempt(client: TestClient, account: StaffAccount, password: str, totp: str):  # type: ignore[no-untyped-def]
    page = client.get("/staff/login")
    return client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": account.email, "password": password, "totp": totp},
        follow_redirects=False,
    )


@pytest.mark.parametrize("script", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_a_code_in_other_digits_is_a_wrong_login_like_any_other(
    runtime: Runtime, client: TestClient, staff_accounts: dict[str, StaffAccount], script: dict[int, int]
) -> None:
    account = staff_accounts["finance"]
    assert account.totp_secret is not None
    # A valid code's digits, but not ASCII ones: never accepted as the code (nor a 500).
    code = pyotp.TOTP(account.totp_secret).now().translate(script)
    wrong_password = _attempt(client, account, "not the password at all", code)
    right_password = _attempt(client, account, account.password, code)
    assert wrong_password.status_code == 400, wrong_password.text
    assert right_password.status_code == wrong_password.status_code, right_password.text
    assert "The email, password or code is wrong." in right_password.text
    assert "giving_session" not in right_password.headers.get("set-cookie", "")
    with runtime.read_session() as session:
        failures = session.exec(select(AuditEntry).where(AuditEntry.action == "login_failed")).all()
    # Both attempts were recorded (and counted): the second was not rolled back by an error.
    assert len(failures) == 2


def test_the_right_code_still_logs_in_after_one_in_other_digits(
    client: TestClient, staff_accounts: dict[str, StaffAccount]
) -> None:
    account = staff_accounts["admin"]
    assert account.totp_secret is not None
    totp = pyotp.TOTP(account.totp_secret)
    assert _attempt(client, account, account.password, totp.now().translate(FULLWIDTH)).status_code == 400
    step = totp.timecode(dt.datetime.now(dt.UTC))
    assert _attempt(client, account, account.password, totp.generate_otp(step + 1)).status_code == 303


@pytest.mark.parametrize("token", ["\u00e9" * 43, "\u200b" + "a" * 42])
def test_a_csrf_token_that_is_not_ascii_is_a_form_expired_page(
    client: TestClient, staff_accounts: dict[str, StaffAccount], token: str
) -> None:
    client.get("/staff/login")
    account = staff_accounts["fundraiser"]
    before_login = client.post(
        "/staff/login",
        data={"csrf_token": token, "email": account.email, "password": account.password},
        follow_redirects=False,
    )
    assert before_login.status_code == 403, before_login.text
    assert "Form expired" in before_login.text
    log_in(client, account)
    logged_in = client.post("/staff/logout", data={"csrf_token": token}, follow_redirects=False)
    assert logged_in.status_code == 403, logged_in.text
    assert "Form expired" in logged_in.text
    assert client.get("/staff/", follow_redirects=False).status_code == 200  # still logged in
