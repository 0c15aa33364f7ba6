"""Staff pages with input people (or a stray paste) do not expect: odd characters, odd dates, times near midnight.
Each answers with the page or a clear form error, and writes nothing wrong; none is a server error."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import ApiToken
from core.runtime import Runtime
from crm.models import Consent, Declaration
from tests.staff.conftest import StaffAccount, add_gift, add_supporter, csrf_of, log_in


def test_a_nul_character_in_a_search_or_filter_is_not_a_server_error(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """PostgreSQL text cannot hold NUL: a query string carrying one (%00) was a 500 there."""
    supporter_id = add_supporter(runtime, history=3)
    logged_in("admin")
    for path in (
        "/staff/supporters?q=smi%00th",
        f"/staff/supporters/{supporter_id}/history?type=gi%00ft",
        "/staff/admin/audit?actor=%00",
        "/staff/admin/audit?object_id=%00",
    ):
        answer = client.get(path)
        assert answer.status_code == 200, path
    assert f"/staff/supporters/{supporter_id}" in client.get("/staff/supporters?q=smi%00th").text


def test_a_nul_character_in_a_form_is_dropped_not_a_server_error(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount], logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    consent = client.post(
        f"/staff/supporters/{supporter_id}/consents",
        data={
            "csrf_token": csrf,
            "channel": "post",
            "status": "granted",
            "wording_version": "v\x002",
            "note": "l\x00etter",
        },
        follow_redirects=False,
    )
    assert consent.status_code == 303
    with runtime.read_session() as session:
        post = session.exec(select(Consent).where(Consent.channel == "post")).one()
        assert post.wording_version == "v2"
    csrf = logged_in("admin")
    token = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": "fundraiser@example.org", "name": "re\x00ports", "days": "30"},
    )
    assert token.status_code == 200
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).one().name == "reports"
    client.cookies.clear()
    page = client.get("/staff/login")
    login = client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": "fundraiser@example.org\x00", "password": "x\x00"},
    )
    assert login.status_code == 400 and "wrong" in login.text
    log_in(client, staff_accounts["fundraiser"])  # and the right password still works


@pytest.mark.parametrize("made_on", ["01/01/99999999999999999999", "01/01/202", "01/01/0000", "1/1/20255"])
def test_a_date_with_a_mistyped_year_is_a_form_error(
    client: TestClient, runtime: Runtime, logged_in, made_on: str
) -> None:
    """A huge year was a 500 (OverflowError); a three-digit year was recorded as made in the year 202, and 0000 as
    2000. Only two-digit (20xx) and four-digit years are dates people mean."""
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data={
            "csrf_token": csrf,
            "method": "written",
            "made_on": made_on,
            "scope": "past_4_years_and_future",
            "first_name": "Ann",
            "last_name": "Smith",
            "address_line1": "12 Dock Road",
            "postcode": "CT16 1AA",
            "country": "GB",
        },
    )
    assert answer.status_code == 400
    assert "real date" in answer.text
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).first() is None


def test_the_gift_to_choose_for_a_declaration_shows_its_uk_date(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A gift received at 23:30 UTC on 1 July is received at 00:30 on 2 July in the UK; the choice showed 01/07."""
    from payments.models import Gift

    supporter_id = add_supporter(runtime)
    gift_id = add_gift(runtime, supporter_id, 1000, dt.date(2025, 7, 2))
    with runtime.unit_of_work() as uow:
        gift = uow.session.get(Gift, gift_id)
        assert gift is not None
        gift.received_at = dt.datetime(2025, 7, 1, 23, 30, tzinfo=dt.UTC)
        uow.session.add(gift)
    logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    option = re.search(rf'<option value="{gift_id}"\s*>([^<]*)</option>', page.text)
    assert option, "the gift is not offered"
    assert option.group(1) == "02/07/2025 £10.00"


def test_an_address_that_is_no_page_answers_with_a_page_not_json(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A mistyped address, or a form's address opened as a page (copied from the address bar after a form error),
    gave the JSON API's error body to a browser."""
    supporter_id = add_supporter(runtime)
    logged_in("fundraiser")
    for path, status in (
        ("/staff/no-such-page", 404),
        (f"/staff/supporters/{supporter_id}/declarations", 405),
        ("/staff/finance/giftaid/claims", 405),
        ("/staff/logout", 405),
    ):
        answer = client.get(path)
        assert answer.status_code == status, path
        assert answer.headers["content-type"].startswith("text/html"), path
        assert "<h1>" in answer.text and "fundraiser@example.org" in answer.text  # the staff layout, still logged in
        assert answer.headers["cache-control"] == "no-store"
    assert client.get("/staff/static/staff.css").status_code == 200
