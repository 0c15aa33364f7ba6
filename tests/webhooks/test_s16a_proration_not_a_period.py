"""Review of s15a: only a period's invoice can be a free month. When the donor changes their monthly gift mid-period,
Stripe may invoice the proration at once (`billing_reason` "subscription_update"); a change that nets to nothing (or
to a credit) is an invoice paid with nothing, dated by its lines within days of the next payment's due date. It frees
no month: the next payment stays expected (and is flagged when it does not come), no £0 instalment row is kept and
no "free month" item is written. A renewal's £0 invoice (`subscription_cycle`) is still a free month."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, seed_supporter, stripe_event, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    history,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, _post, _start
from tests.webhooks.test_s14r_closed_later_instalment import _overdue

__all__ = ["app_client", "catalogue", "settings", "worker"]

CHANGED = BASE_TIME + 26 * DAY  # 31 January 2026: the donor changes their gift, 5 days before February's payment
FEBRUARY = BASE_TIME + 31 * DAY  # 5 February 2026


def _paying_monthly(scenario: Scenario, name: str) -> tuple[Any, str, dict[str, Any]]:
    """January paid, Stripe's subscription in January's period: (supporter, subscription, January's event)."""
    supporter = seed_supporter(scenario.runtime, name)
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=1)
    item = scenario.stripe.subscriptions[subscription_id]["items"]["data"][0]
    item.update(current_period_start=BASE_TIME, current_period_end=FEBRUARY)
    january = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.paid")
    return supporter, subscription_id, january


def _zero_invoice(january: dict[str, Any], billing_reason: str, start: int, end: int) -> dict[str, Any]:
    """An invoice of the subscription paid with nothing, its lines billing `start` to `end`."""
    invoice = copy.deepcopy(january["data"]["object"])
    invoice.update(
        id=unique("in_"),
        billing_reason=billing_reason,
        created=start,
        period_start=start,
        amount_due=0,
        amount_paid=0,
        amount_remaining=0,
        attempt_count=0,
        status_transitions={"finalized_at": start, "paid_at": start + 5},
    )
    for line in invoice["lines"]["data"]:
        line.update(amount=0, period={"start": start, "end": end})
    return stripe_event("invoice.paid", invoice, created=start + 10)


@pytest.mark.parametrize("billing_reason", ["subscription_update", "manual"])
def test_a_zero_invoice_that_bills_no_period_is_not_a_free_month(
    billing_reason: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _paying_monthly(scenario, "Prorated Priya")
    proration = _zero_invoice(january, billing_reason, CHANGED, FEBRUARY)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, proration, proration)
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == proration["data"]["object"]["id"])).first()
    # February is still the payment expected, and flagged once it is late.
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 2, 5))
    assert _overdue(runtime, dt.date(2026, 2, 13)) == [dt.date(2026, 2, 5)]
    assert row is None
    assert [i for i in history(runtime, supporter) if i["type"] == "instalment_free"] == []


def test_a_renewals_zero_invoice_is_still_a_free_month(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _paying_monthly(scenario, "Renewed Rafe")
    free = _zero_invoice(january, "subscription_cycle", FEBRUARY, FEBRUARY + 28 * DAY)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, free, free)
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == free["data"]["object"]["id"])).one()
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 3, 5))
    assert _overdue(runtime, dt.date(2026, 2, 20)) == []
    assert (row.status, row.amount) == (GiftStatus.CANCELLED, 0) and "free period" in row.failure_reason
    assert len([i for i in history(runtime, supporter) if i["type"] == "instalment_free"]) == 1
