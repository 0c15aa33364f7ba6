"""A Stripe payout line for a Bacs Direct Debit (or other non-card) payment (review s16d). Such a payment's charge
is a `py_...` Charge object; its balance transaction is `type: payment`, `reporting_category: charge`. Like a card
charge, it settles the gift or basket its payment intent names when we know the payment by its payment intent
only (docs/reconciliation.md: "`ch_`/`py_` charge ... else the charge's payment intent"); the line stayed an
unmatched `charge` and the payout unreconciled, because only a `ch_` source's payment intent was kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from payments.models import Payout, PayoutLine
from payments.payouts import on_money_recorded, record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, money_settings, serve_balance_transactions


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def bacs_payment(txn_id: str, amount: int, fee: int, payment_id: str, intent_id: str) -> dict:
    source = {"id": payment_id, "object": "charge", "payment_intent": intent_id}
    return balance_transaction(txn_id, amount, fee, source, bt_type="payment")


def record_payout(runtime: Runtime, amount: int) -> None:
    payout = {"id": "po_bacs", "amount": amount, "currency": "gbp", "status": "paid", "arrival_date": 1772668800}
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, {**payout, "reconciliation_status": "completed"}, "payout.reconciliation_completed")


def lines_and_state(runtime: Runtime) -> tuple[str, list[tuple[str, str, bool]]]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "po_bacs")).one()
        lines = session.exec(
            select(PayoutLine).where(PayoutLine.payout_id == payout.id).order_by(PayoutLine.position)
        ).all()
        return str(payout.reconciliation), [
            (line.provider_line_id, line.kind, line.matched_at is not None) for line in lines
        ]


def test_a_bacs_payment_known_by_its_payment_intent_settles_its_gift(
    runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    """A £20.00 monthly gift paid by Bacs Debit, recorded from its invoice by its payment intent (the charge not
    known yet), and a basket paid by Bacs known likewise: both payout lines (and their fees) are matched."""
    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 2000, stripe_payment_intent_id="pi_bacs_gift")
    order = make.order(
        runtime,
        donor,
        [{"sku": "TEE-PLAIN-M", "quantity": 1, "unit_price": 1500}],
        stripe_payment_intent_id="pi_bacs_shop",
    )
    serve_balance_transactions(
        fake_stripe,
        {
            "po_bacs": [
                bacs_payment("txn_gift", 2000, 20, "py_gift", "pi_bacs_gift"),
                bacs_payment("txn_shop", 1500, 15, "py_shop", "pi_bacs_shop"),
            ]
        },
    )

    record_payout(runtime, 2000 - 20 + 1500 - 15)

    state, lines = lines_and_state(runtime)
    assert lines == [
        ("txn_gift", "gift", True),
        ("txn_gift:fee", "fee", True),
        ("txn_shop", "order", True),
        ("txn_shop:fee", "fee", True),
    ]
    assert state == "reconciled"
    with runtime.read_session() as session:
        matched = {line.provider_line_id: (line.gift_id, line.order_id) for line in session.exec(select(PayoutLine))}
    assert matched["txn_gift"] == (gift, None) and matched["txn_shop"] == (None, order)


def test_a_bacs_payment_recorded_after_its_payout_is_matched_then(runtime: Runtime, fake_stripe: FakeProvider) -> None:
    """The payout first; the gift recorded later (by its payment intent) matches the waiting line at once."""
    serve_balance_transactions(fake_stripe, {"po_bacs": [bacs_payment("txn_gift", 2000, 20, "py_late", "pi_late")]})
    record_payout(runtime, 1980)
    assert lines_and_state(runtime)[0] == "unreconciled"

    make.gift(runtime, make.supporter(runtime), 2000, stripe_payment_intent_id="pi_late")
    with runtime.unit_of_work() as uow:
        on_money_recorded(uow, ["pi_late"])

    assert lines_and_state(runtime) == ("reconciled", [("txn_gift", "gift", True), ("txn_gift:fee", "fee", True)])
