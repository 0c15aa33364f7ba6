"""A monthly card gift's instalment that Stripe closes without a card payment (s14a), through signed deliveries to the
real endpoint: an invoice voided (the instalment cancelled), marked uncollectible (written off) or marked paid
outside Stripe (no charge: never a card gift). Each is keyed on the invoice, whatever order its events arrive in
and however often, and a paid instalment is never un-paid by a late event."""

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
from tests.fakes.scenarios import DAY, Scenario, seed_supporter, stripe_event, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    post_stripe,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]

AMOUNT = 1500
# The failed instalment is February's (due 5 Feb 2026): overdue once its grace (7 days) has passed.
OVERDUE_DAY = dt.date(2026, 2, 20)


def _monthly_in_arrears(scenario: Scenario, name: str) -> tuple[Any, str, dict[str, Any]]:
    """January paid, February's invoice failed: (supporter, subscription id, the failed invoice's event)."""
    supporter = seed_supporter(scenario.runtime, name)
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=1, fail_last=True)
    failed = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.payment_failed")
    # Stripe's subscription now: in February's period, whose instalment is the one still expected (overdue).
    item = scenario.stripe.subscriptions[subscription_id]["items"]["data"][0]
    item["current_period_start"] = failed["data"]["object"]["lines"]["data"][0]["period"]["start"]
    return supporter, subscription_id, failed


def _closed(failed: dict[str, Any], event_type: str, *, status: str, at: int, **fields: Any) -> dict[str, Any]:
    """The failed invoice as Stripe sends it once closed: its status, and the time of the transition."""
    invoice = copy.deepcopy(failed["data"]["object"])
    transitions = dict(invoice.get("status_transitions") or {})
    transitions.update(
        {
            "voided_at": at if status == "void" else transitions.get("voided_at"),
            "marked_uncollectible_at": at if status == "uncollectible" else transitions.get("marked_uncollectible_at"),
            "paid_at": at if status == "paid" else None,
        }
    )
    invoice.update(status=status, status_transitions=transitions, **fields)
    return stripe_event(event_type, invoice, created=at + 2)


def _post(client: TestClient, worker: EventsWorker, *events: dict[str, Any]) -> None:
    for event in events:
        assert post_stripe(client, event).status_code == 200
        worker.join()


def _state(runtime: Runtime, invoice_id: str, subscription_id: str) -> tuple[Gift, RegularGift, list[Any], int]:
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.stripe_invoice_id == invoice_id)).one()
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        overdue = payments_service.missing_instalments(session, today=OVERDUE_DAY, grace_days=7)
        donated = payments_service.supporter_totals(session, [regular.supporter_id])["donated"].amount
    return gift, regular, overdue, donated


def _types(runtime: Runtime, supporter: Any) -> list[str]:
    return [item["type"] for item in history(runtime, supporter)]


def _start(runtime: Runtime, scenario: Scenario, client: TestClient, worker: EventsWorker, *held: dict) -> None:
    """Every delivery of the story except `held` (events a test sends itself, in its own order)."""
    deliver(client, [d for d in scenario.deliveries if not any(d.event is event for event in held)])
    worker.join()


@pytest.mark.parametrize("void_first", [False, True], ids=["failed-then-voided", "voided-then-failed"])
def test_a_voided_instalment_is_cancelled_and_clears_the_arrears(
    void_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Void Vera")
    invoice_id = failed["data"]["object"]["id"]
    voided_at = failed["created"] + 3 * DAY
    voided = _closed(failed, "invoice.voided", status="void", at=voided_at)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    if not void_first:
        # In arrears and overdue: the 6-hourly check raises its alert for February.
        _post(app_client, worker, failed)
        with runtime.unit_of_work() as uow:
            assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=OVERDUE_DAY) == 1
    _post(app_client, worker, *([voided, failed, voided, failed] if void_first else [voided, voided, failed]))
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    assert [alert.resolved_by for alert in alerts] == ([] if void_first else [payments_service.ALERTS_SETTLED_BY])
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert gift.status == GiftStatus.CANCELLED and "voided" in gift.failure_reason
    assert (regular.status, regular.failure_reason) == (RegularGiftStatus.ACTIVE, "")
    assert overdue == []  # February is no longer expected; March is
    assert regular.next_due_on is not None and regular.next_due_on > gift.due_on  # type: ignore[operator]
    assert donated == AMOUNT  # January only: a voided instalment is no money
    types = _types(runtime, supporter)
    assert types.count("instalment_voided") == 1 and types.count("payment_failed") == 1
    item = next(i for i in history(runtime, supporter) if i["type"] == "instalment_voided")
    assert invoice_id in item["provider_ids"] and item["gift_id"] == str(gift.id)
    assert "voided" in item["summary"] and "05/02/2026" in item["summary"]


def test_an_invoice_voided_before_anything_failed_records_a_cancelled_instalment_and_no_gift(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Staff void February's open invoice (the donor asked to skip a month) before any attempt failed."""
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Skip Sami")
    voided = _closed(failed, "invoice.voided", status="void", at=failed["created"] - 5, attempt_count=0)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, voided)
    gift, regular, overdue, donated = _state(runtime, failed["data"]["object"]["id"], subscription_id)
    assert (gift.status, gift.received_at, gift.amount) == (GiftStatus.CANCELLED, None, AMOUNT)
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    assert donated == AMOUNT
    assert _types(runtime, supporter).count("instalment_voided") == 1


@pytest.mark.parametrize("paid_first", [False, True], ids=["voided-then-paid", "paid-then-voided"])
def test_a_late_voided_event_never_unpays_a_paid_instalment(
    paid_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Stripe cannot void a paid invoice, but a stray or replayed `invoice.voided` must not take the money back."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Paid Pat")
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=2)
    paid = [d.event for d in scenario.deliveries if d.event["type"] == "invoice.paid"][-1]
    voided = _closed(paid, "invoice.voided", status="void", at=paid["created"] + DAY)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, paid)
    _post(app_client, worker, *([voided, paid] if not paid_first else [paid, voided]))
    assert stuck_events(runtime) == []
    gift, regular, _, donated = _state(runtime, paid["data"]["object"]["id"], subscription_id)
    assert gift.status == GiftStatus.PAID and gift.received_at is not None
    assert regular.status == RegularGiftStatus.ACTIVE
    assert donated == 2 * AMOUNT
    if paid_first:  # processed after the payment, the stray event leaves no trace in the history either
        assert "instalment_voided" not in _types(runtime, supporter)


@pytest.mark.parametrize(
    "order",
    [
        ("failed", "uncollectible", "paid"),
        ("paid", "uncollectible", "failed"),
        ("uncollectible", "paid", "failed"),
    ],
    ids="-".join,
)
def test_a_written_off_instalment_leaves_the_arrears_and_a_later_payment_still_counts(
    order: tuple[str, ...],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Written Wyn")
    invoice_id = failed["data"]["object"]["id"]
    written_at = failed["created"] + 14 * DAY
    uncollectible = _closed(
        failed,
        "invoice.marked_uncollectible",
        status="uncollectible",
        at=written_at,
        status_details={"uncollectible": {"reason": "max_payment_attempts"}},
    )
    # The donor pays the uncollectible invoice after all (Stripe allows it; the world is Stripe after every event).
    scenario.stripe.invoice_payments[invoice_id][0]["status"] = "paid"
    paid = _closed(failed, "invoice.paid", status="paid", at=written_at + 2 * DAY, amount_paid=AMOUNT)
    events = {"failed": failed, "uncollectible": uncollectible, "paid": paid}
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    if order[-1] == "paid":
        _post(app_client, worker, failed, uncollectible)
        gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
        assert gift.status == GiftStatus.CANCELLED and "written off" in gift.failure_reason
        assert (regular.status, regular.failure_reason) == (RegularGiftStatus.ACTIVE, "")
        assert overdue == [] and donated == AMOUNT
    _post(app_client, worker, *[events[name] for name in order], uncollectible, failed)  # and again, late
    assert stuck_events(runtime) == []
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.failure_reason) == (GiftStatus.PAID, "")
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    assert donated == 2 * AMOUNT
    types = _types(runtime, supporter)
    assert types.count("instalment_written_off") == 1 and types.count("gift") == 2
    item = next(i for i in history(runtime, supporter) if i["type"] == "instalment_written_off")
    assert "every retry failed" in item["summary"] and invoice_id in item["provider_ids"]


def test_a_voided_invoice_stays_voided_when_its_earlier_write_off_arrives_late(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Late Lou")
    uncollectible = _closed(failed, "invoice.marked_uncollectible", status="uncollectible", at=failed["created"] + DAY)
    voided = _closed(uncollectible, "invoice.voided", status="void", at=failed["created"] + 2 * DAY)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, voided, uncollectible, voided)
    gift, regular, overdue, _ = _state(runtime, failed["data"]["object"]["id"], subscription_id)
    assert gift.status == GiftStatus.CANCELLED and "voided" in gift.failure_reason
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    types = _types(runtime, supporter)
    assert types.count("instalment_voided") == 1 and types.count("instalment_written_off") == 1


def _paid_outside(scenario: Scenario, failed: dict[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    """The failed invoice marked paid outside Stripe (in the dashboard): paid, `amount_paid` the whole amount, and
    its only payment a Payment Record (the card's default payment cancelled), or in the older shape the flag."""
    invoice_id = failed["data"]["object"]["id"]
    at = failed["created"] + 4 * DAY
    if legacy:
        return _closed(failed, "invoice.paid", status="paid", at=at, amount_paid=AMOUNT, paid_out_of_band=True)
    scenario.stripe.invoice_payments[invoice_id][0]["status"] = "canceled"
    scenario.stripe.invoice_payments[invoice_id].append(
        {
            "object": "invoice_payment",
            "id": unique("inpay_"),
            "status": "paid",
            "amount_paid": AMOUNT,
            "is_default": False,
            "payment": {"type": "payment_record", "payment_record": unique("pr_")},
        }
    )
    return _closed(failed, "invoice.paid", status="paid", at=at, amount_paid=AMOUNT)


@pytest.mark.parametrize(
    "shape, paid_first",
    [("payment_record", False), ("payment_record", True), ("legacy_flag", False)],
    ids=["record-after-failure", "record-before-failure", "legacy-flag"],
)
def test_an_instalment_marked_paid_outside_stripe_is_no_card_gift(
    shape: str,
    paid_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Outside Olu")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    paid = _paid_outside(scenario, failed, legacy=shape == "legacy_flag")
    for event in [paid, failed, paid] if paid_first else [failed, paid, paid]:
        _post(app_client, worker, event)
    assert stuck_events(runtime) == []
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert gift.status == GiftStatus.CANCELLED and gift.received_at is None and gift.stripe_charge_id is None
    assert "outside Stripe" in gift.failure_reason
    assert (regular.status, regular.failure_reason) == (RegularGiftStatus.ACTIVE, "")
    assert overdue == [] and donated == AMOUNT  # card income is January's only
    types = _types(runtime, supporter)
    assert types.count("gift") == 1 and types.count("instalment_paid_outside_stripe") == 1
    item = next(i for i in history(runtime, supporter) if i["type"] == "instalment_paid_outside_stripe")
    assert invoice_id in item["provider_ids"] and "outside Stripe" in item["summary"]
    with reading(runtime) as session:
        receipts = session.exec(select(Job).where(Job.actor_name == "receipts.issue_for_gift")).all()
        assert str(gift.id) not in {job.arguments["gift_id"] for job in receipts}


def test_an_invoice_paid_partly_by_card_and_partly_outside_stripe_is_a_gift_of_the_card_part(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Part Parveen")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    scenario.stripe.invoice_payments[invoice_id][0].update(status="paid", amount_paid=1000)
    scenario.stripe.invoice_payments[invoice_id].append(
        {
            "object": "invoice_payment",
            "status": "paid",
            "amount_paid": 500,
            "payment": {"type": "payment_record", "payment_record": unique("pr_")},
        }
    )
    paid = _closed(failed, "invoice.paid", status="paid", at=failed["created"] + DAY, amount_paid=AMOUNT)
    _post(app_client, worker, paid, paid)
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount) == (GiftStatus.PAID, 1000) and gift.stripe_charge_id
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    assert donated == AMOUNT + 1000
    items = [i for i in history(runtime, supporter) if i["type"] == "instalment_paid_outside_stripe"]
    assert len(items) == 1 and "£5.00" in items[0]["summary"]


def test_a_plan_whose_only_instalment_failed_and_was_written_off_is_no_longer_in_arrears(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "First Fail Fen")
    subscription_id = scenario.stripe_monthly(supporter, AMOUNT, paid=0, fail_last=True)
    failed = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.payment_failed")
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
    assert regular.status == RegularGiftStatus.IN_ARREARS
    _post(
        app_client,
        worker,
        _closed(failed, "invoice.marked_uncollectible", status="uncollectible", at=failed["created"] + DAY),
    )
    gift, regular, _, donated = _state(runtime, failed["data"]["object"]["id"], subscription_id)
    assert gift.status == GiftStatus.CANCELLED and "written off" in gift.failure_reason
    assert (regular.status, regular.failure_reason) == (RegularGiftStatus.ACTIVE, "")
    assert donated == 0
