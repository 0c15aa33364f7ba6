"""Cancelling a regular gift through Giving (a donor phoned, or their data is erased): the request is recorded, a job
tells Stripe or GoCardless (the fake providers over HTTP, through the real SDKs), the end is recorded once, and the
provider's own webhook afterwards changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from crm import service as crm_service
from giving import privacy
from payments import service as payments_service
from payments.errors import RegularGiftEnded
from payments.models import Method, Provider, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider, RecordedRequest
from tests.fakes.scenarios import Scenario, gocardless_event, seed_supporter, stripe_event
from tests.payments.factories_money import staff_token
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
    post_stripe,
    reading,
    settings,
    worker,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]

STAFF = "fundraiser@example.org"


@contextmanager
def held(jobs: dramatiq.Worker) -> Iterator[None]:
    """The cancellation jobs sent meanwhile wait until the block ends (to look at what was recorded before)."""
    jobs.pause()
    try:
        yield
    finally:
        jobs.resume()


def monthly(
    runtime: Runtime,
    client: TestClient,
    events: EventsWorker,
    stripe: FakeProvider,
    gocardless: FakeProvider,
    provider: Provider,
) -> tuple[Scenario, uuid.UUID, RegularGift]:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Maya")
    if provider == Provider.STRIPE:
        key = scenario.stripe_monthly(supporter, 1500, paid=2)
    else:
        key = scenario.gocardless_monthly(supporter, 1500, payments=("paid_out", "paid_out"))
    install(scenario, stripe, gocardless)
    deliver(client, scenario.deliveries)
    events.join()
    with reading(runtime) as session:
        by_stripe = provider == Provider.STRIPE
        column = RegularGift.stripe_subscription_id if by_stripe else RegularGift.gocardless_subscription_id
        regular = session.exec(select(RegularGift).where(column == key)).one()
    assert regular.status == RegularGiftStatus.ACTIVE
    return scenario, supporter, regular


def request(runtime: Runtime, regular_id: uuid.UUID, by: str = STAFF) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.request_cancellation(uow, regular_id, requested_by=by)


def reread(runtime: Runtime, regular_id: uuid.UUID) -> RegularGift:
    with reading(runtime) as session:
        regular = session.get(RegularGift, regular_id)
        assert regular is not None
        return regular


def types(runtime: Runtime, supporter: uuid.UUID) -> list[str]:
    return [item["type"] for item in history(runtime, supporter)]


def test_a_card_gift_cancelled_by_staff_is_cancelled_at_stripe_once(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario, supporter, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.STRIPE)
    subscription_id = regular.stripe_subscription_id or ""
    with held(jobs_worker):
        # Recorded first, in the same transaction as the job that will tell Stripe.
        request(runtime, regular.id)
        pending = reread(runtime, regular.id)
        assert pending.status == RegularGiftStatus.ACTIVE and pending.cancel_requested_by == STAFF
        with reading(runtime) as session:
            jobs = session.exec(select(Job).where(Job.actor_name == "payments.cancel_regular_gift")).all()
        assert [job.arguments for job in jobs] == [{"regular_gift_id": str(regular.id)}]
    drain(runtime, worker, jobs_worker)

    cancels = fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{subscription_id}")
    assert len(cancels) == 1
    assert cancels[0].param("cancellation_details[comment]") == f"cancelled in Giving ({STAFF})"
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED
    assert ended.failure_reason == f"cancelled in Giving ({STAFF})"
    assert ended.ended_at is not None
    assert scenario.stripe.subscriptions[subscription_id]["status"] == "canceled"

    # Stripe's own webhook for the cancellation, and a second delivery of it: nothing changes, one history item.
    deleted = stripe_event("customer.subscription.deleted", scenario.stripe.subscriptions[subscription_id], created=2)
    for _ in range(2):
        assert post_stripe(app_client, deleted).status_code == 200
    drain(runtime, worker, jobs_worker)
    assert reread(runtime, regular.id).failure_reason == ended.failure_reason
    kinds = types(runtime, supporter)
    assert kinds.count("regular_gift_cancel_requested") == 1
    assert kinds.count("regular_gift_cancelled") == 1
    cancelled = next(item for item in history(runtime, supporter) if item["type"] == "regular_gift_cancelled")
    assert cancelled["regular_gift_id"] == str(regular.id) and subscription_id in cancelled["provider_ids"]

    # Asking again once it has ended is refused and sends nothing.
    with pytest.raises(RegularGiftEnded):
        request(runtime, regular.id)
    drain(runtime, worker, jobs_worker)
    assert len(fake_stripe.requests_to("DELETE", r"/v1/subscriptions/.*")) == 1


def test_a_direct_debit_gift_cancelled_by_staff_is_cancelled_at_gocardless(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    subscription_id = regular.gocardless_subscription_id or ""
    with held(jobs_worker):
        request(runtime, regular.id)
        # Asked twice (a double click): one request recorded, the second job finds the gift ended and calls nobody.
        request(runtime, regular.id)
    drain(runtime, worker, jobs_worker)

    assert len(fake_gocardless.requests_to("POST", rf"/subscriptions/{subscription_id}/actions/cancel")) == 1
    assert fake_gocardless.requests_to("POST", r"/mandates/.*/actions/cancel") == []
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED
    assert ended.failure_reason == f"cancelled in Giving ({STAFF})"
    assert scenario.gocardless.subscriptions[subscription_id]["status"] == "cancelled"

    event = gocardless_event(
        "subscriptions", "cancelled", {"subscription": subscription_id}, created=2, cause="subscription_cancelled"
    )
    assert post_gocardless(app_client, [event]).status_code == 200
    drain(runtime, worker, jobs_worker)
    assert reread(runtime, regular.id).failure_reason == ended.failure_reason
    kinds = types(runtime, supporter)
    assert kinds.count("regular_gift_cancel_requested") == 1 and kinds.count("regular_gift_cancelled") == 1


def test_a_gift_the_donor_already_cancelled_at_the_provider_is_recorded_as_the_provider_says(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario, _, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.STRIPE)
    subscription_id = regular.stripe_subscription_id or ""
    # The donor cancelled at Stripe a moment ago; its webhook has not arrived.
    details = {"reason": "cancellation_requested", "feedback": "too_expensive", "comment": None}
    scenario.stripe.subscriptions[subscription_id].update(
        status="canceled", canceled_at=1_790_000_000, ended_at=1_790_000_000, cancellation_details=details
    )
    request(runtime, regular.id)
    drain(runtime, worker, jobs_worker)

    assert len(fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{subscription_id}")) == 1  # refused (400)
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED
    assert ended.failure_reason == "cancellation requested"
    assert ended.ended_at is not None and int(ended.ended_at.timestamp()) == 1_790_000_000


def test_a_monthly_gift_never_set_up_at_the_provider_is_cancelled_here(
    runtime: Runtime, worker: EventsWorker, jobs_worker: dramatiq.Worker, fake_stripe: FakeProvider
) -> None:
    supporter = seed_supporter(runtime, "Noor")
    with runtime.unit_of_work() as uow:
        pending = RegularGift(
            supporter_id=supporter, amount=1000, provider=Provider.STRIPE, method="card", donor={"first_name": "Noor"}
        )
        uow.session.add(pending)
        uow.session.flush()
        regular_id = pending.id
    request(runtime, regular_id)
    drain(runtime, worker, jobs_worker)
    assert fake_stripe.requests == []
    assert reread(runtime, regular_id).status == RegularGiftStatus.CANCELLED


def test_erasure_cancels_the_supporters_regular_gifts_at_the_provider(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    _, supporter, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS)
    with runtime.unit_of_work() as uow:
        result = privacy.erase_supporter(uow, runtime.settings, supporter)
    assert result.changed["regular_gifts_cancelled"] == 1
    drain(runtime, worker, jobs_worker)
    subscription_id = regular.gocardless_subscription_id or ""
    assert len(fake_gocardless.requests_to("POST", rf"/subscriptions/{subscription_id}/actions/cancel")) == 1
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED
    assert ended.failure_reason == f"cancelled in Giving ({privacy.ERASURE_REQUEST})"
    assert ended.donor == {}
    # The request's history item was written before the erasure blanked the words.
    requested = [item for item in history(runtime, supporter) if item["type"] == "regular_gift_cancel_requested"]
    assert [item["summary"] for item in requested] == ["Regular gift cancel requested (details erased)"]


def test_the_json_api_cancels_a_regular_gift_and_says_so(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    _, _, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.STRIPE)
    headers = {"Authorization": f"Bearer {staff_token(runtime, 'fundraiser')}"}
    with held(jobs_worker):
        answer = app_client.post(f"/api/regular-gifts/{regular.id}/cancel", headers=headers)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["id"], body["status"], body["amount"]) == (
            str(regular.id),
            "active",
            {"amount": 1500, "currency": "GBP"},
        )
        assert body["cancel_requested_by"].startswith("fundraiser-") and body["cancel_requested_at"].endswith("Z")
    drain(runtime, worker, jobs_worker)
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED

    again = app_client.post(f"/api/regular-gifts/{regular.id}/cancel", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "RegularGiftEnded"
    assert "already cancelled" in again.json()["detail"]
    assert app_client.post(f"/api/regular-gifts/{uuid.uuid4()}/cancel", headers=headers).status_code == 404
    assert app_client.post(f"/api/regular-gifts/{regular.id}/cancel").status_code == 401


def test_a_stripe_cancel_whose_answer_was_lost_is_still_recorded_as_ours(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Found in review: Stripe cancels but answers 500; the SDK's retry is refused (already canceled). The
    subscription carries our comment, so the end is recorded as Giving's, not as the donor's own."""
    scenario, _, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.STRIPE)
    subscription_id = regular.stripe_subscription_id or ""
    cancel_as_stripe = next(answer for method, _, answer in fake_stripe.routes if method == "DELETE")
    assert callable(cancel_as_stripe)

    def answer_lost(req: RecordedRequest) -> tuple[int, Any]:
        status, body = cancel_as_stripe(req)
        return (
            (500, {"error": {"type": "api_error", "message": "An unknown error occurred"}})
            if status == 200
            else (
                status,
                body,
            )
        )

    fake_stripe.route("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", answer_lost)
    request(runtime, regular.id)
    drain(runtime, worker, jobs_worker)
    assert len(fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{subscription_id}")) >= 2
    assert scenario.stripe.subscriptions[subscription_id]["status"] == "canceled"
    ended = reread(runtime, regular.id)
    assert ended.status == RegularGiftStatus.CANCELLED
    assert ended.failure_reason == f"cancelled in Giving ({STAFF})"


def test_what_the_job_writes_after_an_erasure_has_no_words(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Found in review: staff asked to cancel, then the supporter was erased before the job ran. The item the job
    writes afterwards (and any later one) is kept as the erasure keeps the others: type, time, amount, ids."""
    _, supporter, regular = monthly(runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS)
    with held(jobs_worker):
        request(runtime, regular.id)
        with runtime.unit_of_work() as uow:
            privacy.erase_supporter(uow, runtime.settings, supporter)
    drain(runtime, worker, jobs_worker)
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    items = history(runtime, supporter)
    cancelled = [item for item in items if item["type"] == "regular_gift_cancelled"]
    assert [item["summary"] for item in cancelled] == ["Regular gift cancelled (details erased)"]
    for item in items:
        assert item["summary"].endswith("(details erased)"), item
        assert set(item) - {"type", "summary", "amount"} <= crm_service.HISTORY_DATA_KEPT, item


def unknown_to_stripe(runtime: Runtime, name: str, amount: int) -> tuple[uuid.UUID, uuid.UUID]:
    """(supporter, regular gift) of an active card gift whose subscription Stripe does not know (404)."""
    supporter = seed_supporter(runtime, name)
    with runtime.unit_of_work() as uow:
        unknown = RegularGift(
            supporter_id=supporter,
            amount=amount,
            provider=Provider.STRIPE,
            method=Method.CARD,
            status=RegularGiftStatus.ACTIVE,
            stripe_subscription_id="sub_unknown_here",
        )
        uow.session.add(unknown)
        uow.session.flush()
        return supporter, unknown.id


def test_a_subscription_stripe_does_not_know_fails_the_job_at_once_for_a_person(
    runtime: Runtime, worker: EventsWorker, jobs_worker: dramatiq.Worker, fake_stripe: FakeProvider
) -> None:
    """Found in review: a refusal no retry can mend (Stripe answers 404 for the subscription: another account's key,
    or a typo in an import) was retried eight times over hours. It fails at once, shown as a failed job, and the gift
    is not recorded as cancelled (nothing was stopped)."""
    _, regular_id = unknown_to_stripe(runtime, "Iris", 1000)
    request(runtime, regular_id)
    drain(runtime, worker, jobs_worker)
    assert len(fake_stripe.requests_to("DELETE", r"/v1/subscriptions/sub_unknown_here")) == 1
    with reading(runtime) as session:
        [job] = session.exec(select(Job).where(Job.actor_name == "payments.cancel_regular_gift")).all()
    assert (job.status, job.attempts) == ("failed", 1) and "Stripe refused" in (job.last_error or "")
    assert reread(runtime, regular_id).status == RegularGiftStatus.ACTIVE


def test_a_cancellation_that_failed_for_good_is_no_longer_shown_as_asked_for_and_may_be_asked_again(
    runtime: Runtime, worker: EventsWorker, jobs_worker: dramatiq.Worker, fake_stripe: FakeProvider
) -> None:
    """Found in review: after the job gave up, the gift still said "cancellation asked for" for ever, so staff
    believed it stopped while it went on taking money. Now the request is cleared, the history says it was not done
    and why, and asking again sends a new job (and writes a new request item)."""
    supporter, regular_id = unknown_to_stripe(runtime, "Noor", 1200)
    request(runtime, regular_id)
    drain(runtime, worker, jobs_worker)
    after = reread(runtime, regular_id)
    assert after.status == RegularGiftStatus.ACTIVE
    assert (after.cancel_requested_at, after.cancel_requested_by) == (None, "")
    assert payments_service.regular_gift_json(after)["cancel_requested_at"] is None
    [failed] = [item for item in history(runtime, supporter) if item["type"] == "regular_gift_cancel_failed"]
    assert "asked for by fundraiser@example.org was not done" in failed["summary"]
    assert "Stripe refused" in failed["summary"] and "still takes payments" in failed["summary"]

    request(runtime, regular_id, by="finance@example.org")
    drain(runtime, worker, jobs_worker)
    assert len(fake_stripe.requests_to("DELETE", r"/v1/subscriptions/sub_unknown_here")) == 2
    kinds = types(runtime, supporter)
    assert kinds.count("regular_gift_cancel_requested") == 2 and kinds.count("regular_gift_cancel_failed") == 2
    with reading(runtime) as session:
        jobs = session.exec(select(Job).where(Job.actor_name == "payments.cancel_regular_gift")).all()
    assert sorted(job.status for job in jobs) == ["failed", "failed"]
