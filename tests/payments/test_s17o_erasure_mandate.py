"""An erasure stops a Direct Debit for good: the cancellation job cancels the GoCardless subscription and the mandate
too (a mandate left active still lets the charity debit the erased person's account, from the dashboard), whatever
the order of the provider's events; a mandate already ended is fine. Staff cancelling a monthly gift leave the
mandate alone. The fake GoCardless over HTTP through the real SDK; signed webhooks; SQLite and PostgreSQL."""

from __future__ import annotations

import dramatiq
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from giving import privacy
from payments import service as payments_service
from payments.models import Provider, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import gocardless_event
from tests.payments.test_regular_gift_cancellation import held, monthly, reread
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    drain,
    jobs_worker,
    post_gocardless,
    reading,
    settings,
    worker,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]


def erase(runtime: Runtime, supporter: object) -> None:
    with runtime.unit_of_work() as uow:
        privacy.erase_supporter(uow, runtime.settings, supporter)  # type: ignore[arg-type]


def cancel_jobs(runtime: Runtime) -> list[tuple[str, str | None]]:
    with reading(runtime) as session:
        jobs = session.exec(select(Job).where(Job.actor_name == "payments.cancel_regular_gift")).all()
        return [(str(job.status), job.last_error) for job in jobs]


def test_erasure_cancels_the_direct_debit_mandate_as_well_as_the_subscription(
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
    mandate_id = regular.gocardless_mandate_id or ""
    subscription_id = regular.gocardless_subscription_id or ""
    assert mandate_id and scenario.gocardless.mandates[mandate_id]["status"] == "active"

    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    assert len(fake_gocardless.requests_to("POST", rf"/subscriptions/{subscription_id}/actions/cancel")) == 1
    assert len(fake_gocardless.requests_to("POST", rf"/mandates/{mandate_id}/actions/cancel")) == 1
    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    assert [status for status, _ in cancel_jobs(runtime)] == ["done"]

    # GoCardless's own events for both cancellations change nothing more.
    events = [
        gocardless_event("subscriptions", "cancelled", {"subscription": subscription_id}, created=3),
        gocardless_event("mandates", "cancelled", {"mandate": mandate_id}, created=4),
    ]
    assert post_gocardless(app_client, events).status_code == 200
    drain(runtime, worker, jobs_worker)
    assert len(fake_gocardless.requests_to("POST", r"/mandates/.*/actions/cancel")) == 1
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED


def test_the_mandate_is_cancelled_even_when_the_subscription_ended_before_the_job_ran(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor cancelled the subscription at GoCardless a moment before the erasure; its webhook is processed
    before the cancellation job runs, which finds the gift ended: the mandate must still go."""
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    mandate_id = regular.gocardless_mandate_id or ""
    subscription_id = regular.gocardless_subscription_id or ""
    with held(jobs_worker):
        erase(runtime, supporter)
        scenario.gocardless.subscriptions[subscription_id]["status"] = "cancelled"
        event = gocardless_event("subscriptions", "cancelled", {"subscription": subscription_id}, created=3)
        assert post_gocardless(app_client, [event]).status_code == 200
        worker.join()
        assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    drain(runtime, worker, jobs_worker)

    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert [status for status, _ in cancel_jobs(runtime)] == ["done"]


def test_a_mandate_already_cancelled_at_gocardless_is_fine(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """The donor's bank cancelled the mandate a moment ago (its webhook not here yet): GoCardless refuses our cancel
    (already cancelled); the job is done, not failed."""
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    mandate_id = regular.gocardless_mandate_id or ""
    scenario.gocardless.mandates[mandate_id]["status"] = "cancelled"

    erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    assert len(fake_gocardless.requests_to("POST", rf"/mandates/{mandate_id}/actions/cancel")) == 1
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    assert [status for status, _ in cancel_jobs(runtime)] == ["done"]


def test_staff_asked_first_then_the_erasure_still_cancels_the_mandate(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A fundraiser asked to cancel (which leaves the mandate: the donor may give again on it); the supporter is
    erased before that job runs: the erasure's cancellation takes the mandate too."""
    scenario, supporter, regular = monthly(
        runtime, app_client, worker, fake_stripe, fake_gocardless, Provider.GOCARDLESS
    )
    mandate_id = regular.gocardless_mandate_id or ""
    with held(jobs_worker):
        with runtime.unit_of_work() as uow:
            payments_service.request_cancellation(uow, regular.id, requested_by="fundraiser@example.org")
        erase(runtime, supporter)
    drain(runtime, worker, jobs_worker)

    assert scenario.gocardless.mandates[mandate_id]["status"] == "cancelled"
    assert reread(runtime, regular.id).status == RegularGiftStatus.CANCELLED
    assert sorted(status for status, _ in cancel_jobs(runtime)) == ["done", "done"]
