"""No event stored is left behind, at edges found in review: an event that waited long before one provider error,
the catch-up's drift counting only what we act on, and pruning that keeps the bodies still to be processed."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter, stripe_event
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    post_gocardless,
    reading,
    settings,
    worker,
)
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _event_row(runtime: Runtime, external_id: str) -> InboundEvent:
    with reading(runtime) as session:
        return session.exec(select(InboundEvent).where(InboundEvent.external_id == external_id)).one()


def test_an_event_that_waited_long_is_still_retried_after_one_transient_failure(
    runtime: Runtime, client: TestClient, catalogue: None, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    """A Direct Debit instalment's `payments.confirmed` arrives, but the billing request's `fulfilled` was lost: the
    event waits; the hourly sweep runs it again (still waiting) for half a day, until the nightly catch-up brings the
    billing request. Woken, its first run meets a GoCardless blip (HTTP 500). The sweep tries it again: it failed
    once; its runs spent waiting do not count against its retries."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Uma")
    scenario.gocardless_monthly(supporter, 900, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    by_type = {f"{d.event['resource_type']}.{d.event['action']}": d for d in scenario.deliveries}
    confirmed, fulfilled = by_type["payments.confirmed"], by_type["billing_requests.fulfilled"]
    assert post_gocardless(client, [confirmed.event]).status_code == 200
    payment_event = _event_row(runtime, confirmed.event_id).id
    assert webhooks_service.run_event(runtime, payment_event).status == EventStatus.WAITING
    now = dt.datetime.now(dt.UTC)
    for hour in range(1, 13):  # the hourly sweep, for twelve hours
        with runtime.unit_of_work() as uow:
            assert webhooks_service.sweep(uow, now=now + dt.timedelta(hours=hour, minutes=1)) == 1
        assert webhooks_service.run_event(runtime, payment_event).status == EventStatus.WAITING
    # The catch-up stores the lost billing request; processing it records the subscription and wakes the payment.
    assert post_gocardless(client, [fulfilled.event]).status_code == 200
    assert webhooks_service.run_event(runtime, _event_row(runtime, fulfilled.event_id).id).status == (
        EventStatus.PROCESSED
    )
    assert _event_row(runtime, confirmed.event_id).status == EventStatus.PENDING
    outage = {"on": True}

    def payments_answer(request):  # GoCardless answers 500 once
        if outage["on"]:
            return 500, {"error": {"type": "gocardless", "code": 500, "message": "Internal server error"}}
        payment_id = request.match["id"]
        return 200, {"payments": scenario.gocardless.payments[payment_id]}

    fake_gocardless.route("GET", r"/payments/(?P<id>[^/]+)", payments_answer)
    assert webhooks_service.run_event(runtime, payment_event).status == EventStatus.FAILED
    outage["on"] = False
    later = now + dt.timedelta(hours=13)
    with runtime.unit_of_work() as uow:
        swept = webhooks_service.sweep(uow, now=later)
    row = _event_row(runtime, confirmed.event_id)
    assert (row.status, swept, row.failures) == (EventStatus.FAILED, 1, 1), f"attempts={row.attempts}: never retried"


def test_an_event_waiting_a_week_for_something_never_recorded_is_ignored_as_not_ours(
    runtime: Runtime, client: TestClient, catalogue: None, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    """Found in review: an event about an object Giving never made (an invoice of a subscription set up outside
    Giving) waited for ever, swept every hour and counted in `/readyz` `pending_events`. After a week of waiting it
    is ignored, saying what it waited for; before that, the hourly sweep still runs it."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Vera")
    scenario.gocardless_monthly(supporter, 900, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    confirmed = next(
        d for d in scenario.deliveries if (d.event["resource_type"], d.event["action"]) == ("payments", "confirmed")
    )
    assert post_gocardless(client, [confirmed.event]).status_code == 200  # its billing request never comes
    event_id = _event_row(runtime, confirmed.event_id).id
    assert webhooks_service.run_event(runtime, event_id).status == EventStatus.WAITING
    waited_for = _event_row(runtime, confirmed.event_id).waiting_for
    now = dt.datetime.now(dt.UTC)
    with runtime.unit_of_work() as uow:
        assert webhooks_service.sweep(uow, now=now + dt.timedelta(days=6)) == 1  # still sent again
    assert webhooks_service.run_event(runtime, event_id).status == EventStatus.WAITING
    with runtime.unit_of_work() as uow:
        assert webhooks_service.sweep(uow, now=now + dt.timedelta(days=7, hours=2)) == 0
    row = _event_row(runtime, confirmed.event_id)
    assert (row.status, row.waiting_for) == (EventStatus.IGNORED, None)
    assert row.last_error is not None and waited_for is not None and waited_for in row.last_error
    with runtime.unit_of_work() as uow:
        assert webhooks_service.sweep(uow, now=now + dt.timedelta(days=8)) == 0  # and left alone from then on


def test_catch_up_reports_no_drift_when_every_event_we_act_on_arrived(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Stripe's events.list returns every event of the account, also types this endpoint is not sent and that we
    never act on (`charge.succeeded`, `customer.created` come with every checkout). Every event we act on arrived:
    the drift ("deliveries were lost between the provider and us") is zero."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Vic")
    scenario.one_off_card_gift(supporter, 1100)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    created = scenario.deliveries[0].event["created"]
    scenario.stripe.events.append(stripe_event("charge.succeeded", {"id": "ch_x", "object": "charge"}, created=created))
    scenario.stripe.events.append(
        stripe_event("customer.created", {"id": "cus_x", "object": "customer"}, created=created)
    )
    report = webhooks_service.catch_up(runtime)
    worker.join()
    assert {drift.provider: drift.missing for drift in report}.get("stripe") == []


def test_pruning_bodies_never_drops_an_event_not_yet_processed(
    runtime: Runtime, client: TestClient, catalogue: None, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    """`privacy.prune_webhook_bodies` drops bodies older than `keep_webhook_bodies_days` (90), but only of events done
    with: an instalment event still waiting keeps its body, and records its gift when its object comes (pruned, it
    would be "ignored: the body was pruned" and lost for good, since the catch-up knows its id)."""
    from giving import privacy

    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Wyn")
    scenario.gocardless_monthly(supporter, 900, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    by_type = {f"{d.event['resource_type']}.{d.event['action']}": d for d in scenario.deliveries}
    confirmed, fulfilled = by_type["payments.confirmed"], by_type["billing_requests.fulfilled"]
    assert post_gocardless(client, [confirmed.event]).status_code == 200
    payment_event = _event_row(runtime, confirmed.event_id).id
    assert webhooks_service.run_event(runtime, payment_event).status == EventStatus.WAITING
    with runtime.unit_of_work() as uow:
        privacy.prune_webhook_bodies(uow, keep_days=90, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=91))
    assert post_gocardless(client, [fulfilled.event]).status_code == 200
    webhooks_service.run_event(runtime, _event_row(runtime, fulfilled.event_id).id)
    result = webhooks_service.run_event(runtime, payment_event)
    assert result.status != EventStatus.IGNORED, result.note
    payment_id = confirmed.event["links"]["payment"]
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).first()
    assert gift is not None and gift.status == "paid"
