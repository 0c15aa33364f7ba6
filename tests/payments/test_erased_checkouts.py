"""A donor who opened a checkout before their data was erased (giving/privacy.py) and finishes it afterwards.

The erasure closes the checkouts they have not finished (`cancelled`) and a job expires each provider page through the
SDK (Stripe: the Checkout Session; GoCardless: the billing request). A completion that still arrives (the donor paid
a moment before the page was closed) records the money without their details, and any regular gift it started is
stopped at once through the cancellation staff and erasures use (`payments.cancel_regular_gift`). A one-off Direct
Debit takes no money at all: none moves until we create the payment. Real endpoints, real SDKs, the fake providers;
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import dramatiq
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from crm import service as crm_service
from giving import privacy
from payments import service as payments_service
from payments.models import Checkout, Gift, Order, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter, stripe_event
from tests.fakes.stripe_checkout import StripeCheckoutSessions
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    drain,
    history,
    install,
    jobs_worker,
    post_stripe,
    reading,
    settings,
    worker,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]

DONOR = {
    "first_name": "Maya",
    "last_name": "Okafor",
    "email": "maya.okafor@example.org",
    "address_line1": "10 Downing Street",
    "town": "London",
    "postcode": "SW1A 2AA",
    "country": "GB",
}


def donate(client: TestClient, **fields: str) -> uuid.UUID:
    """The donate form, as a donor sends it; returns the checkout id."""
    ref = str(uuid.uuid4())
    form = {**DONOR, "amount": "15", "frequency": "once", "method": "card", "checkout_ref": ref, **fields}
    response = client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 303, response.text
    return uuid.UUID(ref)


def checkout_of(runtime: Runtime, checkout_id: uuid.UUID) -> Checkout:
    with reading(runtime) as session:
        checkout = session.get(Checkout, checkout_id)
        assert checkout is not None
        return checkout


def erase(runtime: Runtime, supporter_id: uuid.UUID) -> privacy.ErasureResult:
    with runtime.unit_of_work() as uow:
        return privacy.erase_supporter(uow, runtime.settings, supporter_id)


def job_results(runtime: Runtime, actor: str) -> list[tuple[str, str | None]]:
    with reading(runtime) as session:
        jobs = session.exec(select(Job).where(Job.actor_name == actor)).all()
        return [(str(job.status), job.last_error) for job in jobs]


def assert_no_words(runtime: Runtime, supporter_id: uuid.UUID) -> None:
    for item in history(runtime, supporter_id):
        assert item["summary"].endswith("(details erased)"), item
        assert set(item) - {"type", "summary", "amount"} <= crm_service.HISTORY_DATA_KEPT, item


def test_erasure_expires_the_open_stripe_checkout_and_a_late_expiry_event_changes_nothing(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
) -> None:
    sessions = StripeCheckoutSessions(fake_stripe)
    checkout_id = donate(app_client)
    checkout = checkout_of(runtime, checkout_id)
    session_id = checkout.stripe_checkout_session_id or ""
    assert checkout.status == "open" and session_id

    result = erase(runtime, checkout.supporter_id)
    assert result.changed["checkouts_closed"] == 1
    assert checkout_of(runtime, checkout_id).status == "cancelled"
    drain(runtime, worker, jobs_worker)

    assert len(sessions.expire_requests(session_id)) == 1
    assert sessions.sessions[session_id]["status"] == "expired"
    assert job_results(runtime, "payments.close_checkout") == [("done", None)]
    # Stripe's own event for the expiry: the checkout stays closed as the erasure left it.
    expired = stripe_event("checkout.session.expired", dict(sessions.sessions[session_id]), created=2)
    expired["data"]["object"]["metadata"] = {"checkout_id": str(checkout_id)}
    assert post_stripe(app_client, expired).status_code == 200
    drain(runtime, worker, jobs_worker)
    assert checkout_of(runtime, checkout_id).status == "cancelled"


def test_a_monthly_card_gift_finished_after_the_erasure_is_recorded_without_details_and_stopped_at_once(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    sessions = StripeCheckoutSessions(fake_stripe)
    checkout_id = donate(app_client, frequency="monthly")
    checkout = checkout_of(runtime, checkout_id)
    session_id = checkout.stripe_checkout_session_id or ""
    supporter_id = checkout.supporter_id
    # The donor pays on Stripe's page a moment before the erasure: its job finds the session complete.
    sessions.complete(session_id)
    erase(runtime, supporter_id)
    drain(runtime, worker, jobs_worker)
    assert len(sessions.expire_requests(session_id)) == 1  # refused: not open any more
    assert job_results(runtime, "payments.close_checkout") == [("done", None)]

    # Stripe's events for the finished checkout arrive now.
    scenario = Scenario(runtime)
    subscription_id = scenario.stripe_monthly(
        supporter_id, 1500, paid=1, checkout_id=checkout_id, session_id=session_id
    )
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)

    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        gifts = session.exec(select(Gift).where(Gift.supporter_id == supporter_id)).all()
        totals = payments_service.supporter_totals(session, [supporter_id])
    # Stopped at once, at Stripe too, through the cancellation erasures use.
    assert regular.status == RegularGiftStatus.CANCELLED
    assert regular.cancel_requested_by == privacy.ERASURE_REQUEST
    assert regular.failure_reason == f"cancelled in Giving ({privacy.ERASURE_REQUEST})"
    assert len(fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{subscription_id}")) == 1
    assert scenario.stripe.subscriptions[subscription_id]["status"] == "canceled"
    # The money that did arrive is recorded (it must reconcile), with nobody's details.
    assert [(g.status, g.amount, g.donor) for g in gifts] == [("paid", 1500, {})]
    assert regular.donor == {}
    assert (totals["donated"].amount, totals["regular_gifts"]) == (1500, 0)
    assert checkout_of(runtime, checkout_id).status == "completed"
    assert_no_words(runtime, supporter_id)

    # The completion delivered again changes nothing and asks for nothing twice.
    deliver(app_client, scenario.deliveries[:1])
    drain(runtime, worker, jobs_worker)
    assert len(job_results(runtime, "payments.cancel_regular_gift")) == 1
    assert len(fake_stripe.requests_to("DELETE", r"/v1/subscriptions/.*")) == 1


def test_a_one_off_card_gift_finished_after_the_erasure_is_recorded_without_details(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    sessions = StripeCheckoutSessions(fake_stripe)
    checkout_id = donate(app_client)
    checkout = checkout_of(runtime, checkout_id)
    session_id = checkout.stripe_checkout_session_id or ""
    sessions.complete(session_id)
    erase(runtime, checkout.supporter_id)

    scenario = Scenario(runtime)
    scenario.one_off_card_gift(checkout.supporter_id, 1500, checkout_id=checkout_id, session_id=session_id)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)

    with reading(runtime) as session:
        [gift] = session.exec(select(Gift).where(Gift.supporter_id == checkout.supporter_id)).all()
    assert (gift.status, gift.amount, gift.stripe_checkout_session_id, gift.donor) == ("paid", 1500, session_id, {})
    assert checkout_of(runtime, checkout_id).status == "completed"
    assert_no_words(runtime, checkout.supporter_id)


def test_a_monthly_direct_debit_finished_after_the_erasure_is_stopped_at_once(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter_id = seed_supporter(runtime, "Noor")
    subscription_id = scenario.gocardless_monthly(supporter_id, 1200, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    with reading(runtime) as session:
        [checkout] = session.exec(select(Checkout).where(Checkout.supporter_id == supporter_id)).all()
    request_id = checkout.gocardless_billing_request_id or ""

    erase(runtime, supporter_id)  # the donor finished GoCardless's pages a moment before: the request is fulfilled
    drain(runtime, worker, jobs_worker)
    assert len(fake_gocardless.requests_to("POST", rf"/billing_requests/{request_id}/actions/cancel")) == 1
    assert job_results(runtime, "payments.close_checkout") == [("done", None)]

    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)
    with reading(runtime) as session:
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert regular.status == RegularGiftStatus.CANCELLED
    assert regular.cancel_requested_by == privacy.ERASURE_REQUEST
    assert len(fake_gocardless.requests_to("POST", rf"/subscriptions/{subscription_id}/actions/cancel")) == 1
    assert scenario.gocardless.subscriptions[subscription_id]["status"] == "cancelled"
    assert regular.donor == {}
    assert_no_words(runtime, supporter_id)


def test_a_one_off_direct_debit_finished_after_the_erasure_takes_no_money(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter_id = seed_supporter(runtime, "Iris")
    checkout_id, _, _ = scenario.gocardless_one_off(supporter_id, 2000)
    install(scenario, fake_stripe, fake_gocardless)
    erase(runtime, supporter_id)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)

    assert fake_gocardless.requests_to("POST", r"/payments") == []
    with reading(runtime) as session:
        assert session.exec(select(Gift).where(Gift.supporter_id == supporter_id)).all() == []
    assert checkout_of(runtime, checkout_id).status == "cancelled"


def test_a_shop_basket_left_open_is_cancelled_with_its_checkout(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
) -> None:
    sessions = StripeCheckoutSessions(fake_stripe)
    form = {**DONOR, "sku": "TEE-SOLIDARITY-M", "quantity": "1", "checkout_ref": str(uuid.uuid4())}
    response = app_client.post("/shop/checkout", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 303, response.text
    checkout = checkout_of(runtime, uuid.UUID(form["checkout_ref"]))
    erase(runtime, checkout.supporter_id)
    drain(runtime, worker, jobs_worker)
    with reading(runtime) as session:
        order = session.get(Order, checkout.order_id)
        assert order is not None and order.status == "cancelled"
    assert sessions.sessions[checkout.stripe_checkout_session_id or ""]["status"] == "expired"


def test_a_page_made_while_the_erasure_committed_is_expired_too(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
) -> None:
    """The erasure commits while Stripe is still making the checkout's page: the checkout is closed with no page yet,
    and storing the page afterwards sends the job that expires it."""
    sessions = StripeCheckoutSessions(fake_stripe)
    sessions.hold()
    answers: list[Any] = []
    ref = str(uuid.uuid4())
    form = {**DONOR, "amount": "15", "frequency": "once", "method": "card", "checkout_ref": ref}
    thread = threading.Thread(
        target=lambda: answers.append(
            app_client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
        )
    )
    thread.start()
    try:
        assert sessions.started.wait(20)
        pending = checkout_of(runtime, uuid.UUID(ref))
        assert pending.status == "pending"
        assert erase(runtime, pending.supporter_id).changed["checkouts_closed"] == 1
        assert job_results(runtime, "payments.close_checkout") == []  # no page to close yet
    finally:
        sessions.release()
    thread.join(30)
    assert answers[0].status_code == 303
    drain(runtime, worker, jobs_worker)

    checkout = checkout_of(runtime, uuid.UUID(ref))
    assert (checkout.status, checkout.stripe_checkout_session_id) == ("cancelled", "cs_test_0001")
    assert job_results(runtime, "payments.close_checkout") == [("done", None)]
    assert sessions.sessions["cs_test_0001"]["status"] == "expired"
