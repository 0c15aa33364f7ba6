"""Found in review: the shop's refusal of an address it does not post to, and its page, named "the UK, the
Channel Islands and the Isle of Man" whatever `[shop] uk_postage_countries` said: a shop narrowed to GB refused a
Jersey address while telling the donor it posts to the Channel Islands. Both now name the countries of the
setting (names from babel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings, ShopSettings
from payments import shop
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import StripeCheckout, nothing_recorded, stripe
from tests.payments.test_shop_postage import buy, catalogue, shop_settings

__all__ = ["catalogue", "stripe"]

JERSEY = {"address_line1": "1 King Street", "town": "St Helier", "postcode": "JE2 3AB", "country": "JE"}


@pytest.mark.usefixtures("catalogue")
class TestNarrowedToGreatBritain:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return shop_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url, uk_postage_countries="GB")

    def test_the_refusal_names_only_the_uk(self, client: TestClient, runtime: Runtime, stripe: StripeCheckout) -> None:
        response = buy(client, {"TEE-SOLIDARITY-M": "1"}, **JERSEY)
        assert response.status_code == 400
        assert "Sorry, we can only post shirts to addresses in the UK" in response.text
        assert "the Channel Islands" not in response.text and "the Isle of Man" not in response.text
        assert nothing_recorded(runtime) and stripe.requests == []

    def test_the_shop_page_names_only_the_uk(self, client: TestClient) -> None:
        page = client.get("/shop").text
        assert "Prices include postage to the UK." in page
        assert "the Channel Islands" not in page and "the Isle of Man" not in page  # (the code hint names IM)


def test_the_countries_named_follow_the_setting() -> None:
    def named(codes: str) -> str:
        return shop.postage_area(ShopSettings(uk_postage_countries=codes))

    assert named("GB,GG,JE,IM") == "the UK, the Channel Islands and the Isle of Man"
    assert named("IM,JE,GB,GG") == "the UK, the Channel Islands and the Isle of Man"
    assert named("GB") == "the UK"
    assert named("GB,JE") == "the UK and Jersey"
    assert named("GB,IM") == "the UK and the Isle of Man"
    assert named("GB,IE,NL") == "the UK, Ireland and the Netherlands"
    assert shop.no_postage_there(ShopSettings(uk_postage_countries="GB,IM")) == (
        "Sorry, we can only post shirts to addresses in the UK and the Isle of Man"
    )
