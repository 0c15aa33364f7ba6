"""A payment staff took in the GoCardless dashboard whose events are processed before the billing request that set
up its mandate: it waits for that mandate and is recorded as soon as the mandate is (found when a CI run processed
the two out of order: the event waited for its own payment, which nothing records, until the sweep's hourly look)."""

from __future__ import annotations

import copy

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, fixture, gocardless_event, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    post_gocardless,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_a_dashboard_payment_processed_before_its_mandate_is_recorded_once_the_mandate_is(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Early Ezra")
    ours = scenario.gocardless_monthly(supporter, 1000, payments=())
    mandate_id = scenario.gocardless.subscriptions[ours]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 2000,
            "currency": "GBP",
            "status": "confirmed",
            "charge_date": "2026-01-20",
            "metadata": {},
            "links": {"mandate": mandate_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    events = [
        gocardless_event("payments", action, {"payment": payment_id}, created=BASE_TIME + (14 + n) * DAY)
        for n, action in enumerate(("created", "confirmed"))
    ]
    assert post_gocardless(app_client, events).status_code == 200
    worker.join()
    with reading(runtime) as session:
        assert session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).first() is None

    deliver(app_client, scenario.deliveries)  # the billing request that set the mandate up, and the plan
    worker.join()

    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    assert (gift.supporter_id, gift.status, gift.amount, gift.regular_gift_id) == (
        supporter,
        GiftStatus.PAID,
        2000,
        None,
    )
