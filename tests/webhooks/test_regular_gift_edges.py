"""Regular gifts at edges found in review: the missing-instalment alert resolved once the instalment arrives or the
plan ends, a Stripe renewal that leaves its new period's instalment due, and an amount changed at Stripe."""

from __future__ import annotations

import copy
import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import (
    BASE_TIME,
    DAY,
    Scenario,
    fixture,
    gocardless_event,
    seed_supporter,
    stripe_event,
    unique,
)
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    post_gocardless,
    post_stripe,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _gc_monthly_one_paid(scenario: Scenario, supporter) -> tuple[str, str]:
    """A GoCardless monthly gift whose first instalment (5 Jan 2026) is paid; the next one is due 5 Feb 2026."""
    subscription_id = scenario.gocardless_monthly(supporter, 1200, payments=("paid_out",))
    sub = scenario.gocardless.subscriptions[subscription_id]
    sub["upcoming_payments"] = [{"amount": 1200, "charge_date": "2026-02-05"}]
    mandate_id = sub["links"]["mandate"]
    return subscription_id, mandate_id


def _gc_paid_instalment(scenario: Scenario, subscription_id: str, mandate_id: str, day: str) -> list[dict]:
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 1200,
            "currency": "GBP",
            "status": "confirmed",
            "charge_date": day,
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    return [gocardless_event("payments", "confirmed", {"payment": payment_id}, created=BASE_TIME + 40 * DAY)]


def _open_alerts(runtime: Runtime, supporter) -> list[ReviewItem]:
    with reading(runtime) as session:
        return list(
            session.exec(
                select(ReviewItem).where(
                    ReviewItem.kind == "missing_instalment",
                    ReviewItem.supporter_id == supporter,
                    ReviewItem.resolved_at.is_(None),  # type: ignore[union-attr]
                )
            ).all()
        )


def test_missing_instalment_alert_clears_once_the_instalment_arrives(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ola")
    subscription_id, mandate_id = _gc_monthly_one_paid(scenario, supporter)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    today = dt.date(2026, 2, 20)  # 5 Feb + 7 days of grace has passed
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today) == 1
    assert len(_open_alerts(runtime, supporter)) == 1
    # The late instalment arrives (charge date 5 Feb, confirmed later).
    events = _gc_paid_instalment(scenario, subscription_id, mandate_id, "2026-02-05")
    assert post_gocardless(app_client, events).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        assert payments_service.missing_instalments(session, today=today, grace_days=7) == []
    # ...so the alert raised for it is resolved at once, on the supporter and in the staff list, and stays so.
    assert _open_alerts(runtime, supporter) == []
    with runtime.unit_of_work() as uow:
        payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today)
    assert _open_alerts(runtime, supporter) == []


def test_missing_instalment_alert_of_a_cancelled_plan_does_not_stay_open(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Pia")
    subscription_id, _ = _gc_monthly_one_paid(scenario, supporter)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    today = dt.date(2026, 2, 20)
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today) == 1
    # The donor cancels: no instalment is expected any more.
    scenario.gocardless.subscriptions[subscription_id].update({"status": "cancelled", "upcoming_payments": []})
    event = gocardless_event(
        "subscriptions", "cancelled", {"subscription": subscription_id}, created=BASE_TIME + 46 * DAY
    )
    assert post_gocardless(app_client, [event]).status_code == 200
    worker.join()
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
        assert regular.status == RegularGiftStatus.CANCELLED
        assert payments_service.missing_instalments(session, today=today, grace_days=7) == []
    assert _open_alerts(runtime, supporter) == []


def _stripe_subscription(scenario: Scenario, subscription_id: str, *, period_start: int, period_end: int, amount: int):
    sub = scenario.stripe.subscriptions[subscription_id]
    sub["current_period_start"] = period_start
    sub["items"] = {
        "object": "list",
        "data": [
            {
                "id": unique("si_"),
                "object": "subscription_item",
                "quantity": 1,
                "current_period_start": period_start,
                "current_period_end": period_end,
                "price": {
                    "id": unique("price_"),
                    "object": "price",
                    "currency": "gbp",
                    "unit_amount": amount,
                    "recurring": {"interval": "month", "interval_count": 1},
                    "type": "recurring",
                },
            }
        ],
    }
    return sub


def test_stripe_renewal_does_not_hide_the_instalment_it_made_due(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The subscription renewed on 5 Feb (Stripe moved its period to 5 Feb - 5 Mar and sent
    customer.subscription.updated); February's invoice was never paid (no invoice.paid, e.g. it waits for the donor's
    authentication). On 20 Feb, past 5 Feb + 7 days of grace, the February instalment is missing."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Quin")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1)  # January's instalment (5 Jan) paid
    feb_5 = int(dt.datetime(2026, 2, 5, 10, 0, tzinfo=dt.UTC).timestamp())
    mar_5 = int(dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC).timestamp())
    sub = _stripe_subscription(scenario, subscription_id, period_start=feb_5, period_end=mar_5, amount=1500)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        assert regular.last_paid_on == dt.date(2026, 1, 5)
    assert (
        post_stripe(app_client, stripe_event("customer.subscription.updated", dict(sub), created=feb_5)).status_code
        == 200
    )
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        missing = payments_service.missing_instalments(session, today=dt.date(2026, 2, 20), grace_days=7)
    assert [(m.regular_gift_id, m.due_on) for m in missing] == [(regular.id, dt.date(2026, 2, 5))]


def test_stripe_amount_change_is_mirrored_on_the_regular_gift(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor raises the monthly gift from £15 to £20 (customer.subscription.updated with the new price), as a
    GoCardless `subscriptions.amended` does for a Direct Debit: the regular gift (and the missing-instalment alert's
    wording) says £20."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Rae")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1)
    period_end = BASE_TIME + 31 * DAY
    sub = _stripe_subscription(scenario, subscription_id, period_start=BASE_TIME, period_end=period_end, amount=1500)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    sub["items"]["data"][0]["price"]["unit_amount"] = 2000
    sub["items"]["data"][0]["price"]["id"] = unique("price_")
    event = stripe_event("customer.subscription.updated", copy.deepcopy(sub), created=BASE_TIME + 10 * DAY)
    assert post_stripe(app_client, event).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
    assert regular.amount == 2000


def test_gocardless_amended_amount_is_mirrored_control(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Control for the test above: the Direct Debit side does mirror an amended amount."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Sam")
    subscription_id, _ = _gc_monthly_one_paid(scenario, supporter)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    scenario.gocardless.subscriptions[subscription_id]["amount"] = 2000
    event = gocardless_event(
        "subscriptions", "amended", {"subscription": subscription_id}, created=BASE_TIME + 20 * DAY
    )
    assert post_gocardless(app_client, [event]).status_code == 200
    worker.join()
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert regular.amount == 2000
