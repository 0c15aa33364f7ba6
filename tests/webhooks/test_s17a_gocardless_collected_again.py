"""GoCardless payments taken back and then given back (s17a).

A Direct Debit that failed late (after it was confirmed and paid out) and that GoCardless then retried and collected
(`resubmission_requested` → `confirmed` → `paid_out`, a new charge date) kept its first date, its late failure was
"won" with no date, and no history item said the money had come after all. The gift is dated by the collection that
succeeded (contract.md, "Rules": the Direct Debit charge date) unless a Gift Aid claim already has it (HMRC has its
date: the new one is only in the history item).

A second chargeback after an earlier one was cancelled (`charged_back` → `chargeback_cancelled` → `charged_back`)
wrote no history item (the first one's key), nor did its own cancellation: each is an item of its own."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Dispute, DisputeStatus, Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Delivery, Scenario, gocardless_event, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    post_gocardless,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _rows(runtime: Runtime, payment_id: str) -> tuple[Gift, Dispute, RegularGift]:
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        dispute = session.exec(select(Dispute).where(Dispute.gocardless_payment_id == payment_id)).one()
        regular = session.exec(select(RegularGift).where(RegularGift.id == gift.regular_gift_id)).one()
        return gift, dispute, regular


def _dated(runtime: Runtime, dedupe_prefix: str) -> list[tuple[str, dt.datetime]]:
    from crm.models import HistoryEntry

    with reading(runtime) as session:
        query = select(HistoryEntry).where(HistoryEntry.dedupe_key.startswith(dedupe_prefix))  # type: ignore[union-attr]
        rows = sorted(session.exec(query).all(), key=lambda row: row.at)
        return [(str(row.dedupe_key), row.at) for row in rows]


def _claim(runtime: Runtime, gift_id: uuid.UUID, received_on: dt.date) -> None:
    """The gift in a live Gift Aid claim (built while it was paid, before its late failure)."""
    from giftaid.models import Claim, ClaimGift

    with runtime.unit_of_work() as uow:
        claim = Claim(through=received_on, lines=1, gifts=1, total=1500, gift_aid=375)
        uow.session.add(claim)
        uow.session.flush()
        uow.session.add(ClaimGift(claim_id=claim.id, gift_id=gift_id, line_no=1, received_on=received_on, amount=1500))


def _event(payment_id: str, action: str, days: int, **details: Any) -> dict[str, Any]:
    return gocardless_event("payments", action, {"payment": payment_id}, created=BASE_TIME + days * DAY, **details)


@pytest.mark.parametrize("claimed", [False, True], ids=["unclaimed", "already_claimed"])
def test_a_late_failure_retried_and_collected_is_dated_by_the_collection(
    claimed: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Retry Ruth")
    scenario.gocardless_monthly(supporter, 1500, payments=("late_failure",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment = scenario.gocardless.payments[payment_id]
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    gift, dispute, _ = _rows(runtime, payment_id)
    assert (gift.status, gift.received_on, dispute.kind) == (GiftStatus.REVERSED, dt.date(2026, 1, 5), "late_failure")
    if claimed:
        _claim(runtime, gift.id, dt.date(2026, 1, 5))

    # GoCardless retries it (staff asked, or Success+): a new charge date, collected this time.
    payment.update(status="pending_submission", charge_date="2026-01-20")
    retried = [_event(payment_id, "resubmission_requested", 10)]
    assert post_gocardless(app_client, retried).status_code == 200
    worker.join()
    payment["status"] = "confirmed"
    collected = [_event(payment_id, "confirmed", 15)]
    assert post_gocardless(app_client, collected).status_code == 200
    worker.join()
    payment["status"] = "paid_out"
    paid_out = [_event(payment_id, "paid_out", 16)]
    assert post_gocardless(app_client, paid_out).status_code == 200
    worker.join()
    # Delivered again, and every earlier event of the payment too: nothing changes.
    deliver(app_client, [Delivery("gocardless", event) for event in retried + collected + paid_out])
    deliver(app_client, [d for d in scenario.deliveries if d.event["resource_type"] == "payments"])
    worker.join()
    assert stuck_events(runtime) == []

    gift, dispute, regular = _rows(runtime, payment_id)
    collected_at = dt.datetime(2026, 1, 20, 12, 0, tzinfo=dt.UTC)
    assert gift.status == GiftStatus.PAID
    first_day = dt.date(2026, 1, 5)
    assert gift.received_on == (first_day if claimed else dt.date(2026, 1, 20))
    assert gift.received_at == (dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC) if claimed else collected_at)
    assert (dispute.status, dispute.closed_at) == (DisputeStatus.WON, collected_at)
    assert regular.status == RegularGiftStatus.ACTIVE
    items = [item for item in history(runtime, supporter) if item.get("gift_id") == str(gift.id)]
    # The late failure's item (its event came at 10:00) is before the gift's (dated noon of its charge date).
    assert [(item["type"], item["amount"]) for item in items] == [
        ("payment_failed", -1500),
        ("gift", 1500),
        ("dispute", 1500),
    ]
    kept = " (it keeps its date, 05/01/2026: a Gift Aid claim has it)" if claimed else ""
    resolved = "Late failure resolved: the gift of £15.00 was collected after all on 20/01/2026"
    assert items[-1]["summary"] == resolved + kept
    assert items[-1]["charge_date"] == "2026-01-20"


def test_each_chargeback_and_each_cancellation_is_its_own_history_item(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Twice Tomas")
    scenario.gocardless_monthly(supporter, 1500, payments=("chargeback_cancelled",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment = scenario.gocardless.payments[payment_id]
    install(scenario, fake_stripe, fake_gocardless)
    # Each event processed as it happened (the payment as GoCardless had it then).
    for delivery in scenario.deliveries:
        action = delivery.event["action"]
        if delivery.event["resource_type"] == "payments":
            then = {"created": "pending_submission", "charged_back": "charged_back"}
            payment["status"] = then.get(action, "paid_out")
        deliver(app_client, [delivery])
        worker.join()

    # The donor's bank charges it back again, and that chargeback is cancelled too.
    payment["status"] = "charged_back"
    again = [_event(payment_id, "charged_back", 40, origin="bank", cause="authorisation_disputed", reason_code="DDICB")]
    assert post_gocardless(app_client, again).status_code == 200
    worker.join()
    gift, dispute, regular = _rows(runtime, payment_id)
    second_at = BASE_TIME + 40 * DAY
    assert (gift.status, dispute.status) == (GiftStatus.REVERSED, DisputeStatus.LOST)
    assert dispute.closed_at == dt.datetime.fromtimestamp(second_at, dt.UTC)
    assert regular.status == RegularGiftStatus.IN_ARREARS

    payment["status"] = "paid_out"
    cancelled = [_event(payment_id, "chargeback_cancelled", 50)]
    assert post_gocardless(app_client, cancelled).status_code == 200
    worker.join()
    # Every event delivered again, and the second chargeback's and cancellation's replayed as new deliveries.
    deliver(app_client, [d for d in scenario.deliveries if d.event["resource_type"] == "payments"])
    deliver(app_client, [Delivery("gocardless", event) for event in again + cancelled])
    worker.join()
    assert stuck_events(runtime) == []

    gift, dispute, regular = _rows(runtime, payment_id)
    assert (gift.status, dispute.status) == (GiftStatus.PAID, DisputeStatus.WON)
    assert dispute.closed_at == dt.datetime.fromtimestamp(BASE_TIME + 50 * DAY, dt.UTC)
    assert regular.status == RegularGiftStatus.ACTIVE
    items = [
        (item["type"], item["amount"], item["summary"].split(":")[0])
        for item in history(runtime, supporter)
        if item.get("gift_id") == str(gift.id)
    ]
    assert sorted(items) == sorted(
        [
            ("gift", 1500, "Regular gift of £15.00 (direct debit)"),
            ("dispute", -1500, "Chargeback"),
            ("dispute", 1500, "Chargeback cancelled"),
            ("dispute", -1500, "Chargeback"),
            ("dispute", 1500, "Chargeback cancelled"),
        ]
    )
    # The second pair dated by their own events.
    assert [at for _, at in _dated(runtime, f"reversed:{gift.id}:")][-1] == dispute.opened_at
    assert [at for _, at in _dated(runtime, f"restored:{gift.id}:")][-1] == dispute.closed_at
    assert dispute.opened_at == dt.datetime.fromtimestamp(second_at, dt.UTC)


@pytest.mark.parametrize("late", ["cancelled", "replaced_again"])
def test_a_late_event_of_a_replaced_mandate_follows_the_replacement(
    late: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Found in s17a: once `mandates.replaced` had moved the regular gifts to the new mandate, a later event of the
    old one (GoCardless cancels the mandate it replaced; a second delivery of `replaced` as an event of its own)
    found no gift on it and waited a week for a gift that would never come, then was given up."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Moved Mira")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=())
    old = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    new = unique("MD")
    scenario.gocardless.mandates[new] = {**scenario.gocardless.mandates[old], "id": new, "status": "active"}
    scenario.gocardless.mandates[old].update(status="cancelled", links={"new_mandate": new})
    scenario.gocardless.subscriptions[subscription_id]["links"] = {"mandate": new}
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    replaced = gocardless_event(
        "mandates", "replaced", {"mandate": old, "new_mandate": new}, created=BASE_TIME + 20 * DAY
    )
    assert post_gocardless(app_client, [replaced]).status_code == 200
    worker.join()

    if late == "cancelled":
        event = gocardless_event(
            "mandates", "cancelled", {"mandate": old}, created=BASE_TIME + 21 * DAY, cause="mandate_cancelled"
        )
    else:
        event = gocardless_event("mandates", "replaced", {"mandate": old}, created=BASE_TIME + 20 * DAY)
    assert post_gocardless(app_client, [event]).status_code == 200
    worker.join()

    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert (regular.status, regular.gocardless_mandate_id) == (RegularGiftStatus.ACTIVE, new)


def test_a_late_failure_processed_after_the_retry_was_collected_dates_the_gift_by_the_retry(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The same story, the late failure's own `failed` event delivered only after GoCardless had collected the retry:
    the gift, paid at the first charge date, is dated by the collection that stood all the same."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Late Lena")
    scenario.gocardless_monthly(supporter, 1500, payments=("late_failure",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment = scenario.gocardless.payments[payment_id]
    install(scenario, fake_stripe, fake_gocardless)
    held = [d for d in scenario.deliveries if d.event["action"] in ("failed", "late_failure_settled")]
    payment["status"] = "paid_out"
    deliver(app_client, [d for d in scenario.deliveries if d not in held])
    worker.join()
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    assert (gift.status, gift.received_on) == (GiftStatus.PAID, dt.date(2026, 1, 5))

    payment.update(status="confirmed", charge_date="2026-01-20")
    deliver(app_client, held)
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    assert (gift.status, gift.received_on) == (GiftStatus.PAID, dt.date(2026, 1, 20))
    assert [i["type"] for i in history(runtime, supporter) if i.get("gift_id") == str(gift.id)] == [
        "payment_failed",
        "gift",
    ]
