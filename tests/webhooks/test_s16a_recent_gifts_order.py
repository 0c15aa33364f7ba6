"""Review of s15: the supporter page's "Recent gifts" (`giving.staff.queries.gifts_of`) lists the gifts not received
yet (a delayed payment still pending, a failed instalment: `received_at` NULL) first, as the newest, on SQLite as on
PostgreSQL (a descending order puts NULL first on PostgreSQL and last on SQLite unless told)."""

from __future__ import annotations

from starlette.testclient import TestClient

from core.runtime import Runtime
from giving.staff import queries
from payments.models import GiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_checkout, unique
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, reading, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import _monthly_in_arrears, _post, _start

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_gifts_not_received_yet_come_first_on_either_database(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    # January paid, February's instalment failed (never received).
    supporter, _, _ = _monthly_in_arrears(scenario, "Order Ottilie")
    scenario.one_off_card_gift(supporter, 2500)  # paid, after January's instalment
    # A one-off by Bacs Debit: the checkout completes unpaid, the gift pending until the money arrives.
    checkout_id = seed_checkout(runtime, supporter, amount=4000)
    pending = scenario._stripe(
        "checkout.session.completed",
        scenario._session_object(
            checkout_id, id=unique("cs_test_"), mode="payment", payment_status="unpaid", amount_total=4000
        ),
    )
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, pending)
    _post(app_client, worker, pending)
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        gifts = queries.gifts_of(session, supporter)
    listed = [(gift.status, gift.amount, gift.received_at is None) for gift in gifts]
    assert len(listed) == 4, listed
    # The two not received yet first (in either order between them), then the received ones newest first.
    assert {row[0] for row in listed[:2]} == {GiftStatus.PENDING, GiftStatus.FAILED}, listed
    assert all(row[2] for row in listed[:2]) and not any(row[2] for row in listed[2:]), listed
    received = [gift.received_at for gift in gifts[2:]]
    assert received == sorted(received, reverse=True), listed  # type: ignore[type-var]
