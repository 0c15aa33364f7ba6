"""A cookie of someone else's on the same site (the charity's own website, a cookie-consent banner, a sibling
subdomain's `Domain=` cookie) must not lock staff out. The session middleware parsed the Cookie header with
`http.cookies.SimpleCookie`, which drops every cookie from the first one not to its old grammar (a JSON value, a
space, a backslash): the pre-login CSRF token was then never found (every login answered 403 "Form expired") and a
live session could be lost too (every page went back to the login form). Anyone able to set one cookie on the
domain could keep every member of staff out."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.staff.conftest import StaffAccount, log_in

# Values other software really sets: a consent banner's JSON, a value with a space, one with a backslash.
FOREIGN_COOKIES = [
    ("cc_cookie", '{"categories":["necessary"],"revision":0}'),
    ("last_search", "refugee aid"),
    ("last_file", "C:\\Users\\volunteer\\rota.ods"),
]


@pytest.mark.parametrize(("name", "value"), FOREIGN_COOKIES)
def test_staff_log_in_beside_a_cookie_of_another_application(
    client: TestClient, staff_accounts: dict[str, StaffAccount], name: str, value: str
) -> None:
    client.cookies.set(name, value)
    log_in(client, staff_accounts["finance"])  # the form's CSRF token is found: 303, then the start page
    page = client.get("/staff/finance/giftaid", follow_redirects=False)
    assert page.status_code == 200, page.text


@pytest.mark.parametrize(("name", "value"), FOREIGN_COOKIES)
def test_a_session_survives_a_cookie_set_after_login(
    client: TestClient, staff_accounts: dict[str, StaffAccount], name: str, value: str
) -> None:
    csrf = log_in(client, staff_accounts["fundraiser"])
    client.cookies.set(name, value)
    page = client.get("/staff/supporters", follow_redirects=False)
    assert page.status_code == 200, page.headers.get("location")
    logged_out = client.post("/staff/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert logged_out.status_code == 303, logged_out.text
    # The logout ended the session on the server: the old cookie no longer opens a page.
    assert client.get("/staff/supporters", follow_redirects=False).status_code == 303
