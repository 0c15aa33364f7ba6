"""Found in review (s16m): an event whose processing failed because the provider's API was unavailable was tried
again by the sweep once a minute and given up after its tenth failure, about seven minutes after the first. A
provider outage or throttling longer than that left every event processed meanwhile failed for good: the gift was
never recorded (no receipt, no Gift Aid), though the delivery had been answered 2xx, so the provider stopped
retrying it, and only `giving events replay`, one event at a time, could bring it back. The sweep now spaces the
retries (1, 2, 4, ... minutes, then hourly) and keeps trying for about three days, as long as Stripe retries an
undelivered event in live mode."""

from __future__ import annotations

import datetime as dt
from typing import Any

import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import catalogue, install, post_gocardless, reading, settings
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["catalogue", "settings"]


def _event_row(runtime: Runtime, external_id: str) -> InboundEvent:
    with reading(runtime) as session:
        return session.exec(select(InboundEvent).where(InboundEvent.external_id == external_id)).one()


def _sweep_and_run(runtime: Runtime, at: dt.datetime, event_id: Any) -> EventStatus | None:
    """The minute's sweep at `at`, and the run of the event if the sweep sent it (as the worker would)."""
    with time_machine.travel(at, tick=False):
        with runtime.unit_of_work() as uow:
            sent = webhooks_service.sweep(uow)
        if not sent:
            return None
        return webhooks_service.run_event(runtime, event_id).status


def test_an_event_failed_by_a_two_hour_provider_outage_is_recorded_once_the_provider_is_back(
    runtime: Runtime, client: TestClient, catalogue: None, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Wren")
    scenario.gocardless_monthly(supporter, 1200, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    by_type = {f"{d.event['resource_type']}.{d.event['action']}": d for d in scenario.deliveries}
    fulfilled, confirmed = by_type["billing_requests.fulfilled"], by_type["payments.confirmed"]
    assert post_gocardless(client, [fulfilled.event]).status_code == 200
    assert webhooks_service.run_event(runtime, _event_row(runtime, fulfilled.event_id).id).status == (
        EventStatus.PROCESSED
    )
    outage = {"on": True}

    def payments_answer(request: Any) -> tuple[int, dict[str, Any]]:
        if outage["on"]:
            return 503, {"error": {"type": "gocardless", "code": 503, "message": "Service unavailable"}}
        return 200, {"payments": scenario.gocardless.payments[request.match["id"]]}

    fake_gocardless.route("GET", r"/payments/(?P<id>[^/]+)", payments_answer)
    assert post_gocardless(client, [confirmed.event]).status_code == 200  # answered 2xx: GoCardless will not resend
    event_id = _event_row(runtime, confirmed.event_id).id
    start = dt.datetime.now(dt.UTC)
    with time_machine.travel(start, tick=False):
        for _ in range(1 + webhooks_service.QUICK_RETRIES):  # the first run and its quick retries (2, 4, 8 s)
            assert webhooks_service.run_event(runtime, event_id).status == EventStatus.FAILED
    minute = dt.timedelta(minutes=1)
    for step in range(1, 121):  # GoCardless is down for two hours; the sweep runs every minute
        assert _sweep_and_run(runtime, start + step * minute, event_id) in (None, EventStatus.FAILED)
    outage["on"] = False
    outcome = None
    for step in range(121, 121 + 90):  # back: within the longest spacing (an hour), the sweep tries it again
        outcome = _sweep_and_run(runtime, start + step * minute, event_id) or outcome
        if outcome == EventStatus.PROCESSED:
            break
    row = _event_row(runtime, confirmed.event_id)
    assert row.status == EventStatus.PROCESSED, f"left {row.status} after {row.failures} failures: {row.last_error}"
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == confirmed.event["links"]["payment"])).one()
    assert (gift.status, gift.amount) == (GiftStatus.PAID, 1200)
    # Spaced, not once a minute: two hours of outage cost a handful of calls, not 120.
    assert row.failures <= 15, row.failures
