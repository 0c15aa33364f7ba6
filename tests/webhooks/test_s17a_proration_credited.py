"""A failed proration invoice settled by a credit note (s17a).

The donor raised their monthly gift; Stripe invoiced the difference at once (`billing_reason` "subscription_update")
and the card was declined. Finance then issued a credit note for the whole invoice: Stripe marks it paid with
nothing (`invoice.paid`, `amount_paid` 0, `pre_payment_credit_notes_amount` the invoice's amount). The failed gift
stayed `failed` for ever (a £0 invoice that bills no period records nothing), though the invoice will never be paid:
it is closed as an invoice closed without a card payment is (`cancelled`, at £0, as a credited period is), whatever
order the two events are processed in, and a void of it afterwards (a stray event) leaves it so."""

from __future__ import annotations

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    history,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, _post, _start
from tests.webhooks.test_s16a_proration_not_a_period import FEBRUARY, _paying_monthly
from tests.webhooks.test_s16f_proration_not_an_instalment import JAN_20, PRORATION, _extra_invoice

__all__ = ["app_client", "catalogue", "settings", "worker"]

CREDITED = "settled without a payment: a credit note or credit balance covered the invoice"


@pytest.mark.parametrize("order", ["failed_first", "credit_note_first"])
def test_a_failed_proration_credited_in_full_is_closed_not_failed(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, january = _paying_monthly(scenario, "Credited Cora")
    events = _extra_invoice(scenario, january, "subscription_update", JAN_20, FEBRUARY)
    invoice_id = events["failed"]["data"]["object"]["id"]
    credited = events["failed"]
    credited = {**credited, "id": f"{credited['id']}_credited", "type": "invoice.paid", "created": JAN_20 + 3 * DAY}
    body = dict(credited["data"]["object"])
    body.update(
        status="paid",
        amount_paid=0,
        amount_remaining=0,
        pre_payment_credit_notes_amount=PRORATION,
        status_transitions={"finalized_at": JAN_20, "paid_at": JAN_20 + 3 * DAY},
    )
    credited["data"] = {"object": body}
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    sequence = [events["failed"], credited] if order == "failed_first" else [credited, events["failed"]]
    _post(app_client, worker, *sequence, *sequence, events["voided"])
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == subscription_id)).one()
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == invoice_id)).one()
    assert (row.status, row.failure_reason, row.amount, row.due_on) == (GiftStatus.CANCELLED, CREDITED, 0, None)
    assert regular.status == RegularGiftStatus.ACTIVE
    assert regular.amount == AMOUNT
    items = [(i["type"], i.get("amount")) for i in history(runtime, supporter) if i.get("gift_id") == str(row.id)]
    # The failed attempt happened (what it asked for), then the credit note settled it; the stray void says nothing.
    assert items == [("payment_failed", PRORATION), ("instalment_free", None)]
