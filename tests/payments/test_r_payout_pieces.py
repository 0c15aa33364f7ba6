"""Payout lines that reach us in pieces or twice (found in review): a Stripe report or a GoCardless export split over
several files, a file for a payout Stripe also reports, a file that contradicts what is already recorded. The money
must add up, and no line already recorded may be lost or silently changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from payments.imports import InvalidImport, import_gocardless_export, import_stripe_report
from payments.models import Payout, PayoutLine
from payments.payouts import record_gocardless_payout, record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import (
    balance_transaction,
    money_settings,
    serve_balance_transactions,
    serve_gocardless_payout,
)

STRIPE_HEADER = (
    "balance_transaction_id,currency,gross,fee,net,reporting_category,source_id,description,automatic_payout_id,"
    "charge_id,payment_intent_id,refund_id,dispute_id\n"
)
STRIPE_ROW_1 = "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
STRIPE_ROW_2 = "txn_2,gbp,20.00,0.50,19.50,charge,ch_2,gift,po_1,ch_2,pi_2,,\n"
GC_HEADER = "payout_id,type,amount,payment_id,refund_id\n"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def payout_and_lines(runtime: Runtime, provider_payout_id: str) -> tuple[Payout, list[PayoutLine]]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == provider_payout_id)).one()
        lines = list(
            session.exec(
                select(PayoutLine)
                .where(PayoutLine.payout_id == payout.id)
                .order_by(col(PayoutLine.position), col(PayoutLine.provider_line_id))
            )
        )
        session.expunge_all()
        return payout, lines


def two_card_gifts(runtime: Runtime) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    make.gift(runtime, donor, 2000, stripe_charge_id="ch_2")


def stripe_payout(amount: int) -> dict[str, Any]:
    return {"id": "po_1", "amount": amount, "currency": "gbp", "status": "paid", "reconciliation_status": "completed"}


def test_a_stripe_report_in_two_files_makes_one_payout_of_both(runtime: Runtime) -> None:
    """With no payout amount known, the amount is the sum of the lines. It was fixed at the first file's lines, so
    the second file's lines showed as a discrepancy (-£19.50) and the import said the amount came from Stripe."""
    two_card_gifts(runtime)
    with runtime.unit_of_work() as uow:
        (first,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1)
    with runtime.unit_of_work() as uow:
        (second,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_2)

    assert (first.amount_from, second.amount_from) == ("lines", "lines")
    assert (str(second.match.reconciliation), second.match.discrepancy) == ("reconciled", 0)
    payout, lines = payout_and_lines(runtime, "po_1")
    assert payout.amount == 3427 + 1950 == sum(line.amount for line in lines)

    # Once a payout amount is given (the bank statement), it is the fact the lines are held to.
    with runtime.unit_of_work() as uow:
        (given,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1, payout_amounts={"po_1": 5400})
    assert (given.amount_from, given.match.discrepancy) == ("given", 5400 - 5377)
    with runtime.unit_of_work() as uow:
        (again,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_2)
    assert (again.amount_from, again.match.discrepancy) == ("provider", 23), "already recorded, kept"


def test_a_file_never_changes_a_line_stripe_reported(runtime: Runtime, fake_stripe: FakeProvider) -> None:
    """A report row for a balance transaction already loaded from Stripe, with other figures, overwrote Stripe's
    figures (£35.00 became £36.00) and the payout turned unreconciled. Refused whole now, naming the line."""
    two_card_gifts(runtime)
    serve_balance_transactions(fake_stripe, {"po_1": [balance_transaction("txn_1", 3500, 73, "ch_1")]})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout(3427), "payout.reconciliation_completed")

    changed = STRIPE_ROW_1.replace("35.00,0.73,34.27", "36.00,0.73,35.27")
    with pytest.raises(InvalidImport, match="txn_1"), runtime.unit_of_work() as uow:
        import_stripe_report(uow, STRIPE_HEADER + changed + STRIPE_ROW_2)

    payout, lines = payout_and_lines(runtime, "po_1")
    assert [(line.provider_line_id, line.amount) for line in lines] == [("txn_1", 3500), ("txn_1:fee", -73)]
    assert str(payout.reconciliation) == "reconciled"
    # The same figures again are fine, and the new row is added.
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1 + STRIPE_ROW_2)
    assert (result.lines_added, result.amount_from) == (2, "provider")


def test_a_gocardless_export_in_two_files_never_loses_an_item(runtime: Runtime) -> None:
    """Payout items have no id of their own: a line is `type:payment:n`. A second file with another fee on the same
    payment got the id of the first file's fee and overwrote it: -30p vanished from the payout. Now such a file is
    refused (nothing written), and a second file of other items adds them, the amount following the lines."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    make.gift(runtime, donor, 500, gocardless_payment_id="PM2")
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, GC_HEADER + "PO1,payment_paid_out,1000,PM1,\nPO1,gocardless_fee,-30,PM1,\n")

    with pytest.raises(InvalidImport, match="gocardless_fee"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, GC_HEADER + "PO1,gocardless_fee,-12.5,PM1,\n")
    payout, lines = payout_and_lines(runtime, "PO1")
    assert [(line.provider_line_id, line.amount) for line in lines] == [
        ("payment_paid_out:PM1:1", 1000),
        ("gocardless_fee:PM1:1", -30),
    ]

    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, GC_HEADER + "PO1,payment_paid_out,500,PM2,\n")
    assert (result.lines_added, result.amount_from, str(result.match.reconciliation)) == (1, "lines", "reconciled")
    payout, lines = payout_and_lines(runtime, "PO1")
    assert payout.amount == 1470 == sum(line.amount for line in lines)


def test_a_payout_first_read_from_a_partial_report_takes_its_lines_from_stripe_once_reported(
    runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    """A payout made from a file was never loaded from Stripe (its lines counted as loaded), so a line missing from
    the file stayed missing: the payout read unreconciled by £19.50 for good, and `reconcile --fetch` skips it."""
    two_card_gifts(runtime)
    with runtime.unit_of_work() as uow:
        import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1)
    serve_balance_transactions(
        fake_stripe,
        {"po_1": [balance_transaction("txn_1", 3500, 73, "ch_1"), balance_transaction("txn_2", 2000, 50, "ch_2")]},
    )

    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout(5377), "payout.reconciliation_completed")

    payout, lines = payout_and_lines(runtime, "po_1")
    assert sorted(line.provider_line_id for line in lines) == ["txn_1", "txn_1:fee", "txn_2", "txn_2:fee"]
    assert (str(payout.reconciliation), payout.discrepancy, payout.source) == ("reconciled", 0, "api")
    # Reported again: Stripe's lines are loaded once.
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout(5377), "payout.reconciliation_completed")
    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 1


def test_a_gocardless_payout_first_read_from_a_partial_export_takes_its_items_once_paid(
    runtime: Runtime, fake_gocardless: FakeProvider
) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, GC_HEADER + "PO1,payment_paid_out,1000,PM1,\n")
    serve_gocardless_payout(
        fake_gocardless,
        {"id": "PO1", "amount": 970, "currency": "GBP", "status": "paid", "arrival_date": "2026-03-05"},
        [
            {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM1"}},
            {"type": "gocardless_fee", "amount": "-30.0", "links": {"payment": "PM1"}},
        ],
    )

    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO1", "paid")

    payout, lines = payout_and_lines(runtime, "PO1")
    assert [(line.provider_line_id, line.amount) for line in lines] == [
        ("payment_paid_out:PM1:1", 1000),
        ("gocardless_fee:PM1:1", -30),
    ]
    assert (str(payout.reconciliation), payout.discrepancy, payout.amount) == ("reconciled", 0, 970)
