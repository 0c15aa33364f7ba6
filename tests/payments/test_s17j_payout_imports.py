"""Payout CSV imports, reviewed with fresh eyes (helper J): what a file that leaves something out must not change."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from payments.imports import InvalidImport, import_gocardless_export
from payments.models import Payout, PayoutLine
from payments.payouts import record_gocardless_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, serve_gocardless_payout

GC_FULL = "payout_id,type,amount,payment_id,refund_id,currency,payout_amount,arrival_date,reference\n"
GC_PLAIN = "payout_id,type,amount,payment_id,refund_id\n"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def payout_lines(runtime: Runtime, provider_payout_id: str) -> tuple[Payout, list[PayoutLine]]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == provider_payout_id)).one()
        lines = list(
            session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id).order_by(col(PayoutLine.position)))
        )
        session.expunge_all()
        return payout, lines


def test_a_gocardless_file_without_a_currency_keeps_a_euro_payout_in_euros(runtime: Runtime) -> None:
    """A euro payout's items, the payment from a full export and its fee from one with the minimal columns (no
    `currency`): the second file turned the payout into pounds, its fee line in GBP beside a payment in EUR."""
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, GC_FULL + "PO1,payment_paid_out,1000,PM1,,EUR,,2026-03-05,REF\n")
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, GC_PLAIN + "PO1,gocardless_fee,-14,PM1,\n")

    payout, lines = payout_lines(runtime, "PO1")
    assert payout.currency == "EUR" and result.currency == "EUR"
    assert [(line.amount, line.currency) for line in lines] == [(1000, "EUR"), (-14, "EUR")]
    assert payout.amount == 986


def test_a_gocardless_file_does_not_move_the_day_gocardless_reported_a_payout_arrived(
    runtime: Runtime, fake_gocardless: FakeProvider
) -> None:
    """A payout GoCardless reported as arriving on 5 March, then its export re-saved by a spreadsheet that writes
    dates month first (`03/05/2026`, read day first): the file moved the payout to 3 May, so the accounts journal,
    which books a payout on its arrival date, took it out of March. The provider's date is the fact, as its amount
    is: such a file is refused whole, and the same date (in either notation) is fine."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    serve_gocardless_payout(
        fake_gocardless,
        {
            "id": "PO1",
            "amount": 970,
            "currency": "GBP",
            "status": "paid",
            "arrival_date": "2026-03-05",
            "reference": "GC-REF-1",
        },
        [
            {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM1"}},
            {"type": "gocardless_fee", "amount": "-30.0", "links": {"payment": "PM1"}},
        ],
    )
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO1", "paid")

    export = (
        GC_FULL
        + "PO1,payment_paid_out,1000,PM1,,GBP,970,{day},{reference}\n"
        + "PO1,gocardless_fee,-30,PM1,,GBP,970,{day},{reference}\n"
    )
    with pytest.raises(InvalidImport, match="arrival_date"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, export.format(day="03/05/2026", reference="GC-REF-1"))
    with pytest.raises(InvalidImport, match="reference"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, export.format(day="2026-03-05", reference="SOMETHING-ELSE"))

    payout, _ = payout_lines(runtime, "PO1")
    assert (payout.arrival_date, payout.reference) == (dt.date(2026, 3, 5), "GC-REF-1")
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, export.format(day="05/03/2026", reference="GC-REF-1"))
    assert (result.lines_added, result.match.reconciliation) == (0, "reconciled")
