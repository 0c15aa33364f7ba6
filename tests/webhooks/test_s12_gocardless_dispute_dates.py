"""GoCardless chargebacks and late failures are dated by the provider's own event time (found in review): a
chargeback's cancellation was dated by whichever event first saw the payment paid again (an older `confirmed`
processed late), and a late failure found out after its `failed` event (the payment proved paid later) was dated by
the event that proved it. The dates must not depend on the order events are processed in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
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


def _when(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00"))


def _by_action(scenario: Scenario) -> dict[str, Delivery]:
    return {f"{d.event['resource_type']}.{d.event['action']}": d for d in scenario.deliveries}


def _history_at(runtime: Runtime, dedupe_prefix: str) -> list[tuple[str, dt.datetime]]:
    from crm.models import HistoryEntry

    with reading(runtime) as session:
        rows = session.exec(select(HistoryEntry).where(HistoryEntry.dedupe_key.startswith(dedupe_prefix))).all()  # type: ignore[union-attr]
        return [(str(row.dedupe_key), row.at) for row in rows]


def _rows(runtime: Runtime, payment_id: str) -> tuple[Gift, Dispute]:
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        dispute = session.exec(select(Dispute).where(Dispute.gocardless_payment_id == payment_id)).one()
        return gift, dispute


def test_a_cancelled_chargeback_is_dated_by_its_own_event_when_an_older_one_is_processed_first(
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
    payment = scenario.gocardless.payments[payment_id]
    install(scenario, fake_stripe, fake_gocardless)
    events = _by_action(scenario)
    setup = [d for d in scenario.deliveries if d.event["resource_type"] in ("billing_requests", "subscriptions")]

    deliver(app_client, [*setup, events["payments.created"], events["payments.paid_out"]])
    worker.join()
    payment["status"] = "charged_back"
    deliver(app_client, [events["payments.charged_back"]])
    worker.join()
    _, dispute = _rows(runtime, payment_id)
    charged_back_at = _when(events["payments.charged_back"].event)
    assert (dispute.status, dispute.opened_at, dispute.closed_at) == (
        DisputeStatus.LOST,
        charged_back_at,
        charged_back_at,
    )

    # The chargeback is cancelled; the older `confirmed` (delayed) is processed before `chargeback_cancelled`.
    payment["status"] = "paid_out"
    deliver(app_client, [events["payments.confirmed"]])
    worker.join()
    deliver(app_client, [events["payments.chargeback_cancelled"]])
    worker.join()
    assert stuck_events(runtime) == []

    gift, dispute = _rows(runtime, payment_id)
    cancelled_at = _when(events["payments.chargeback_cancelled"].event)
    assert gift.status == GiftStatus.PAID
    assert (dispute.status, dispute.closed_at) == (DisputeStatus.WON, cancelled_at)
    assert [at for _, at in _history_at(runtime, f"restored:{gift.id}:")] == [cancelled_at]


def test_a_late_failure_found_out_later_is_dated_by_the_failure(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Jonas")
    scenario.gocardless_monthly(supporter, 1500, payments=("late_failure",))
    payment_id = next(iter(scenario.gocardless.payments))
    payment = scenario.gocardless.payments[payment_id]
    payment["links"].pop("payout")  # failed after it was confirmed, before it was paid out
    install(scenario, fake_stripe, fake_gocardless)
    events = _by_action(scenario)
    setup = [d for d in scenario.deliveries if d.event["resource_type"] in ("billing_requests", "subscriptions")]

    # The failure is processed first: nothing shows yet that the payment had been collected (a plain failure).
    deliver(app_client, [*setup, events["payments.created"], events["payments.failed"]])
    worker.join()
    # The older `confirmed` proves it had been: a late failure, dated by the failure, not by `confirmed`.
    deliver(app_client, [events["payments.confirmed"]])
    worker.join()
    assert stuck_events(runtime) == []

    gift, dispute = _rows(runtime, payment_id)
    failed_at = _when(events["payments.failed"].event)
    assert gift.status == GiftStatus.REVERSED
    assert (dispute.kind, dispute.status, dispute.opened_at, dispute.closed_at) == (
        "late_failure",
        DisputeStatus.LOST,
        failed_at,
        failed_at,
    )
    assert [at for _, at in _history_at(runtime, f"payment_failed:{payment_id}")] == [failed_at]
