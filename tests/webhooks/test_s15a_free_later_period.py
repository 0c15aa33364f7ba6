"""A free month (an invoice paid with nothing: a 100%-off coupon, a credit balance) follows the rule of an instalment
closed without a card payment (s14r): only the expected period (or an earlier one) moves the schedule. A free period
*later* than the expected one (March free while February's failure is still owed) leaves February expected, overdue
and its alert open; it is remembered (a cancelled £0 instalment row keyed on its invoice, no money) and stepped over
once the schedule reaches it: February paid after all, April is expected next, not March."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario, stripe_event, unique
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, reading, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, OVERDUE_DAY, _closed, _monthly_in_arrears, _post, _start
from tests.webhooks.test_s14r_closed_later_instalment import MARCH, _overdue

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _march_free(failed: dict[str, Any]) -> dict[str, Any]:
    """March's invoice of the same subscription (a new invoice id, its period starting 5 March), paid with nothing."""
    invoice = copy.deepcopy(failed["data"]["object"])
    at = MARCH + DAY
    invoice.update(
        id=unique("in_"),
        created=MARCH,
        period_start=MARCH,
        status="paid",
        amount_due=0,
        amount_paid=0,
        amount_remaining=0,
        attempt_count=0,
        status_transitions={"finalized_at": MARCH, "paid_at": at},
    )
    for line in invoice["lines"]["data"]:
        line["period"] = {"start": MARCH, "end": MARCH + 31 * DAY}
    return stripe_event("invoice.paid", invoice, created=at + 2)


def _plan(runtime: Runtime, subscription_id: str) -> tuple[RegularGift, list[tuple[str, str]]]:
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    return regular, [(str(a.dedupe_key).rsplit(":", 1)[1], a.resolved_by) for a in alerts]


def test_a_free_later_period_leaves_the_earlier_failed_one_overdue_and_is_stepped_over_once_reached(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    _, subscription_id, failed = _monthly_in_arrears(scenario, "Free Later Fola")
    invoice_id = failed["data"]["object"]["id"]
    free = _march_free(failed)
    scenario.stripe.invoice_payments[invoice_id][0]["status"] = "paid"  # Stripe's world once February is paid
    paid = _closed(failed, "invoice.paid", status="paid", at=MARCH + 3 * DAY, amount_paid=AMOUNT)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed)
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=OVERDUE_DAY) == 1

    _post(app_client, worker, free, free)
    # February is still owed: the plan in arrears, February still the one expected and overdue, its alert open.
    regular, alerts = _plan(runtime, subscription_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.IN_ARREARS, dt.date(2026, 2, 5))
    assert alerts == [("2026-02-05", "")]
    assert _overdue(runtime, dt.date(2026, 3, 20)) == [dt.date(2026, 2, 5)]
    with runtime.unit_of_work() as uow:  # the periodic check agrees: nothing resolved, nothing new
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=dt.date(2026, 3, 20)) == 0
    assert _plan(runtime, subscription_id)[1] == [("2026-02-05", "")]

    # February paid after all: March was free, so April is the next one expected (March never overdue).
    _post(app_client, worker, paid)
    regular, alerts = _plan(runtime, subscription_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 4, 5))
    assert alerts == [("2026-02-05", payments_service.ALERTS_SETTLED_BY)]
    assert _overdue(runtime, dt.date(2026, 4, 10)) == []
    assert stuck_events(runtime) == []


@pytest.mark.parametrize(
    "order",
    [("failed", "free", "paid"), ("free", "failed", "paid"), ("paid", "free", "failed"), ("free", "paid", "failed")],
    ids="-".join,
)
def test_a_free_later_period_ends_the_same_in_any_order_and_repeat(
    order: tuple[str, ...],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Free Order Fen")
    invoice_id = failed["data"]["object"]["id"]
    free = _march_free(failed)
    scenario.stripe.invoice_payments[invoice_id][0]["status"] = "paid"
    paid = _closed(failed, "invoice.paid", status="paid", at=MARCH + 3 * DAY, amount_paid=AMOUNT)
    events = {"failed": failed, "free": free, "paid": paid}
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, *[events[name] for name in order], free, failed, paid)  # and each again, late
    assert stuck_events(runtime) == []
    regular, _ = _plan(runtime, subscription_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 4, 5))
    assert _overdue(runtime, dt.date(2026, 4, 10)) == []
    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == free["data"]["object"]["id"])).one()
        donated = payments_service.supporter_totals(session, [supporter])["donated"].amount
    # Remembered as a closed £0 instalment: never money, never a receipt, never a failure.
    assert (row.status, row.amount, row.received_at, row.due_on) == (
        GiftStatus.CANCELLED,
        0,
        None,
        dt.date(2026, 3, 5),
    )
    assert "free" in row.failure_reason
    assert donated == 2 * AMOUNT  # January and February


def test_a_stray_void_never_reopens_a_free_period(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A paid invoice (even paid with nothing) cannot be voided at Stripe: a stray void leaves it free, either order."""
    scenario = Scenario(runtime)
    _, _, failed = _monthly_in_arrears(scenario, "Free Stray Sol")
    free = _march_free(failed)
    voided = _closed(free, "invoice.voided", status="void", at=MARCH + 2 * DAY)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, voided, free, voided)
    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == free["data"]["object"]["id"])).one()
    assert (row.status, row.amount) == (GiftStatus.CANCELLED, 0) and "free" in row.failure_reason
    assert stuck_events(runtime) == []
