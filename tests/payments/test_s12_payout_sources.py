"""Payout lines first read from a file, then reported by the provider before its list was final (found in review):
the file's lines counted as loaded, so Stripe's `payout.reconciliation_completed` (or GoCardless's payout once paid)
never read the provider's list, and a line the file lacked stayed missing for good."""

from __future__ import annotations

from typing import Any

import pytest

from core.runtime import Runtime
from payments.imports import import_gocardless_export, import_stripe_report
from payments.payouts import record_gocardless_payout, record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, serve_balance_transactions, serve_gocardless_payout
from tests.payments.test_r_payout_pieces import GC_HEADER, STRIPE_HEADER, STRIPE_ROW_1, payout_and_lines, settings

__all__ = ["settings"]  # the fixture, shared with the payout file tests


def stripe_payout(status: str) -> dict[str, Any]:
    return {"id": "po_1", "amount": 5377, "currency": "gbp", "status": "paid", "reconciliation_status": status}


@pytest.mark.parametrize("file_first", [True, False])
def test_a_payout_from_a_file_reported_mid_reconciliation_takes_stripes_final_lines(
    runtime: Runtime, fake_stripe: FakeProvider, file_first: bool
) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    make.gift(runtime, donor, 2000, stripe_charge_id="ch_2")
    serve_balance_transactions(
        fake_stripe,
        {"po_1": [balance_transaction("txn_1", 3500, 73, "ch_1"), balance_transaction("txn_2", 2000, 50, "ch_2")]},
    )
    steps = [
        lambda uow: import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1),
        lambda uow: record_stripe_payout(uow, stripe_payout("in_progress"), "payout.paid"),
    ]
    for step in steps if file_first else reversed(steps):
        with runtime.unit_of_work() as uow:
            step(uow)
    assert fake_stripe.requests_to("GET", r"/v1/balance_transactions") == []  # not final yet: not read

    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout("completed"), "payout.reconciliation_completed")

    payout, lines = payout_and_lines(runtime, "po_1")
    assert [line.provider_line_id for line in lines] == ["txn_1", "txn_1:fee", "txn_2", "txn_2:fee"]
    assert (str(payout.reconciliation), payout.discrepancy, payout.amount) == ("reconciled", 0, 5377)
    # Reported again (a redelivery): Stripe's lines are read once.
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout("completed"), "payout.reconciliation_completed")
    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 1
    # A file afterwards still adds nothing and changes nothing.
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, STRIPE_HEADER + STRIPE_ROW_1)
    assert (result.lines_added, result.amount_from) == (0, "provider")


def test_a_gocardless_payout_from_a_file_reported_while_pending_takes_its_items_once_paid(
    runtime: Runtime, fake_gocardless: FakeProvider
) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, GC_HEADER + "PO1,payment_paid_out,1000,PM1,\n")
    payout_object = {"id": "PO1", "amount": 970, "currency": "GBP", "status": "pending", "arrival_date": "2026-03-05"}
    serve_gocardless_payout(
        fake_gocardless,
        payout_object,
        [
            {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM1"}},
            {"type": "gocardless_fee", "amount": "-30.0", "links": {"payment": "PM1"}},
        ],
    )
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO1", "created")
    payout_object["status"] = "paid"
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO1", "paid")

    payout, lines = payout_and_lines(runtime, "PO1")
    assert [(line.provider_line_id, line.amount) for line in lines] == [
        ("payment_paid_out:PM1:1", 1000),
        ("gocardless_fee:PM1:1", -30),
    ]
    assert (str(payout.reconciliation), payout.discrepancy, payout.amount) == ("reconciled", 0, 970)
