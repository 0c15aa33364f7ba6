"""Postage in the shop (docs/checkout.md, "Postage"): the prices include postage to the UK, the Channel Islands and
the Isle of Man. An address anywhere else is refused (400 on `country`, nothing recorded, Stripe not called) unless
`[shop] international_postage` is set; then that price is charged once per order, as its own line in the order and
in the Stripe session, and the paid order takes stock only for its shirts. Real endpoints, the real Stripe SDK and
the fake Stripe; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError
from sqlmodel import col, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings, ShopSettings
from payments import shop
from payments.models import Checkout, Order, OrderLine, Sku
from payments.service import ensure_default_catalogue
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    DONOR,
    StripeCheckout,
    checkout_settings,
    form_of,
    nothing_recorded,
    stripe,
)

__all__ = ["stripe"]

PARIS = {"address_line1": "4 Rue de Rivoli", "town": "Paris", "postcode": "75004", "country": "FR"}


def shop_settings(
    database_url: str, tmp_path: Path, stripe_url: str, gocardless_url: str, **shop_keys: Any
) -> Settings:
    return checkout_settings(
        database_url,
        tmp_path,
        stripe_url,
        gocardless_url,
        shop={"vat_rate_bp": 2000, **shop_keys},
        web={"form_rate_per_minute": 1000},
    )


@pytest.fixture
def catalogue(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        ensure_default_catalogue(uow)


def buy(client: TestClient, basket: dict[str, str], **fields: Any) -> Any:
    form: list[tuple[str, str]] = []
    for sku, quantity in basket.items():
        form += [("sku", sku), ("quantity", quantity)]
    form += [(k, v) for k, v in {**DONOR, **fields}.items() if v is not None]
    return client.post(
        "/shop/checkout",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
        follow_redirects=False,
    )


def rows(runtime: Runtime, model: Any, *order_by: Any) -> list[Any]:
    with runtime.sessions() as session:
        return list(session.exec(select(model).order_by(*order_by)).all())


@pytest.mark.usefixtures("catalogue")
class TestNoInternationalPostage:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return shop_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url)

    def test_an_address_abroad_is_refused_before_anything_is_recorded(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = buy(client, {"TEE-SOLIDARITY-M": "2"}, **PARIS)
        assert response.status_code == 400, response.status_code
        assert "we can only post shirts to addresses in the UK" in response.text
        assert 'id="country-error"' in response.text or 'href="#country"' in response.text
        assert nothing_recorded(runtime)
        assert stripe.requests == []

    def test_a_sku_error_and_an_address_abroad_are_both_reported(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = buy(client, {"TEE-NOPE-M": "1"}, **PARIS)
        assert response.status_code == 400
        assert "we can only post shirts" in response.text and "We do not sell" in response.text
        assert nothing_recorded(runtime) and stripe.requests == []

    @pytest.mark.parametrize(
        ("country", "postcode"), [("GB", "SW1A 2AA"), ("UK", "SW1A 2AA"), ("GB", "JE2 3AB"), ("IM", "IM1 1AA")]
    )
    def test_the_uk_channel_islands_and_man_pay_the_prices_alone(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout, country: str, postcode: str
    ) -> None:
        response = buy(client, {"TEE-SOLIDARITY-M": "2"}, country=country, postcode=postcode)
        assert response.status_code == 303, response.text
        [order] = rows(runtime, Order)
        [checkout] = rows(runtime, Checkout)
        assert [line.sku for line in rows(runtime, OrderLine)] == ["TEE-SOLIDARITY-M"]
        assert (order.goods_amount + order.vat_amount, checkout.amount) == (3000, 3000)

    def test_the_shop_page_says_where_it_posts(self, client: TestClient) -> None:
        page = client.get("/shop").text
        assert "Prices include postage to the UK, the Channel Islands and the Isle of Man" in page
        assert "We cannot post shirts anywhere else" in page


@pytest.mark.usefixtures("catalogue")
class TestInternationalPostage:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return shop_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url, international_postage=600)

    def test_an_order_posted_abroad_pays_the_international_postage_once(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        response = buy(client, {"TEE-SOLIDARITY-M": "2", "TEE-LMHR-L": "1"}, donation="5", checkout_ref=ref, **PARIS)
        assert response.status_code == 303, response.text

        [order] = rows(runtime, Order)
        [checkout] = rows(runtime, Checkout)
        lines = {line.sku: line for line in rows(runtime, OrderLine, col(OrderLine.sku))}
        assert set(lines) == {"TEE-LMHR-L", "TEE-SOLIDARITY-M", shop.POSTAGE_SKU}
        postage = lines[shop.POSTAGE_SKU]
        # Postage is part of the sale: goods, at the goods' VAT rate (the VAT in £6.00 at 20% is £1.00).
        assert (postage.product_name, postage.size, postage.quantity, postage.unit_price, postage.vat_amount) == (
            "Postage outside the UK",
            "",
            1,
            600,
            100,
        )
        assert (postage.partner_campaign_id, postage.partner_share_amount) == (None, 0)
        # Shirts £48.00 (VAT £8.00) + postage £6.00 (VAT £1.00) + donation £5.00.
        assert (order.goods_amount, order.vat_amount, order.donation_amount) == (4500, 900, 500)
        assert checkout.amount == order.goods_amount + order.vat_amount + order.donation_amount == 5900

        [sent] = stripe.requests
        sent_lines = {k: v for k, v in form_of(sent).items() if k.startswith("line_items")}
        assert sent_lines == {
            "line_items[0][price_data][currency]": "gbp",
            "line_items[0][price_data][unit_amount]": "1800",
            "line_items[0][price_data][product_data][name]": "Love Music Hate Racism T-shirt (size L)",
            "line_items[0][price_data][product_data][metadata][sku]": "TEE-LMHR-L",
            "line_items[0][quantity]": "1",
            "line_items[1][price_data][currency]": "gbp",
            "line_items[1][price_data][unit_amount]": "1500",
            "line_items[1][price_data][product_data][name]": "Solidarity not charity T-shirt (size M)",
            "line_items[1][price_data][product_data][metadata][sku]": "TEE-SOLIDARITY-M",
            "line_items[1][quantity]": "2",
            "line_items[2][price_data][currency]": "gbp",
            "line_items[2][price_data][unit_amount]": "600",
            "line_items[2][price_data][product_data][name]": "Postage outside the UK",
            "line_items[2][quantity]": "1",
            "line_items[3][price_data][currency]": "gbp",
            "line_items[3][price_data][unit_amount]": "500",
            "line_items[3][price_data][product_data][name]": "Donation",
            "line_items[3][quantity]": "1",
        }
        # Stripe Checkout collects no address of its own: the one on our form is where the shirts go.
        assert not any(key.startswith("shipping") for key in form_of(sent))

        # The same form again (back from Stripe) is the same checkout, the same session.
        again = buy(client, {"TEE-SOLIDARITY-M": "2", "TEE-LMHR-L": "1"}, donation="5", checkout_ref=ref, **PARIS)
        assert again.headers["location"] == response.headers["location"]
        assert len(rows(runtime, Order)) == 1 and len(stripe.requests) == 1

    def test_a_uk_order_pays_no_postage(self, client: TestClient, runtime: Runtime, stripe: StripeCheckout) -> None:
        assert buy(client, {"TEE-SOLIDARITY-M": "1"}).status_code == 303
        assert [line.sku for line in rows(runtime, OrderLine)] == ["TEE-SOLIDARITY-M"]
        assert rows(runtime, Checkout)[0].amount == 1500

    def test_paying_takes_stock_for_the_shirts_only(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        assert buy(client, {"TEE-SOLIDARITY-M": "2"}, **PARIS).status_code == 303
        [order] = rows(runtime, Order)
        before = {s.sku: s.stock for s in rows(runtime, Sku)}
        with runtime.unit_of_work() as uow:
            paid = uow.session.get(Order, order.id)
            assert paid is not None
            shop.take_stock(uow, paid)
        after = {s.sku: s.stock for s in rows(runtime, Sku)}
        assert {sku: before[sku] - after[sku] for sku in before if before[sku] != after[sku]} == {"TEE-SOLIDARITY-M": 2}

    def test_the_shop_page_shows_the_price_abroad(self, client: TestClient) -> None:
        assert "Postage to an address anywhere else is £6.00 per order" in client.get("/shop").text


def test_the_countries_setting_is_iso_codes_separated_by_commas() -> None:
    assert ShopSettings(uk_postage_countries=" gb, im ").uk_postage == {"GB", "IM"}
    assert shop.postage_for(ShopSettings(uk_postage_countries="GB", international_postage=450), "JE") == 450
    assert shop.postage_for(ShopSettings(uk_postage_countries="GB"), "JE") is None
    for wrong in ("GBR", "", "G1"):
        with pytest.raises(ValidationError):
            ShopSettings(uk_postage_countries=wrong)
