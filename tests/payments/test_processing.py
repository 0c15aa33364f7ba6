"""What processing records beyond the ledger: history items, receipt jobs, stock, regular-gift alerts, totals,
merges, the sweep, the nightly catch-up, replay and payouts — each through signed deliveries to the real endpoints."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import col, select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import Gift, Order, Payout, Refund, RegularGift, RegularGiftStatus, Sku
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import FIXTURES, Scenario, fixture, seed_supporter, stripe_event, unique
from tests.webhooks.support import (
    EventsWorker,
    actual_ledger,
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
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["app_client", "catalogue", "settings", "worker"]


def run(scenario: Scenario, client: TestClient, worker: EventsWorker, stripe: FakeProvider, gc: FakeProvider) -> None:
    install(scenario, stripe, gc)
    deliver(client, scenario.deliveries)
    worker.join()
    assert stuck_events(scenario.runtime) == []
    assert actual_ledger(scenario.runtime, scenario.expected) == scenario.expected


def jobs_named(runtime: Runtime, name: str) -> list[dict[str, str]]:
    with reading(runtime) as session:
        return [job.arguments for job in session.exec(select(Job).where(Job.actor_name == name)).all()]


def test_a_one_off_gift_its_refund_and_its_history(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Gina")
    session_id = scenario.one_off_card_gift(supporter, 5000, refunds=(1200,), appeal="BOATS")
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == session_id)).one()
        refund = session.exec(select(Refund)).one()
        # The date the money was received is the charge's time, not the webhook's.
        intent = scenario.stripe.intents[gift.stripe_payment_intent_id or ""]
        assert gift.received_at == dt.datetime.fromtimestamp(intent["latest_charge"]["created"], dt.UTC)
        assert gift.appeal == "BOATS" and gift.returned_amount == 1200
        assert (refund.amount, refund.gift_amount, refund.order_amount, refund.gift_id) == (1200, 1200, 0, gift.id)
    items = history(runtime, supporter)
    gift_items = [item for item in items if item["type"] == "gift"]
    assert len(gift_items) == 1
    assert gift_items[0]["gift_id"] == str(gift.id) and gift_items[0]["amount"] == 5000
    assert set(gift_items[0]["provider_ids"]) == {session_id, gift.stripe_payment_intent_id, gift.stripe_charge_id}
    refund_items = [item for item in items if item["type"] == "refund"]
    assert [(i["refund_id"], i["amount"]) for i in refund_items] == [(str(refund.id), 1200)]
    assert refund.stripe_refund_id in refund_items[0]["provider_ids"]
    assert jobs_named(runtime, "receipts.issue_for_gift") == [{"gift_id": str(gift.id)}]
    assert jobs_named(runtime, "receipts.issue_correction") == [{"refund_id": str(refund.id)}]


def test_a_basket_takes_stock_and_its_refund_comes_off_the_goods_first(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    with reading(runtime) as session:
        stock_before = session.exec(select(Sku).where(Sku.sku == "TEE-SOLIDARITY-M")).one().stock
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Hal")
    session_id = scenario.shop_basket(supporter, quantity=2, donation=500, refunds=(3200,))
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        # Taken at payment, and given back: the goods were refunded in full before the basket was posted.
        assert session.exec(select(Sku).where(Sku.sku == "TEE-SOLIDARITY-M")).one().stock == stock_before
        order = session.exec(select(Order).where(Order.stripe_checkout_session_id == session_id)).one()
        gift = session.exec(select(Gift).where(Gift.order_id == order.id)).one()
        refund = session.exec(select(Refund)).one()
        assert (refund.order_amount, refund.gift_amount) == (3000, 200)
        assert gift.returned_amount == 200 and gift.amount == 500
    types = [item["type"] for item in history(runtime, supporter)]
    assert types.count("purchase") == 1 and types.count("gift") == 1 and types.count("refund") == 1
    assert jobs_named(runtime, "receipts.issue_for_order") == [{"order_id": str(order.id)}]
    assert jobs_named(runtime, "receipts.issue_for_gift") == [{"gift_id": str(gift.id)}]


def test_monthly_card_gift_arrears_reason_and_recovery(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ivy")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1, fail_last=True)
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    items = history(runtime, supporter)
    failed = [item for item in items if item["type"] == "payment_failed"]
    assert len(failed) == 1 and "insufficient funds" in failed[0]["summary"]
    assert [item["type"] for item in items].count("regular_gift_started") == 1
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        assert regular.status == RegularGiftStatus.IN_ARREARS
        assert "insufficient funds" in regular.failure_reason
    # The retry succeeds: the same invoice is paid, the arrears clear.
    failed_invoice = next(d.event for d in scenario.deliveries if d.event["type"] == "invoice.payment_failed")
    paid = dict(failed_invoice["data"]["object"], status="paid", amount_paid=1500)
    paid["status_transitions"] = {"paid_at": failed_invoice["created"] + 3600}
    assert (
        post_stripe(
            app_client, stripe_event("invoice.paid", paid, created=failed_invoice["created"] + 3600)
        ).status_code
        == 200
    )
    worker.join()
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        assert regular.status == RegularGiftStatus.ACTIVE and regular.failure_reason == ""
        totals = payments_service.supporter_totals(session, [supporter])
        assert totals["donated"].amount == 3000 and totals["regular_gifts"] == 1


def test_a_failed_attempt_processed_after_its_retry_succeeded_still_shows_in_the_history(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ida")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1, fail_last=True)
    failed_delivery = next(d for d in scenario.deliveries if d.event["type"] == "invoice.payment_failed")
    scenario.deliveries.remove(failed_delivery)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    failed_invoice = failed_delivery.event
    paid = dict(failed_invoice["data"]["object"], status="paid", amount_paid=1500)
    paid["status_transitions"] = {"paid_at": failed_invoice["created"] + 3600}
    # The retry's invoice.paid arrives first, the failed attempt afterwards (and twice).
    retry = stripe_event("invoice.paid", paid, created=failed_invoice["created"] + 3600)
    for event in (retry, failed_invoice, failed_invoice):
        assert post_stripe(app_client, event).status_code == 200
        worker.join()
    items = history(runtime, supporter)
    assert [item["type"] for item in items].count("payment_failed") == 1
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        assert regular.status == RegularGiftStatus.ACTIVE
        assert payments_service.supporter_totals(session, [supporter])["donated"].amount == 3000


def test_direct_debit_subscription_is_created_with_an_idempotency_key_from_our_ids(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Jo")
    scenario.gocardless_monthly(supporter, 1000, payments=("paid_out", "charged_back"), subscription_request=False)
    install(scenario, fake_stripe, fake_gocardless)
    fulfilled = [d for d in scenario.deliveries if d.event["resource_type"] == "billing_requests"]
    deliver(app_client, fulfilled * 2 + scenario.deliveries)
    worker.join()
    assert actual_ledger(runtime, scenario.expected) == scenario.expected
    creates = fake_gocardless.requests_to("POST", r"/subscriptions")
    keys = {request.headers["idempotency-key"] for request in creates}
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift)).one()
    assert keys == {f"checkout:{regular.checkout_id}:subscription"}
    types = [item["type"] for item in history(runtime, supporter)]
    assert types.count("gift") == 2 and types.count("dispute") == 1  # the chargeback reversed the second one


def test_missing_instalments_raise_one_alert_each(runtime: Runtime, catalogue: None) -> None:
    supporter = seed_supporter(runtime, "Kit")
    with runtime.unit_of_work() as uow:
        late = RegularGift(
            supporter_id=supporter,
            amount=1000,
            provider="stripe",
            method="card",
            status=RegularGiftStatus.ACTIVE,
            next_due_on=dt.date(2026, 3, 1),
            stripe_subscription_id=unique("sub_"),
        )
        on_time = RegularGift(
            supporter_id=supporter,
            amount=500,
            provider="stripe",
            method="card",
            status=RegularGiftStatus.ACTIVE,
            next_due_on=dt.date(2026, 3, 8),
            stripe_subscription_id=unique("sub_"),
        )
        ended = RegularGift(
            supporter_id=supporter,
            amount=700,
            provider="stripe",
            method="card",
            status=RegularGiftStatus.CANCELLED,
            next_due_on=dt.date(2026, 1, 1),
            stripe_subscription_id=unique("sub_"),
        )
        uow.session.add_all([late, on_time, ended])
    today = dt.date(2026, 3, 10)
    with reading(runtime) as session:
        missing = payments_service.missing_instalments(session, today=today, grace_days=7)
    assert [(m.regular_gift_id, m.due_on) for m in missing] == [(late.id, dt.date(2026, 3, 1))]
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today)
    with reading(runtime) as session:
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
        assert [(a.supporter_id, a.data["regular_gift_id"]) for a in alerts] == [(supporter, str(late.id))]


def test_a_merge_moves_every_money_record(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    old, survivor = seed_supporter(runtime, "Lee"), seed_supporter(runtime, "Lee")
    scenario.one_off_card_gift(old, 2000, refunds=(500,))
    scenario.shop_basket(old, quantity=1, donation=300)
    scenario.stripe_monthly(old, 900, paid=1)
    scenario.one_off_card_gift(survivor, 1000)
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with runtime.unit_of_work() as uow:
        moved = payments_service.reassign_supporter(uow, old, survivor)
    assert moved["gifts"] == 3 and moved["orders"] == 1 and moved["regular_gifts"] == 1 and moved["refunds"] == 1
    with reading(runtime) as session:
        assert payments_service.supporter_totals(session, [old]) == {
            "donated": payments_service.Money.zero(),
            "purchases": payments_service.Money.zero(),
            "regular_gifts": 0,
        }
        totals = payments_service.supporter_totals(session, [survivor])
    assert (totals["donated"].amount, totals["purchases"].amount, totals["regular_gifts"]) == (
        2000 - 500 + 300 + 900 + 1000,
        1500,
        1,
    )


def test_the_sweep_sends_again_what_was_stored_but_never_processed(
    runtime: Runtime,
    worker: EventsWorker,
    client: TestClient,
    catalogue: None,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The broker lost the messages (the `client` app has no worker, and the queue is dropped)."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Max")
    scenario.one_off_card_gift(supporter, 2500)
    install(scenario, fake_stripe, fake_gocardless)
    worker.stop()
    deliver(client, scenario.deliveries)
    runtime.broker.flush_all()
    with runtime.unit_of_work() as uow:
        assert webhooks_service.sweep(uow) == 0  # too recent: the worker may simply not have got to them
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    with runtime.unit_of_work() as uow:
        assert webhooks_service.sweep(uow, now=later) == 2
    restarted = EventsWorker(runtime)
    try:
        restarted.join()
    finally:
        restarted.stop()
    assert actual_ledger(runtime, scenario.expected) == scenario.expected


def test_catch_up_stores_what_never_arrived_and_reports_the_drift(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    alice, bob = seed_supporter(runtime, "Ann"), seed_supporter(runtime, "Ben")
    scenario.one_off_card_gift(alice, 1100)
    scenario.gocardless_monthly(bob, 600, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    delivered = scenario.deliveries[::2]  # half of them never reach us
    deliver(app_client, delivered)
    worker.join()
    report = webhooks_service.catch_up(runtime)
    worker.join()
    missing = {d.event_id for d in scenario.deliveries} - {d.event_id for d in delivered}
    assert {drift.provider: len(drift.missing) for drift in report} == {
        "stripe": len([d for d in scenario.deliveries if d.provider == "stripe" and d.event_id in missing]),
        "gocardless": len([d for d in scenario.deliveries if d.provider == "gocardless" and d.event_id in missing]),
    }
    assert {event_id for drift in report for event_id in drift.missing} == missing
    assert stuck_events(runtime) == []
    assert actual_ledger(runtime, scenario.expected) == scenario.expected
    with reading(runtime) as session:
        sources = {e.external_id: e.source for e in session.exec(select(InboundEvent)).all()}
    assert {sources[event_id] for event_id in missing} == {"catch_up"}
    assert [len(drift.missing) for drift in webhooks_service.catch_up(runtime)] == [0, 0]


def test_a_payout_event_is_recorded(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    fake_stripe.route(
        "GET", r"/v1/balance_transactions", fixture("stripe/payout_balance_transactions.constructed.json")
    )
    event = fixture("stripe/event_payout_paid.constructed.json")
    assert post_stripe(app_client, event).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        payout = session.exec(select(Payout)).one()
        assert (payout.provider_payout_id, payout.amount) == ("po_test_Daily01", 392)


def test_replay_command_processes_a_stored_event_again(
    database_url: str,
    tmp_path: Path,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ned")
    scenario.one_off_card_gift(supporter, 1300, with_payment_intent_event=False)
    scenario.stripe.install(fake_stripe)
    deliver(app_client, scenario.deliveries)
    worker.join()
    event_id = scenario.deliveries[0].event_id
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIVING_")},
        "GIVING_DATABASE__URL": database_url,
        "GIVING_STRIPE__SECRET_KEY": "sk_test_giving",
        "GIVING_STRIPE__WEBHOOK_SECRET": "whsec_test_secret",
        "GIVING_STRIPE__API_BASE": fake_stripe.url,
        "GIVING_ENV": "test",
    }
    result = subprocess.run(
        [sys.executable, "-m", "giving.cli", "events", "replay", event_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"stripe {event_id} checkout.session.completed: processed" in result.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "giving.cli", "events", "replay", "evt_never_seen"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unknown.returncode == 1 and "no stored event" in unknown.stderr
    assert actual_ledger(runtime, scenario.expected) == scenario.expected
    with reading(runtime) as session:
        event = session.exec(select(InboundEvent).where(InboundEvent.external_id == event_id)).one()
        assert event.status == EventStatus.PROCESSED and event.attempts == 2
        assert len(session.exec(select(Gift).where(col(Gift.supporter_id) == supporter)).all()) == 1
    assert str(FIXTURES)  # the shared fixtures were found


def test_delayed_payment_methods_and_expiry(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Bacs / pay-by-bank: completed unpaid, then succeeded or failed; an abandoned session expires."""
    from payments.models import Checkout, CheckoutStatus, GiftStatus
    from tests.fakes.scenarios import seed_checkout

    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Oda")
    outcomes = {}
    for outcome in ("succeeded", "failed"):
        checkout_id = seed_checkout(runtime, supporter, amount=3000)
        intent_id, _ = scenario._intent(3000, created=scenario.tick())
        session = scenario._session_object(
            checkout_id,
            id=unique("cs_test_"),
            mode="payment",
            payment_status="unpaid",
            payment_intent=intent_id,
            amount_total=3000,
        )
        scenario._stripe("checkout.session.completed", session)
        scenario._stripe(f"checkout.session.async_payment_{outcome}", {**session})
        outcomes[outcome] = session["id"]
    abandoned = seed_checkout(runtime, supporter, amount=900)
    scenario._stripe(
        "checkout.session.expired", scenario._session_object(abandoned, id=unique("cs_test_"), status="expired")
    )
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, list(reversed(scenario.deliveries)))  # the outcome before the completion, too
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        succeeded = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == outcomes["succeeded"])).one()
        failed = session.exec(select(Gift).where(Gift.stripe_checkout_session_id == outcomes["failed"])).one()
        assert (succeeded.status, failed.status) == (GiftStatus.PAID, GiftStatus.FAILED)
        assert session.get(Checkout, abandoned).status == CheckoutStatus.EXPIRED
        totals = payments_service.supporter_totals(session, [supporter])
    assert totals["donated"].amount == 3000
    assert [item["type"] for item in history(runtime, supporter)].count("payment_failed") == 1


def test_a_won_dispute_changes_nothing_a_lost_one_reduces_the_gift(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Pia")
    scenario.one_off_card_gift(supporter, 4000, dispute="won")
    scenario.one_off_card_gift(supporter, 1500, refunds=(500,), dispute="lost")
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    disputes = [item for item in history(runtime, supporter) if item["type"] == "dispute"]
    assert sorted(item["status"] for item in disputes) == ["lost", "open", "open", "won"]


def test_direct_debit_refunds_and_a_replaced_mandate(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Quin")
    subscription_id = scenario.gocardless_monthly(supporter, 2000, payments=("paid_out", "paid_out"))
    first_payment = next(pid for pid, p in scenario.gocardless.payments.items())
    refund_id = unique("RF")
    scenario.gocardless.refunds[refund_id] = {
        "id": refund_id,
        "amount": 800,
        "currency": "GBP",
        "status": "paid",
        "created_at": "2026-02-01T10:00:00.000Z",
        "reference": "requested",
        "links": {"payment": first_payment},
    }
    scenario._gocardless("refunds", "created", {"refund": refund_id, "payment": first_payment})
    scenario._gocardless("refunds", "paid", {"refund": refund_id, "payment": first_payment})
    old_mandate = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    new_mandate = unique("MD")
    scenario._gocardless("mandates", "replaced", {"mandate": old_mandate, "new_mandate": new_mandate})
    scenario.expected.gifts[first_payment].returned = 800
    scenario.expected.add_totals(supporter, donated=-800)
    run(scenario, app_client, worker, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift)).one()
        refund = session.exec(select(Refund)).one()
    assert regular.gocardless_mandate_id == new_mandate
    assert (refund.gocardless_refund_id, refund.amount, refund.status) == (refund_id, 800, "succeeded")
    assert jobs_named(runtime, "receipts.issue_correction") == [{"refund_id": str(refund.id)}]
