"""Review of s15a: a monthly card gift that starts with a free trial shorter than a month (5 to 15 January). Stripe
bills the trial as the subscription's first invoice (`subscription_create`), paid with nothing, its lines' period
running to the subscription's `trial_end`; while it lasts, the subscription is `trialing` and its current period is
the trial. The first payment is due when the trial ends (15 January), not a month after it began: a missing first
payment is flagged after 15 January plus the grace, and never before it."""

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

TRIAL_START = BASE_TIME  # 5 January 2026, 10:00 UTC
TRIAL_END = BASE_TIME + 10 * DAY  # 15 January 2026
FIRST_DUE = dt.date(2026, 1, 15)


def _trial_story(scenario: Scenario, name: str) -> tuple[Any, str, dict[str, Any]]:
    """The checkout of a monthly gift with a 10-day trial: (supporter, subscription id, the trial invoice's event).
    Stripe's subscription, as it is now, is in its trial."""
    supporter = seed_supporter(scenario.runtime, name)
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=1)
    trial = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.paid")
    invoice = trial["data"]["object"]
    invoice.update(amount_paid=0, amount_due=0, amount_remaining=0, billing_reason="subscription_create")
    for line in invoice["lines"]["data"]:
        line.update(amount=0, period={"start": TRIAL_START, "end": TRIAL_END})
    subscription = scenario.stripe.subscriptions[subscription_id]
    subscription.update(status="trialing", trial_start=TRIAL_START, trial_end=TRIAL_END)
    subscription["items"]["data"][0].update(current_period_start=TRIAL_START, current_period_end=TRIAL_END)
    return supporter, subscription_id, trial


def _after_trial(scenario: Scenario, subscription_id: str) -> None:
    """Stripe's subscription once the trial is over: active, in the month from 15 January."""
    subscription = scenario.stripe.subscriptions[subscription_id]
    subscription["status"] = "active"
    subscription["items"]["data"][0].update(current_period_start=TRIAL_END, current_period_end=TRIAL_END + 31 * DAY)


def _first_payment(scenario: Scenario, trial: dict[str, Any]) -> dict[str, Any]:
    """The first renewal's invoice, charged when the trial ended, paid by card."""
    invoice = copy.deepcopy(trial["data"]["object"])
    invoice_id = unique("in_")
    intent_id, _ = scenario._intent(AMOUNT, created=TRIAL_END)
    invoice.update(
        id=invoice_id,
        amount_paid=AMOUNT,
        amount_due=AMOUNT,
        billing_reason="subscription_cycle",
        created=TRIAL_END,
        period_start=TRIAL_START,
        status_transitions={"finalized_at": TRIAL_END, "paid_at": TRIAL_END + 5},
    )
    for line in invoice["lines"]["data"]:
        line.update(amount=AMOUNT, period={"start": TRIAL_END, "end": TRIAL_END + 31 * DAY})
    scenario.stripe.invoice_payments[invoice_id] = [
        {
            "object": "invoice_payment",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": intent_id},
        }
    ]
    return stripe_event("invoice.paid", invoice, created=TRIAL_END + 10)


def _next_due(runtime: Runtime, subscription_id: str) -> tuple[RegularGiftStatus, dt.date | None]:
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
    return regular.status, regular.next_due_on


def test_the_first_payment_after_a_free_trial_is_due_when_the_trial_ends(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, trial = _trial_story(scenario, "Trial Tamsin")
    install(scenario, fake_stripe, fake_gocardless)

    # The checkout, the subscription trialing: nothing is due before the trial ends (not 5 January plus the grace).
    _start(runtime, scenario, app_client, worker, trial)
    assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, FIRST_DUE)
    assert _overdue(runtime, dt.date(2026, 1, 20)) == []

    # The trial's £0 invoice: its period ends with the trial, so the schedule does not move a month on.
    _post(app_client, worker, trial, trial)
    assert stuck_events(runtime) == []
    assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, FIRST_DUE)
    assert _overdue(runtime, dt.date(2026, 1, 22)) == []  # within the grace
    assert _overdue(runtime, dt.date(2026, 1, 23)) == [FIRST_DUE]  # the first payment is missing: flagged now
    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == trial["data"]["object"]["id"])).one()
    assert (row.status, row.amount, row.received_at, row.due_on) == (GiftStatus.CANCELLED, 0, None, dt.date(2026, 1, 5))
    assert "trial" in row.failure_reason
    items = [i for i in history(runtime, supporter) if i["type"] == "instalment_free"]
    assert len(items) == 1 and items[0]["gift_id"] == str(row.id), items
    assert "free trial" in items[0]["summary"] and "15/01/2026" in items[0]["summary"], items

    # The first payment arrives: the next is due a month after it.
    _after_trial(scenario, subscription_id)
    _post(app_client, worker, _first_payment(scenario, trial))
    assert stuck_events(runtime) == []
    assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, dt.date(2026, 2, 15))
    assert _overdue(runtime, dt.date(2026, 1, 23)) == []


@pytest.mark.parametrize("paid_first", [False, True], ids=["trial-then-payment", "payment-then-trial"])
def test_a_trial_invoice_processed_after_the_trial_ended_leaves_the_first_payment_expected(
    paid_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Events caught up late: by the time they are processed Stripe's subscription is past its trial (active, in
    the month from 15 January). The trial's invoice never skips the first payment, in either order."""
    scenario = Scenario(runtime)
    _, subscription_id, trial = _trial_story(scenario, "Trial Late Tobi")
    _after_trial(scenario, subscription_id)
    first = _first_payment(scenario, trial)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, trial)
    if paid_first:
        _post(app_client, worker, first, trial)
        assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, dt.date(2026, 2, 15))
        return
    _post(app_client, worker, trial)
    assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, FIRST_DUE)
    assert _overdue(runtime, dt.date(2026, 1, 23)) == [FIRST_DUE]
    _post(app_client, worker, first, trial)
    assert _next_due(runtime, subscription_id) == (RegularGiftStatus.ACTIVE, dt.date(2026, 2, 15))
    assert stuck_events(runtime) == []
