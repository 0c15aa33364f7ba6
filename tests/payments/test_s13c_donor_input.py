"""What a donor types that the providers or our columns cannot hold (session 13 review): an email address Stripe or
GoCardless refuses, an address line or town longer than its column, and a shop form sent again after the last
shirt of its size went while the donor's own Stripe page was still open."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Supporter, SupporterAddress
from payments import service as payments_service
from payments.models import Checkout, Order, OrderLine, Sku
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    DONOR,
    GoCardlessFlow,
    StripeCheckout,
    checkout_settings,
    counts,
    donate,
    gocardless,
    nothing_recorded,
    stripe,
)

__all__ = ["gocardless", "stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


@pytest.fixture
def catalogue(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)


def rows(runtime: Runtime, model: Any) -> list[Any]:
    with runtime.sessions() as session:
        return list(session.exec(select(model)).all())


def error_of(page: str, field: str) -> str:
    found = re.search(rf'id="{field}-error"><span class="visually-hidden">Error:</span> ([^<]*)</p>', page)
    return found.group(1) if found else ""


def shop(client: TestClient, **fields: Any) -> Any:
    """POST /shop/checkout: one Solidarity T-shirt in M for DONOR, `fields` changing the form (None: left out)."""
    form = {**DONOR, "sku": "TEE-SOLIDARITY-M", "quantity": "1", **fields}
    form = {k: v for k, v in form.items() if v is not None}
    return client.post("/shop/checkout", data=form, follow_redirects=False, headers={"accept": "text/html"})


def set_stock(runtime: Runtime, sku: str, stock: int) -> None:
    with runtime.unit_of_work() as uow:
        row = uow.session.exec(select(Sku).where(Sku.sku == sku)).one()
        row.stock = stock
        uow.session.add(row)


# --- an email address the providers refuse -----------------------------------------------------------------------

# Stripe answers `email_invalid` for an address with a character outside ASCII (an accented or non-Latin local part,
# a domain written in Unicode); email-validator takes them all (SMTPUTF8, IDNA). The donor saw "a problem on our
# side" on every try. GoCardless gets the same address (prefilled_customer.email), and receipts go out by SMTP.
PROVIDERS_REFUSE = ["jö@example.org", "zoë.smith@example.org", "张伟@example.cn", "jo@bücher.de", "jo@exämple.org"]


@pytest.mark.parametrize("email", PROVIDERS_REFUSE)
@pytest.mark.parametrize("method", ["card", "direct_debit"])
def test_an_email_the_providers_refuse_is_refused_on_the_donate_form_before_any_call(
    client: TestClient,
    runtime: Runtime,
    stripe: StripeCheckout,
    gocardless: GoCardlessFlow,
    fake_gocardless: FakeProvider,
    email: str,
    method: str,
) -> None:
    response = donate(client, email=email, method=method)
    assert response.status_code == 400, [c.donor["email"] for c in rows(runtime, Checkout)]
    assert "using only" in error_of(response.text, "email")
    assert 'href="#email"' in response.text
    assert nothing_recorded(runtime)
    assert stripe.requests == [] and fake_gocardless.requests == []


@pytest.mark.usefixtures("catalogue")
@pytest.mark.parametrize("email", PROVIDERS_REFUSE)
def test_an_email_the_providers_refuse_is_refused_on_the_shop_form_before_any_call(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, email: str
) -> None:
    response = shop(client, email=email)
    assert response.status_code == 400, [c.donor["email"] for c in rows(runtime, Checkout)]
    assert "using only" in error_of(response.text, "email")
    assert nothing_recorded(runtime) and stripe.requests == []


def test_the_email_is_reported_with_the_other_mistakes(client: TestClient, runtime: Runtime) -> None:
    """The donor corrects everything at once, not the email only after the rest is right."""
    response = donate(client, email="jö@example.org", postcode="nowhere", amount="lots")
    assert response.status_code == 400
    assert all(error_of(response.text, field) for field in ("email", "postcode", "amount"))


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("o'brien+gift@example.org", "o'brien+gift@example.org"),
        ("Jo.Smith@Example.ORG", "jo.smith@example.org"),
        # Full-width letters (a phone's other keyboard) are plain ASCII once NFKC-normalised.
        ("\uff4a\uff4f@example.org", "jo@example.org"),
    ],
)
def test_plain_ascii_addresses_are_still_taken(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str, kept: str
) -> None:
    assert donate(client, email=typed).status_code == 303
    [checkout] = rows(runtime, Checkout)
    assert checkout.donor["email"] == kept
    [request] = stripe.requests
    assert request.form["customer_email"] == [kept]


# --- an address longer than its column ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "typed", "words"),
    [
        ("town", "Llanfair" * 8, "60"),  # 64 characters
        ("address_line2", "Flat 3, " + "x" * 93, "100"),  # 101 characters
        ("postcode", "12345-67890", "10"),  # abroad: 11 characters
    ],
)
def test_an_address_longer_than_its_column_is_refused_not_cut(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, field: str, typed: str, words: str
) -> None:
    """A town of 64 characters was kept as its first 60 (an address line as its first 100, a postcode abroad as its
    first 10): the shirts, the receipt and the Gift Aid declaration went to an address the donor never gave."""
    country = {"country": "FR"} if field == "postcode" else {}
    response = donate(client, gift_aid="yes", **{field: typed, **country})
    assert response.status_code == 400, [c.donor[field] for c in rows(runtime, Checkout)]
    message = error_of(response.text, field)
    assert words in message, message
    assert f'href="#{field}"' in response.text
    assert nothing_recorded(runtime) and stripe.requests == []


@pytest.mark.usefixtures("catalogue")
def test_a_shop_address_longer_than_its_column_is_refused_not_cut(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    response = shop(client, town="Llanfair" * 8)
    assert response.status_code == 400
    assert "60" in error_of(response.text, "town")
    assert nothing_recorded(runtime) and stripe.requests == []


def test_an_address_as_long_as_its_column_is_kept_whole(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    town, line2 = "T" * 60, "L" * 100
    assert donate(client, town=town, address_line2=line2, gift_aid="yes").status_code == 303
    [address] = rows(runtime, SupporterAddress)
    assert (address.town, address.line2) == (town, line2)
    [checkout] = rows(runtime, Checkout)
    assert (checkout.donor["town"], checkout.donor["address_line2"]) == (town, line2)
    assert len(rows(runtime, Supporter)) == 1


# --- the shop form sent again while its Stripe page is open ------------------------------------------------------


@pytest.mark.usefixtures("catalogue")
def test_a_resubmitted_basket_goes_back_to_its_open_session_after_the_size_sold_out(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """The donor went to Stripe, pressed back and sent the same form again; meanwhile the last shirt of the size
    went. Their own open session is still there to pay (stock is taken at payment: docs/checkout.md), so they go
    back to it, not to "sold out" (which also left their open session payable behind a refusal)."""
    set_stock(runtime, "TEE-SOLIDARITY-M", 1)
    reference = "3f2c1c8e-6b1d-4f5e-9a57-1d7c0b9f0a11"
    first = shop(client, checkout_ref=reference)
    assert first.status_code == 303
    set_stock(runtime, "TEE-SOLIDARITY-M", 0)
    before = counts(runtime)

    again = shop(client, checkout_ref=reference)

    assert again.status_code == 303, error_of(again.text, "quantity-TEE-SOLIDARITY-M")
    assert again.headers["location"] == first.headers["location"]
    assert counts(runtime) == before
    assert len(stripe.requests) == 1
    [checkout] = rows(runtime, Checkout)
    assert (str(checkout.id), checkout.status) == (reference, "open")


@pytest.mark.usefixtures("catalogue")
def test_a_different_basket_or_form_is_still_refused_when_the_size_sold_out(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    set_stock(runtime, "TEE-SOLIDARITY-M", 2)
    reference = "0b6f7a52-3c1e-4d4c-8f1a-5e2d9c7b6a10"
    assert shop(client, checkout_ref=reference).status_code == 303
    set_stock(runtime, "TEE-SOLIDARITY-M", 0)
    before = counts(runtime)

    more = shop(client, checkout_ref=reference, quantity="2")
    other_form = shop(client)  # another page's form: no reference of an open session

    for refused in (more, other_form):
        assert refused.status_code == 409
        assert "sold out" in error_of(refused.text, "quantity-TEE-SOLIDARITY-M")
    assert counts(runtime) == before and len(stripe.requests) == 1
    assert len(rows(runtime, Order)) == 1 and len(rows(runtime, OrderLine)) == 1


@pytest.mark.usefixtures("catalogue")
def test_a_resubmitted_basket_whose_page_was_never_made_is_refused_when_the_size_sold_out(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """A checkout that failed before Stripe made its page holds nothing the donor could pay: trying again now would
    sell a shirt that is gone, so the stock is checked as for a new basket."""
    set_stock(runtime, "TEE-SOLIDARITY-M", 1)
    stripe.failure = (500, {"error": {"type": "api_error", "message": "boom"}})
    reference = "5a0e3d2b-7c4f-4b6a-9e1d-2f3c4b5a6d70"
    assert shop(client, checkout_ref=reference).status_code in (502, 503)
    stripe.failure = None
    set_stock(runtime, "TEE-SOLIDARITY-M", 0)

    again = shop(client, checkout_ref=reference)

    assert again.status_code == 409
    [checkout] = rows(runtime, Checkout)
    assert checkout.status == "failed"
