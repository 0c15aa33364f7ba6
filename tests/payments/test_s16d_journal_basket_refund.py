"""The journal of a basket refund Stripe has not settled yet (review s16d): a real basket bought on the shop form,
paid and refunded through signed Stripe webhooks, its payout listed through the real SDK, the journal built from
what was recorded.

Stripe takes a refund's money out of the balance when the refund is created, so a refund still `pending` (some
cards, Bacs Debit) is in a payout before it succeeds; the service allocates a refund to the goods and the donation
only once it has succeeded. The journal took such a refund on a basket with a donation line wholly for the
donation: a returned £18.00 shirt was booked to `Refunds: donations`, the sale and its VAT left standing."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from payments.journal import payout_postings
from payments.models import Refund, RefundStatus
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments.payout_fakes import balance_transaction, serve_balance_transactions
from tests.payments.test_basket_refund_fixes import Basket, basket, settings
from tests.webhooks.support import EventsWorker, app_client, catalogue, reading, worker

__all__ = ["app_client", "basket", "catalogue", "settings", "worker"]

ARRIVAL = 1772668800  # 2026-03-05 00:00 UTC


def pay_out(runtime: Runtime, fake_stripe: FakeProvider, payout_id: str, rows: list[dict], amount: int) -> None:
    serve_balance_transactions(fake_stripe, {payout_id: rows})
    payout = {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "currency": "gbp",
        "status": "paid",
        "arrival_date": ARRIVAL,
        "reconciliation_status": "completed",
    }
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, payout, "payout.reconciliation_completed")


def journal_by_account(runtime: Runtime, payout_id: str) -> dict[str, int]:
    with runtime.read_session() as session:
        postings = payout_postings(session, dt.date(2009, 1, 1), dt.date(2030, 12, 31))
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        if posting.provider_payout_id == payout_id:
            totals[posting.account] += posting.amount
    return {account: total for account, total in totals.items() if total}


def sale_and_refund(basket: Basket, refund: dict) -> list[dict]:
    charge = {"id": basket.charge_id, "object": "charge", "payment_intent": basket.intent_id}
    source = {"id": refund["id"], "object": "refund", "charge": basket.charge_id}
    return [
        balance_transaction("txn_sale", basket.total, 0, charge),
        balance_transaction("txn_refund", -refund["amount"], 0, source, category="refund"),
    ]


@pytest.mark.parametrize(
    ("amount", "shirts", "donation"),
    [(1800, 1500, 0), (2000, 1500, 200)],
    ids=["the shirt", "the shirt and part of the donation"],
)
def test_a_pending_refund_on_a_basket_is_booked_goods_first(
    basket: Basket,
    worker: EventsWorker,
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    amount: int,
    shirts: int,
    donation: int,
) -> None:
    """An £18.00 shirt (£3.00 VAT inside) and a £5.00 donation; a refund still pending at Stripe is in the payout.
    By the allocation rule it comes off the goods first: `Refunds: shirts` and the VAT given back, and only what
    is beyond the goods off the donation."""
    basket.buy({"TEE-LMHR-M": "1"}, donation="5")
    refund = basket.refund(amount, status="pending")
    basket.deliver(worker)
    with reading(runtime) as session:
        recorded = session.exec(select(Refund)).one()
    # As the service leaves a refund not succeeded yet: on the basket, not allocated to either part.
    assert recorded.status == RefundStatus.PENDING and recorded.order_id == basket.order_id
    assert (recorded.order_amount, recorded.gift_amount) == (0, 0) and recorded.gift_id is not None

    pay_out(runtime, fake_stripe, "po_pending", sale_and_refund(basket, refund), 2300 - amount)

    booked = journal_by_account(runtime, "po_pending")
    assert booked.get("Refunds: shirts") == shirts
    assert booked.get("VAT output", 0) == -300 + 300, "the VAT on the shirt given back with it"
    assert booked.get("Refunds: donations", 0) == donation
    assert booked["Trading income: shirts"] == -1500
    assert sum(booked.values()) == 0
