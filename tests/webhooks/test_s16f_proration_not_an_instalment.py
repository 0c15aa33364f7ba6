"""An invoice of a monthly plan that bills no period of it (a proration when the donor changed their gift,
`billing_reason` "subscription_update"; a `manual` or `subscription_threshold` invoice) is not an instalment. Its money
is recorded as a gift of the plan (history, receipt, totals), but paid, failed, voided, written off or marked paid
outside Stripe it never moves the schedule (`next_due_on`), never closes a period and never raises or resolves an
arrears alert: a £5 proration paid on 20 January must leave the real February instalment (due 5 February) expected
and flagged when it does not come. Kept apart as a gift of the plan with no `due_on`, whatever order and however
often its events arrive."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, stripe_event, unique
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
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, OVERDUE_DAY, _closed, _monthly_in_arrears, _post, _start
from tests.webhooks.test_s14r_closed_later_instalment import MARCH, _overdue
from tests.webhooks.test_s15a_void_before_schedule import _month
from tests.webhooks.test_s16a_proration_not_a_period import FEBRUARY, _paying_monthly

__all__ = ["app_client", "catalogue", "settings", "worker"]

PRORATION = 500
JAN_20 = BASE_TIME + 15 * DAY  # 20 January 2026: the donor raises their gift; Stripe invoices the difference at once
FEB_10 = FEBRUARY + 5 * DAY  # 10 February 2026: within 14 days after February's due date (5 February)
DECLINED = "Your card was declined."


def _extra_invoice(
    scenario: Scenario, template: dict[str, Any], billing_reason: str, start: int, end: int
) -> dict[str, dict[str, Any]]:
    """One invoice of the subscription billing no period (its lines bill `start` to `end`), as each of its events:
    failed, paid (by card: a retry that succeeded), voided, uncollectible, paid_outside (a Payment Record)."""
    invoice = copy.deepcopy(template["data"]["object"])
    invoice_id = unique("in_")
    invoice.update(
        id=invoice_id,
        billing_reason=billing_reason,
        created=start,
        period_start=start,
        amount_due=PRORATION,
        amount_paid=0,
        amount_remaining=PRORATION,
        attempt_count=1,
        status="open",
        status_transitions={"finalized_at": start, "paid_at": None},
        payments=None,
    )
    for line in invoice["lines"]["data"]:
        line.update(amount=PRORATION, period={"start": start, "end": end})
    intent_id, _ = scenario._intent(PRORATION, created=start + DAY, error=DECLINED)
    paid_by = {"type": "payment_intent", "payment_intent": intent_id}
    card = {"object": "invoice_payment", "status": "paid", "payment": paid_by}
    scenario.stripe.invoice_payments[invoice_id] = [card]

    def event(event_type: str, status: str, at: int, **fields: Any) -> dict[str, Any]:
        body = copy.deepcopy(invoice)
        transitions = {"finalized_at": start, "paid_at": at if status == "paid" else None}
        if status in ("void", "uncollectible"):
            transitions["voided_at" if status == "void" else "marked_uncollectible_at"] = at
        body.update(status=status, status_transitions=transitions, **fields)
        return stripe_event(event_type, body, created=at + 2)

    record = {
        "object": "invoice_payment",
        "status": "paid",
        "amount_paid": PRORATION,
        "payment": {"type": "payment_record", "payment_record": unique("pr_")},
    }
    return {
        "failed": event("invoice.payment_failed", "open", start + 8),
        "paid": event("invoice.paid", "paid", start + DAY, amount_paid=PRORATION, amount_remaining=0),
        "voided": event("invoice.voided", "void", start + 2 * DAY),
        "uncollectible": event("invoice.marked_uncollectible", "uncollectible", start + 2 * DAY),
        # Marked paid in the dashboard: its only payment a Payment Record, embedded in the event.
        "paid_outside": event(
            "invoice.paid",
            "paid",
            start + DAY,
            amount_paid=PRORATION,
            amount_remaining=0,
            payments={"object": "list", "data": [record]},
        ),
    }


def _state(runtime: Runtime, subscription_id: str, invoice_id: str) -> tuple[RegularGift, Gift | None, int]:
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == invoice_id)).first()
        donated = payments_service.supporter_totals(session, [regular.supporter_id])["donated"].amount
    return regular, row, donated


def _alerts(runtime: Runtime) -> list[tuple[str, str]]:
    with reading(runtime) as session:
        items = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    return sorted((str(a.dedupe_key).rsplit(":", 1)[1], a.resolved_by) for a in items)


def _receipt_asked(runtime: Runtime, gift: Gift) -> bool:
    with reading(runtime) as session:
        jobs = session.exec(select(Job).where(Job.actor_name == "receipts.issue_for_gift")).all()
    return str(gift.id) in {job.arguments["gift_id"] for job in jobs}


@pytest.mark.parametrize("billing_reason", ["subscription_update", "manual", "subscription_threshold"])
def test_a_paid_proration_is_a_gift_of_the_plan_and_leaves_the_next_payment_expected(
    billing_reason: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _paying_monthly(scenario, "Prorated Paid Pia")
    events = _extra_invoice(scenario, january, billing_reason, JAN_20, FEBRUARY)
    invoice_id = events["paid"]["data"]["object"]["id"]
    february = _month(scenario, january, FEBRUARY, voided=False)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, events["paid"], events["paid"])
    assert stuck_events(runtime) == []

    regular, gift, donated = _state(runtime, subscription_id, invoice_id)
    # The schedule: February (5 Feb) is still the payment expected, and flagged once it is late.
    assert (regular.status, regular.next_due_on, regular.last_paid_on) == (
        RegularGiftStatus.ACTIVE,
        dt.date(2026, 2, 5),
        dt.date(2026, 1, 5),
    )
    assert _overdue(runtime, dt.date(2026, 2, 13)) == [dt.date(2026, 2, 5)]
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=dt.date(2026, 2, 13)) == 1
    # The money: a paid gift of the plan, with its receipt, its history item and the plan's declaration; not an
    # instalment (no due date).
    assert gift is not None and (gift.status, gift.amount, gift.due_on) == (GiftStatus.PAID, PRORATION, None)
    assert (gift.regular_gift_id, gift.declaration_id) == (regular.id, regular.declaration_id)
    assert gift.received_on == dt.date(2026, 1, 21) and gift.stripe_charge_id
    assert donated == AMOUNT + PRORATION
    assert _receipt_asked(runtime, gift)
    assert [i["gift_id"] for i in history(runtime, supporter) if i["type"] == "gift"].count(str(gift.id)) == 1

    # February paid: March is next (not 20 March), February's alert resolved.
    _post(app_client, worker, february)
    regular, _, donated = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 3, 5))
    assert _alerts(runtime) == [("2026-02-05", payments_service.ALERTS_SETTLED_BY)]
    assert donated == 2 * AMOUNT + PRORATION


@pytest.mark.parametrize("order", [("failed", "paid"), ("paid", "failed")], ids="-".join)
def test_a_failed_proration_is_a_failed_payment_not_arrears(
    order: tuple[str, str],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _paying_monthly(scenario, "Prorated Failed Fay")
    events = _extra_invoice(scenario, january, "subscription_update", JAN_20, FEBRUARY)
    invoice_id = events["failed"]["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, events[order[0]], events[order[0]])
    if order[0] == "failed":
        regular, row, _ = _state(runtime, subscription_id, invoice_id)
        # No month is missing: the plan is not in arrears and nothing is overdue before February's grace ends.
        assert (regular.status, regular.failure_reason, regular.next_due_on) == (
            RegularGiftStatus.ACTIVE,
            "",
            dt.date(2026, 2, 5),
        )
        assert row is not None and (row.status, row.due_on, row.failure_reason) == (GiftStatus.FAILED, None, DECLINED)
        assert _overdue(runtime, dt.date(2026, 2, 12)) == []
        with runtime.unit_of_work() as uow:
            assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=dt.date(2026, 2, 12)) == 0
    _post(app_client, worker, events[order[1]], *[events[name] for name in order])
    assert stuck_events(runtime) == []
    regular, row, donated = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 2, 5))
    assert row is not None and (row.status, row.due_on) == (GiftStatus.PAID, None)
    assert donated == AMOUNT + PRORATION
    failures = [i for i in history(runtime, supporter) if i["type"] == "payment_failed"]
    assert [(i["gift_id"], i["amount"]) for i in failures] == [(str(row.id), PRORATION)]


@pytest.mark.parametrize("outcome", ["paid", "failed", "voided", "uncollectible", "paid_outside"])
def test_an_extra_invoice_near_the_owed_month_neither_settles_nor_moves_it(
    outcome: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """February failed and is overdue (its alert open); a proration dated 10 February (within the 14 days that make a
    closed invoice "the same period") ends paid, failed, voided, written off or paid outside Stripe: February stays
    owed, the arrears keep February's reason, and February paid after all makes March next."""
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Prorated Owing Otto")
    february_id = failed["data"]["object"]["id"]
    events = _extra_invoice(scenario, failed, "subscription_update", FEB_10, MARCH)
    invoice_id = events[outcome]["data"]["object"]["id"]
    if outcome == "paid_outside":
        scenario.stripe.invoice_payments[invoice_id] = []
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed)
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=OVERDUE_DAY) == 1
    reason = _state(runtime, subscription_id, invoice_id)[0].failure_reason

    _post(app_client, worker, events[outcome], events[outcome])
    assert stuck_events(runtime) == []
    regular, row, donated = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.failure_reason, regular.next_due_on) == (
        RegularGiftStatus.IN_ARREARS,
        reason,
        dt.date(2026, 2, 5),
    )
    assert _alerts(runtime) == [("2026-02-05", "")]
    assert row is not None and row.due_on is None and row.regular_gift_id == regular.id
    assert _overdue(runtime, OVERDUE_DAY) == [dt.date(2026, 2, 5)]
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=OVERDUE_DAY) == 0
    assert _alerts(runtime) == [("2026-02-05", "")]
    assert donated == AMOUNT + (PRORATION if outcome == "paid" else 0)

    scenario.stripe.invoice_payments[february_id][0]["status"] = "paid"
    paid = _closed(failed, "invoice.paid", status="paid", at=MARCH - 3 * DAY, amount_paid=AMOUNT)
    _post(app_client, worker, paid)
    regular, _, _ = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 3, 5))
    assert _alerts(runtime) == [("2026-02-05", payments_service.ALERTS_SETTLED_BY)]
    types = [i["type"] for i in history(runtime, supporter)]
    kind = {"voided": "instalment_voided", "uncollectible": "instalment_written_off"}.get(outcome)
    if kind is not None:
        assert types.count(kind) == 1
        item = next(i for i in history(runtime, supporter) if i["type"] == kind)
        assert "extra invoice" in item["summary"] and "due 10/02/2026" not in item["summary"]


@pytest.mark.parametrize(
    "order",
    [("proration_failed", "proration_paid", "february_paid"), ("february_paid", "proration_paid", "proration_failed")],
    ids="-".join,
)
def test_a_proration_and_the_owed_month_end_the_same_in_any_order_and_repeat(
    order: tuple[str, ...],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Prorated Order Ora")
    events = _extra_invoice(scenario, failed, "subscription_update", FEB_10, MARCH)
    invoice_id = events["paid"]["data"]["object"]["id"]
    scenario.stripe.invoice_payments[failed["data"]["object"]["id"]][0]["status"] = "paid"
    named = {
        "proration_failed": events["failed"],
        "proration_paid": events["paid"],
        "february_paid": _closed(failed, "invoice.paid", status="paid", at=MARCH - 3 * DAY, amount_paid=AMOUNT),
    }
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed, *[named[name] for name in order], *[named[name] for name in reversed(order)])
    assert stuck_events(runtime) == []
    regular, row, donated = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.failure_reason, regular.next_due_on) == (
        RegularGiftStatus.ACTIVE,
        "",
        dt.date(2026, 3, 5),
    )
    assert regular.last_paid_on == dt.date(2026, 2, 5)
    assert row is not None and (row.status, row.due_on) == (GiftStatus.PAID, None)
    assert donated == 2 * AMOUNT + PRORATION
    assert _overdue(runtime, dt.date(2026, 3, 11)) == []
    failures = [i["gift_id"] for i in history(runtime, supporter) if i["type"] == "payment_failed"]
    assert failures.count(str(row.id)) == 1


def test_a_proration_recorded_as_an_instalment_is_put_right_by_its_next_event(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A row recorded as an instalment before this rule (here: from a payload that did not say why the invoice was
    made, taken as a period's) is taken out of the instalments by any event of its invoice that says it bills no
    period (a replay of its event does it), and the arrears it caused clear."""
    scenario = Scenario(runtime)
    _, subscription_id, january = _paying_monthly(scenario, "Prorated Legacy Lev")
    events = _extra_invoice(scenario, january, "subscription_update", JAN_20, FEBRUARY)
    invoice_id = events["failed"]["data"]["object"]["id"]
    unsaid = copy.deepcopy(events["failed"])
    unsaid["id"] = unique("evt_")
    unsaid["data"]["object"].pop("billing_reason")
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, unsaid)
    regular, row, _ = _state(runtime, subscription_id, invoice_id)
    assert row is not None and row.due_on == dt.date(2026, 1, 20) and regular.status == RegularGiftStatus.IN_ARREARS

    _post(app_client, worker, events["failed"])
    regular, row, _ = _state(runtime, subscription_id, invoice_id)
    assert (regular.status, regular.failure_reason, regular.next_due_on) == (
        RegularGiftStatus.ACTIVE,
        "",
        dt.date(2026, 2, 5),
    )
    assert row is not None and (row.status, row.due_on) == (GiftStatus.FAILED, None)
    assert stuck_events(runtime) == []


def test_a_change_that_restarts_the_period_bills_that_period(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A change made with a new billing anchor (or a trial ended early, a new interval) is invoiced as
    `subscription_update` too, but that invoice bills the new period (a line of the subscription that is no proration,
    beside the proration's credit): it is that period's instalment, and the next payment is due a month on."""
    scenario = Scenario(runtime)
    _, subscription_id, january = _paying_monthly(scenario, "Re-anchored Rue")
    paid = _extra_invoice(scenario, january, "subscription_update", JAN_20, FEBRUARY)["paid"]
    invoice_id = paid["data"]["object"]["id"]
    lines = paid["data"]["object"]["lines"]["data"]
    credit = copy.deepcopy(lines[0])  # the fixture's line: a proration (`invoice_item_details`)
    credit.update(amount=-AMOUNT // 2)
    lines[0].update(
        amount=AMOUNT,
        period={"start": JAN_20, "end": JAN_20 + 31 * DAY},
        parent={
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {"proration": False, "subscription": subscription_id},
        },
    )
    lines[1:] = [credit]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, paid, paid)
    assert stuck_events(runtime) == []
    regular, row, _ = _state(runtime, subscription_id, invoice_id)
    assert row is not None and (row.status, row.due_on) == (GiftStatus.PAID, dt.date(2026, 1, 20))
    assert (regular.status, regular.next_due_on, regular.last_paid_on) == (
        RegularGiftStatus.ACTIVE,
        dt.date(2026, 2, 20),
        dt.date(2026, 1, 20),
    )
