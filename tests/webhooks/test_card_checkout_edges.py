"""Stripe checkouts at edges found in review: a monthly gift's delayed first payment that fails, and "Try again"
after a delayed payment failed."""

from __future__ import annotations

import copy

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Checkout, CheckoutStatus, Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_a_delayed_first_payment_of_a_monthly_gift_that_fails_is_one_failed_instalment(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """A monthly card-form gift paid by a delayed method (Bacs Debit is offered by Checkout in subscription mode:
    our session does not restrict payment_method_types): `checkout.session.completed` (unpaid), then the first
    invoice fails (`invoice.payment_failed`) and Stripe sends `checkout.session.async_payment_failed` for the
    session. docs/payments.md keys a gift on the checkout session only for a one-off or a basket; an instalment is
    keyed on its invoice. One failure, one failed gift (the instalment), one payment_failed item."""
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ola")
    scenario.stripe_monthly(supporter, 1500, paid=0, fail_last=True, final_status="active")
    completed = next(d for d in scenario.deliveries if d.event["type"] == "checkout.session.completed")
    session = completed.event["data"]["object"]
    session["payment_status"] = "unpaid"
    scenario._stripe("checkout.session.async_payment_failed", copy.deepcopy(session))
    install(scenario, fake_stripe, fake_gocardless)
    deliveries = scenario.deliveries if order == "in_order" else list(reversed(scenario.deliveries))
    deliver(app_client, deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    with reading(runtime) as db:
        gifts = db.exec(select(Gift).where(Gift.supporter_id == supporter)).all()
    described = sorted((str(g.status), g.stripe_invoice_id is not None, g.regular_gift_id is not None) for g in gifts)
    failed_items = [i["summary"] for i in history(runtime, supporter) if i["type"] == "payment_failed"]
    assert (described, len(failed_items)) == ([("failed", True, True)], 1), failed_items


def test_try_again_after_a_delayed_payment_failed_does_not_reopen_the_failed_checkout(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Pay by bank / Bacs: the donor completes the Stripe page (unpaid), the payment fails minutes later
    (`async_payment_failed`: our checkout → failed, its gift failed). The donor goes back and sends the same form
    again ("Try again"). A checkout whose payment failed is finished business: it must not be moved back to `open`
    (state only moves forward) nor send the donor to the completed Stripe session again."""
    import uuid as _uuid

    from tests.payments.checkout_support import StripeCheckout, donate

    StripeCheckout(fake_stripe)  # the stand-in Stripe answers Checkout Session requests
    reference = str(_uuid.uuid4())
    first = donate(app_client, checkout_ref=reference)
    assert first.status_code == 303, first.text
    with reading(runtime) as db:
        checkout = db.exec(select(Checkout)).one()
    session_id = checkout.stripe_checkout_session_id
    scenario = Scenario(runtime)
    intent_id, _ = scenario._intent(1250, created=scenario.tick())
    session = scenario._session_object(
        checkout.id,
        id=session_id,
        mode="payment",
        payment_status="unpaid",
        payment_intent=intent_id,
        amount_total=1250,
    )
    scenario._stripe("checkout.session.completed", session)
    scenario._stripe("checkout.session.async_payment_failed", copy.deepcopy(session))
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as db:
        assert db.get(Checkout, checkout.id).status == CheckoutStatus.FAILED
        assert str(db.exec(select(Gift)).one().status) == "failed"

    again = donate(app_client, checkout_ref=reference)
    assert again.status_code == 303, again.text
    with reading(runtime) as db:
        old = db.get(Checkout, checkout.id)
    assert (str(old.status), again.headers["location"] != first.headers["location"]) == ("failed", True)
