"""Logging in and logging out each issue a new pre-login CSRF token (`giving_csrf`). It used to be set once and kept:
after a logout the browser's login form carried the very token it had before the login, so whoever had learnt it
once (a shared computer, a token planted by a login CSRF) could still forge that browser's pre-login forms."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.staff.conftest import StaffAccount, csrf_of, log_in


def set_cookie_values(response, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        value.split(";", 1)[0].split("=", 1)[1]
        for key, value in response.headers.multi_items()
        if key == "set-cookie" and value.startswith(f"{name}=")
    ]


def test_login_and_logout_each_issue_a_new_pre_login_token(
    client: TestClient, staff_accounts: dict[str, StaffAccount]
) -> None:
    account = staff_accounts["fundraiser"]
    before_login = csrf_of(client.get("/staff/login").text)
    assert client.cookies.get("giving_csrf") == before_login

    page = client.get("/staff/login")
    logged_in = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": account.email, "password": account.password},
        follow_redirects=False,
    )
    assert logged_in.status_code == 303, logged_in.text
    [at_login] = set_cookie_values(logged_in, "giving_csrf")
    assert len(at_login) >= 32 and at_login != before_login

    session_csrf = csrf_of(client.get("/staff/").text)
    logged_out = client.post("/staff/logout", data={"csrf_token": session_csrf}, follow_redirects=False)
    assert logged_out.status_code == 303, logged_out.text
    [at_logout] = set_cookie_values(logged_out, "giving_csrf")
    assert len(at_logout) >= 32 and at_logout not in (before_login, at_login, session_csrf)

    # The login form after the logout carries the new token; the one from before the login is refused.
    assert csrf_of(client.get("/staff/login").text) == at_logout
    stale = client.post(
        "/staff/login",
        data={"csrf_token": before_login, "email": account.email, "password": account.password},
        follow_redirects=False,
    )
    assert stale.status_code == 403
    # And the browser logs in again as ever.
    log_in(client, account)
