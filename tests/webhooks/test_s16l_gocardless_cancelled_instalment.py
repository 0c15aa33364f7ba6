"""A monthly Direct Debit instalment whose payment was cancelled before collection (found in review, h11): staff
cancelled February's payment in GoCardless (a month the donor asked to skip). GoCardless will not ask for that month
again, but the plan still expected it: `next_due_on` stayed on it and the overdue check raised "has not arrived" for
a month nobody owed, until March was paid. The cancelled instalment's period is closed, as a voided Stripe invoice's
is, whatever order its cancellation and the month before it are processed in."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.service import open_review_items
from payments import service as payments_service
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
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


@pytest.mark.parametrize("order", ["january_first", "cancellation_first", "january_pending"])
def test_a_cancelled_instalment_is_not_expected_any_more(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Skipping Sam")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))  # January, paid
    subscription = scenario.gocardless.subscriptions[subscription_id]
    mandate_id = subscription["links"]["mandate"]
    february = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": february,
            "amount": 1000,
            "currency": "GBP",
            "status": "pending_submission",
            "charge_date": "2026-02-05",
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[february] = payment
    install(scenario, fake_stripe, fake_gocardless)
    setup = [d for d in scenario.deliveries if d.event["resource_type"] in ("billing_requests", "subscriptions")]
    january = [d for d in scenario.deliveries if d not in setup]
    january_created = [d for d in january if d.event["action"] == "created"]
    created = gocardless_event("payments", "created", {"payment": february}, created=BASE_TIME + 20 * DAY)
    cancelled = gocardless_event(
        "payments",
        "cancelled",
        {"payment": february},
        created=BASE_TIME + 22 * DAY,
        origin="api",
        cause="payment_cancelled",
        description="This payment was cancelled at your request.",
    )

    deliver(app_client, setup)
    worker.join()
    if order == "january_first":
        deliver(app_client, january)
    elif order == "january_pending":  # January's payment recorded, its collection not heard of yet
        first_payment = scenario.gocardless.payments[january_created[0].event["links"]["payment"]]
        first_payment["status"] = "pending_submission"
        deliver(app_client, january_created)
        worker.join()
        first_payment["status"] = "paid_out"
    worker.join()
    # February's payment is created (GoCardless lists March as upcoming from now on), then staff cancel it.
    subscription["upcoming_payments"] = [{"amount": 1000, "charge_date": "2026-03-05"}]
    assert post_gocardless(app_client, [created]).status_code == 200
    worker.join()
    if order == "january_first":
        # The overdue check ran while February's payment was still pending: it is owed then.
        with runtime.unit_of_work() as uow:
            assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=dt.date(2026, 2, 25))
    payment["status"] = "cancelled"
    assert post_gocardless(app_client, [cancelled]).status_code == 200
    worker.join()
    if order != "january_first":
        deliver(app_client, january)
        worker.join()
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == february)).one()
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
        missing = payments_service.missing_instalments(session, today=dt.date(2026, 2, 25))
        # No alert left open for the cancelled month until the overdue check next runs.
        alerts = open_review_items(session, kind=payments_service.MISSING_INSTALMENT)
    assert gift.status == GiftStatus.CANCELLED
    assert (regular.status, regular.last_paid_on, regular.next_due_on) == (
        RegularGiftStatus.ACTIVE,
        dt.date(2026, 1, 5),
        dt.date(2026, 3, 5),
    )
    assert missing == []
    assert alerts == []
