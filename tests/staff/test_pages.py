"""Staff pages through HTTP (no browser): login, role checks, CSRF refusals, audit, formats."""

from __future__ import annotations

import html
import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from crm.models import Declaration, HistoryEntry, Wording
from crm.service import enduring_declaration_wording
from tests.staff.conftest import StaffAccount, add_supporter, csrf_of, log_in


def test_pages_need_a_login(client: TestClient) -> None:
    answer = client.get("/staff/supporters?q=smith", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/staff/login?next=%2Fstaff%2Fsupporters")


def test_login_form_has_the_contract_fields_and_csrf(client: TestClient) -> None:
    page = client.get("/staff/login")
    assert page.status_code == 200
    for name in ("email", "password", "totp", "csrf_token"):
        assert f'name="{name}"' in page.text
    assert "content-security-policy" in page.headers


def test_finance_needs_its_totp_code(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> None:
    finance = staff_accounts["finance"]
    page = client.get("/staff/login")
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": finance.email, "password": finance.password, "totp": ""},
        follow_redirects=False,
    )
    assert answer.status_code == 400
    assert "wrong" in answer.text
    assert client.get("/staff/", follow_redirects=False).status_code == 303


def test_login_without_csrf_is_refused(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> None:
    client.get("/staff/login")
    fundraiser = staff_accounts["fundraiser"]
    answer = client.post(
        "/staff/login", data={"email": fundraiser.email, "password": fundraiser.password}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert "giving_session" not in answer.cookies


def test_session_cookie_is_httponly_and_samesite(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> None:
    fundraiser = staff_accounts["fundraiser"]
    page = client.get("/staff/login")
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": fundraiser.email, "password": fundraiser.password},
        follow_redirects=False,
    )
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "giving_session" in v)
    assert "httponly" in cookie.lower()
    assert "samesite" in cookie.lower()


def test_search_and_supporter_page_are_audited(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=3, declaration=True)
    add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    logged_in("fundraiser")
    for query in ("smith", "Ann Sm", "ANN.SMITH@example.org", "ct16 1aa", "CT16"):
        page = client.get("/staff/supporters", params={"q": query})
        assert page.status_code == 200
        assert f"/staff/supporters/{supporter_id}" in page.text, query
        assert "Jones" not in page.text
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert page.status_code == 200
    assert "£10.00" in page.text  # money as £1,234.50
    assert "10/01/2025" in page.text  # the declaration's date, DD/MM/YYYY
    with runtime.read_session() as session:
        actions = [(a.action, a.object_id) for a in session.exec(select(AuditEntry)).all()]
    assert ("view", str(supporter_id)) in actions
    assert sum(1 for action, _ in actions if action == "search") == 5


def test_history_is_filtered_and_paginated(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=120)
    logged_in("fundraiser")
    first = client.get(f"/staff/supporters/{supporter_id}/history")
    assert first.status_code == 200
    assert first.text.count('class="timeline-item') == 50
    assert "Item 119" in first.text and "Item 69" not in first.text
    assert 'rel="next"' in first.text
    first_gifts = client.get(f"/staff/supporters/{supporter_id}/history", params={"type": "gift"})
    older = re.search(r'<a rel="next" href="([^"]+)"', first_gifts.text)
    assert older is not None
    gifts = client.get(html.unescape(older.group(1)))
    assert gifts.text.count('class="timeline-item type-gift') == 10
    assert "type-receipt" not in gifts.text
    assert 'rel="next"' not in gifts.text


def test_recording_a_declaration_needs_the_session_csrf(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    form = {
        "method": "oral",
        "made_on": "03/02/2025",
        "scope": "past_4_years_and_future",
        "first_name": "Ann",
        "last_name": "Smith",
        "address_line1": "12 Dock Road",
        "postcode": "ct161aa",
        "country": "GB",
    }
    refused = client.post(f"/staff/supporters/{supporter_id}/declarations", data={**form, "csrf_token": "forged"})
    assert refused.status_code == 403
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).first() is None
    done = client.post(
        f"/staff/supporters/{supporter_id}/declarations", data={**form, "csrf_token": csrf}, follow_redirects=False
    )
    assert done.status_code == 303, done.text
    with runtime.read_session() as session:
        declaration = session.exec(select(Declaration)).one()
        assert declaration.method == "oral" and declaration.postcode == "CT16 1AA"
        assert declaration.recorded_by == "fundraiser@example.org"
        # The words the fundraiser read out are kept with the declaration (giftaid.md §4).
        words = session.get(Wording, declaration.wording_id)
        assert words is not None and words.text == enduring_declaration_wording(runtime.settings.charity.name)
        from core.models import Job

        jobs = session.exec(select(Job).where(Job.actor_name == "receipts.issue_oral_confirmation")).all()
        assert [j.arguments["declaration_id"] for j in jobs] == [str(declaration.id)]


def test_a_bad_declaration_shows_the_errors_and_writes_nothing(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data={
            "csrf_token": csrf,
            "method": "oral",
            "made_on": "31/02/2025",
            "scope": "future",
            "first_name": "Ann",
            "last_name": "Smith",
            "address_line1": "",
            "postcode": "nope",
            "country": "GB",
        },
    )
    assert answer.status_code == 400
    assert "There is a problem" in answer.text
    assert re.search(r"real date", answer.text)
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).first() is None


def test_note_and_consent_change(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    client.post(f"/staff/supporters/{supporter_id}/notes", data={"csrf_token": csrf, "note_text": "Rang to say thanks"})
    client.post(
        f"/staff/supporters/{supporter_id}/consents",
        data={"csrf_token": csrf, "channel": "email", "status": "withdrawn", "note": "phone call"},
    )
    with runtime.read_session() as session:
        types = [h.type for h in session.exec(select(HistoryEntry).where(HistoryEntry.supporter_id == supporter_id))]
    assert types.count("note") == 1 and types.count("consent") == 2
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert "Rang to say thanks" in page.text
    assert "status-withdrawn" in page.text


def test_fundraiser_is_refused_finance_pages(client: TestClient, logged_in) -> None:
    logged_in("fundraiser")
    for path in ("/staff/finance/payouts", "/staff/finance/instalments", "/staff/finance/shop"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Not allowed" in answer.text


def test_finance_sees_finance_pages(client: TestClient, logged_in) -> None:
    logged_in("finance")
    for path in ("/staff/finance/payouts", "/staff/finance/instalments", "/staff/finance/shop"):
        assert client.get(path).status_code == 200, path


def test_logout_ends_the_session(client: TestClient, logged_in) -> None:
    csrf = logged_in("fundraiser")
    kept = dict(client.cookies)
    assert client.post("/staff/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    client.cookies.update(kept)  # even a kept cookie no longer works
    assert client.get("/staff/", follow_redirects=False).status_code == 303


def test_login_attempts_are_rate_limited(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> None:
    page = client.get("/staff/login")
    token = csrf_of(page.text)
    statuses = [
        client.post(
            "/staff/login", data={"csrf_token": token, "email": "fundraiser@example.org", "password": "wrong guess"}
        ).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [400] * 10 and statuses[10] == 429
    fundraiser = staff_accounts["fundraiser"]
    still_refused = client.post(
        "/staff/login", data={"csrf_token": token, "email": fundraiser.email, "password": fundraiser.password}
    )
    assert still_refused.status_code == 429  # even the right password waits for the window


def test_staff_pages_carry_the_security_headers(client: TestClient, logged_in) -> None:
    logged_in("fundraiser")
    page = client.get("/staff/supporters")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text


def test_password_reset_by_link(client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount]) -> None:
    from core import auth, signing
    from core.models import Job, PasswordReset

    form = client.get("/staff/forgot-password")
    for email in ("fundraiser@example.org", "nobody@example.org"):
        answer = client.post("/staff/forgot-password", data={"csrf_token": csrf_of(form.text), "email": email})
        assert answer.status_code == 200 and "If that address belongs to a staff account" in answer.text
    with runtime.unit_of_work() as uow:
        # The request only queued each address (the same work for both); here the queued jobs run, as a worker would.
        queued = uow.session.exec(select(Job).where(Job.actor_name == "core.request_password_reset")).all()
        assert sorted(job.arguments["email"] for job in queued) == ["fundraiser@example.org", "nobody@example.org"]
        assert uow.session.exec(select(PasswordReset)).first() is None
    for job in queued:
        with runtime.unit_of_work() as uow:
            auth.request_password_reset_job(uow, job.arguments["email"])
    with runtime.unit_of_work() as uow:
        assert len(uow.session.exec(select(PasswordReset)).all()) == 1  # only the staff address got one
        [send] = uow.session.exec(select(Job).where(Job.actor_name == "core.send_password_reset")).all()
        secret = signing.signing_secret(uow.session, runtime.settings.web.secret_key.get_secret_value())
        # What the email job does before sending: the reset gets its key, which only the link carries.
        issued = auth.issue_password_reset_link(
            uow, send.arguments["reset_id"], base_url="http://testserver", secret=secret
        )
    assert issued is not None and issued[0] == "fundraiser@example.org"
    path = issued[1].removeprefix("http://testserver")
    page = client.get(path)
    assert page.status_code == 200
    token = path.split("token=", 1)[1]
    short = client.post(
        "/staff/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": "short", "password_again": "short"},
    )
    assert short.status_code == 400
    new = "a brand new passphrase"
    done = client.post(
        "/staff/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": new, "password_again": new},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert "Your password is changed. Log in with it." in client.get(done.headers["location"]).text
    again = client.post(
        "/staff/reset-password",
        data={"csrf_token": csrf_of(page.text), "token": token, "password": new + "x", "password_again": new + "x"},
    )
    assert again.status_code == 400  # the link works once
    login = client.get("/staff/login")
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(login.text), "email": "fundraiser@example.org", "password": new},
        follow_redirects=False,
    )
    assert answer.status_code == 303


@pytest.mark.parametrize("page", ["%C2%B2", "99999999999999999999"])
def test_a_page_number_in_other_digits_or_too_long_shows_the_first_page(
    client: TestClient, staff_accounts: dict[str, StaffAccount], page: str
) -> None:
    log_in(client, staff_accounts["admin"])
    response = client.get(f"/staff/admin/audit?page={page}")
    assert response.status_code == 200, response.text[:200]


def test_a_browser_that_logged_in_before_is_not_locked_out_by_guesses_from_elsewhere(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount]
) -> None:
    """The login page gives a browser that logged in a known-device cookie (only for the staff pages) and hands it
    back at the next login: once guesses from many addresses have used up the account's hour, a stranger (even with
    the right password) is refused 429 and this browser still logs in (docs/staff-access.md, Rate limits)."""
    import datetime as dt

    import time_machine

    from core import auth

    fundraiser = staff_accounts["fundraiser"]
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    with time_machine.travel(hour + dt.timedelta(minutes=5), tick=False):
        page = client.get("/staff/login")
        answer = client.post(
            "/staff/login",
            data={"csrf_token": csrf_of(page.text), "email": fundraiser.email, "password": fundraiser.password},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        [device] = [v for k, v in answer.headers.multi_items() if k == "set-cookie" and auth.DEVICE_COOKIE in v]
        assert "Path=/staff" in device and "HttpOnly" in device and "SameSite=lax" in device
        per_minute = runtime.settings.web.login_rate_per_minute
        for attempt in range(per_minute * auth.LOGIN_ACCOUNT_CEILING_FACTOR):
            with runtime.unit_of_work() as uow:
                auth.login(uow, fundraiser.email, "a guess", client=f"198.51.100.{attempt // per_minute}")
        stranger = TestClient(client.app, client=("203.0.113.9", 5000))
        page = stranger.get("/staff/login")
        refused = stranger.post(
            "/staff/login",
            data={"csrf_token": csrf_of(page.text), "email": fundraiser.email, "password": fundraiser.password},
            follow_redirects=False,
        )
        assert refused.status_code == 429 and "retry-after" in refused.headers
        client.cookies.delete("giving_session")
        assert client.get("/staff/", follow_redirects=False).status_code == 303
        log_in(client, fundraiser)
        assert client.get("/staff/", follow_redirects=False).status_code == 200
