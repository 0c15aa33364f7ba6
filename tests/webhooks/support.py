"""Fixtures and helpers of the webhook tests: settings pointing the real SDKs at the fake providers, posting signed
deliveries through the real endpoints, and reading back the ledger our code recorded."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments_service
from payments.models import Gift, Order, RegularGift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Delivery, Expected, ExpectedGift, Scenario, gocardless_body
from tests.fakes.signing import body_of, gocardless_headers, stripe_headers
from tests.fixtures.app import make_settings
from webhooks.models import EventStatus, InboundEvent


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return make_settings(
        database_url, tmp_path, stripe={"api_base": fake_stripe.url}, gocardless={"base_url": fake_gocardless.url}
    )


@pytest.fixture
def catalogue(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)


class EventsWorker:
    """A dramatiq worker on the webhooks queue only: receipts (PDFs, email) are other tests' business, and their
    jobs simply stay queued here."""

    def __init__(self, runtime: Runtime, threads: int = 2):
        self.runtime = runtime
        runtime.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(runtime.broker, queues={"webhooks"}, worker_timeout=50, worker_threads=threads)
        self.worker.start()

    def join(self, timeout_ms: int = 30_000) -> None:
        self.runtime.broker.join("webhooks", timeout=timeout_ms)  # type: ignore[attr-defined]
        self.worker.join()

    def stop(self) -> None:
        self.worker.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Messages sent meanwhile wait in the queue until the block ends."""
        self.worker.pause()
        try:
            yield
        finally:
            self.worker.resume()


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[EventsWorker]:
    events_worker = EventsWorker(runtime)
    try:
        yield events_worker
    finally:
        events_worker.stop()


@pytest.fixture
def jobs_worker(runtime: Runtime) -> Iterator[dramatiq.Worker]:
    """A worker on the default queue, where the jobs events send run (`worker` takes only the webhooks queue)."""
    default = dramatiq.Worker(runtime.broker, queues={"default"}, worker_timeout=50, worker_threads=1)
    default.start()
    try:
        yield default
    finally:
        default.stop()


def drain(runtime: Runtime, events: EventsWorker, jobs: dramatiq.Worker) -> None:
    """Until both queues are empty: a job may deliver nothing, but an event may send a job (twice round)."""
    for _ in range(2):
        events.join()
        runtime.broker.join("default", timeout=30_000)  # type: ignore[attr-defined]
        jobs.join()
    assert stuck_events(runtime) == []


@pytest.fixture
def app_client(runtime: Runtime, worker: EventsWorker, catalogue: None) -> Iterator[TestClient]:
    """The web app with the in-process worker running (the `client` fixture without one is for ingest-only tests)."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False)) as client:
        yield client


def install(scenario: Scenario, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> None:
    scenario.stripe.install(fake_stripe)
    scenario.gocardless.install(fake_gocardless)


def post_stripe(client: TestClient, event: dict[str, Any] | bytes, **sign: Any) -> Any:
    body = body_of(event)
    return client.post("/webhooks/stripe", content=body, headers=stripe_headers(body, **sign))


def post_gocardless(client: TestClient, events: list[dict[str, Any]] | bytes, **sign: Any) -> Any:
    body = events if isinstance(events, bytes) else body_of(gocardless_body(events))
    return client.post("/webhooks/gocardless", content=body, headers=gocardless_headers(body, **sign))


def deliver(client: TestClient, deliveries: list[Delivery], *, rng: random.Random | None = None) -> int:
    """Post every delivery; with `rng`, each 1-3 times, shuffled, GoCardless events in batches of 1-3."""
    queue: list[Delivery] = []
    for delivery in deliveries:
        queue.extend([delivery] * (rng.randint(1, 3) if rng else 1))
    if rng:
        rng.shuffle(queue)
    posts = 0
    while queue:
        delivery = queue.pop(0)
        if delivery.provider == "stripe":
            response = post_stripe(client, delivery.event)
        else:
            batch = [delivery.event]
            while rng and queue and queue[0].provider == "gocardless" and len(batch) < rng.randint(1, 3):
                batch.append(queue.pop(0).event)
            response = post_gocardless(client, batch)
        assert response.status_code == 200, response.text
        posts += 1
    return posts


def gift_by_key(session: Any, key: str) -> Gift | None:
    for column in ("stripe_checkout_session_id", "stripe_invoice_id", "gocardless_payment_id"):
        found = session.exec(select(Gift).where(getattr(Gift, column) == key)).first()
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def actual_ledger(runtime: Runtime, expected: Expected) -> Expected:
    """What our database says, in the shape of the expected ledger (keys taken from the expectation)."""
    actual = Expected()
    with runtime.read_session() as session:
        for key in expected.gifts:
            gift = gift_by_key(session, key)
            if gift is not None:
                actual.gifts[key] = ExpectedGift(str(gift.status), gift.amount, gift.returned_amount)
        for key in expected.orders:
            order = session.exec(select(Order).where(Order.stripe_checkout_session_id == key)).first()
            if order is not None:
                actual.orders[key] = (str(order.status), order.refunded_amount)
        for key in expected.regular:
            regular = session.exec(
                select(RegularGift).where(
                    (col(RegularGift.stripe_subscription_id) == key)
                    | (col(RegularGift.gocardless_subscription_id) == key)
                )
            ).first()
            if regular is not None:
                actual.regular[key] = str(regular.status)
        for supporter_id in expected.supporters:
            totals = payments_service.supporter_totals(session, [supporter_id])
            actual.supporters[supporter_id] = {
                "donated": totals["donated"].amount,
                "purchases": totals["purchases"].amount,
                "regular_gifts": totals["regular_gifts"],
            }
        # Nothing beyond the expected gifts: no second gift from a duplicate or a payment_intent event.
        extra = session.exec(select(Gift)).all()
        for gift in extra:
            keys = {gift.stripe_checkout_session_id, gift.stripe_invoice_id, gift.gocardless_payment_id}
            if not keys & set(expected.gifts):
                actual.gifts[f"unexpected:{gift.id}"] = ExpectedGift(
                    str(gift.status), gift.amount, gift.returned_amount
                )
    return actual


def event_statuses(runtime: Runtime) -> dict[str, int]:
    with runtime.read_session() as session:
        counts: dict[str, int] = {}
        for event in session.exec(select(InboundEvent)).all():
            counts[str(event.status)] = counts.get(str(event.status), 0) + 1
        return counts


def stuck_events(runtime: Runtime) -> list[tuple[str, str, str | None, str | None]]:
    with runtime.read_session() as session:
        return [
            (e.event_type, str(e.status), e.waiting_for, e.last_error)
            for e in session.exec(
                select(InboundEvent).where(
                    col(InboundEvent.status).notin_([EventStatus.PROCESSED, EventStatus.IGNORED])
                )
            ).all()
        ]


def history(runtime: Runtime, supporter_id: uuid.UUID) -> list[dict[str, Any]]:
    from crm.models import HistoryEntry

    with runtime.read_session() as session:
        rows = session.exec(
            select(HistoryEntry).where(HistoryEntry.supporter_id == supporter_id).order_by(col(HistoryEntry.at))
        ).all()
        return [
            {"type": row.type, "summary": row.summary, "amount": row.amount, **json.loads(json.dumps(row.data))}
            for row in rows
        ]


@contextmanager
def reading(runtime: Runtime) -> Iterator[Any]:
    """A read session whose objects stay readable after it closes (for assertions after the block)."""
    with runtime.read_session() as session:
        yield session
        session.expunge_all()
