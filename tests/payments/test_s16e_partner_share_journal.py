"""The journal's partner shares over several periods (review s16e): a real basket bought on the shop form, paid,
refunded, disputed and sent back through signed Stripe webhooks and the staff API, each payout listed through the
real SDK, the journal built period by period from what was recorded.

The order line posted the partner's share as it stood at export: a shirt sold in March and refunded in April
posted £5 owed in March's first export, £0 when March was exported again, and nothing in April, so the books
kept owing £5 (or changed a closed period) while the partner statement said £0. Now the order line posts the share
as sold, and the line that takes the goods back posts the change it makes."""

from __future__ import annotations

import copy
import datetime as dt
from collections import defaultdict
from typing import Any

import pytest

from core.clock import uk_today
from core.runtime import Runtime
from payments.journal import PARTNER_COST, PARTNER_OWED, Posting, balances, payout_postings, return_postings
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, serve_balance_transactions
from tests.payments.test_basket_refund_fixes import Basket, auth, basket, settings
from tests.webhooks.support import EventsWorker, app_client, catalogue, worker

__all__ = ["app_client", "basket", "catalogue", "settings", "worker"]

OWED = f"{PARTNER_OWED}: LMHR"
MARCH = (dt.date(2026, 3, 1), dt.date(2026, 3, 31))
APRIL = (dt.date(2026, 4, 1), dt.date(2026, 4, 30))
MAY = (dt.date(2026, 5, 1), dt.date(2026, 5, 31))


class Payouts:
    """Stripe's payouts of the test, each served with its balance transactions and recorded as the event would."""

    def __init__(self, runtime: Runtime, fake_stripe: FakeProvider) -> None:
        self.runtime, self.fake_stripe = runtime, fake_stripe
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def pay(self, payout_id: str, arrival: dt.date, rows: list[dict[str, Any]]) -> None:
        self.rows[payout_id] = rows
        serve_balance_transactions(self.fake_stripe, self.rows)
        payout = {
            "id": payout_id,
            "object": "payout",
            "amount": sum(row["net"] for row in rows),
            "currency": "gbp",
            "status": "paid",
            "arrival_date": int(dt.datetime.combine(arrival, dt.time(12), tzinfo=dt.UTC).timestamp()),
            "reconciliation_status": "completed",
        }
        with self.runtime.unit_of_work() as uow:
            record_stripe_payout(uow, payout, "payout.reconciliation_completed")


@pytest.fixture
def payouts(runtime: Runtime, fake_stripe: FakeProvider) -> Payouts:
    return Payouts(runtime, fake_stripe)


def export(runtime: Runtime, period: tuple[dt.date, dt.date]) -> list[Posting]:
    with runtime.read_session() as session:
        postings = payout_postings(session, *period)
    assert set(balances(postings).values()) <= {0}, "every payout's entry balances"
    return postings


def owed(postings: list[Posting]) -> int:
    """What the postings leave owed to LMHR (a credit to `Partner shares owed`), in pence."""
    by_account: dict[str, int] = defaultdict(int)
    for posting in postings:
        by_account[posting.account] += posting.amount
    assert by_account[PARTNER_COST] == -by_account[OWED], "a cost of the sale for every penny owed"
    return -by_account[OWED]


def sale(basket: Basket) -> dict[str, Any]:
    charge = {"id": basket.charge_id, "object": "charge", "payment_intent": basket.intent_id}
    return balance_transaction(f"txn_sale_{basket.charge_id}", basket.total, 0, charge)


def refund_row(basket: Basket, refund: dict[str, Any], category: str = "refund") -> dict[str, Any]:
    source = {"id": refund["id"], "object": "refund", "charge": basket.charge_id}
    sign = -1 if category == "refund" else 1
    return balance_transaction(f"txn_{category}_{refund['id']}", sign * refund["amount"], 0, source, category=category)


def statement_owed(basket: Basket) -> int:
    [lmhr] = basket.partner_statement()["campaigns"]
    return int(lmhr["owed"]["amount"])


def send_back(basket: Basket, quantity: int) -> None:
    token = make.staff_token(basket.runtime, "fundraiser")
    response = basket.client.post(
        f"/api/orders/{basket.order_id}/returns",
        json={"lines": [{"sku": "TEE-LMHR-M", "quantity": quantity}]},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text


def test_a_shirt_refunded_in_a_later_period_gives_the_share_back_there(
    basket: Basket, worker: EventsWorker, runtime: Runtime, payouts: Payouts
) -> None:
    """The review's case: an LMHR shirt (£5 share) paid out in March, refunded in full in April. March posts £5
    owed and keeps posting it when exported again after the refund; April's refund line gives it back (Dr `Partner
    shares owed: LMHR` / Cr `Trading: partner shares`), so the books owe what the statement says: nothing."""
    basket.buy({"TEE-LMHR-M": "1"})
    basket.deliver(worker)
    payouts.pay("po_march", dt.date(2026, 3, 5), [sale(basket)])
    march = export(runtime, MARCH)
    assert owed(march) == 500 == statement_owed(basket)

    refund = basket.refund(1800)
    basket.deliver(worker)
    payouts.pay("po_april", dt.date(2026, 4, 5), [refund_row(basket, refund)])

    assert export(runtime, MARCH) == march, "a period exported again gives the same postings"
    april = export(runtime, APRIL)
    given_back = [p for p in april if p.account in (OWED, PARTNER_COST)]
    assert [(p.account, p.amount, p.source_id) for p in given_back] == [
        (PARTNER_COST, -500, refund["id"]),
        (OWED, 500, refund["id"]),
    ]
    assert owed(march) + owed(april) == 0 == statement_owed(basket)


def test_shirts_sent_back_one_at_a_time_give_their_shares_back_on_the_days_they_are_recorded(
    basket: Basket, worker: EventsWorker, runtime: Runtime, payouts: Payouts
) -> None:
    """Three LMHR shirts (£15 owed) paid out in March. In April one is sent back and refunded (£18.00), in May
    another. Returns are dated (s17d): each gives back its shirt's £5 in its own entry on the day it was recorded
    (`return_postings`), so the refunds after them change no share; April stays as it was once May's return is
    recorded, and over the periods the books owe the £5 of the shirt kept, as the statement says."""
    basket.buy({"TEE-LMHR-M": "3"})
    basket.deliver(worker)
    payouts.pay("po_march", dt.date(2026, 3, 5), [sale(basket)])

    send_back(basket, 1)
    first = basket.refund(1800)
    basket.deliver(worker)
    payouts.pay("po_april", dt.date(2026, 4, 5), [refund_row(basket, first)])
    april = export(runtime, APRIL)
    assert owed(april) == 0

    send_back(basket, 1)
    second = basket.refund(1800)
    basket.deliver(worker)
    payouts.pay("po_may", dt.date(2026, 5, 5), [refund_row(basket, second)])

    assert export(runtime, APRIL) == april
    assert owed(export(runtime, MAY)) == 0
    with runtime.read_session() as session:
        returns = return_postings(session, uk_today(), uk_today())
    assert set(balances(returns).values()) == {0} and owed(returns) == -1000
    assert sum(owed(export(runtime, p)) for p in (MARCH, APRIL, MAY)) + owed(returns) == 500 == statement_owed(basket)


def test_a_refund_that_fails_later_takes_back_the_share_it_gave_back(
    basket: Basket, worker: EventsWorker, runtime: Runtime, payouts: Payouts
) -> None:
    """A refund of the whole shirt still pending when Stripe paid it out in April gives the share back there (as
    it will once it succeeds); it fails, and the money back in May (`refund_failure`) owes the share again. April
    stays as exported; the books owe the £5 the statement says."""
    basket.buy({"TEE-LMHR-M": "1"})
    basket.deliver(worker)
    refund = basket.refund(1800, status="pending")
    basket.deliver(worker)
    payouts.pay("po_march", dt.date(2026, 3, 5), [sale(basket)])
    payouts.pay("po_april", dt.date(2026, 4, 5), [refund_row(basket, refund)])
    april = export(runtime, APRIL)
    assert owed(april) == -500

    refund["status"] = "failed"
    basket.scenario._stripe("refund.updated", copy.deepcopy(refund))
    basket.deliver(worker)
    payouts.pay("po_may", dt.date(2026, 5, 5), [refund_row(basket, refund, "refund_failure")])

    assert export(runtime, APRIL) == april
    assert owed(export(runtime, MAY)) == 500
    assert sum(owed(export(runtime, period)) for period in (MARCH, APRIL, MAY)) == 500 == statement_owed(basket)


def test_a_basket_lost_in_a_dispute_gives_the_share_back_with_the_dispute(
    basket: Basket, worker: EventsWorker, runtime: Runtime, payouts: Payouts
) -> None:
    """Two LMHR shirts and a £5 donation paid out in March; the whole basket lost in a dispute, its money taken
    in April: the dispute's line gives back the £10 owed, March is unchanged, the books owe nothing."""
    basket.buy({"TEE-LMHR-M": "2"}, donation="5")
    basket.deliver(worker)
    payouts.pay("po_march", dt.date(2026, 3, 5), [sale(basket)])
    march = export(runtime, MARCH)
    assert owed(march) == 1000

    dispute_id = basket.scenario._dispute(basket.charge_id, basket.intent_id, basket.total, "lost")
    basket.deliver(worker)
    source = {"id": dispute_id, "object": "dispute", "charge": basket.charge_id}
    payouts.pay(
        "po_april",
        dt.date(2026, 4, 5),
        [balance_transaction(f"txn_{dispute_id}", -basket.total, 1500, source, category="dispute")],
    )

    assert export(runtime, MARCH) == march
    assert owed(export(runtime, APRIL)) == -1000
    assert statement_owed(basket) == 0


def test_a_goodwill_refund_with_no_return_leaves_the_share_owed(
    basket: Basket, worker: EventsWorker, runtime: Runtime, payouts: Payouts
) -> None:
    """£5.00 of two shirts' price given back with no return recorded (a goodwill refund): the shirts are kept, so
    the refund's line changes no share and the books owe the £10 the statement says."""
    basket.buy({"TEE-LMHR-M": "2"})
    basket.deliver(worker)
    payouts.pay("po_march", dt.date(2026, 3, 5), [sale(basket)])
    refund = basket.refund(500)
    basket.deliver(worker)
    payouts.pay("po_april", dt.date(2026, 4, 5), [refund_row(basket, refund)])

    assert owed(export(runtime, APRIL)) == 0
    assert owed(export(runtime, MARCH)) == 1000 == statement_owed(basket)
