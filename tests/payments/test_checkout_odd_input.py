"""Odd input on the public forms (found in review): control characters never reach the database (PostgreSQL refuses
NUL in text); the form is answered, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments_service
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import DONOR, StripeCheckout, checkout_settings, nothing_recorded, stripe

__all__ = ["stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url)


@pytest.fixture
def lenient_client(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a browser sees it: a server error is a 500 page, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as client:
        yield client


def test_donate_with_a_nul_in_a_foreign_postcode_is_a_form_error_not_a_500(
    lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    form = {**DONOR, "country": "FR", "postcode": "75\x00001", "amount": "10", "frequency": "once", "method": "card"}
    response = lenient_client.post("/donate", data=form, follow_redirects=False)
    # The NUL is dropped (as from every field): the postcode is 75001 and the donor goes on to Stripe.
    assert response.status_code == 303, response.status_code
    with runtime.read_session() as session:
        [checkout] = session.exec(select(Checkout)).all()
        assert checkout.donor["postcode"] == "75001"


def test_shop_with_a_nul_in_a_sku_is_a_form_error_not_a_500(
    lenient_client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    form = {**DONOR, "sku": "TEE\x00", "quantity": "1"}
    response = lenient_client.post("/shop/checkout", data=form, follow_redirects=False)
    assert response.status_code == 400, response.status_code
    assert nothing_recorded(runtime)
