"""Found in review: a shop basket paid on two Checkout Sessions (the donor had it open in two tabs and paid both).
The second payment's goods money was recorded nowhere (the basket was already paid, so the second completion
changed nothing on it), while its donation line became a second gift hung on the first basket: a refund of the
second charge then came off the wrong order, and payout reconciliation took the whole second charge for a gift.

Now the second payment is a second order, `duplicate_payment`, of the same basket (`duplicate_of_id`), with its own
session, payment intent and charge and its donation line as its own gift: finance sees it (a review item on the
supporter, a history item) and refunds it like any basket; no shirts are taken from stock or sent for it."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import ReviewItem
from payments import journal
from payments import service as payments_service
from payments.models import Gift, Order, OrderStatus, PayoutLine, Reconciliation, Sku
from payments.models import Payout as PayoutRow
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, fixture, seed_checkout, seed_order, seed_supporter, stripe_event, unique
from tests.payments.payout_fakes import balance_transaction, serve_balance_transactions
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    post_stripe,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]

SKU = "TEE-SOLIDARITY-M"
DONATION = 500


def _stock(runtime: Runtime) -> int:
    with reading(runtime) as session:
        return session.exec(select(Sku).where(Sku.sku == SKU)).one().stock


def _paid_twice(scenario: Scenario, supporter: uuid.UUID) -> dict[str, Any]:
    """One basket (one checkout, one order) completed on two sessions, each paid by its own charge."""
    runtime = scenario.runtime
    order_id, goods = seed_order(runtime, supporter, sku=SKU, quantity=1, donation=DONATION)
    total = goods + DONATION
    checkout_id = seed_checkout(runtime, supporter, amount=total, order_id=order_id)
    paid: dict[str, Any] = {"order_id": order_id, "goods": goods, "total": total, "sessions": []}
    for _ in range(2):
        intent_id, charge_id = scenario._intent(total, created=scenario.tick())
        session_id = unique("cs_test_")
        scenario._stripe(
            "checkout.session.completed",
            scenario._session_object(
                checkout_id,
                id=session_id,
                mode="payment",
                payment_status="paid",
                payment_intent=intent_id,
                amount_total=total,
                amount_subtotal=total,
                submit_type="pay",
            ),
        )
        paid["sessions"].append((session_id, intent_id, charge_id))
    return paid


def test_a_basket_paid_on_two_sessions_records_the_second_payment_as_a_duplicate(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Tabitha")
    stock_before = _stock(runtime)
    paid = _paid_twice(scenario, supporter)
    (first_session, _first_intent, first_charge), (second_session, second_intent, second_charge) = paid["sessions"]
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries + scenario.deliveries)  # each delivered twice
    worker.join()
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        original = session.get(Order, paid["order_id"])
        assert original is not None
        duplicate = session.exec(select(Order).where(Order.stripe_checkout_session_id == second_session)).one()
        gifts = {g.stripe_checkout_session_id: g for g in session.exec(select(Gift)).all()}
        reviews = session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all()
        totals = payments_service.supporter_totals(session, [supporter])
    assert (original.status, original.stripe_checkout_session_id, original.stripe_charge_id) == (
        OrderStatus.PAID,
        first_session,
        first_charge,
    )
    assert (duplicate.status, duplicate.duplicate_of_id, duplicate.stripe_payment_intent_id) == (
        OrderStatus.DUPLICATE_PAYMENT,
        original.id,
        second_intent,
    )
    assert duplicate.stripe_charge_id == second_charge and duplicate.paid_at is not None
    assert duplicate.goods_amount + duplicate.vat_amount == paid["goods"]
    assert duplicate.donation_amount == DONATION and duplicate.supporter_id == supporter
    # Each payment's donation line is a gift of its own order.
    assert (gifts[first_session].order_id, gifts[second_session].order_id) == (original.id, duplicate.id)
    assert gifts[second_session].stripe_charge_id == second_charge
    assert _stock(runtime) == stock_before - 1  # one basket of shirts, sent once
    assert [(r.kind, r.data["order_id"]) for r in reviews] == [("duplicate_payment", str(duplicate.id))]
    assert totals["purchases"].amount == paid["goods"]  # not bought twice
    items = [i for i in history(runtime, supporter) if i["type"] == "duplicate_payment"]
    assert len(items) == 1 and items[0]["order_id"] == str(duplicate.id)
    assert items[0]["amount"] == paid["total"]

    # The payout with both charges: each settles its own order (and that order's donation line).
    payout = copy.deepcopy(fixture("stripe/event_payout_paid.constructed.json")["data"]["object"])
    payout.update({"id": unique("po_"), "amount": 2 * paid["total"], "reconciliation_status": "completed"})
    rows = [
        balance_transaction(
            unique("txn_"), paid["total"], 0, {"id": charge, "object": "charge", "payment_intent": intent}
        )
        for _, intent, charge in paid["sessions"]
    ]
    rows.append(
        balance_transaction(
            unique("txn_"), -2 * paid["total"], 0, {"id": payout["id"], "object": "payout"}, category="payout"
        )
    )
    serve_balance_transactions(fake_stripe, {payout["id"]: rows})
    assert post_stripe(app_client, stripe_event("payout.paid", payout, created=scenario.tick())).status_code == 200
    worker.join()
    with reading(runtime) as session:
        stored = session.exec(select(PayoutRow).where(PayoutRow.provider_payout_id == payout["id"])).one()
        lines = {line.source_id: line for line in session.exec(select(PayoutLine)).all()}
    assert stored.reconciliation == Reconciliation.RECONCILED
    assert (lines[first_charge].order_id, lines[first_charge].gift_id) == (original.id, gifts[first_session].id)
    assert (lines[second_charge].kind, lines[second_charge].order_id, lines[second_charge].gift_id) == (
        "order",
        duplicate.id,
        gifts[second_session].id,
    )
    # The journal: the first basket's shirts are a sale (with VAT); the second payment's goods part is the donor's
    # money held to refund (no sale, no VAT), its donation a donation.
    day = journal.payout_date(stored)
    with reading(runtime) as session:
        by_account = _journal_by_account(session, day, second_charge)
        first_accounts = set(_journal_by_account(session, day, first_charge))
    assert by_account[journal.DUPLICATE_PAYMENTS] == -paid["goods"]
    assert journal.TRADING not in by_account and journal.VAT_OUTPUT not in by_account
    assert sum(amount for account, amount in by_account.items() if account.startswith("Donations")) == -DONATION
    assert journal.TRADING in first_accounts and journal.DUPLICATE_PAYMENTS not in first_accounts

    # Finance refunds the second payment in full: it comes off the duplicate, goods first, the first basket is
    # untouched.
    refund = scenario._refund(second_charge, second_intent, paid["total"])
    charge = scenario._charge(second_charge, second_intent, paid["total"], paid["total"])
    for event in (
        stripe_event("charge.refunded", charge, created=scenario.tick()),
        stripe_event("refund.created", refund, created=scenario.tick()),
    ):
        assert post_stripe(app_client, event).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        original = session.get(Order, paid["order_id"])
        duplicate = session.get(Order, duplicate.id)
        first_gift = session.get(Gift, gifts[first_session].id)
        second_gift = session.get(Gift, gifts[second_session].id)
        totals = payments_service.supporter_totals(session, [supporter])
    assert original is not None and duplicate is not None and first_gift and second_gift
    assert (original.status, original.refunded_amount, first_gift.returned_amount) == (OrderStatus.PAID, 0, 0)
    assert (duplicate.status, duplicate.refunded_amount, second_gift.returned_amount) == (
        OrderStatus.DUPLICATE_PAYMENT,
        paid["goods"],
        DONATION,
    )
    assert (totals["purchases"].amount, totals["donated"].amount) == (paid["goods"], DONATION)
    # Once refunded, the payment's own postings still hold it as a duplicate (not a sale), whatever its status.
    with reading(runtime) as session:
        assert journal.TRADING not in _journal_by_account(session, day, second_charge)


def _journal_by_account(session: Any, day: Any, source_id: str) -> dict[str, int]:
    """The journal's postings for one payout line (a charge), summed by account."""
    found: dict[str, int] = {}
    for posting in journal.payout_postings(session, day, day):
        if posting.source_id == source_id:
            found[posting.account] = found.get(posting.account, 0) + posting.amount
    return found


def test_the_other_session_of_a_basket_expiring_cancels_nothing(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The basket's first session completed unpaid (a delayed method); the second tab's session, never paid,
    expires: the basket stays pending (it used to be cancelled), and becomes paid when its payment arrives."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ursula")
    order_id, goods = seed_order(runtime, supporter, sku=SKU, quantity=1, donation=0)
    checkout_id = seed_checkout(runtime, supporter, amount=goods, order_id=order_id)
    intent_id, _ = scenario._intent(goods, created=scenario.tick())
    first = scenario._session_object(
        checkout_id, id=unique("cs_test_"), mode="payment", payment_status="unpaid", payment_intent=intent_id
    )
    other = scenario._session_object(
        checkout_id, id=unique("cs_test_"), mode="payment", payment_status="unpaid", payment_intent=None
    )
    install(scenario, fake_stripe, fake_gocardless)
    # One after the other: processed the other way round, the expiry comes first and (no session bound to the
    # basket yet) cancels it, which the later payment then undoes (covered elsewhere).
    for event in (
        stripe_event("checkout.session.completed", first, created=scenario.tick()),
        stripe_event("checkout.session.expired", {**other, "status": "expired"}, created=scenario.tick()),
    ):
        assert post_stripe(app_client, event).status_code == 200
        worker.join()
    with reading(runtime) as session:
        assert session.get(Order, order_id).status == OrderStatus.PENDING  # type: ignore[union-attr]
        assert session.exec(select(Order).where(Order.duplicate_of_id == order_id)).all() == []
    succeeded = stripe_event("checkout.session.async_payment_succeeded", first, created=scenario.tick())
    assert post_stripe(app_client, succeeded).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        assert session.get(Order, order_id).status == OrderStatus.PAID  # type: ignore[union-attr]
