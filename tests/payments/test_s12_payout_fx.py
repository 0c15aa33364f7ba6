"""A GoCardless payout converted to another currency before it reached the bank (its `fx`; found in review): it was
booked in the payout's own currency only, so nothing said what reached the bank, in which currency, at what rate or
whether that rate was still GoCardless's estimate. The payout's own amount and lines stay as they are (they add up);
the payout JSON adds `bank_amount` and `fx`, and the journal's bank posting says the same."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giving.commands.shop import reconciliation_lines
from payments import journal
from payments.models import Payout
from payments.payouts import payout_json, record_gocardless_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import fixture, money_settings, serve_gocardless_payout


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def converted_payout(fake_gocardless: FakeProvider) -> dict[str, Any]:
    """The constructed fixture: £9.58 (1,000p paid out less a 42p fee) converted to euros."""
    data = copy.deepcopy(fixture("gocardless/payout_with_items.constructed.json"))
    payout = data["payouts"]
    serve_gocardless_payout(fake_gocardless, payout, data["payout_items_list"]["payout_items"])
    return payout


def read(runtime: Runtime) -> tuple[dict[str, Any], list[journal.Posting]]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "PO0TEST0001")).one()
        body = payout_json(session, payout)
        postings = journal.payout_postings(session, dt.date(2014, 1, 1), dt.date(2014, 1, 1))
    return body, postings


def test_a_converted_gocardless_payout_says_what_reached_the_bank_and_at_what_rate(
    runtime: Runtime, fake_gocardless: FakeProvider
) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM0TEST0001")
    payout = converted_payout(fake_gocardless)
    # Paid, the rate not confirmed yet: GoCardless gives its estimate only.
    payout["fx"].update({"exchange_rate": None, "fx_amount": None, "estimated_exchange_rate": "1.2000000000"})
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0001", "paid")

    body, postings = read(runtime)
    assert (body["amount"], body["status"]) == ({"amount": 958, "currency": "GBP"}, "reconciled")
    assert body["fx"] == {
        "currency": "EUR",
        "amount": {"amount": 1150, "currency": "EUR"},  # 958 x 1.2 = 1149.6, rounded half up
        "exchange_rate": "1.2000000000",
        "estimated": True,
    }
    assert body["bank_amount"] == {"amount": 1150, "currency": "EUR"}
    bank = next(p for p in postings if p.account == "Bank: GoCardless payouts")
    assert (bank.amount, bank.currency) == (1150, "EUR")
    assert "reached the bank as EUR 11.50 at GBP/EUR 1.2000000000 (estimated" in bank.description
    assert sum(p.amount for p in postings) == 0

    # `payouts.fx_rate_confirmed`: the payout is fetched again and the confirmed rate and amount replace the estimate.
    payout["fx"].update({"exchange_rate": "1.1234567890", "fx_amount": 1076})
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0001", "fx_rate_confirmed")
    body, postings = read(runtime)
    assert body["fx"] == {
        "currency": "EUR",
        "amount": {"amount": 1076, "currency": "EUR"},
        "exchange_rate": "1.1234567890",
        "estimated": False,
    }
    bank = next(p for p in postings if p.account == "Bank: GoCardless payouts")
    assert bank.description == "GoCardless payout ref-1; reached the bank as EUR 10.76 at GBP/EUR 1.1234567890"
    assert (body["amount"], body["discrepancy"]["amount"]) == ({"amount": 958, "currency": "GBP"}, 0)
    # What `giving reconcile` and `giving demo` print says it too.
    with runtime.read_session() as session:
        (printed,) = reconciliation_lines(session)
    assert printed.endswith(", reached the bank as €10.76 at 1.1234567890"), printed


def test_a_payout_paid_in_its_own_currency_has_no_fx(runtime: Runtime, fake_gocardless: FakeProvider) -> None:
    payout = converted_payout(fake_gocardless)
    payout["fx"] = {"fx_currency": "GBP", "fx_amount": 958, "exchange_rate": "1.0", "estimated_exchange_rate": "1.0"}
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0001", "paid")
    body, postings = read(runtime)
    assert (body["fx"], body["bank_amount"]) == (None, {"amount": 958, "currency": "GBP"})
    bank = next(p for p in postings if p.account == "Bank: GoCardless payouts")
    assert bank.description == "GoCardless payout ref-1"
    with runtime.read_session() as session:
        (printed,) = reconciliation_lines(session)
    assert "reached the bank" not in printed
