"""A form sent again after its details were changed (session 16 review).

The form's `checkout_ref` becomes the checkout's id. Once that id belongs to the form's first checkout, a donor who
changes the form (the back button from Stripe's page, a different amount, then "Continue") gets another checkout.
That one used to take a random id, which the page never learnt: its "Try again" button, a double click, or the
same changed form sent again each made yet another checkout, with a Gift Aid declaration, a consent and a provider
session or billing request of its own. Now the changed form's checkout has an id derived from the reference and
the details, so sending that same form again finds it, as the first form finds its own.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments_service
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    DONOR,
    GoCardlessFlow,
    StripeCheckout,
    checkout_settings,
    counts,
    donate,
    gocardless,
    stripe,
)

__all__ = ["gocardless", "stripe"]

STRIPE_500 = (500, {"error": {"type": "api_error", "message": "boom"}})


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


def checkouts(runtime: Runtime) -> list[Checkout]:
    with runtime.sessions() as session:
        return list(session.exec(select(Checkout).order_by(col(Checkout.amount))).all())


def test_try_again_after_a_changed_form_failed_reuses_its_checkout(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    ref = str(uuid.uuid4())
    assert donate(client, checkout_ref=ref, amount="5", gift_aid="yes").status_code == 303

    # Back from Stripe's page, the amount changed, and Stripe fails this time: the Try again page re-sends the form.
    stripe.failure = STRIPE_500
    failed = donate(client, checkout_ref=ref, amount="6", gift_aid="yes")
    assert failed.status_code == 503
    assert f'name="checkout_ref" value="{ref}"' in failed.text
    stripe.failure = None
    retried = donate(client, checkout_ref=ref, amount="6", gift_aid="yes")
    assert retried.status_code == 303

    rows = checkouts(runtime)
    assert [(c.amount, c.status) for c in rows] == [(500, "open"), (600, "open")], "Try again made another checkout"
    assert counts(runtime)["declarations"] == 2  # one with each checkout, none with the retry
    changed = rows[1]
    assert retried.headers["location"] == f"https://checkout.stripe.test/c/pay/{changed.stripe_checkout_session_id}"
    # The retry went on under the changed checkout's keys: its first try (answered 500), then the next.
    keys = [r.headers["idempotency-key"] for r in stripe.requests]
    assert set(keys) == {
        f"checkout:{ref}:session",
        f"checkout:{changed.id}:session",
        f"checkout:{changed.id}:session:1",
    }


def test_a_changed_form_sent_twice_goes_to_one_session(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    ref = str(uuid.uuid4())
    donate(client, checkout_ref=ref, amount="5")
    first = donate(client, checkout_ref=ref, amount="6", email_updates="yes")
    second = donate(client, checkout_ref=ref, amount="6", email_updates="yes")
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert [c.amount for c in checkouts(runtime)] == [500, 600]
    assert counts(runtime)["consents"] == 1
    assert len(stripe.requests) == 2


def test_a_double_click_on_a_changed_form_makes_one_checkout(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    ref = str(uuid.uuid4())
    donate(client, checkout_ref=ref, amount="5")
    barrier = threading.Barrier(2)
    responses: list[Any] = []

    def click() -> None:
        barrier.wait()
        responses.append(donate(client, checkout_ref=ref, amount="6", gift_aid="yes"))

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.status_code for r in responses] == [303, 303]
    assert len({r.headers["location"] for r in responses}) == 1
    assert [c.amount for c in checkouts(runtime)] == [500, 600]
    assert counts(runtime)["declarations"] == 1


def test_try_again_after_a_changed_direct_debit_form_failed_makes_one_billing_request(
    client: TestClient, runtime: Runtime, gocardless: GoCardlessFlow, fake_gocardless: FakeProvider
) -> None:
    ref = str(uuid.uuid4())
    donate(client, checkout_ref=ref, amount="5", method="direct_debit")
    gocardless.failure = (
        500,
        {"error": {"type": "gocardless", "code": 500, "message": "down", "errors": [], "request_id": "x"}},
    )
    assert donate(client, checkout_ref=ref, amount="6", method="direct_debit").status_code == 503
    gocardless.failure = None
    assert donate(client, checkout_ref=ref, amount="6", method="direct_debit").status_code == 303

    assert [(c.amount, c.status) for c in checkouts(runtime)] == [(500, "open"), (600, "open")]
    keys = {r.headers["idempotency-key"] for r in fake_gocardless.requests_to("POST", r"/billing_requests")}
    assert len(keys) == 2, keys  # one key a checkout: GoCardless answers the retry with what it made under it


def test_a_changed_basket_sent_again_is_one_order(client: TestClient, runtime: Runtime, stripe: StripeCheckout) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    ref = str(uuid.uuid4())

    def basket(quantity: str) -> Any:
        form = {**DONOR, "sku": "TEE-SOLIDARITY-M", "quantity": quantity, "checkout_ref": ref}
        return client.post("/shop/checkout", data=form, follow_redirects=False)

    assert basket("1").status_code == 303
    first, second = basket("2"), basket("2")
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert counts(runtime)["orders"] == 2 and counts(runtime)["checkouts"] == 2
