"""Review of s14a: an instalment closed without a card payment (voided, written off) that is *later* than the one the
plan still expects closes only its own period. February's failed instalment stays overdue (its alert open) when
March's invoice is voided or written off; once February is paid, March (closed) is not expected, April is."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario, stripe_event, unique
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, reading, settings, worker
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, OVERDUE_DAY, _closed, _monthly_in_arrears, _post, _start

__all__ = ["app_client", "catalogue", "settings", "worker"]

MARCH = int(dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC).timestamp())


def _march_closed(failed: dict[str, Any], event_type: str, status: str) -> dict[str, Any]:
    """March's invoice of the same subscription (a new invoice id, its period starting 5 March), closed."""
    invoice = copy.deepcopy(failed["data"]["object"])
    invoice.update(id=unique("in_"), created=MARCH, period_start=MARCH, status=status, attempt_count=0)
    for line in invoice["lines"]["data"]:
        line["period"] = {"start": MARCH, "end": MARCH + 31 * DAY}
    at = MARCH + DAY
    invoice["status_transitions"] = {
        "finalized_at": MARCH,
        "paid_at": None,
        "voided_at": at if status == "void" else None,
        "marked_uncollectible_at": at if status == "uncollectible" else None,
    }
    if status == "uncollectible":
        invoice["status_details"] = {"uncollectible": {"reason": "user_forgiven"}}
    return stripe_event(event_type, invoice, created=at + 2)


def _overdue(runtime: Runtime, today: dt.date) -> list[dt.date]:
    with reading(runtime) as session:
        return [m.due_on for m in payments_service.missing_instalments(session, today=today, grace_days=7)]


@pytest.mark.parametrize(
    ("event_type", "status"),
    [("invoice.voided", "void"), ("invoice.marked_uncollectible", "uncollectible")],
    ids=["voided", "written-off"],
)
def test_closing_a_later_instalment_leaves_the_earlier_failed_one_overdue(
    event_type: str,
    status: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    _, subscription_id, failed = _monthly_in_arrears(scenario, "Later Lena")
    invoice_id = failed["data"]["object"]["id"]
    march = _march_closed(failed, event_type, status)
    scenario.stripe.invoice_payments[invoice_id][0]["status"] = "paid"  # Stripe's world once February is paid
    paid = _closed(failed, "invoice.paid", status="paid", at=MARCH + 3 * DAY, amount_paid=AMOUNT)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed)
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=OVERDUE_DAY) == 1

    _post(app_client, worker, march, march)
    # February is still owed: the plan in arrears, February overdue, its alert open.
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    assert regular.status == RegularGiftStatus.IN_ARREARS
    assert [(a.dedupe_key.rsplit(":", 1)[1], a.resolved_by) for a in alerts] == [("2026-02-05", "")]
    assert _overdue(runtime, dt.date(2026, 3, 20)) == [dt.date(2026, 2, 5)]
    with runtime.unit_of_work() as uow:  # the periodic check agrees: nothing resolved, nothing new
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=dt.date(2026, 3, 20)) == 0
    with reading(runtime) as session:
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    assert [a.resolved_by for a in alerts] == [""]

    # February paid after all: March was closed, so April is the next one expected (March never overdue).
    _post(app_client, worker, paid)
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        alerts = session.exec(select(ReviewItem).where(ReviewItem.kind == "missing_instalment")).all()
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 4, 5))
    assert [a.resolved_by for a in alerts] == [payments_service.ALERTS_SETTLED_BY]
    assert _overdue(runtime, dt.date(2026, 4, 10)) == []
