"""contract.md, Donors: `POST /donate` and `POST /shop/checkout` answer `303` for a valid form and re-render an invalid
one with its errors (`400`), never a 500 — also for a field far longer than anyone types (a bot, a paste): names,
every address line, the town, a postcode (UK or foreign), the email and the amount are refused, never cut to fit
their columns (`crm.validation.DonorDetails.normalised`). Titles of 1 to 4 letters are accepted and the title is
optional; `country` defaults to `GB`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Declaration
from payments import service as payments_service
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import DONOR, StripeCheckout, checkout_settings, nothing_recorded, stripe

__all__ = ["stripe"]

LONG = "Abcdefghij" * 100  # 1,000 letters


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


@pytest.fixture
def lenient_client(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a browser sees it: a server error is a 500 page, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as client:
        yield client


def donation(**fields: str) -> dict[str, str]:
    return {**DONOR, "amount": "10", "frequency": "once", "method": "card", "gift_aid": "yes", **fields}


def answered(response: Any, runtime: Runtime, field: str) -> None:
    """A form error, with nothing recorded."""
    assert response.status_code == 400, (field, response.status_code)
    assert nothing_recorded(runtime)


FIELDS = ["first_name", "last_name", "address_line1", "address_line2", "town", "postcode", "email", "amount"]


@pytest.mark.parametrize("field", FIELDS)
def test_a_very_long_field_on_the_donate_form_is_a_400_not_a_500(
    field: str, lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    value = f"{LONG}@example.org" if field == "email" else LONG
    response = lenient_client.post("/donate", data=donation(**{field: value}), follow_redirects=False)
    answered(response, runtime, field)


@pytest.mark.parametrize("field", ["first_name", "last_name", "address_line2", "town", "postcode"])
def test_a_very_long_field_from_abroad_is_a_400_not_a_500(
    field: str, lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    form = donation(**{"country": "FR", "postcode": "75001", "address_line1": "4 Rue de Rivoli", field: LONG})
    response = lenient_client.post("/donate", data=form, follow_redirects=False)
    answered(response, runtime, "foreign_postcode" if field == "postcode" else field)


@pytest.mark.parametrize("field", ["first_name", "town", "sku", "quantity", "donation"])
def test_a_very_long_field_on_the_shop_form_is_a_400_not_a_500(
    field: str, lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    form = {**DONOR, "sku": "TEE-LMHR-M", "quantity": "1", field: LONG if field != "quantity" else "9" * 1000}
    response = lenient_client.post("/shop/checkout", data=form, follow_redirects=False)
    answered(response, runtime, field)


@pytest.mark.parametrize("title", ["", "X", "Mx", "Dr", "Sir", "Revd", "Dame", "Prof", "Lady"])
def test_any_title_of_1_to_4_letters_or_none_is_accepted(
    title: str, lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    response = lenient_client.post("/donate", data=donation(title=title), follow_redirects=False)
    assert response.status_code == 303, (title, response.status_code)
    with runtime.read_session() as session:
        (declaration,) = session.exec(select(Declaration)).all()
        assert (declaration.title or "") == title


def test_country_defaults_to_gb(lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout) -> None:
    form = {k: v for k, v in donation().items() if k != "country"}
    response = lenient_client.post("/donate", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("https://checkout.stripe.test/")
    with runtime.read_session() as session:
        (checkout,) = session.exec(select(Checkout)).all()
        assert checkout.donor["country"] == "GB"


class TestGoCardlessOff:
    """'A provider secret that is not set turns off only that feature (its webhook endpoint answers 404, its checkout
    503)': GoCardless without its access token; cards and Stripe's webhook carry on."""

    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, gocardless={"access_token": ""}
        )

    def test_direct_debit_answers_503_its_webhook_404_and_cards_still_work(
        self, lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout, fake_gocardless: FakeProvider
    ) -> None:
        refused = lenient_client.post("/donate", data=donation(method="direct_debit"), follow_redirects=False)
        assert refused.status_code == 503
        assert nothing_recorded(runtime) and fake_gocardless.requests == []
        assert lenient_client.post("/webhooks/gocardless", content=b"{}").status_code == 404
        assert lenient_client.post("/webhooks/stripe", content=b"{}").status_code == 400  # on, and unsigned
        assert lenient_client.post("/donate", data=donation(method="card"), follow_redirects=False).status_code == 303
