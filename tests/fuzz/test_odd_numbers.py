"""Numbers that Python's parsers take but a request must not (found in review): amounts in exponent notation on the
public forms, and digits that `str.isdigit` accepts and `int` refuses ("²") in query strings. Each is a 400 that
records nothing, never a 500."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.http import whole_number
from core.runtime import Runtime
from core.settings import Settings
from tests.crm.helpers import make_supporter, staff_token
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import DONOR, StripeCheckout, checkout_settings, nothing_recorded


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url)


@pytest.mark.parametrize("amount", ["1e3", "1e999999", "1e300000"])
def test_the_donate_form_refuses_an_amount_in_exponent_notation(
    client: TestClient, runtime: Runtime, fake_stripe: FakeProvider, amount: str
) -> None:
    StripeCheckout(fake_stripe)
    form = {**DONOR, "amount": amount, "frequency": "once", "method": "card"}
    response = client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 400, (response.status_code, response.headers.get("location"))
    assert nothing_recorded(runtime)


def test_the_shop_refuses_a_donation_in_exponent_notation(
    client: TestClient, runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    StripeCheckout(fake_stripe)
    form = {**DONOR, "sku": "X", "quantity": "1", "donation": "1e999999"}
    response = client.post("/shop/checkout", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 400
    assert nothing_recorded(runtime)


@pytest.mark.parametrize(("raw", "number"), [("7", 7), ("²", None), ("1" * 10, None), ("-1", None), ("", None)])
def test_a_whole_number_is_ascii_digits_of_sensible_length(raw: str, number: int | None) -> None:
    assert whole_number(raw) == number


def test_a_history_limit_in_other_digits_is_a_400(client: TestClient, runtime: Runtime) -> None:
    supporter_id = make_supporter(runtime)
    headers = staff_token(runtime, "fundraiser")
    response = client.get(f"/api/supporters/{supporter_id}/history?limit=%C2%B2", headers=headers)
    assert response.status_code == 400, response.text


def test_a_claim_file_part_in_other_digits_is_a_400(client: TestClient, runtime: Runtime) -> None:
    headers = staff_token(runtime, "admin")
    response = client.get(f"/api/giftaid/claims/{uuid.uuid4()}/schedule.ods?part=%C2%B2", headers=headers)
    assert response.status_code == 400, response.text
