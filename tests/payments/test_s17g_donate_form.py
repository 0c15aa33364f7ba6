"""The donate form: a link asking for Direct Debit while Direct Debit is off shows card chosen (the choice the form
can send), never a disabled radio button checked; and Gift Aid ticked with a first address line that holds no house
name or number (a bare "-") is refused by the field, nothing recorded, as HMRC would refuse the donor's line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments.service import ensure_default_catalogue
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import StripeCheckout, checkout_settings, donate, nothing_recorded, stripe
from tests.payments.test_checkout_shop import buy

__all__ = ["stripe"]

RADIO = re.compile(r'<input type="radio" id="method-(?P<method>[a-z_]+)"[^>]*>')


def error_of(page: str, field: str) -> str:
    found = re.search(rf'id="{field}-error"><span class="visually-hidden">Error:</span> ([^<]*)</p>', page)
    return found.group(1) if found else ""


def radios(page: str) -> dict[str, str]:
    return {m.group("method"): m.group(0) for m in RADIO.finditer(page)}


class TestDirectDebitOff:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, "http://127.0.0.1:9", gocardless={"access_token": ""}
        )

    @pytest.mark.parametrize("query", ["?method=direct_debit", "?method=direct_debit&frequency=monthly&amount=10"])
    def test_a_link_asking_for_direct_debit_shows_card_chosen(self, client: TestClient, query: str) -> None:
        page = client.get(f"/donate{query}")
        assert page.status_code == 200
        found = radios(page.text)
        assert "disabled" in found["direct_debit"] and "checked" not in found["direct_debit"], found
        assert "checked" in found["card"] and "disabled" not in found["card"], found


class TestGiftAidHouse:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
        )

    @pytest.mark.parametrize("line1", ["-", " - ", "--", ".", "/", "- -"])
    def test_gift_aid_with_no_house_name_or_number_is_refused(
        self, client: TestClient, runtime: Runtime, line1: str
    ) -> None:
        answer = donate(client, gift_aid="yes", address_line1=line1)
        assert answer.status_code == 400, answer.text[-600:]
        assert "house name or number" in error_of(answer.text, "address_line1")
        assert nothing_recorded(runtime)

    @pytest.mark.parametrize("line1", ["Flat 2", "10 Downing Street", "Rose Cottage", "2-4 High Street", "Ñ"])
    def test_a_real_house_is_still_taken(self, client: TestClient, stripe: StripeCheckout, line1: str) -> None:
        answer = donate(client, gift_aid="yes", address_line1=line1)
        assert answer.status_code == 303, answer.text[-600:]

    def test_without_gift_aid_the_address_is_not_asked_for(self, client: TestClient, stripe: StripeCheckout) -> None:
        assert donate(client, address_line1="-").status_code == 303


class TestShopGiftAidHouse:
    """The shop's donation with Gift Aid: the same house check (payments/forms.py serves both forms)."""

    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
        )

    @pytest.fixture
    def catalogue(self, runtime: Runtime) -> None:
        with runtime.unit_of_work() as uow:
            ensure_default_catalogue(uow)

    @pytest.mark.usefixtures("catalogue")
    def test_a_shop_donation_with_gift_aid_and_no_house_is_refused(self, client: TestClient, runtime: Runtime) -> None:
        answer = buy(client, {"TEE-SOLIDARITY-M": "1"}, donation="5", gift_aid="yes", address_line1="-")
        assert answer.status_code == 400, answer.text[-600:]
        assert "house name or number" in error_of(answer.text, "address_line1")
        assert nothing_recorded(runtime)
