"""A GoCardless payout converted to another currency before it reached the bank (its `fx`; found in review): the
journal debited the bank with the payout's own amount in the payout's currency and said what reached the bank only
in words, so the bank line never matched the bank statement. Now the bank line is what reached the bank
(`bank_amount`, in the bank's currency), the lines stay in the payout's currency, and the conversion is booked to
`Exchange gains and losses`, one posting in each currency, so every currency of the entry balances."""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime as dt
import io
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.runtime import Runtime
from core.settings import Settings
from payments import journal
from payments.payouts import record_gocardless_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import fixture, money_settings, run_giving, serve_gocardless_payout

ENTRY = "payout:gocardless:PO0FX0001"
DAY = dt.date(2026, 3, 5)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def euro_payout(runtime: Runtime, fake_gocardless: FakeProvider, fx: dict[str, Any]) -> dict[str, Any]:
    """Euro Direct Debits (€12.00 paid out less a €0.50 fee: €11.50) paid to the charity's sterling account."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1200, gocardless_payment_id="PM0EURO0001", currency="EUR")
    data = copy.deepcopy(fixture("gocardless/payout_with_items.constructed.json"))
    payout = data["payouts"]
    payout.update({"id": "PO0FX0001", "amount": 1150, "currency": "EUR", "arrival_date": DAY.isoformat(), "fx": fx})
    items = [
        {"type": "payment_paid_out", "amount": "1200.0", "links": {"payment": "PM0EURO0001"}},
        {"type": "gocardless_fee", "amount": "-50.0", "links": {"payment": "PM0EURO0001"}},
    ]
    serve_gocardless_payout(fake_gocardless, payout, items)
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0FX0001", "paid")
    return payout


def export(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, str]]:
    out = tmp_path / "journal.csv"
    result = run_giving(
        ["export", "journal", "--from", DAY.isoformat(), "--to", DAY.isoformat(), "--out", str(out)],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert "all balanced" in result.stderr
    return [row for row in csv.DictReader(io.StringIO(out.read_text())) if row["entry"] == ENTRY]


def signed(row: dict[str, str]) -> Decimal:
    return Decimal(row["debit"] or "0") - Decimal(row["credit"] or "0")


def per_currency(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row["currency"]] += signed(row)
    return dict(totals)


def bank_and_exchange(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str, str]]:
    return [
        (row["account"], row["debit"], row["credit"], row["currency"], row["description"])
        for row in rows
        if row["account"].startswith(("Bank:", "Exchange"))
    ]


def test_a_converted_payout_debits_the_bank_with_what_reached_it_and_books_the_exchange(
    runtime: Runtime,
    settings: Settings,
    fake_gocardless: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    euro_payout(
        runtime,
        fake_gocardless,
        {
            "fx_currency": "GBP",
            "exchange_rate": "0.8650000000",
            "estimated_exchange_rate": "0.8600000000",
            "fx_amount": 995,
        },
    )

    rows = export(settings, monkeypatch, tmp_path)
    words = "GoCardless payout ref-1; reached the bank as GBP 9.95 at EUR/GBP 0.8650000000"
    assert bank_and_exchange(rows) == [
        ("Bank: GoCardless payouts", "9.95", "", "GBP", words),
        ("Exchange gains and losses", "11.50", "", "EUR", "GoCardless payout ref-1 converted: EUR 11.50 to GBP 9.95"),
        ("Exchange gains and losses", "", "9.95", "GBP", "GoCardless payout ref-1 converted: EUR 11.50 to GBP 9.95"),
    ]
    # The lines stay as GoCardless settled them, in euros.
    assert {
        (r["account"], signed(r), r["currency"]) for r in rows if not r["account"].startswith(("Bank", "Exch"))
    } == {
        ("Donations: General", Decimal("-12.00"), "EUR"),
        ("Processing fees: GoCardless", Decimal("0.50"), "EUR"),
    }
    assert per_currency(rows) == {"GBP": 0, "EUR": 0}


def test_an_estimated_rate_is_marked_estimated_on_the_bank_and_exchange_postings(
    runtime: Runtime,
    settings: Settings,
    fake_gocardless: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    payout = euro_payout(
        runtime,
        fake_gocardless,
        {"fx_currency": "GBP", "exchange_rate": None, "estimated_exchange_rate": "0.8600000000", "fx_amount": None},
    )

    rows = export(settings, monkeypatch, tmp_path)
    estimated = " (estimated: GoCardless has not confirmed the rate)"
    converted = "GoCardless payout ref-1 converted: EUR 11.50 to GBP 9.89"  # 1150 x 0.86 = 989
    assert bank_and_exchange(rows) == [
        (
            "Bank: GoCardless payouts",
            "9.89",
            "",
            "GBP",
            f"GoCardless payout ref-1; reached the bank as GBP 9.89 at EUR/GBP 0.8600000000{estimated}",
        ),
        ("Exchange gains and losses", "11.50", "", "EUR", converted + estimated),
        ("Exchange gains and losses", "", "9.89", "GBP", converted + estimated),
    ]
    assert per_currency(rows) == {"GBP": 0, "EUR": 0}

    # Confirmed (`payouts.fx_rate_confirmed`): the next export books what GoCardless confirmed, not estimated.
    payout["fx"].update({"exchange_rate": "0.8700000000", "fx_amount": 1001})
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0FX0001", "fx_rate_confirmed")
    rows = export(settings, monkeypatch, tmp_path)
    assert [(a, d, c, cur) for a, d, c, cur, _ in bank_and_exchange(rows)] == [
        ("Bank: GoCardless payouts", "10.01", "", "GBP"),
        ("Exchange gains and losses", "11.50", "", "EUR"),
        ("Exchange gains and losses", "", "10.01", "GBP"),
    ]
    assert not any("estimated" in row["description"] for row in rows)
    assert per_currency(rows) == {"GBP": 0, "EUR": 0}


def test_an_entry_balances_only_when_each_of_its_currencies_does() -> None:
    """Pence of one currency never pay for pence of another: £9.58 against €9.58 does not balance."""
    posting = journal.Posting(DAY, ENTRY, "Bank: GoCardless payouts", 958, "GBP")
    assert journal.balances([posting, dataclasses.replace(posting, account="Donations: General", amount=-958)]) == {
        ENTRY: 0
    }
    unbalanced = journal.balances([posting, dataclasses.replace(posting, amount=-958, currency="EUR")])
    assert unbalanced[ENTRY] != 0
