"""Review of s15a: an instalment whose card payment failed (and that Stripe may have written off) is forgiven by a
credit note for the whole of it, so Stripe marks the invoice paid with nothing (`amount_paid` 0): its row becomes a
closed £0 free period. The failed attempt and the write-off still happened, for the amount the invoice asked; their
history items say so whatever order the events arrive in, never "Payment of £0.00 failed" because the free period
was processed first."""

from __future__ import annotations

import datetime as dt

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import GiftStatus, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario
from tests.webhooks.support import EventsWorker, app_client, catalogue, history, install, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, _closed, _monthly_in_arrears, _post, _start, _state

__all__ = ["app_client", "catalogue", "settings", "worker"]


@pytest.mark.parametrize(
    "order",
    [
        ("failed", "uncollectible", "forgiven"),
        ("forgiven", "uncollectible", "failed"),
        ("uncollectible", "forgiven", "failed"),
    ],
    ids="-".join,
)
def test_a_failed_instalment_forgiven_by_a_credit_note_keeps_what_was_asked_in_its_history_in_any_order(
    order: tuple[str, ...],
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Forgiven Faye")
    invoice_id = failed["data"]["object"]["id"]
    written_at = failed["created"] + 14 * DAY
    uncollectible = _closed(failed, "invoice.marked_uncollectible", status="uncollectible", at=written_at)
    # A credit note for the whole instalment: the invoice's amount due falls to nothing and Stripe marks it paid.
    forgiven = _closed(
        failed, "invoice.paid", status="paid", at=written_at + DAY, amount_due=0, amount_paid=0, amount_remaining=0
    )
    events = {"failed": failed, "uncollectible": uncollectible, "forgiven": forgiven}
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, *[events[name] for name in order], *[events[name] for name in order])  # and again
    assert stuck_events(runtime) == []

    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount, gift.received_at) == (GiftStatus.CANCELLED, 0, None)
    assert "free period" in gift.failure_reason
    assert (regular.status, regular.next_due_on) == (RegularGiftStatus.ACTIVE, dt.date(2026, 3, 5))
    assert overdue == [] and donated == AMOUNT  # January only
    items = {i["type"]: i for i in history(runtime, supporter) if i.get("gift_id") == str(gift.id)}
    assert sorted(items) == ["instalment_free", "instalment_written_off", "payment_failed"]
    assert items["instalment_free"].get("amount") is None, items["instalment_free"]  # never "£0.00"
    for item in (items["instalment_written_off"], items["payment_failed"]):
        assert (item["amount"], "£15.00" in item["summary"]) == (AMOUNT, True), item["summary"]
