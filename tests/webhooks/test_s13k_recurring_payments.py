"""No recurring payment lost or counted twice (h11), through the real signed webhook path: subscriptions (and a
GoCardless payment) staff made in the provider's dashboard for a supporter we know, a Stripe invoice a coupon made
free, a GoCardless retry, and instalments whose events were lost (overdue, then found by the catch-up)."""

from __future__ import annotations

import copy
import datetime as dt

from sqlmodel import col, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments import service as payments_service
from payments.models import Gift, GiftStatus, Provider, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, fixture, gocardless_event, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    post_gocardless,
    post_stripe,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _dashboard_subscription(scenario: Scenario, mandate_id: str, amount: int, charge_day: str) -> tuple[str, str]:
    """A subscription staff made in the GoCardless dashboard on `mandate_id` (no checkout of ours, no metadata),
    and its first payment, confirmed. Returns (subscription id, payment id)."""
    subscription_id, payment_id = unique("SB"), unique("PM")
    subscription = copy.deepcopy(
        fixture("gocardless/subscriptions.gocardless-pro-python.json")["get"]["body"]["subscriptions"]
    )
    subscription.update(
        {
            "id": subscription_id,
            "amount": amount,
            "currency": "GBP",
            "status": "active",
            "metadata": {},
            "links": {"mandate": mandate_id},
            "upcoming_payments": [{"amount": amount, "charge_date": "2026-03-16"}],
        }
    )
    scenario.gocardless.subscriptions[subscription_id] = subscription
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": amount,
            "currency": "GBP",
            "status": "confirmed",
            "charge_date": charge_day,
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    return subscription_id, payment_id


def _dashboard_events(subscription_id: str, payment_id: str, mandate_id: str, *, payment_first: bool) -> list[dict]:
    created = gocardless_event(
        "subscriptions", "created", {"subscription": subscription_id, "mandate": mandate_id}, created=BASE_TIME + DAY
    )
    confirmed = gocardless_event("payments", "confirmed", {"payment": payment_id}, created=BASE_TIME + 2 * DAY)
    return [confirmed, created] if payment_first else [created, confirmed]


def test_gocardless_subscription_made_in_the_dashboard_for_a_monthly_donor_is_recorded(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Dashboard Dora")
    ours = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))
    mandate_id = scenario.gocardless.subscriptions[ours]["links"]["mandate"]
    # The donor phones to give £5 a month more; staff add a second subscription on her mandate in the dashboard.
    extra, payment_id = _dashboard_subscription(scenario, mandate_id, 500, "2026-02-16")
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    # The payment's event comes before the subscription's: neither may wait for a checkout that will never come.
    assert (
        post_gocardless(app_client, _dashboard_events(extra, payment_id, mandate_id, payment_first=True)).status_code
        == 200
    )
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.gocardless_subscription_id == extra)).one()
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        totals = payments_service.supporter_totals(session, [supporter])
    assert (regular.supporter_id, regular.amount, regular.status) == (supporter, 500, RegularGiftStatus.ACTIVE)
    assert (regular.provider, regular.gocardless_mandate_id, regular.checkout_id) == (
        Provider.GOCARDLESS,
        mandate_id,
        None,
    )
    assert (gift.supporter_id, gift.status, gift.amount, gift.regular_gift_id) == (
        supporter,
        GiftStatus.PAID,
        500,
        regular.id,
    )
    assert gift.received_on == dt.date(2026, 2, 16)
    assert totals["donated"].amount == 1000 + 500
    assert totals["regular_gifts"] == 2


def test_gocardless_subscription_made_in_the_dashboard_on_a_one_off_donors_mandate_is_recorded(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Once Then Monthly")
    _, mandate_id, _ = scenario.gocardless_one_off(supporter, 2500)
    extra, payment_id = _dashboard_subscription(scenario, mandate_id, 800, "2026-02-16")
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    events = _dashboard_events(extra, payment_id, mandate_id, payment_first=False)
    for event in [*events, *events]:  # each delivered twice: still one regular gift, one instalment
        assert post_gocardless(app_client, [event]).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regulars = session.exec(select(RegularGift).where(RegularGift.supporter_id == supporter)).all()
        gifts = session.exec(
            select(Gift).where(Gift.supporter_id == supporter, col(Gift.regular_gift_id).is_not(None))
        ).all()
    assert [(r.gocardless_subscription_id, r.amount, r.status) for r in regulars] == [
        (extra, 800, RegularGiftStatus.ACTIVE)
    ]
    assert [(g.gocardless_payment_id, g.status, g.amount) for g in gifts] == [(payment_id, GiftStatus.PAID, 800)]


def test_gocardless_subscription_on_a_mandate_we_do_not_know_still_waits(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    stranger_mandate = unique("MD")
    extra, payment_id = _dashboard_subscription(scenario, stranger_mandate, 700, "2026-02-16")
    install(scenario, fake_stripe, fake_gocardless)
    assert (
        post_gocardless(
            app_client, _dashboard_events(extra, payment_id, stranger_mandate, payment_first=True)
        ).status_code
        == 200
    )
    worker.join()
    assert sorted((kind, status, waiting) for kind, status, waiting, _ in stuck_events(runtime)) == [
        ("payments.confirmed", "waiting", f"gocardless_subscription:{extra}"),
        ("subscriptions.created", "waiting", f"gocardless_subscription:{extra}"),
    ]
    with reading(runtime) as session:
        assert session.exec(select(RegularGift)).all() == []


def test_stripe_invoice_a_coupon_made_free_is_no_gift_and_no_missing_instalment(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Coupon Cora")
    subscription_id = scenario.stripe_monthly(supporter, 1500, paid=1)
    # February's renewal: staff gave the donor a 100%-off month (a coupon), so its invoice is paid with nothing.
    february = BASE_TIME + 31 * DAY
    subscription = scenario.stripe.subscriptions[subscription_id]
    subscription["items"]["data"][0].update(current_period_start=february, current_period_end=february + 31 * DAY)
    free = copy.deepcopy(fixture("stripe/event_invoice_paid.constructed.json")["data"]["object"])
    free_id = unique("in_")
    free.update(
        {
            "id": free_id,
            "amount_paid": 0,
            "amount_due": 0,
            "status": "paid",
            "currency": "gbp",
            "created": february,
            "period_start": february - 31 * DAY,
            "billing_reason": "subscription_cycle",
            "status_transitions": {"paid_at": february + 5, "finalized_at": february},
            "payments": None,
        }
    )
    for line in free["lines"]["data"]:
        line["period"] = {"start": february, "end": february + 31 * DAY}
    free["parent"]["subscription_details"]["subscription"] = subscription_id
    scenario._stripe("customer.subscription.updated", copy.deepcopy(subscription), created=february + 1)
    free_event = scenario._stripe("invoice.paid", free, created=february + 10)
    # The free invoice comes first, before even the checkout: it must wait for the regular gift, not be dropped.
    scenario.deliveries.insert(0, scenario.deliveries.pop())
    assert scenario.deliveries[0].event is free_event
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        # Remembered as an instalment closed at £0 (so a free later period is stepped over), never as money.
        free_gift = session.exec(select(Gift).where(Gift.stripe_invoice_id == free_id)).one()
        assert (free_gift.status, free_gift.amount, free_gift.received_at) == ("cancelled", 0, None)
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        totals = payments_service.supporter_totals(session, [supporter])
        # Nothing was due in February: no instalment is missing after its grace, and March's is the one expected.
        assert payments_service.missing_instalments(session, today=dt.date(2026, 2, 20), grace_days=7) == []
    assert regular.next_due_on is not None and regular.next_due_on >= dt.date(2026, 3, 5)
    assert regular.status == RegularGiftStatus.ACTIVE
    assert totals["donated"].amount == 1500


def test_gocardless_payment_failed_retried_then_confirmed_is_one_gift_dated_by_the_retry(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Each event processed as it comes, the payment as GoCardless has it at that moment (Success+ retry)."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Retry Rita")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=())
    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 1000,
            "currency": "GBP",
            "status": "failed",
            "charge_date": "2026-01-05",
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    failed = gocardless_event(
        "payments",
        "failed",
        {"payment": payment_id},
        created=BASE_TIME + DAY,
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        will_attempt_retry=True,
    )
    steps = [
        ("failed", {}, failed),
        ("pending_submission", {"charge_date": "2026-01-12"}, None),
        ("submitted", {}, None),
        ("confirmed", {}, None),
    ]
    for number, (status, changes, own_event) in enumerate(steps):
        payment.update(status=status, **changes)
        action = "resubmission_requested" if status == "pending_submission" else status
        created = BASE_TIME + (8 + number) * DAY
        event = own_event or gocardless_event("payments", action, {"payment": payment_id}, created=created)
        assert post_gocardless(app_client, [event]).status_code == 200
        worker.join()
    assert post_gocardless(app_client, [failed]).status_code == 200  # GoCardless redelivers the failure
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gifts = session.exec(select(Gift).where(Gift.supporter_id == supporter)).all()
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert [(g.gocardless_payment_id, g.status, g.amount, g.received_on) for g in gifts] == [
        (payment_id, GiftStatus.PAID, 1000, dt.date(2026, 1, 12))
    ]
    assert (regular.status, regular.failure_reason) == (RegularGiftStatus.ACTIVE, "")


def _stripe_dashboard_subscription(scenario: Scenario, customer: str, amount: int) -> tuple[str, dict]:
    """A subscription staff made in the Stripe dashboard for `customer` (no checkout of ours: no checkout_id in its
    metadata), and its first invoice, paid. Returns (subscription id, invoice)."""
    subscription_id = unique("sub_")
    start = BASE_TIME + 20 * DAY
    subscription = copy.deepcopy(fixture("stripe/subscription.stripe-mock.json"))
    subscription.update(
        {
            "id": subscription_id,
            "customer": customer,
            "currency": "gbp",
            "status": "active",
            "metadata": {},
            "pause_collection": None,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": unique("si_"),
                        "price": {"unit_amount": amount, "currency": "gbp"},
                        "quantity": 1,
                        "current_period_start": start,
                        "current_period_end": start + 31 * DAY,
                    }
                ],
            },
        }
    )
    scenario.stripe.subscriptions[subscription_id] = subscription
    invoice = copy.deepcopy(fixture("stripe/event_invoice_paid.constructed.json")["data"]["object"])
    intent_id, _ = scenario._intent(amount, created=start)
    invoice.update(
        {
            "id": unique("in_"),
            "customer": customer,
            "amount_paid": amount,
            "amount_due": amount,
            "status": "paid",
            "currency": "gbp",
            "created": start,
            "billing_reason": "subscription_create",
            "status_transitions": {"paid_at": start + 5, "finalized_at": start},
            "payments": None,
        }
    )
    for line in invoice["lines"]["data"]:
        line["period"] = {"start": start, "end": start + 31 * DAY}
    invoice["parent"]["subscription_details"]["subscription"] = subscription_id
    scenario.stripe.invoice_payments[invoice["id"]] = [
        {
            "object": "invoice_payment",
            "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": intent_id},
        }
    ]
    return subscription_id, invoice


def test_stripe_subscription_made_in_the_dashboard_for_a_monthly_donor_is_recorded(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Dashboard Dev")
    ours = scenario.stripe_monthly(supporter, 1500, paid=1)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as session:
        customer = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == ours)).one()
    assert customer.stripe_customer_id
    extra, invoice = _stripe_dashboard_subscription(scenario, customer.stripe_customer_id, 700)
    # The invoice is delivered before the subscription's own event, and twice.
    paid = scenario._stripe("invoice.paid", invoice, created=BASE_TIME + 20 * DAY + 10)
    created = scenario._stripe(
        "customer.subscription.created",
        copy.deepcopy(scenario.stripe.subscriptions[extra]),
        created=BASE_TIME + 20 * DAY,
    )
    for event in (paid, created, paid):
        assert post_stripe(app_client, event).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == extra)).one()
        gifts = session.exec(select(Gift).where(Gift.stripe_invoice_id == invoice["id"])).all()
        totals = payments_service.supporter_totals(session, [supporter])
    assert (regular.supporter_id, regular.amount, regular.status, regular.checkout_id) == (
        supporter,
        700,
        RegularGiftStatus.ACTIVE,
        None,
    )
    assert [(g.supporter_id, g.status, g.amount, g.regular_gift_id) for g in gifts] == [
        (supporter, GiftStatus.PAID, 700, regular.id)
    ]
    assert totals["donated"].amount == 1500 + 700
    assert totals["regular_gifts"] == 2


def test_stripe_subscription_of_a_customer_we_do_not_know_still_waits(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    extra, invoice = _stripe_dashboard_subscription(scenario, unique("cus_"), 700)
    install(scenario, fake_stripe, fake_gocardless)
    assert post_stripe(app_client, scenario._stripe("invoice.paid", invoice)).status_code == 200
    worker.join()
    assert [(kind, status, waiting) for kind, status, waiting, _ in stuck_events(runtime)] == [
        ("invoice.paid", "waiting", f"stripe_subscription:{extra}")
    ]


def test_gocardless_payment_taken_in_the_dashboard_on_a_monthly_donors_mandate_is_recorded(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Staff take a one-off extra gift (no subscription) on the mandate of a monthly donor, in the dashboard."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Extra Ezra")
    ours = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))
    mandate_id = scenario.gocardless.subscriptions[ours]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 2000,
            "currency": "GBP",
            "status": "confirmed",
            "charge_date": "2026-01-20",
            "metadata": {},
            "links": {"mandate": mandate_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    events = [
        gocardless_event("payments", action, {"payment": payment_id}, created=BASE_TIME + (14 + n) * DAY)
        for n, action in enumerate(("created", "confirmed"))
    ]
    for event in [*events, events[1]]:
        assert post_gocardless(app_client, [event]).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        regular = session.exec(select(RegularGift).where(RegularGift.gocardless_subscription_id == ours)).one()
        totals = payments_service.supporter_totals(session, [supporter])
    assert (gift.supporter_id, gift.status, gift.amount, gift.regular_gift_id) == (
        supporter,
        GiftStatus.PAID,
        2000,
        None,
    )
    assert gift.received_on == dt.date(2026, 1, 20)
    assert regular.status == RegularGiftStatus.ACTIVE
    assert totals["donated"].amount == 1000 + 2000


def test_lost_instalment_events_are_overdue_then_found_by_the_catch_up_and_counted_once(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """February's `invoice.paid` and a GoCardless February `payments.confirmed` never reach us: both monthly gifts
    show as overdue; the catch-up stores and processes the two lost events, once however often it runs."""
    from webhooks import service as webhooks_service

    scenario = Scenario(runtime)
    card_donor, dd_donor = seed_supporter(runtime, "Lost Lou"), seed_supporter(runtime, "Lost Lee")
    card = scenario.stripe_monthly(card_donor, 1200, paid=2)
    # Stripe's subscription now: in its February period (the renewal invoice paid, or so Stripe says).
    february = BASE_TIME + 31 * DAY
    scenario.stripe.subscriptions[card]["items"]["data"][0].update(
        current_period_start=february, current_period_end=february + 31 * DAY
    )
    direct_debit = scenario.gocardless_monthly(dd_donor, 900, payments=("paid_out", "paid_out"))
    scenario.gocardless.subscriptions[direct_debit]["upcoming_payments"] = [
        {"amount": 900, "charge_date": "2026-03-08"}
    ]
    lost_invoice = [d for d in scenario.deliveries if d.provider == "stripe" and d.event["type"] == "invoice.paid"][-1]
    lost_payment = [
        d
        for d in scenario.deliveries
        if d.provider == "gocardless" and (d.event["resource_type"], d.event["action"]) == ("payments", "confirmed")
    ][-1]
    lost_paid_out = [
        d
        for d in scenario.deliveries
        if d.provider == "gocardless" and (d.event["resource_type"], d.event["action"]) == ("payments", "paid_out")
    ][-1]
    lost = {lost_invoice.event_id, lost_payment.event_id, lost_paid_out.event_id}
    february_payment = scenario.gocardless.payments[lost_payment.event["links"]["payment"]]
    february_payment["status"] = "submitted"  # as GoCardless had it when its `created` event was processed
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, [d for d in scenario.deliveries if d.event_id not in lost])
    worker.join()
    february_payment["status"] = "paid_out"
    today = dt.date(2026, 2, 25)
    with reading(runtime) as session:
        overdue = payments_service.missing_instalments(session, today=today, grace_days=7)
        regulars = {
            r.id: r.stripe_subscription_id or r.gocardless_subscription_id for r in session.exec(select(RegularGift))
        }
    assert sorted(regulars[item.regular_gift_id] for item in overdue) == sorted([card, direct_debit])
    for _ in range(2):
        report = webhooks_service.catch_up(runtime)
        worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        assert payments_service.missing_instalments(session, today=today, grace_days=7) == []
        card_gifts = session.exec(select(Gift).where(Gift.supporter_id == card_donor)).all()
        dd_gifts = session.exec(select(Gift).where(Gift.supporter_id == dd_donor)).all()
    assert sorted((g.status, g.amount) for g in card_gifts) == [(GiftStatus.PAID, 1200)] * 2
    assert sorted((g.status, g.amount) for g in dd_gifts) == [(GiftStatus.PAID, 900)] * 2
    assert all(drift.missing == [] for drift in report)  # the second run found nothing more
