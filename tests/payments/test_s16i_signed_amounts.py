"""An amount with a sign and more than two decimals (session 16 review).

docs/checkout.md: more than two decimals is refused, zeros too (`1.000` is one thousand where a point separates
thousands). The check missed a leading `+`, which Money.parse takes: `+1.000` became £1 on the donate form and as a
shop donation, not a question to the donor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments_service
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    DONOR,
    StripeCheckout,
    checkout_settings,
    donate,
    nothing_recorded,
    stripe,
)

__all__ = ["stripe"]

DECIMALS = "with at most 2 decimal places"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


@pytest.mark.parametrize("amount", ["+1.000", "£+1.000", "+12.500"])
def test_a_signed_amount_with_three_decimals_is_refused(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, amount: str
) -> None:
    response = donate(client, amount=amount)
    assert response.status_code == 400
    assert DECIMALS in response.text
    assert nothing_recorded(runtime) and stripe.requests == []


def test_a_signed_shop_donation_with_three_decimals_is_refused(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    form = {**DONOR, "sku": "TEE-SOLIDARITY-M", "quantity": "1", "donation": "+1.000"}
    response = client.post("/shop/checkout", data=form, follow_redirects=False)
    assert response.status_code == 400
    assert DECIMALS in response.text
    assert stripe.requests == []


def test_a_signed_amount_with_two_decimals_is_still_taken(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    assert donate(client, amount="+12.50").status_code == 303
    assert stripe.requests[0].form["line_items[0][price_data][unit_amount]"] == ["1250"]
