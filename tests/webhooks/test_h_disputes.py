"""Found in review: a Stripe dispute Stripe had as `prevented` (dispute prevention: blocked, or resolved by a refund
before it became a chargeback) stayed open for ever; and a dispute's `closed_at` was the time of whichever event
first saw the closure after the re-fetch (the dispute's opening, when that event was processed late), so redelivery
and the order of processing changed it."""

from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments import service as payments_service
from payments.models import Dispute, DisputeStatus, Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Delivery, Scenario, fixture, seed_supporter, stripe_event, unique
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


def _card_gift(scenario: Scenario, supporter: Any, amount: int) -> tuple[str, str, str]:
    """A paid one-off card gift; returns (checkout session, payment intent, charge)."""
    session_id = scenario.one_off_card_gift(supporter, amount, with_payment_intent_event=False)
    intent_id = next(iter(scenario.stripe.intents))
    charge = scenario.stripe.intents[intent_id]["latest_charge"]
    return session_id, intent_id, str(charge["id"])


def _dispute_object(charge_id: str, intent_id: str, amount: int, status: str, case_type: str) -> dict[str, Any]:
    dispute = copy.deepcopy(fixture("stripe/event_charge_dispute_created.constructed.json")["data"]["object"])
    dispute.update(
        {
            "id": unique("dp_"),
            "charge": charge_id,
            "payment_intent": intent_id,
            "amount": amount,
            "currency": "gbp",
            "status": status,
            # A prevented dispute takes no money through the dispute itself.
            "balance_transactions": [],
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "case_type": case_type}},
        }
    )
    return dispute


def _dispute_row(runtime: Runtime, dispute_id: str) -> Dispute:
    with reading(runtime) as session:
        return session.exec(select(Dispute).where(Dispute.stripe_dispute_id == dispute_id)).one()


def _utc(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


def test_a_prevented_dispute_is_closed_and_the_gift_keeps_counting(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Stripe's `prevented` (dispute prevention blocked the chargeback): the dispute is closed, no money was taken
    by it, and the supporter's history says so, like the other outcomes."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Priya")
    session_id, intent_id, charge_id = _card_gift(scenario, supporter, 2000)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()

    dispute = _dispute_object(charge_id, intent_id, 2000, "needs_response", "block")
    scenario.stripe.disputes[dispute["id"]] = dispute  # what Stripe answers now (changed below)
    opened_at = scenario.tick()
    opened = stripe_event("charge.dispute.created", copy.deepcopy(dispute), created=opened_at)
    assert post_stripe(app_client, opened).status_code == 200
    worker.join()
    assert _dispute_row(runtime, dispute["id"]).status == DisputeStatus.OPEN

    dispute["status"] = "prevented"
    closed_at = scenario.tick()
    closed = stripe_event("charge.dispute.closed", copy.deepcopy(dispute), created=closed_at)
    assert post_stripe(app_client, closed).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []

    row = _dispute_row(runtime, dispute["id"])
    assert (row.status, row.closed_at) == (DisputeStatus.PREVENTED, _utc(closed_at))
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == session_id)).one()
        donated = payments_service.supporter_totals(session, [supporter])["donated"].amount
    assert (gift.returned_amount, donated) == (0, 2000)
    items = [item for item in history(runtime, supporter) if item["type"] == "dispute"]
    assert [(i["summary"], i["amount"], i["status"]) for i in items] == [
        ("Card dispute of £20.00 opened (fraudulent)", 2000, "open"),
        ("Card dispute of £20.00 prevented (blocked before it became a chargeback)", 0, "prevented"),
    ]

    # Delivered again: nothing changes, nothing is written twice.
    assert post_stripe(app_client, closed).status_code == 200
    worker.join()
    assert _dispute_row(runtime, dispute["id"]).closed_at == _utc(closed_at)
    assert len([item for item in history(runtime, supporter) if item["type"] == "dispute"]) == 2


def test_a_dispute_prevented_by_a_refund_returns_the_money_once(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Prevention by resolution refunds the payment: Stripe's refund (charge.refunded) returns the money; the
    prevented dispute does not return it a second time."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Quentin")
    session_id, intent_id, charge_id = _card_gift(scenario, supporter, 2000)
    install(scenario, fake_stripe, fake_gocardless)
    dispute = _dispute_object(charge_id, intent_id, 500, "prevented", "resolution")
    scenario.stripe.disputes[dispute["id"]] = dispute
    refund = scenario._refund(charge_id, intent_id, 500)
    scenario.deliveries.append(
        Delivery("stripe", stripe_event("charge.dispute.created", dispute, created=scenario.tick()))
    )
    scenario.deliveries.append(
        Delivery(
            "stripe",
            stripe_event("charge.refunded", scenario._charge(charge_id, intent_id, 2000, 500), created=scenario.tick()),
        )
    )
    scenario.deliveries.append(Delivery("stripe", stripe_event("refund.created", refund, created=scenario.tick())))
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    assert _dispute_row(runtime, dispute["id"]).status == DisputeStatus.PREVENTED
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == session_id)).one()
        donated = payments_service.supporter_totals(session, [supporter])["donated"].amount
    assert (gift.returned_amount, donated) == (500, 1500)
    summaries = [item["summary"] for item in history(runtime, supporter) if item["type"] == "dispute"]
    assert summaries[-1] == "Card dispute of £5.00 prevented (resolved by a refund)"


def test_closed_at_is_the_closing_event_time_whatever_the_order_of_processing(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Stripe is ahead of its webhooks: the opening events, processed after the dispute was lost, re-fetch it as
    lost. The closure's time is still the `created` of the event that reported it (Stripe's dispute has no time of
    its own for that), in any order, delivered any number of times; the history item is dated the same."""
    rng = random.Random(20261127)
    for attempt in range(3):
        scenario = Scenario(runtime)
        supporter = seed_supporter(runtime, f"Rowan{attempt}")
        scenario.one_off_card_gift(supporter, 2000, dispute="lost", with_payment_intent_event=False)
        install(scenario, fake_stripe, fake_gocardless)
        gift_events = [d for d in scenario.deliveries if not d.event["type"].startswith("charge.dispute.")]
        dispute_events = [d for d in scenario.deliveries if d.event["type"].startswith("charge.dispute.")]
        closing = next(d.event for d in dispute_events if d.event["type"] == "charge.dispute.closed")
        if attempt == 0:
            ordered = dispute_events  # as sent: the first processed is the opening, seeing "lost"
        elif attempt == 1:
            ordered = list(reversed(dispute_events)) + dispute_events  # closing first, then again
        else:
            ordered = dispute_events * 2
            rng.shuffle(ordered)
        deliver(app_client, gift_events)
        worker.join()
        for delivery in ordered:
            assert post_stripe(app_client, delivery.event).status_code == 200
            worker.join()
        assert stuck_events(runtime) == []
        dispute_id = next(iter(scenario.stripe.disputes))
        row = _dispute_row(runtime, dispute_id)
        assert (row.status, row.closed_at) == (DisputeStatus.LOST, _utc(closing["created"])), attempt
        lost = [i for i in history(runtime, supporter) if i["type"] == "dispute" and i["status"] == "lost"]
        assert len(lost) == 1
        with reading(runtime) as session:
            from crm.models import HistoryEntry

            item = session.exec(select(HistoryEntry).where(HistoryEntry.dedupe_key == f"dispute:{row.id}:lost")).one()
        assert item.at == _utc(closing["created"]), attempt


def test_an_appeal_won_is_dated_by_its_own_closing_event(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Lost, then won on appeal: `closed_at` is when it was won, even when an event of the lost closure (older)
    is processed after."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Sol")
    scenario.one_off_card_gift(supporter, 2000, dispute="lost", with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    dispute_id = next(iter(scenario.stripe.disputes))
    lost_closing = next(d.event for d in scenario.deliveries if d.event["type"] == "charge.dispute.closed")
    current = scenario.stripe.disputes[dispute_id]
    current["status"] = "won"
    won_at = scenario.tick(86_400)
    won = stripe_event("charge.dispute.closed", copy.deepcopy(current), created=won_at)
    assert post_stripe(app_client, won).status_code == 200
    worker.join()
    assert post_stripe(app_client, lost_closing).status_code == 200  # redelivered late
    worker.join()
    row = _dispute_row(runtime, dispute_id)
    assert (row.status, row.closed_at) == (DisputeStatus.WON, _utc(won_at))
