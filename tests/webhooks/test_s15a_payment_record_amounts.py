"""An instalment paid partly by card and partly outside Stripe (a Payment Record among the invoice's payments) whose
Payment Record states no `amount_paid` (Stripe: null until the payment is `paid`, so a snapshot can lag). The card
gift is never the whole invoice then (no payout carries the recorded part): the record's `amount_requested` says
how much it pays, else the card payments' own `amount_paid` say what the card paid, else Stripe's list of the
invoice's payments as it is now (the event's embedded copy may lag); if nothing says it, the event fails and is
retried (nothing recorded, nothing lost) until Stripe's data does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario, unique
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
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["app_client", "catalogue", "settings", "worker"]

CARD, OUTSIDE = 1000, 500  # of AMOUNT (1500)


def _record(**amounts: int) -> dict[str, Any]:
    """A paid Payment Record entry (a payment marked as made outside Stripe), with only the amounts given."""
    entry = {
        "object": "invoice_payment",
        "id": unique("inpay_"),
        "status": "paid",
        "is_default": False,
        "payment": {"type": "payment_record", "payment_record": unique("pr_")},
    }
    return {**entry, **amounts}


def _split_invoice(scenario: Scenario, failed: dict[str, Any], case: str) -> dict[str, Any]:
    """The failed invoice paid after all, partly by card and partly outside Stripe, Stripe's world set for `case`;
    returns its `invoice.paid` event."""
    invoice_id = failed["data"]["object"]["id"]
    card = scenario.stripe.invoice_payments[invoice_id][0]
    card["status"] = "paid"  # its `amount_paid` stated only where the case says
    listed = scenario.stripe.invoice_payments[invoice_id]
    paid = _closed(failed, "invoice.paid", status="paid", at=failed["created"] + DAY, amount_paid=AMOUNT)
    if case == "amount-requested":
        listed.append(_record(amount_requested=OUTSIDE))
    elif case == "card-amount-paid":
        card["amount_paid"] = CARD
        listed.append(_record())
    elif case == "embedded-copy-lags":
        # The event embeds the payments as they were an instant before: the record's amount not stated yet.
        listed.append(_record(amount_paid=OUTSIDE, amount_requested=OUTSIDE))
        lagging = [copy.deepcopy(card), {**copy.deepcopy(listed[-1]), "amount_paid": None, "amount_requested": None}]
        paid["data"]["object"]["payments"] = {"object": "list", "data": lagging, "has_more": False}
    else:
        raise AssertionError(case)
    return paid


@pytest.mark.parametrize("paid_first", [False, True], ids=["failed-then-paid", "paid-then-failed"])
@pytest.mark.parametrize("case", ["amount-requested", "card-amount-paid", "embedded-copy-lags"])
def test_a_payment_record_without_its_amount_paid_is_never_counted_as_card_money(
    case: str,
    paid_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Record Rhea")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    paid = _split_invoice(scenario, failed, case)
    _post(app_client, worker, *([paid, failed, paid] if paid_first else [failed, paid, paid]))
    assert stuck_events(runtime) == []
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount) == (GiftStatus.PAID, CARD) and gift.stripe_charge_id
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    assert donated == AMOUNT + CARD  # January, and February's card part only
    items = [i for i in history(runtime, supporter) if i["type"] == "instalment_paid_outside_stripe"]
    assert len(items) == 1 and "£5.00" in items[0]["summary"]


def test_an_instalment_whose_split_nothing_states_waits_for_stripe_rather_than_guessing(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Neither the record nor the card payment states an amount: the event fails (retried, nothing recorded: no card
    gift of money no payout carries, and no gift lost); once Stripe's payments state it, the retry records the card
    part."""
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Record Remy")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker, failed)
    _post(app_client, worker, failed)
    listed = scenario.stripe.invoice_payments[invoice_id]
    listed[0]["status"] = "paid"
    listed.append(_record())
    paid = _closed(failed, "invoice.paid", status="paid", at=failed["created"] + DAY, amount_paid=AMOUNT)
    with worker.paused():
        assert post_stripe(app_client, paid).status_code == 200
        with reading(runtime) as session:
            row = session.exec(select(InboundEvent).where(InboundEvent.external_id == paid["id"])).one()
        assert webhooks_service.run_event(runtime, row.id).status == EventStatus.FAILED
        gift, regular, _, donated = _state(runtime, invoice_id, subscription_id)
        assert (gift.status, gift.amount, donated) == (GiftStatus.FAILED, AMOUNT, AMOUNT)  # February still owed
        assert regular.status == RegularGiftStatus.IN_ARREARS
        listed[-1].update(amount_paid=OUTSIDE, amount_requested=OUTSIDE)  # Stripe's data catches up
    worker.join()
    _post(app_client, worker, paid)
    assert stuck_events(runtime) == []
    gift, regular, overdue, donated = _state(runtime, invoice_id, subscription_id)
    assert (gift.status, gift.amount, donated) == (GiftStatus.PAID, CARD, AMOUNT + CARD)
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    with reading(runtime) as session:
        assert len(session.exec(select(Gift).where(Gift.supporter_id == supporter)).all()) == 2
