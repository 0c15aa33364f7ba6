"""A regular gift started when the donor set it up at the provider, not when we processed the event (found in
review of the fundraiser's pages): `started_at` was `utc_now()`, so events caught up late (the nightly catch-up, a
replay, a backlog) showed a monthly gift starting months after its first payment. It is now the provider's time:
Stripe's subscription `start_date` (else `created`), GoCardless's subscription `created_at`; the
`regular_gift_started` history item is dated the same."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import HistoryEntry
from payments.models import Gift, RegularGift
from tests.crm.helpers import staff_token
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, Scenario, seed_supporter, stripe_event
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

STARTED = BASE_TIME - 300  # the donor set the gift up five minutes before its first payment (5 January 2026)
STARTED_AT = dt.datetime.fromtimestamp(STARTED, dt.UTC)


def _objects_of(scenario: Scenario, object_id: str) -> list[dict[str, Any]]:
    """Every copy of a provider object the scenario holds: its store's and those inside the Stripe events."""
    found = [scenario.stripe.subscriptions.get(object_id), scenario.gocardless.subscriptions.get(object_id)]
    for delivery in scenario.deliveries:
        data = delivery.event.get("data")
        if isinstance(data, dict) and isinstance(data.get("object"), dict) and data["object"].get("id") == object_id:
            found.append(data["object"])
    return [found_object for found_object in found if found_object is not None]


def _run(scenario: Scenario, client: TestClient, worker: EventsWorker, stripe: FakeProvider, gc: FakeProvider) -> None:
    install(scenario, stripe, gc)
    deliver(client, scenario.deliveries)
    worker.join()
    assert stuck_events(scenario.runtime) == []


def _started(
    runtime: Runtime, client: TestClient, supporter: uuid.UUID, regular: RegularGift
) -> tuple[dt.datetime | None, str, list[dt.datetime]]:
    """The regular gift's `started_at`, its started item's time in the API, and when its instalments were paid."""
    with reading(runtime) as session:
        stored = session.exec(select(RegularGift).where(RegularGift.id == regular.id)).one()
        paid = sorted(
            g.received_at
            for g in session.exec(select(Gift).where(Gift.regular_gift_id == regular.id)).all()
            if g.received_at is not None
        )
    items = client.get(f"/api/supporters/{supporter}/history", headers=staff_token(runtime, "fundraiser")).json()
    [item] = [i for i in items["items"] if i["type"] == "regular_gift_started"]
    return stored.started_at, item["at"], paid


def test_a_card_subscription_started_at_stripes_start_date(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Nia")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=2)
    for subscription in _objects_of(scenario, subscription_id):
        subscription.update({"start_date": STARTED, "created": STARTED + 1})
    _run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
    started_at, item_at, paid = _started(runtime, app_client, supporter, regular)
    assert started_at == STARTED_AT
    assert item_at == STARTED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(paid) == 2 and started_at <= paid[0]
    # The regular gift's JSON (the supporter's page and API) says the same.
    detail = app_client.get(f"/api/supporters/{supporter}", headers=staff_token(runtime, "fundraiser")).json()
    shown = [r for r in detail.get("regular_gifts", []) if r["id"] == str(regular.id)]
    assert all(r["started_at"] == item_at for r in shown)


def test_a_direct_debit_subscription_started_at_gocardless_created_at(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Noor")
    subscription_id = scenario.gocardless_monthly(supporter, 1200, payments=("paid_out", "paid_out"))
    for subscription in _objects_of(scenario, subscription_id):
        subscription["created_at"] = STARTED_AT.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    _run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    started_at, item_at, paid = _started(runtime, app_client, supporter, regular)
    assert started_at == STARTED_AT
    assert item_at == STARTED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(paid) == 2 and started_at <= paid[0]
    assert [i["type"] for i in history(runtime, supporter)].count("regular_gift_started") == 1


def test_a_gift_started_when_processed_moves_back_to_the_providers_time_with_its_history_item(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A regular gift recorded before this fix started when its event was processed: the next event about its
    subscription dates it (and its `regular_gift_started` item) by the provider's time; again, nothing changes."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Nye")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1)
    for subscription in _objects_of(scenario, subscription_id):
        subscription.update({"start_date": STARTED, "created": STARTED})
    _run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    processed = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)  # as the old code wrote it: when it was processed
    with runtime.unit_of_work() as uow:
        regular = uow.session.exec(
            select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)
        ).one()
        regular.started_at = processed
        uow.session.add(regular)
        item = uow.session.exec(
            select(HistoryEntry).where(HistoryEntry.dedupe_key == f"regular_gift_started:{regular.id}")
        ).one()
        item.at = processed
        uow.session.add(item)
    updated = stripe_event(
        "customer.subscription.updated",
        {**scenario.stripe.subscriptions[subscription_id], "status": "active"},
        created=BASE_TIME + 40 * 86400,
    )
    for _ in range(2):
        assert post_stripe(app_client, updated).status_code == 200
        worker.join()
        assert stuck_events(runtime) == []
        started_at, item_at, _ = _started(runtime, app_client, supporter, regular)
        assert (started_at, item_at) == (STARTED_AT, STARTED_AT.strftime("%Y-%m-%dT%H:%M:%SZ"))
