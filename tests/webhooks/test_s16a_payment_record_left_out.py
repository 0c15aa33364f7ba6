"""Review of s15a: an instalment paid partly by card and partly outside Stripe whose Payment Record Stripe's list
(or the event's embedded copy) leaves out entirely, for now. The card payment states it paid less than the invoice
says was paid, and nothing listed says who paid the rest: the whole is never taken as card money (money no payout
carries). The event fails and is retried, recording nothing, until Stripe's list names the record; then the card
gift is the card's part."""

from __future__ import annotations

import copy

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    history,
    install,
    post_stripe,
    reading,
    settings,
    stuck_events,
    worker,
)
from tests.webhooks.test_s14a_invoice_outcomes import AMOUNT, _closed, _monthly_in_arrears, _post, _start, _state
from tests.webhooks.test_s15a_payment_record_amounts import CARD, OUTSIDE, _record
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["app_client", "catalogue", "settings", "worker"]


@pytest.mark.parametrize("where", ["listed", "embedded", "one-of-two-records-listed"])
def test_a_payment_record_left_out_of_the_list_fails_the_event_until_stripe_lists_it(
    where: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Left Out Lior")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed)
    listed = scenario.stripe.invoice_payments[invoice_id]
    listed[0].update(status="paid", amount_paid=CARD)  # the card's retry paid £10.00 of the £15.00
    paid = _closed(failed, "invoice.paid", status="paid", at=failed["created"] + DAY, amount_paid=AMOUNT)
    if where == "embedded":
        paid["data"]["object"]["payments"] = {"object": "list", "data": copy.deepcopy(listed), "has_more": False}
    if where == "one-of-two-records-listed":  # £3.00 of the £5.00 paid outside Stripe is listed, £2.00 not yet
        listed.append(_record(amount_paid=300))
    with worker.paused():
        assert post_stripe(app_client, paid).status_code == 200
        with reading(runtime) as session:
            row = session.exec(select(InboundEvent).where(InboundEvent.external_id == paid["id"])).one()
        assert webhooks_service.run_event(runtime, row.id).status == EventStatus.FAILED
        gift, regular, _, donated = _state(runtime, invoice_id, subscription_id)
        assert (gift.status, gift.amount, donated) == (GiftStatus.FAILED, AMOUNT, AMOUNT)  # nothing recorded
        assert regular.status == RegularGiftStatus.IN_ARREARS
        listed.append(_record(amount_paid=OUTSIDE - (300 if len(listed) > 1 else 0)))  # Stripe's list catches up
    worker.join()
    _post(app_client, worker, paid)
    assert stuck_events(runtime) == []
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount, donated) == (GiftStatus.PAID, CARD, AMOUNT + CARD)
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    items = [i for i in history(runtime, supporter) if i["type"] == "instalment_paid_outside_stripe"]
    assert len(items) == 1 and "£5.00" in items[0]["summary"]
    with reading(runtime) as session:
        assert len(session.exec(select(Gift).where(Gift.supporter_id == supporter)).all()) == 2


def test_a_card_payment_that_states_the_whole_invoice_is_still_the_whole_card_gift(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """What the card states reaches what the invoice says was paid: nothing to explain, no retry."""
    scenario = Scenario(runtime)
    _, subscription_id, failed = _monthly_in_arrears(scenario, "Whole Wren")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    scenario.stripe.invoice_payments[invoice_id][0].update(status="paid", amount_paid=AMOUNT)
    paid = _closed(failed, "invoice.paid", status="paid", at=failed["created"] + DAY, amount_paid=AMOUNT)
    _post(app_client, worker, failed, paid)
    assert stuck_events(runtime) == []
    gift, regular, _, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount, donated) == (GiftStatus.PAID, AMOUNT, 2 * AMOUNT)
    assert regular.status == RegularGiftStatus.ACTIVE
