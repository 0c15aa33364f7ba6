"""GoCardless one-off and first gifts in orders of events found in review: a late failure, a failure's reason and a
failed attempt GoCardless retries each give one result whatever comes first; a cancelled billing request ends its
checkout."""

from __future__ import annotations

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Checkout, Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _late_failure_events(scenario: Scenario, payment_id: str) -> dict[str, object]:
    by = {}
    by["created"] = scenario._gocardless("payments", "created", {"payment": payment_id})
    by["confirmed"] = scenario._gocardless("payments", "confirmed", {"payment": payment_id})
    by["paid_out"] = scenario._gocardless("payments", "paid_out", {"payment": payment_id, "payout": unique("PO")})
    by["failed"] = scenario._gocardless(
        "payments",
        "failed",
        {"payment": payment_id},
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        will_attempt_retry=False,
    )
    by["late_failure_settled"] = scenario._gocardless(
        "payments", "late_failure_settled", {"payment": payment_id, "payout": unique("PO")}
    )
    return by


ORDERS = {
    # the usual order, the payment already failed at GoCardless when we process its first event (a backlog, the
    # nightly catch-up): `created` says nothing about whether it was paid
    "created_first": ["created", "confirmed", "paid_out", "failed", "late_failure_settled"],
    # the same events, `confirmed` processed first
    "confirmed_first": ["confirmed", "created", "paid_out", "failed", "late_failure_settled"],
    # `late_failure_settled` (a payout debit for a payment that WAS paid) processed first
    "settled_first": ["late_failure_settled", "confirmed", "paid_out", "failed"],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_late_failure_of_a_one_off_direct_debit_gives_one_history_whatever_the_order(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A late failure: confirmed, paid_out, then failed and late_failure_settled. docs/payments.md: "its status now,
    plus whether it was ever paid (...), decide — so any arrival order gives one result"."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Lena")
    _, _, payment_id = scenario.gocardless_one_off(supporter, 2500, final_status="failed", appeal="WINTER")
    fulfilled = list(scenario.deliveries)
    by_action = _late_failure_events(scenario, payment_id)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, fulfilled)
    worker.join()
    from tests.fakes.scenarios import Delivery

    for action in ORDERS[order]:
        deliver(app_client, [Delivery("gocardless", by_action[action])])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    items = [(i["type"], i["summary"]) for i in history(runtime, supporter) if i.get("gift_id") == str(gift.id)]
    # "confirmed_first" gives: the gift, and one item for its late failure. Any order must give the same.
    assert (str(gift.status), sorted(t for t, _ in items)) == ("reversed", ["gift", "payment_failed"]), items


@pytest.mark.parametrize("order", ["failed_first", "created_first"])
def test_failure_reason_of_a_direct_debit_does_not_depend_on_which_event_came_first(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A one-off Direct Debit that failed (never paid). The reason on the gift and in the history is the bank's
    (the `failed` event's details), whichever of `created` / `failed` is processed first."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Mo")
    _, _, payment_id = scenario.gocardless_one_off(supporter, 2000, final_status="failed", appeal="WINTER")
    fulfilled = list(scenario.deliveries)
    created = scenario._gocardless("payments", "created", {"payment": payment_id})
    failed = scenario._gocardless(
        "payments",
        "failed",
        {"payment": payment_id},
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        description="The customer's account had insufficient funds.",
        will_attempt_retry=False,
    )
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, fulfilled)
    worker.join()
    from tests.fakes.scenarios import Delivery

    for event in [failed, created] if order == "failed_first" else [created, failed]:
        deliver(app_client, [Delivery("gocardless", event)])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    failed_items = [i["summary"] for i in history(runtime, supporter) if i["type"] == "payment_failed"]
    assert str(gift.status) == "failed"
    assert (gift.failure_reason, failed_items) == (
        "The customer's account had insufficient funds. (ARUDD-0)",
        ["Payment of £20.00 failed: The customer's account had insufficient funds. (ARUDD-0)"],
    )


@pytest.mark.parametrize("status_when_processed", ["failed", "pending_submission", "submitted"])
def test_a_failed_attempt_processed_while_goCardless_retries_stays_in_the_history(
    status_when_processed: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """docs/payments.md: `failed`, never paid → "payment_failed history with cause and reason code (and "GoCardless
    will retry" when will_attempt_retry); processed after the retry paid, the same history item beside the paid
    gift". Here the failure is processed while GoCardless's retry is under way (the payment is back to
    pending_submission / submitted); then the retry is confirmed. The failed attempt must still be in the history."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Nia")
    _, _, payment_id = scenario.gocardless_one_off(supporter, 1800, final_status="pending_submission", appeal="WINTER")
    payment = scenario.gocardless.payments[payment_id]
    fulfilled = list(scenario.deliveries)
    failed = scenario._gocardless(
        "payments",
        "failed",
        {"payment": payment_id},
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        description="The customer's account had insufficient funds.",
        will_attempt_retry=True,
    )
    confirmed = scenario._gocardless("payments", "confirmed", {"payment": payment_id})
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, fulfilled)
    worker.join()
    from tests.fakes.scenarios import Delivery

    payment["status"] = status_when_processed
    deliver(app_client, [Delivery("gocardless", failed)])
    worker.join()
    payment["status"] = "confirmed"
    deliver(app_client, [Delivery("gocardless", confirmed)])
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    types = sorted(i["type"] for i in history(runtime, supporter) if i.get("gift_id") == str(gift.id))
    assert (str(gift.status), types) == ("paid", ["gift", "payment_failed"])


@pytest.mark.parametrize("action", ["cancelled", "failed"])
def test_a_cancelled_billing_request_does_not_leave_its_checkout_open_for_ever(
    action: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The Stripe twin (`checkout.session.expired`) moves an abandoned checkout to `expired`; docs/checkout.md:
    "the webhook processing moves them on to `completed` or `expired`". A billing request GoCardless cancelled or
    failed ("none of the resources have been created") will never be fulfilled: its checkout must not stay open."""
    from payments.models import CheckoutStatus

    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Pim")
    checkout_id, _, _ = scenario.gocardless_one_off(supporter, 1000, final_status="pending_submission", appeal="WINTER")
    request_id = next(iter(scenario.gocardless.billing_requests))
    scenario.gocardless.billing_requests[request_id]["status"] = action
    scenario.gocardless.billing_requests[request_id]["links"] = {}
    scenario.deliveries.clear()
    scenario._gocardless("billing_requests", action, {"billing_request": request_id})
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as session:
        checkout = session.get(Checkout, checkout_id)
    assert checkout.status != CheckoutStatus.OPEN


def test_the_reason_of_a_late_failure_is_the_banks_not_the_name_of_the_event_processed(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The payment already late-failed at GoCardless when `confirmed` is processed (a backlog, the catch-up): the gift
    is reversed at once — with `confirmed`'s own details as the "reason" — and the `failed` event with the bank's
    reason then changes nothing."""
    from tests.fakes.scenarios import Delivery

    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Quin")
    _, _, payment_id = scenario.gocardless_one_off(supporter, 2500, final_status="failed", appeal="WINTER")
    fulfilled = list(scenario.deliveries)
    by_action = _late_failure_events(scenario, payment_id)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, fulfilled)
    worker.join()
    for action in ("confirmed", "paid_out", "failed", "late_failure_settled"):
        deliver(app_client, [Delivery("gocardless", by_action[action])])
        worker.join()
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    assert (str(gift.status), gift.failure_reason) == ("reversed", "insufficient_funds (ARUDD-0)")
