"""The finance staff pages as a finance officer reads them (found in review): a payout that failed read just like
any payout that does not add up ("unreconciled", discrepancy "—", every line matched), with nothing saying its money
never reached the bank; the payout page answered 500 for any payout with a line that has no description (every
GoCardless line); the later payout that paid that money out again did not say which payout it settled; and a
payout whose amount nobody gave (a file without it) looked like one the bank statement confirmed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments.imports import import_stripe_report
from payments.models import Payout
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, serve_balance_transactions
from tests.payments.test_payout_failures import FAILED_PAYOUT, repaid_transactions
from tests.payments.test_payouts import expanded_fixture_transactions, record, stripe_money, stripe_payout_event
from tests.staff.conftest import cheap_password_hashing, logged_in, staff_accounts

__all__ = ["cheap_password_hashing", "logged_in", "staff_accounts"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def our_id(runtime: Runtime, provider_payout_id: str) -> str:
    with runtime.read_session() as session:
        return str(session.exec(select(Payout.id).where(Payout.provider_payout_id == provider_payout_id)).one())


def row_of(page: str, provider_payout_id: str) -> str:
    (row,) = [r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if provider_payout_id in r]
    return row


def test_a_failed_payout_says_so_and_the_payout_that_paid_its_money_again_names_it(
    runtime: Runtime, client: TestClient, fake_stripe: FakeProvider, logged_in
) -> None:
    stripe_money(runtime)
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01")
    serve_balance_transactions(
        fake_stripe,
        {FAILED_PAYOUT: expanded_fixture_transactions(), "po_repaid": repaid_transactions(FAILED_PAYOUT, "po_repaid")},
    )
    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")
    failed = {**stripe_payout_event(), "status": "failed", "failure_code": "account_closed"}
    record(runtime, record_stripe_payout, failed, "payout.failed")
    record(runtime, record_stripe_payout, {**stripe_payout_event(), "id": "po_repaid", "amount": 1357}, "payout.paid")
    logged_in("finance")

    listing = client.get("/staff/finance/payouts")
    assert listing.status_code == 200
    assert "payout failed" in row_of(listing.text, FAILED_PAYOUT)
    assert "payout failed" not in row_of(listing.text, "po_repaid")

    page = client.get(f"/staff/finance/payouts/{our_id(runtime, FAILED_PAYOUT)}")
    assert page.status_code == 200
    assert "Payout status" in page.text and "did not reach the bank" in page.text

    repaid = client.get(f"/staff/finance/payouts/{our_id(runtime, 'po_repaid')}")
    assert f'href="/staff/finance/payouts/{our_id(runtime, FAILED_PAYOUT)}"' in repaid.text


def test_the_payout_page_opens_and_says_an_amount_nobody_gave_is_the_sum_of_its_lines(
    runtime: Runtime, client: TestClient, logged_in
) -> None:
    make.gift(runtime, make.supporter(runtime), 3500, stripe_charge_id="ch_1")
    report = (
        "balance_transaction_id,currency,gross,fee,net,reporting_category,source_id,automatic_payout_id\n"
        "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,po_file\n"
    )
    with runtime.unit_of_work() as uow:
        import_stripe_report(uow, report)
    logged_in("finance")

    # Its line has no description: the page answered 500 (a strict template read a key the JSON leaves out).
    page = client.get(f"/staff/finance/payouts/{our_id(runtime, 'po_file')}")
    assert page.status_code == 200
    assert "the sum of its lines" in page.text
