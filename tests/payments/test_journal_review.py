"""The journal as the finance officer reads it: amounts in the currency each payout was paid in."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from core.runtime import Runtime
from core.settings import Settings
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import stripe_payout_event


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


@pytest.mark.parametrize(
    ("currency", "amount", "fee", "written"), [("usd", 2500, 103, "25.00"), ("jpy", 3000, 0, "3000")]
)
def test_a_payout_in_a_currency_other_than_pounds_or_euros_is_written_in_its_own_units(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    currency: str,
    amount: int,
    fee: int,
    written: str,
) -> None:
    """A Stripe payout to a US dollar (or yen) bank account: the export failed with a KeyError traceback, since only
    pounds and euros had a format. Each amount is written in its currency's units (yen have no minor unit)."""
    make.gift(runtime, make.supporter(runtime), amount, stripe_charge_id="ch_test_Usd01", currency=currency.upper())
    charge = balance_transaction("txn_usd", amount, fee, {"id": "ch_test_Usd01", "object": "charge"})
    charge["currency"] = currency
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": [charge]})
    with runtime.unit_of_work() as uow:
        payout = {**stripe_payout_event(), "amount": amount - fee, "currency": currency}
        record_stripe_payout(uow, payout, "payout.paid")

    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["currency"] for row in rows} == {currency.upper()}
    (donation,) = [row for row in rows if row["account"] == "Donations: General"]
    assert (donation["debit"], donation["credit"]) == ("", written)
