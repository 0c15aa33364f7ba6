"""A void processed before any payment event, while the plan's schedule (`next_due_on`) is still unknown (Stripe's
subscription told no current period): which period is expected is not known yet, so the voided period is closed but
moves no schedule. It is stepped over once the schedule reaches it, so the plan ends where the natural order (January
paid, then the void) leaves it: a voided March leaves February expected (not skipped for good), a voided February
makes March the next one expected."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments import service as payments_service
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, seed_supporter, stripe_event, unique
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, reading, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, _post, _start

__all__ = ["app_client", "catalogue", "settings", "worker"]

FEBRUARY = BASE_TIME + 31 * DAY  # 5 February 2026 (January's instalment is due 5 January)
MARCH = int(dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC).timestamp())


def _plan_with_no_schedule(scenario: Scenario, name: str) -> tuple[Any, str, dict[str, Any]]:
    """January paid; Stripe's subscription names no current period, so only an instalment can set the schedule.
    Returns (supporter, subscription id, January's `invoice.paid`)."""
    supporter = seed_supporter(scenario.runtime, name)
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=1)
    scenario.stripe.subscriptions[subscription_id]["items"]["data"][0].pop("current_period_end")
    january = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.paid")
    return supporter, subscription_id, january


def _month(scenario: Scenario, january: dict[str, Any], start: int, *, voided: bool) -> dict[str, Any]:
    """A later invoice of the subscription, its period starting at `start`: voided, or paid by card."""
    invoice = copy.deepcopy(january["data"]["object"])
    invoice_id, at = unique("in_"), start + DAY
    invoice.update(
        id=invoice_id,
        created=start,
        period_start=start,
        status="void" if voided else "paid",
        amount_paid=0 if voided else AMOUNT,
        attempt_count=0 if voided else 1,
        status_transitions={
            "finalized_at": start,
            "paid_at": None if voided else at,
            "voided_at": at if voided else None,
        },
    )
    for line in invoice["lines"]["data"]:
        line["period"] = {"start": start, "end": start + 31 * DAY}
    if not voided:
        intent_id, _ = scenario._intent(AMOUNT, created=at)
        payment = {"type": "payment_intent", "payment_intent": intent_id}
        scenario.stripe.invoice_payments[invoice_id] = [
            {"object": "invoice_payment", "status": "paid", "payment": payment}
        ]
    return stripe_event("invoice.voided" if voided else "invoice.paid", invoice, created=at + 2)


def _schedule(runtime: Runtime, subscription_id: str, today: dt.date) -> tuple[RegularGift, list[dt.date]]:
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        overdue = payments_service.missing_instalments(session, today=today, grace_days=7)
    return regular, [m.due_on for m in overdue]


@pytest.mark.parametrize(
    ("voided_start", "expected_next"),
    [(MARCH, dt.date(2026, 2, 5)), (FEBRUARY, dt.date(2026, 3, 5))],
    ids=["later-period-voided", "expected-period-voided"],
)
def test_a_void_before_any_payment_moves_the_schedule_as_the_natural_order_would(
    voided_start: int,
    expected_next: dt.date,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    _, subscription_id, january = _plan_with_no_schedule(scenario, "Unset Una")
    voided = _month(scenario, january, voided_start, voided=True)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, january)
    assert _schedule(runtime, subscription_id, dt.date(2026, 1, 1))[0].next_due_on is None
    _post(app_client, worker, voided, january)
    assert stuck_events(runtime) == []
    regular, overdue = _schedule(runtime, subscription_id, expected_next + dt.timedelta(days=10))
    assert (regular.status, regular.last_paid_on, regular.next_due_on) == (
        RegularGiftStatus.ACTIVE,
        dt.date(2026, 1, 5),
        expected_next,
    )
    assert overdue == [expected_next]  # the one expected is missing after its grace: not skipped
    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == voided["data"]["object"]["id"])).one()
    assert row.status == GiftStatus.CANCELLED and "voided" in row.failure_reason


ORDERS = [
    ("january", "void", "february"),
    ("void", "january", "february"),
    ("void", "february", "january"),
    ("february", "void", "january"),
]


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_a_voided_later_period_on_a_plan_with_no_schedule_ends_the_same_in_any_order_and_repeat(
    order: tuple[str, ...],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """January and February paid, March voided: April is expected next, whatever the order, however often."""
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _plan_with_no_schedule(scenario, "Unset Ulla")
    voided = _month(scenario, january, MARCH, voided=True)
    february = _month(scenario, january, FEBRUARY, voided=False)
    events = {"january": january, "void": voided, "february": february}
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, january)
    _post(app_client, worker, *[events[name] for name in order], voided, january, february)
    assert stuck_events(runtime) == []
    regular, overdue = _schedule(runtime, subscription_id, dt.date(2026, 4, 10))
    assert (regular.status, regular.last_paid_on, regular.next_due_on) == (
        RegularGiftStatus.ACTIVE,
        dt.date(2026, 2, 5),
        dt.date(2026, 4, 5),
    )
    assert overdue == []
    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == voided["data"]["object"]["id"])).one()
        donated = payments_service.supporter_totals(session, [supporter])["donated"].amount
    assert row.status == GiftStatus.CANCELLED and "voided" in row.failure_reason
    assert donated == 2 * AMOUNT


@pytest.mark.parametrize("void_first", [True, False], ids=["void-then-renewal", "renewal-then-void"])
def test_a_voided_period_stripe_then_names_as_current_is_stepped_over(
    void_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The schedule set by the subscription (Stripe now in March's period) rather than by a payment: a March already
    voided is not the one expected, in either order; April is."""
    scenario = Scenario(runtime)
    _, subscription_id, january = _plan_with_no_schedule(scenario, "Unset Uri")
    voided = _month(scenario, january, MARCH, voided=True)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, january)
    subscription = scenario.stripe.subscriptions[subscription_id]
    subscription["items"]["data"][0].update(current_period_start=MARCH, current_period_end=MARCH + 31 * DAY)
    renewal = stripe_event("customer.subscription.updated", copy.deepcopy(subscription), created=MARCH + 3)
    _post(app_client, worker, *([voided, renewal] if void_first else [renewal, voided]), voided, renewal)
    assert stuck_events(runtime) == []
    regular, overdue = _schedule(runtime, subscription_id, dt.date(2026, 3, 20))
    assert (regular.status, regular.next_due_on, overdue) == (RegularGiftStatus.ACTIVE, dt.date(2026, 4, 5), [])
