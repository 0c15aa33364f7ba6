"""`?next=` after login goes only to a staff page on this site: never another site, whatever it is dressed as."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.staff.conftest import StaffAccount, csrf_of

ELSEWHERE = [
    "https://evil.example/staff/",
    "//evil.example/staff/",
    "/\\evil.example",
    "/staff\\..\\..\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    " //evil.example",
]


@pytest.mark.parametrize("target", ELSEWHERE)
def test_login_never_sends_the_browser_to_another_site(
    client: TestClient, staff_accounts: dict[str, StaffAccount], target: str
) -> None:
    account = staff_accounts["fundraiser"]
    form = client.get("/staff/login", params={"next": target})
    assert "evil.example" not in form.text and "javascript:" not in form.text
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(form.text), "email": account.email, "password": account.password, "next": target},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/"
    # Logged in now: the login page itself sends a logged-in browser on, and the same rule holds.
    again = client.get("/staff/login", params={"next": target}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/staff/"


def test_a_staff_page_is_where_login_returns_to(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> None:
    account = staff_accounts["fundraiser"]
    form = client.get("/staff/login", params={"next": "/staff/supporters?q=smith"})
    answer = client.post(
        "/staff/login",
        data={
            "csrf_token": csrf_of(form.text),
            "email": account.email,
            "password": account.password,
            "next": "/staff/supporters?q=smith",
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/staff/supporters?q=smith"
