"""A Direct Debit charged back, the chargeback cancelled, then charged back again: whatever order the three events
are processed in once GoCardless already has the payment charged back again, the supporter's history says what
happened, each dated by its own event (taken back, counts again, taken back again), and the gift and its dispute end
as GoCardless has them (reversed; the dispute lost, dated by the second chargeback). Found in review: the first
`chargeback_cancelled`, processed only after the second chargeback, found the payment `charged_back` and recorded
nothing (and the second `charged_back` found the gift reversed already and recorded nothing either). Signed
webhooks through the real endpoint, the fake GoCardless; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import HistoryEntry
from payments.models import Dispute, DisputeStatus, Gift, GiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Delivery, Scenario, seed_supporter
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def _when(delivery: Delivery) -> dt.datetime:
    return dt.datetime.fromisoformat(str(delivery.event["created_at"]).replace("Z", "+00:00"))


def _timeline(runtime: Runtime, gift: Gift) -> list[tuple[dt.datetime, int]]:
    """The gift's reversals and restorations in the history: (when, amount), by time."""
    with reading(runtime) as session:
        rows = session.exec(
            select(HistoryEntry).where(HistoryEntry.supporter_id == gift.supporter_id, HistoryEntry.type == "dispute")
        ).all()
        return sorted((row.at, int(row.amount or 0)) for row in rows)


def _rows(runtime: Runtime, payment_id: str) -> tuple[Gift, Dispute]:
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        dispute = session.exec(select(Dispute).where(Dispute.gocardless_payment_id == payment_id)).one()
        return gift, dispute


@pytest.mark.parametrize("order", ["cancelled_after_second", "cancelled_between"])
def test_a_chargeback_cancelled_then_charged_back_again_is_all_in_the_history_whatever_the_order(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ines")
    scenario.gocardless_monthly(supporter, 1500, payments=("chargeback_cancelled",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment: dict[str, Any] = scenario.gocardless.payments[payment_id]
    second = scenario._gocardless(
        "payments",
        "charged_back",
        {"payment": payment_id},
        origin="bank",
        cause="authorisation_disputed",
        reason_code="DDICA-5",
    )
    install(scenario, fake_stripe, fake_gocardless)
    events = [d for d in scenario.deliveries if d.event["resource_type"] == "payments"]
    first_back = next(d for d in events if d.event["action"] == "charged_back")
    cancelled = next(d for d in events if d.event["action"] == "chargeback_cancelled")
    again = next(d for d in events if d.event is second)
    setup = [d for d in scenario.deliveries if d.event["resource_type"] in ("billing_requests", "subscriptions")]
    paid = [d for d in events if d.event["action"] in ("created", "confirmed", "paid_out")]

    deliver(app_client, [*setup, *paid])
    worker.join()
    payment["status"] = "charged_back"
    deliver(app_client, [first_back])
    worker.join()
    # The chargeback was cancelled and the payment charged back again at GoCardless before the rest is processed.
    later = [again, cancelled] if order == "cancelled_after_second" else [cancelled, again]
    for delivery in later:
        deliver(app_client, [delivery])
        worker.join()
    assert stuck_events(runtime) == []

    gift, dispute = _rows(runtime, payment_id)
    assert gift.status == GiftStatus.REVERSED
    assert (dispute.status, dispute.opened_at, dispute.closed_at) == (
        DisputeStatus.LOST,
        _when(again),
        _when(again),
    )
    assert _timeline(runtime, gift) == [(_when(first_back), -1500), (_when(cancelled), 1500), (_when(again), -1500)]

    # Every event again (a redelivery, or `giving events replay`): nothing more.
    for delivery in [first_back, cancelled, again]:
        deliver(app_client, [delivery])
        worker.join()
    assert _timeline(runtime, gift) == [(_when(first_back), -1500), (_when(cancelled), 1500), (_when(again), -1500)]
