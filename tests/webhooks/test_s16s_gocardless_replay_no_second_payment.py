"""A `billing_requests.fulfilled` run again long after (a replay, a redelivery days later) takes no second payment
and starts no second plan: the checkout's recorded payment or subscription is used, not GoCardless's memory of an
idempotency key, which is not kept for ever (found in review, h11)."""

from __future__ import annotations

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, RegularGift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)
from webhooks.models import EventStatus, InboundEvent
from webhooks.service import process_event

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _replay_fulfilled(runtime: Runtime) -> str:
    with reading(runtime) as session:
        (event_id,) = session.exec(
            select(InboundEvent.id).where(InboundEvent.event_type == "billing_requests.fulfilled")
        ).all()
    with runtime.unit_of_work() as uow:
        outcome = process_event(uow, runtime.settings, event_id, force=True)
    assert outcome.status == EventStatus.PROCESSED, outcome
    return str(outcome.status)


@pytest.mark.parametrize("frequency", ["once", "monthly"])
def test_a_fulfilled_billing_request_run_again_takes_no_second_payment(
    frequency: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Once Olu")
    if frequency == "once":
        scenario.gocardless_one_off(supporter, 2500)
        created, path = scenario.gocardless.created_payments, r"/payments"
    else:
        scenario.gocardless_monthly(supporter, 1000, payments=())
        created, path = scenario.gocardless.created_subscriptions, r"/subscriptions"
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    assert len(fake_gocardless.requests_to("POST", path)) == 1

    created.clear()  # GoCardless no longer knows the key: a POST now would be a second payment (here, a 422)
    _replay_fulfilled(runtime)

    assert len(fake_gocardless.requests_to("POST", path)) == 1
    with reading(runtime) as session:
        assert len(session.exec(select(Gift).where(Gift.supporter_id == supporter)).all()) == (frequency == "once")
        assert len(session.exec(select(RegularGift).where(RegularGift.supporter_id == supporter)).all()) == (
            frequency == "monthly"
        )
