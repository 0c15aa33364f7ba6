"""Deliveries in an order that once gave a different result (found in review): a late `payout.paid` after
`payout.failed`, a Direct Debit gift first heard of as charged back and then restored, and a delayed-method basket
whose payment failed. Each posts signed deliveries to the real endpoints and lets the real worker run them."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from payments import service as payments_service
from payments.models import Gift, GiftStatus, Payout, PayoutStatus, RegularGift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, fixture, seed_checkout, seed_order, seed_supporter, unique
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


def jobs_named(runtime: Runtime, name: str) -> list[dict[str, str]]:
    with reading(runtime) as session:
        return [job.arguments for job in session.exec(select(Job).where(Job.actor_name == name)).all()]


# ---------------------------------------------------------------------------------------------------------------------
# A payout that failed stays failed when an older `payout.paid` snapshot is processed after `payout.failed`.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_late_payout_paid_snapshot_does_not_undo_payout_failed(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    fake_stripe.route(
        "GET", r"/v1/balance_transactions", fixture("stripe/payout_balance_transactions.constructed.json")
    )
    paid = fixture("stripe/event_payout_paid.constructed.json")
    failed = copy.deepcopy(paid)
    failed["id"] = "evt_test_payout_failed"
    failed["type"] = "payout.failed"
    failed["created"] = paid["created"] + 86_400  # the bank returned it a day later
    failed["data"]["object"].update(
        {"status": "failed", "failure_code": "account_closed", "failure_message": "The bank account has been closed"}
    )
    # Stripe does not order its deliveries: the failure is processed first, the (older) paid snapshot second.
    assert post_stripe(app_client, failed).status_code == 200
    worker.join()
    assert post_stripe(app_client, paid).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        payout = session.exec(select(Payout)).one()
    # contract.md: state only moves forward; the payout failed (the later fact), so it must stay failed.
    assert payout.status == PayoutStatus.FAILED


# ---------------------------------------------------------------------------------------------------------------------
# A Direct Debit instalment first heard of when already charged back, then restored by chargeback_cancelled: the gift
# counts again and gets its receipt, as it would have in the usual order.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_direct_debit_gift_restored_after_a_chargeback_gets_its_receipt(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Rhea")
    scenario.gocardless_monthly(supporter, 1500, payments=("chargeback_cancelled",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment = scenario.gocardless.payments[payment_id]
    install(scenario, fake_stripe, fake_gocardless)
    by_action = {d.event.get("action"): d for d in scenario.deliveries}
    setup = [d for d in scenario.deliveries if d.event["resource_type"] in ("billing_requests", "subscriptions")]

    # The mandate and subscription are recorded; the payment's confirmed/paid_out deliveries are delayed (our
    # endpoint was down; they come back by Gocardless' retries or the nightly catch-up).
    deliver(app_client, setup)
    worker.join()
    # The bank charges it back; that event is the first one about the payment we process.
    payment["status"] = "charged_back"
    deliver(app_client, [by_action["charged_back"]])
    worker.join()
    # The chargeback is cancelled: GoCardless puts the payment back to paid_out.
    payment["status"] = "paid_out"
    deliver(app_client, [by_action["chargeback_cancelled"]])
    worker.join()
    # The delayed ones finally arrive.
    deliver(app_client, [by_action["created"], by_action["confirmed"], by_action["paid_out"]])
    worker.join()
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        totals = payments_service.supporter_totals(session, [supporter])
    assert gift.status == GiftStatus.PAID
    assert totals["donated"].amount == 1500
    # contract.md: "By default every gift (each regular instalment, ...) is emailed a PDF receipt".
    assert {"gift_id": str(gift.id)} in [
        {k: v for k, v in job.items() if k == "gift_id"} for job in jobs_named(runtime, "receipts.issue_for_gift")
    ]


# ---------------------------------------------------------------------------------------------------------------------
# A basket paid by a delayed method whose payment fails: the failed gift is its donation line only, and a basket
# without one has no gift.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_failed_delayed_basket_payment_records_no_gift_for_the_goods(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
    catalogue: None,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Sol")
    sessions = {}
    for donation in (0, 500):
        order_id, goods = seed_order(runtime, supporter, sku="TEE-SOLIDARITY-M", quantity=2, donation=donation)
        total = goods + donation
        checkout_id = seed_checkout(runtime, supporter, amount=total, order_id=order_id)
        intent_id, _ = scenario._intent(total, created=scenario.tick())
        session = scenario._session_object(
            checkout_id,
            id=unique("cs_test_"),
            mode="payment",
            payment_status="unpaid",
            payment_intent=intent_id,
            amount_total=total,
            submit_type="pay",
        )
        scenario._stripe("checkout.session.completed", session)
        scenario._stripe("checkout.session.async_payment_failed", {**session})
        sessions[donation] = (session["id"], order_id, total)
    install(scenario, fake_stripe, fake_gocardless)
    # the outcome can arrive before the completion (Stripe does not order its deliveries)
    deliver(app_client, list(reversed(scenario.deliveries)))
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gifts = {
            donation: session.exec(select(Gift).where(Gift.stripe_checkout_session_id == sid)).all()
            for donation, (sid, _, _) in sessions.items()
        }
    failed_amounts = [item["amount"] for item in history(runtime, supporter) if item["type"] == "payment_failed"]
    # The basket's gift is its donation line only (docs/payments.md): a shirts-only basket has no gift at all, and the
    # failed gift of a basket with a £5 donation is £5, not the basket's total.
    actual = ([g.amount for g in gifts[0]], [g.amount for g in gifts[500]], sorted(failed_amounts))
    assert actual == ([], [500], [500])


# A monthly card gift's renewal invoice: `invoice.period_start` looks back one period, so the instalment is dated by
# its line item's service period; which instalment is the latest, and so the arrears, then do not depend on the order
# the events were processed in.


@pytest.mark.parametrize("order", ["in_order", "failure_first"])
def test_arrears_of_a_monthly_card_gift_do_not_depend_on_delivery_order(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    from payments.models import RegularGift

    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Tam")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1, fail_last=True)
    completed, created, jan_paid, feb_failed = scenario.deliveries
    jan = jan_paid.event["data"]["object"]
    feb = feb_failed.event["data"]["object"]
    month = 31 * 86_400
    # What Stripe sends: the first invoice's period is its creation instant; a renewal invoice's period_start/end are
    # the previous period (its line item carries the service period that starts now).
    jan.update({"period_start": jan["created"], "period_end": jan["created"]})
    feb.update({"period_start": jan["created"], "period_end": feb["created"]})
    for line in feb["lines"]["data"]:
        line["period"] = {"start": feb["created"], "end": feb["created"] + month}
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, [completed, created])
    worker.join()
    # Stripe does not order its deliveries: February's failure is processed before January's success (e.g. January's
    # first delivery attempt failed and came back on a retry).
    for delivery in [jan_paid, feb_failed] if order == "in_order" else [feb_failed, jan_paid]:
        deliver(app_client, [delivery])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        feb_gift = session.exec(select(Gift).where(Gift.stripe_invoice_id == feb["id"])).one()
    feb_due_uk = dt.datetime.fromtimestamp(feb["created"], dt.UTC).date()
    # docs/payments.md: "the latest settled instalment decides arrears" — February's failed one; any order, one result.
    assert (str(regular.status), feb_gift.due_on) == ("in_arrears", feb_due_uk)


# A one-off Direct Debit gift's mandate, later cancelled or expired (13 months after its payment): the event is
# ignored, not left waiting for a regular gift that will never exist.


def one_off_direct_debit(scenario: Scenario, supporter, amount: int, *, mandate_status: str) -> tuple[str, str]:
    """A one-off Direct Debit gift: billing request → mandate → one payment (paid out). Returns (mandate, payment)."""
    _, mandate_id, payment_id = scenario.gocardless_one_off(supporter, amount, mandate_status=mandate_status)
    scenario._gocardless("mandates", "created", {"mandate": mandate_id})
    scenario._gocardless("payments", "created", {"payment": payment_id})
    scenario._gocardless("payments", "confirmed", {"payment": payment_id})
    scenario._gocardless("payments", "paid_out", {"payment": payment_id, "payout": unique("PO")})
    return mandate_id, payment_id


@pytest.mark.parametrize("action", ["cancelled", "expired"])
def test_mandate_end_of_a_one_off_direct_debit_gift_is_not_left_waiting(
    action: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Uma")
    mandate_id, payment_id = one_off_direct_debit(scenario, supporter, 2500, mandate_status=action)
    scenario._gocardless(
        "mandates", action, {"mandate": mandate_id}, origin="bank", cause="bank_account_closed", reason_code="ADDACS-B"
    )
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)  # in order, once each
    worker.join()
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        assert gift.gocardless_mandate_id == mandate_id  # the mandate is recorded (on the gift and its checkout)
        assert str(gift.status) == "paid"
    # Waiting is for an object not recorded yet; nothing more will ever be recorded for a one-off gift's mandate.
    assert stuck_events(runtime) == []


# A subscription that finished, whose mandate the donor cancels later: the regular gift is finished whichever event
# is processed first (GoCardless keeps the subscription finished).


@pytest.mark.parametrize("order", ["finished_first", "mandate_first"])
def test_finished_subscription_then_mandate_cancelled_is_finished_whatever_the_order(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Vic")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))
    setup = list(scenario.deliveries)
    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, setup)
    worker.join()
    # The subscription reached its end (count/end_date) and GoCardless finished it; months later the donor cancels
    # the Direct Debit at their bank. A finished subscription stays finished at GoCardless.
    scenario.gocardless.subscriptions[subscription_id]["status"] = "finished"
    scenario.gocardless.subscriptions[subscription_id]["upcoming_payments"] = []
    scenario._gocardless("subscriptions", "finished", {"subscription": subscription_id})
    scenario.gocardless.mandates[mandate_id]["status"] = "cancelled"
    scenario._gocardless(
        "mandates",
        "cancelled",
        {"mandate": mandate_id},
        origin="customer",
        cause="bank_account_closed",
        reason_code="ADDACS-B",
        description="The customer closed their bank account.",
    )
    events = [scenario.deliveries[-2], scenario.deliveries[-1]]
    if order == "mandate_first":
        events.reverse()
    for delivery in events:
        deliver(app_client, [delivery])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert str(regular.status) == "finished"


# The donor's bank cancels the mandate, and GoCardless cancels the subscription on it: the regular gift keeps the
# bank's reason and code, whichever of the two events is processed first.


@pytest.mark.parametrize("order", ["subscription_first", "mandate_first"])
def test_a_cancelled_mandate_keeps_the_banks_reason_whatever_the_order(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Wyn")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))
    setup = list(scenario.deliveries)
    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, setup)
    worker.join()
    scenario.gocardless.mandates[mandate_id]["status"] = "cancelled"
    scenario.gocardless.subscriptions[subscription_id]["status"] = "cancelled"
    scenario.gocardless.subscriptions[subscription_id]["upcoming_payments"] = []
    scenario._gocardless(
        "mandates",
        "cancelled",
        {"mandate": mandate_id},
        origin="bank",
        cause="bank_account_closed",
        reason_code="ADDACS-B",
        description="The customer closed their bank account.",
    )
    scenario._gocardless(
        "subscriptions",
        "cancelled",
        {"subscription": subscription_id},
        origin="gocardless",
        cause="mandate_cancelled",
        description="The subscription was cancelled because its mandate was cancelled.",
    )
    events = [scenario.deliveries[-2], scenario.deliveries[-1]]
    if order == "subscription_first":
        events.reverse()
    for delivery in events:
        deliver(app_client, [delivery])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert str(regular.status) == "cancelled"
    bank_reason = "The customer closed their bank account. (ADDACS-B)"
    assert regular.failure_reason == bank_reason
    [cancelled] = [item for item in history(runtime, supporter) if item["type"] == "regular_gift_cancelled"]
    assert cancelled["summary"] == f"Monthly gift of £10.00 cancelled: {bank_reason}"
    assert cancelled["reason"] == bank_reason


# A Direct Debit attempt that failed before GoCardless's retry paid: in the history whether its event is processed at
# once or only after the retry succeeded (as the Stripe path keeps it).


@pytest.mark.parametrize("timing", ["processed_at_once", "processed_after_the_retry"])
def test_a_failed_direct_debit_attempt_stays_in_the_history_after_its_retry_succeeded(
    timing: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Xan")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=())
    setup = list(scenario.deliveries)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, setup)
    worker.join()
    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 1000,
            "currency": "GBP",
            "status": "pending_submission",
            "charge_date": "2026-01-05",
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    first = len(scenario.deliveries)
    scenario._gocardless("payments", "created", {"payment": payment_id})
    scenario._gocardless(
        "payments",
        "failed",
        {"payment": payment_id},
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        description="The customer's account had insufficient funds.",
        will_attempt_retry=True,
    )
    scenario._gocardless("payments", "resubmission_requested", {"payment": payment_id})
    scenario._gocardless("payments", "confirmed", {"payment": payment_id})
    scenario._gocardless("payments", "paid_out", {"payment": payment_id, "payout": unique("PO")})
    created_d, failed_d, *retry_d = scenario.deliveries[first:]
    deliver(app_client, [created_d])
    worker.join()
    if timing == "processed_at_once":
        payment["status"] = "failed"
        deliver(app_client, [failed_d])
        worker.join()
        payment.update({"status": "paid_out", "charge_date": "2026-01-12"})
        deliver(app_client, retry_d)
        worker.join()
    else:  # the failure's delivery was delayed (endpoint down; GoCardless retries it) until after the retry succeeded
        payment.update({"status": "paid_out", "charge_date": "2026-01-12"})
        deliver(app_client, [*retry_d, failed_d])
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    types = [i["type"] for i in history(runtime, supporter) if i.get("gift_id") == str(gift.id)]
    assert (str(gift.status), sorted(types)) == ("paid", ["gift", "payment_failed"])
