"""A dispute's closing history item is dated by the event that closed it, whatever order events arrive in (found in
review): `closed_at` came from the closing event's `created`, but the history item for the close was written by
whichever event first saw the decision (a later `charge.dispute.updated` or `funds_reinstated`, processed before
the `charge.dispute.closed` it follows) and kept that later date."""

from __future__ import annotations

import copy
import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Dispute, DisputeStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter, stripe_event
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


def utc_of(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


def closing_items(runtime: Runtime, dispute_id: str, status: str) -> tuple[Dispute, list[dt.datetime]]:
    from crm.models import HistoryEntry

    with reading(runtime) as session:
        row = session.exec(select(Dispute).where(Dispute.stripe_dispute_id == dispute_id)).one()
        items = session.exec(select(HistoryEntry).where(HistoryEntry.dedupe_key == f"dispute:{row.id}:{status}")).all()
        return row, [item.at for item in items]


def test_a_later_event_about_a_closed_dispute_processed_first_does_not_date_its_history(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Tamsin")
    scenario.one_off_card_gift(supporter, 2000, dispute="lost", with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    dispute_id = next(iter(scenario.stripe.disputes))
    gift_events = [d for d in scenario.deliveries if not d.event["type"].startswith("charge.dispute.")]
    dispute_events = [d.event for d in scenario.deliveries if d.event["type"].startswith("charge.dispute.")]
    closing = next(e for e in dispute_events if e["type"] == "charge.dispute.closed")
    # After the close, Stripe updates the dispute again (its evidence details, say): the snapshot shows "lost".
    updated = stripe_event(
        "charge.dispute.updated", copy.deepcopy(scenario.stripe.disputes[dispute_id]), created=scenario.tick(3_600)
    )
    deliver(app_client, gift_events)
    worker.join()
    for event in [updated, *dispute_events]:  # the later update is processed first
        assert post_stripe(app_client, event).status_code == 200
        worker.join()
    assert stuck_events(runtime) == []

    row, dates = closing_items(runtime, dispute_id, "lost")
    assert (row.status, row.closed_at) == (DisputeStatus.LOST, utc_of(closing["created"]))
    assert dates == [utc_of(closing["created"])]
    assert len([i for i in history(runtime, supporter) if i["type"] == "dispute"]) == 2


def test_an_appeal_won_is_dated_by_its_closing_event_when_funds_reinstated_comes_first(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Umar")
    scenario.one_off_card_gift(supporter, 2000, dispute="won", with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    dispute_id = next(iter(scenario.stripe.disputes))
    closing = next(d.event for d in scenario.deliveries if d.event["type"] == "charge.dispute.closed")
    reinstated = stripe_event(
        "charge.dispute.funds_reinstated", copy.deepcopy(scenario.stripe.disputes[dispute_id]), created=scenario.tick()
    )
    others = [d for d in scenario.deliveries if d.event["id"] != closing["id"]]
    deliver(app_client, others)
    worker.join()
    assert post_stripe(app_client, reinstated).status_code == 200
    worker.join()
    assert post_stripe(app_client, closing).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []

    row, dates = closing_items(runtime, dispute_id, "won")
    assert (row.status, row.closed_at) == (DisputeStatus.WON, utc_of(closing["created"]))
    assert dates == [utc_of(closing["created"])]
