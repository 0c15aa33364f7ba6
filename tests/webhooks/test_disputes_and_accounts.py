"""Found in review: a Stripe dispute lost and then won on appeal stayed lost (the gift stayed taken back), and an
event of another Stripe account (Connect's `account`) was recorded as the charity's own."""

from __future__ import annotations

import copy

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments import service as payments_service
from payments.models import Dispute, DisputeStatus, Gift, Payout
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, fixture, seed_supporter, stripe_event, unique
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
from webhooks.models import EventStatus, InboundEvent

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_a_dispute_lost_then_won_on_appeal_gives_the_gift_back(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Disputes are re-fetched: the ledger has the dispute as Stripe has it. A lost dispute under appeal stays lost;
    won on appeal, the gift counts again (contract: `donated` is gifts less lost disputes)."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Wendy")
    session_id = scenario.one_off_card_gift(supporter, 2000, dispute="lost", with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as session:
        assert payments_service.supporter_totals(session, [supporter])["donated"].amount == 0

    dispute_id = next(iter(scenario.stripe.disputes))
    current = scenario.stripe.disputes[dispute_id]

    def stripe_says(status: str, event_type: str) -> DisputeStatus:
        current["status"] = status
        assert (
            post_stripe(
                app_client, stripe_event(event_type, copy.deepcopy(current), created=scenario.tick())
            ).status_code
            == 200
        )
        worker.join()
        with reading(runtime) as session:
            return session.exec(select(Dispute).where(Dispute.stripe_dispute_id == dispute_id)).one().status

    assert stripe_says("appeal_under_review", "charge.dispute.updated") == DisputeStatus.LOST
    assert stripe_says("won", "charge.dispute.closed") == DisputeStatus.WON
    assert stripe_says("won", "charge.dispute.funds_reinstated") == DisputeStatus.WON
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == session_id)).one()
        donated = payments_service.supporter_totals(session, [supporter])["donated"].amount
    assert (gift.returned_amount, donated) == (0, 2000)
    summaries = [item["summary"] for item in history(runtime, supporter) if item["type"] == "dispute"]
    assert summaries[-2:] == ["Card dispute of £20.00 lost", "Card dispute of £20.00 won"]


def test_an_event_of_another_stripe_account_is_stored_and_ignored(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    """An event carrying Connect's `account` is about a connected account's balance: acknowledged (so Stripe stops
    sending it) and ignored, never a payout of the charity's."""
    event = copy.deepcopy(fixture("stripe/event_payout_paid.constructed.json"))
    event["id"] = unique("evt_")
    event["account"] = "acct_1SomeoneElse000"
    event["data"]["object"]["id"] = unique("po_")
    assert post_stripe(app_client, event).status_code == 200
    worker.join()
    with reading(runtime) as session:
        assert session.exec(select(Payout)).all() == []
        stored = session.exec(select(InboundEvent).where(InboundEvent.external_id == event["id"])).one()
    assert stored.status == EventStatus.IGNORED and "another Stripe account" in (stored.last_error or "")
