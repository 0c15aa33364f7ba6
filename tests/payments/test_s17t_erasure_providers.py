"""An erasure at the providers: every GoCardless mandate we know for the supporter is cancelled (a one-off Direct
Debit's, a regular gift's that had ended already), and then their customer records are removed at Stripe and
GoCardless (`DELETE /v1/customers/{id}`, `DELETE /customers/{id}`), by the durable job `payments.end_at_providers`
written with the erasure; done once, idempotent, and a refusal leaves a review item for a person. A cancellation
GoCardless refuses for a gift already ended leaves a trace too. The fake providers over HTTP through the real SDKs;
signed webhooks; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from crm.models import ReviewItem
from giving import privacy
from payments.models import Provider, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider, RecordedRequest
from tests.fakes.scenarios import Scenario, gocardless_event, seed_supporter
from tests.payments.test_regular_gift_cancellation import held, monthly, reread
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    drain,
    history,
    install,
    jobs_worker,
    post_gocardless,
    reading,
    settings,
    worker,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]

JOB = "payments.end_at_providers"


def erase(runtime: Runtime, supporter: uuid.UUID) -> None:
    with runtime.unit_of_work() as uow:
        privacy.erase_supporter(uow, runtime.settings, supporter)


def jobs(runtime: Runtime, actor: str = JOB) -> list[tuple[str, str | None]]:
    with reading(runtime) as session:
        rows = session.exec(select(Job).where(Job.actor_name == actor)).all()
        return [(str(job.status), job.last_error) for job in rows]


def gocardless_customers(server: FakeProvider, known: set[str], *, refuse: bool = False) -> set[str]:
    """`DELETE /customers/{id}` as GoCardless answers: removed (then 410 on any later call), or refused (422) while
    the customer has an active mandate. Returns the ids removed (filled in as requests come)."""
    removed: set[str] = set()

    def remove(request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        customer_id = request.match["id"]
        if customer_id in removed:
            return 410, {"error": {"type": "invalid_api_usage", "code": 410, "message": "Customer removed"}}
        if customer_id not in known:
            return 404, {"error": {"type": "invalid_api_usage", "code": 404, "message": "Resource not found"}}
        if refuse:
            error = {"reason": "customer_has_active_mandates", "message": "the customer has active mandates"}
            return 422, {"error": {"type": "invalid_state", "code": 422, "errors": [error], **error}}
        removed.add(customer_id)
        return 200, {"customers": {"id": customer_id, "given_name": None, "email": None}}

    def get(request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        customer_id = request.match["id"]
        if customer_id in removed:
            return 410, {"error": {"type": "invalid_api_usage", "code": 410, "message": "Customer removed"}}
        return 200, {"customers": {"id": customer_id, "given_name": "Maya", "email": "maya@example.org"}}

    server.route("DELETE", r"/customers/(?P<id>[^/]+)", remove)
    server.route("GET", r"/customers/(?P<id>[^/]+)", get)
    return removed


def stripe_customers(server: FakeProvider) -> set[str]:
    """`DELETE /v1/customers/{id}` as Stripe answers: deleted; a second time 404, and retrieving it shows it
    `deleted`."""
    deleted: set[str] = set()

    def delete(request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        customer_id = request.match["id"]
        if customer_id in deleted:
            error = {"type": "invalid_request_error", "code": "resource_missing", "message": "No such customer"}
            return 404, {"error": error}
        deleted.add(customer_id)
        return 200, {"id": customer_id, "object": "customer", "deleted": True}

    def retrieve(request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        customer_id = request.match["id"]
        return 200, {"id": customer_id, "object": "customer", "deleted": customer_id in deleted}

    server.route("DELETE", r"/v1/customers/(?P<id>[^/]+)", delete)
    server.route("GET", r"/v1/customers/(?P<id>[^/]+)", retrieve)
    return deleted


def one_off(
    runtime: Runtime, client: TestClient, events: EventsWorker, stripe: FakeProvider, gocardless: FakeProvider
) -> tuple[Scenario, uuid.UUID, str, str]:
    """A one-off Direct Debit gift, collected; returns (scenario, supporter, mandate id, customer id)."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Maya")
    _, mandate_id, payment_id = scenario.gocardless_one_off(supporter, 2500)
    scenario.gocardless.payments[payment_id]["status"] = "confirmed"
    install(scenario, stripe, gocardless)
    deliver(client, scenario.deliveries)
    events.join()
    assert (
        post_gocardless(
            client, [gocardless_event("payments", "confirmed", {"payment": payment_id}, created=5)]
        ).status_code
        == 200
    )
    events.join()
    customer_id = scenario.gocardless.mandates[mandate_id]["links"]["customer"]
    return scenario, supporter, mandate_id, customer_id


def test_a_one_off_direct_debit_donors_mandate_is_cancelled_and_customer_removed(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario, supporter, mandate_id, customer_id = one_off(runtime, app_client, worker, fake_stripe, fake_gocardless)
    removed = gocardless_customers(fake_gocardless, {customer_id})
    assert scenario.gocardless.mandates[mandate_id]["status"] == "active"
    with held(jobs_worker):
        erase(runtime, supporter)
        # Written with the erasure, before anything is asked of GoCardless.
        assert [status for status, _ in jobs(runtime)] == ["pending"]
    drain(runtime, worker, jobs_worker)

    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert removed == {customer_id}
    cancels = fake_gocardless.requests_to("POST", rf"/mandates/{mandate_id}/actions/cancel")
    removals = fake_gocardless.requests_to("DELETE", rf"/customers/{customer_id}")
    assert len(cancels) == 1 and len(removals) == 1
    # The mandate first: GoCardless refuses to remove a customer whose mandate is active.
    assert fake_gocardless.requests.index(cancels[0]) < fake_gocardless.requests.index(removals[0])
    assert [status for status, _ in jobs(runtime)] == ["done"]
    items = [item for item in history(runtime, supporter) if item["type"] == "provider_records_removed"]
    assert len(items) == 1
    assert items[0]["provider_ids"] == sorted([mandate_id, customer_id])
    assert "Maya" not in items[0]["summary"]

    # Erased again: the mandate ended and the customer gone already are fine; the job is done again.
    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)
    assert [status for status, _ in jobs(runtime)] == ["done", "done"]
    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"


def test_the_mandate_of_a_regular_gift_that_had_ended_is_cancelled_too(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor's subscription was cancelled at GoCardless weeks ago (the mandate stays active: the charity could
    still debit them from the dashboard); then they are erased."""
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    mandate_id = regular.gocardless_mandate_id or ""
    subscription_id = regular.gocardless_subscription_id or ""
    scenario.gocardless.subscriptions[subscription_id]["status"] = "cancelled"
    event = gocardless_event("subscriptions", "cancelled", {"subscription": subscription_id}, created=9)
    assert post_gocardless(app_client, [event]).status_code == 200
    drain(runtime, worker, jobs_worker)
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    customer_id = scenario.gocardless.mandates[mandate_id]["links"]["customer"]
    removed = gocardless_customers(fake_gocardless, {customer_id})

    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert removed == {customer_id}
    assert [status for status, _ in jobs(runtime)] == ["done"]


def test_a_card_donors_stripe_customer_is_deleted_after_the_subscription_is_cancelled(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    _, supporter, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.STRIPE)
    customer_id = regular.stripe_customer_id or ""
    assert customer_id
    deleted = stripe_customers(fake_stripe)

    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    subscription_id = regular.stripe_subscription_id or ""
    cancels = fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{subscription_id}")
    deletions = fake_stripe.requests_to("DELETE", rf"/v1/customers/{customer_id}")
    assert len(cancels) == 1 and len(deletions) == 1
    # Ours first (so the end recorded says who asked); deleting the customer would have cancelled it Stripe's way.
    assert fake_stripe.requests.index(cancels[0]) < fake_stripe.requests.index(deletions[0])
    assert deleted == {customer_id}
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED and "erasure" in ended.failure_reason
    # The id stays in our books (the accounts and the payouts need it).
    assert ended.stripe_customer_id == customer_id
    assert [status for status, _ in jobs(runtime)] == ["done"]


def test_a_customer_gocardless_will_not_remove_leaves_a_review_item(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The customer has another mandate we never knew (set up in the dashboard): GoCardless refuses to remove them.
    The job fails for a person, and a review item on the erased record says what is left to do."""
    _, supporter, _, customer_id = one_off(runtime, app_client, worker, fake_stripe, fake_gocardless)
    gocardless_customers(fake_gocardless, {customer_id}, refuse=True)

    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    [(status, error)] = jobs(runtime)
    assert status == "failed" and error and "active mandates" in error
    with reading(runtime) as session:
        items = session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all()
    assert [item.kind for item in items] == ["provider_records_kept"]
    assert "active mandates" in items[0].detail and "Maya" not in items[0].detail
    with reading(runtime) as session:
        assert session.exec(select(RegularGift).where(RegularGift.supporter_id == supporter)).all() == []


def test_a_mandate_gocardless_will_not_cancel_after_the_gift_ended_leaves_a_review_item(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor cancelled their subscription at GoCardless a moment before the erasure (its webhook processed
    before the cancellation job ran), and GoCardless refuses to cancel the mandate, still active. The gift has
    ended, but the mandate can still be debited: a person must see it, not only a failed job."""
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    mandate_id = regular.gocardless_mandate_id or ""
    subscription_id = regular.gocardless_subscription_id or ""

    def refuse(request: RecordedRequest) -> tuple[int, Any]:
        error = {"reason": "mandate_cancellation_failed", "message": "the mandate cannot be cancelled just now"}
        return 422, {"error": {"type": "invalid_state", "code": 422, "errors": [error], **error}}

    fake_gocardless.route("POST", rf"/mandates/{mandate_id}/actions/cancel", refuse)
    with held(jobs_worker):
        erase(runtime, supporter)
        scenario.gocardless.subscriptions[subscription_id]["status"] = "cancelled"
        event = gocardless_event("subscriptions", "cancelled", {"subscription": subscription_id}, created=3)
        assert post_gocardless(app_client, [event]).status_code == 200
        worker.join()
        assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    drain(runtime, worker, jobs_worker)

    assert scenario.gocardless.mandates[mandate_id]["status"] == "active"
    [(status, error)] = jobs(runtime, "payments.cancel_regular_gift")
    assert status == "failed" and error and mandate_id in error
    with reading(runtime) as session:
        items = session.exec(
            select(ReviewItem).where(ReviewItem.supporter_id == supporter, ReviewItem.kind == "mandate_left_active")
        ).all()
    assert len(items) == 1
    assert mandate_id in items[0].detail and "Maya" not in items[0].detail
    assert items[0].data["regular_gift_id"] == str(regular.id)
    failed = [item for item in history(runtime, supporter) if item["type"] == "regular_gift_cancel_failed"]
    assert len(failed) == 1 and mandate_id in failed[0]["provider_ids"]


def test_a_direct_debit_set_up_after_the_erasure_has_its_mandate_cancelled_and_customer_removed(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor finished GoCardless's page for a one-off gift a moment after the erasure closed their checkout: no
    payment is taken, but the mandate they set up is active at GoCardless and no row of ours names it."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Maya")
    _, mandate_id, _ = scenario.gocardless_one_off(supporter, 2000)
    customer_id = scenario.gocardless.mandates[mandate_id]["links"]["customer"]
    install(scenario, fake_stripe, fake_gocardless)
    removed = gocardless_customers(fake_gocardless, {customer_id})
    erase(runtime, supporter)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)

    assert fake_gocardless.requests_to("POST", r"/payments") == []
    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert removed == {customer_id}
    assert [status for status, _ in jobs(runtime)] == ["done"]
