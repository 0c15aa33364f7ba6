"""Found in a fresh review of the staff pages (round 16): a declaration form whose period dates or gift the chosen
scope does not use (recorded, then shown as limits that Gift Aid never applies), a converted GoCardless payout
whose page said the settled amount was what reached the bank, and dates the forms took that no calendar
arithmetic can follow (a 500)."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path

import pytest
from sqlmodel import func, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Declaration
from tests.fakes.provider_server import FakeProvider
from tests.staff.conftest import add_gift, add_supporter


def _declarations(runtime: Runtime) -> int:
    with runtime.read_session() as session:
        return int(session.exec(select(func.count()).select_from(Declaration)).one())


def _declaration_form(csrf: str, **fields: str) -> dict[str, str]:
    form = {
        "csrf_token": csrf,
        "method": "written",
        "made_on": "01/03/2025",
        "scope": "future",
        "first_name": "Ann",
        "last_name": "Smith",
        "address_line1": "12 Dock Road",
        "postcode": "CT16 1AA",
        "country": "GB",
    }
    form.update(fields)
    return form


def _field_error(html: str, name: str) -> str:
    found = re.search(rf'id="f-{name}-error">(.*?)</p>', html, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split()) if found else ""


# --- a declaration's dates and gift must be ones its scope uses ---------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "fields", "refused"),
    [
        # "All future gifts" with a period end typed: the page said "future to 31/03/2025", yet every later gift
        # stayed claimable (Gift Aid reads no end for this scope).
        ("future", {"end": "31/03/2025"}, "end"),
        ("future", {"start": "01/03/2025"}, "start"),
        ("past_4_years_and_future", {"end": "31/12/2025"}, "end"),
        ("past_4_years_and_future", {"start": "01/01/2024"}, "start"),
        ("this_gift", {"start": "01/03/2025", "end": "31/03/2025"}, "start"),
    ],
)
def test_period_dates_are_refused_for_a_declaration_that_is_not_for_a_period(
    client: TestClient, runtime: Runtime, logged_in, scope: str, fields: dict[str, str], refused: str
) -> None:
    supporter_id = add_supporter(runtime)
    gift_id = add_gift(runtime, supporter_id, 2500, dt.date(2025, 3, 1))
    csrf = logged_in("fundraiser")
    extra = {"gift_id": str(gift_id)} if scope == "this_gift" else {}
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, scope=scope, **extra, **fields),
        follow_redirects=False,
    )
    assert answer.status_code == 400, answer.text
    assert "only for a declaration for a period" in _field_error(answer.text, refused).lower(), answer.text
    # What was typed comes back, and nothing was recorded.
    assert re.search(rf'id="f-{refused}"[^>]*value="{re.escape(fields[refused])}"', answer.text), answer.text
    assert _declarations(runtime) == 0


def test_a_gift_is_refused_for_a_declaration_that_is_not_for_one_gift(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """The gift chosen in the list (then the scope changed to "All future gifts") was stored on the declaration,
    even another supporter's gift: the record named a gift that had nothing to do with it."""
    supporter_id = add_supporter(runtime)
    other = add_supporter(runtime, "Bob", "Jones", "bob.jones@example.org")
    theirs = add_gift(runtime, other, 1000, dt.date(2025, 3, 1))
    csrf = logged_in("fundraiser")
    for fields in ({"gift_id": str(theirs)}, {"gift_received_on": "01/03/2025"}):
        answer = client.post(
            f"/staff/supporters/{supporter_id}/declarations",
            data=_declaration_form(csrf, scope="future", **fields),
            follow_redirects=False,
        )
        assert answer.status_code == 400, answer.text
        name = next(iter(fields))
        assert "only for a declaration for one gift" in _field_error(answer.text, name).lower(), answer.text
    assert _declarations(runtime) == 0


def test_a_period_declaration_keeps_its_dates_and_the_others_still_record(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    gift_id = add_gift(runtime, supporter_id, 2500, dt.date(2025, 3, 1))
    csrf = logged_in("fundraiser")
    forms = [
        {"scope": "period", "start": "01/01/2025", "end": "31/03/2025"},
        {"scope": "this_gift", "gift_id": str(gift_id)},
        {"scope": "future", "gift_id": "", "start": "", "end": "", "gift_received_on": ""},
    ]
    for fields in forms:
        answer = client.post(
            f"/staff/supporters/{supporter_id}/declarations",
            data=_declaration_form(csrf, **fields),
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
    with runtime.read_session() as session:
        rows = {str(d.scope): d for d in session.exec(select(Declaration)).all()}
    assert (rows["period"].start, rows["period"].end) == (dt.date(2025, 1, 1), dt.date(2025, 3, 31))
    assert rows["this_gift"].gift_id == gift_id
    assert (rows["future"].start, rows["future"].end, rows["future"].gift_id) == (None, None, None)


def test_the_page_shows_only_the_dates_gift_aid_reads_for_a_declarations_scope(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A declaration kept with dates its scope does not use (recorded before crm refused them: here written into
    its row): the page said "future to 31/03/2025", a limit Gift Aid never applies (the gift of April is
    claimable)."""
    from crm import service as crm_service
    from crm.models import DeclarationMethod, DeclarationScope
    from crm.validation import DonorDetails
    from giftaid import service as giftaid_service

    supporter_id = add_supporter(runtime)
    april = add_gift(runtime, supporter_id, 2000, dt.date(2025, 4, 10))
    donor = DonorDetails(first_name="Ann", last_name="Smith", address_line1="12 Dock Road", postcode="CT16 1AA")
    with runtime.unit_of_work() as uow:
        for scope, start, end in [
            (DeclarationScope.FUTURE, None, None),
            (DeclarationScope.PERIOD, dt.date(2025, 1, 1), dt.date(2025, 1, 31)),
        ]:
            declaration = crm_service.record_declaration(
                uow,
                supporter_id,
                method=DeclarationMethod.WRITTEN,
                made_on=dt.date(2025, 3, 1),
                scope=scope,
                start=start,
                end=end,
                donor=donor.normalised(require_address=True),
                source="staff",
                wording_version="v1",
                wording_text="I want to Gift Aid my donations.",
            )
            if scope == DeclarationScope.FUTURE:
                declaration.start, declaration.end = dt.date(2025, 3, 1), dt.date(2025, 3, 31)
                uow.session.add(declaration)
    with runtime.read_session() as session:
        assert giftaid_service.explain(session, runtime.settings, april).claimable
    logged_in("fundraiser")
    rows = re.findall(r"<tr>\s*<td>01/03/2025</td>.*?</tr>", client.get(f"/staff/supporters/{supporter_id}").text, re.S)
    covers = sorted(_text(re.findall(r"<td>(.*?)</td>", row, re.S)[2]) for row in rows)
    assert covers == ["future", "period from 01/01/2025 to 31/01/2025"], covers


# --- dates no calendar arithmetic can follow ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "typed"),
    [
        ("made_on", "0001-01-01"),  # four years before it is no date: crm's arithmetic raised (500)
        ("made_on", "0999-12-31"),  # the DD/MM/YYYY form of it was refused, the ISO one was not
        ("gift_received_on", "31/12/9999"),  # the day after it is no date (500)
        ("gift_received_on", "9999-12-31"),
    ],
)
def test_a_date_out_of_range_is_a_form_error_not_a_500(
    client: TestClient, runtime: Runtime, logged_in, field: str, typed: str
) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    client_500 = TestClient(client.app, raise_server_exceptions=False, cookies=client.cookies)
    answer = client_500.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, scope="this_gift", **{field: typed}),
        follow_redirects=False,
    )
    assert answer.status_code == 400, answer.text
    assert "real date" in _field_error(answer.text, field), answer.text
    assert _declarations(runtime) == 0


# --- a converted GoCardless payout ------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    from tests.payments.payout_fakes import money_settings

    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_a_converted_payout_says_what_reached_the_bank(
    client: TestClient, runtime: Runtime, logged_in, fake_gocardless: FakeProvider
) -> None:
    """GoCardless settled £9.58 and converted it to euros before it reached the bank: the page said "Paid to the
    bank £9.58", so finance looked for a sterling amount the bank statement never shows (`giving reconcile` and
    the journal both say €10.76)."""
    from payments.models import Payout
    from payments.payouts import record_gocardless_payout
    from tests.payments import factories_money as make
    from tests.payments.payout_fakes import fixture, serve_gocardless_payout

    data = copy.deepcopy(fixture("gocardless/payout_with_items.constructed.json"))
    payout = data["payouts"]
    payout["fx"].update({"exchange_rate": None, "fx_amount": None, "estimated_exchange_rate": "1.2000000000"})
    serve_gocardless_payout(fake_gocardless, payout, data["payout_items_list"]["payout_items"])
    make.gift(runtime, make.supporter(runtime), 1000, gocardless_payment_id="PM0TEST0001")
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0001", "paid")
    with runtime.read_session() as session:
        payout_id = session.exec(select(Payout.id).where(Payout.provider_payout_id == "PO0TEST0001")).one()

    logged_in("finance")
    page = _text(client.get(f"/staff/finance/payouts/{payout_id}").text)
    # 958p at GoCardless's estimate of 1.2: €11.496, rounded half up.
    assert "Paid to the bank €11.50 (estimated:" in page, page
    assert "GoCardless paid out £9.58, converted at 1.2000000000" in page, page
    listed = _text(client.get("/staff/finance/payouts").text)
    assert "£9.58 reached the bank as €11.50 (estimated)" in listed, listed

    # The rate confirmed: the confirmed amount, no longer an estimate.
    payout["fx"].update({"exchange_rate": "1.1234567890", "fx_amount": 1076})
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0001", "fx_rate_confirmed")
    page = _text(client.get(f"/staff/finance/payouts/{payout_id}").text)
    assert "Paid to the bank €10.76 (GoCardless paid out £9.58, converted at 1.1234567890)" in page, page
    assert "estimated" not in page
    listed = _text(client.get("/staff/finance/payouts").text)
    assert "£9.58 reached the bank as €10.76" in listed and "estimated" not in listed, listed


def test_a_payout_in_its_own_currency_says_nothing_of_a_conversion(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    from payments.models import Payout, Provider

    with runtime.unit_of_work() as uow:
        row = Payout(provider=Provider.STRIPE, provider_payout_id="po_plain", amount=12345)
        uow.session.add(row)
        uow.session.flush()
        payout_id = row.id
    logged_in("finance")
    page = _text(client.get(f"/staff/finance/payouts/{payout_id}").text)
    assert "Paid to the bank £123.45" in page and "converted" not in page, page
