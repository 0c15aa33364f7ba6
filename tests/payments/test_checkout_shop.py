"""GET /shop and POST /shop/checkout through the real endpoints, with the real Stripe SDK talking to a fake Stripe.

The basket is stored (order, lines, partner shares, VAT) before the donor is sent to Stripe; each test runs on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Consent, Declaration
from payments.models import Checkout, Order, OrderLine, PartnerCampaign, Sku
from payments.service import ensure_default_catalogue
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import DONOR, StripeCheckout, checkout_settings, form_of, nothing_recorded

SKUS = [f"TEE-{product}-{size}" for product in ("LMHR", "SOLIDARITY") for size in ("S", "M", "L", "XL")]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url,
        tmp_path,
        fake_stripe.url,
        fake_gocardless.url,
        shop={"vat_rate_bp": 2000},
        web={"form_rate_per_minute": 1000},
    )


@pytest.fixture
def catalogue(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        ensure_default_catalogue(uow)
        sold_out = uow.session.exec(select(Sku).where(Sku.sku == "TEE-LMHR-XL")).one()
        sold_out.stock = 0
        uow.session.add(sold_out)


@pytest.fixture
def stripe(fake_stripe: FakeProvider) -> StripeCheckout:
    return StripeCheckout(fake_stripe)


def buy(client: TestClient, basket: dict[str, str], **fields: Any) -> Any:
    """Posts the form as the shop page does: every SKU with its quantity (0 unless in `basket`), in page order."""
    form: list[tuple[str, str]] = []
    for sku in SKUS:
        form += [("sku", sku), ("quantity", basket.pop(sku, "0"))]
    for sku, quantity in basket.items():  # SKUs the page does not list
        form += [("sku", sku), ("quantity", quantity)]
    form += [(k, v) for k, v in {**DONOR, **fields}.items() if v is not None]
    body = urlencode(form)
    return client.post(
        "/shop/checkout",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
        follow_redirects=False,
    )


def rows(runtime: Runtime, model: Any, *order_by: Any) -> list[Any]:
    with runtime.sessions() as session:
        return list(session.exec(select(model).order_by(*order_by)).all())


@pytest.mark.usefixtures("catalogue")
class TestShopPage:
    def test_lists_every_size_as_a_sku_with_its_price_and_shows_what_is_sold_out(self, client: TestClient) -> None:
        page = client.get("/shop")
        assert page.status_code == 200
        assert re.findall(r'<input name="sku" value="([^"]+)"', page.text) == SKUS
        assert "£15.00" in page.text and "£18.00" in page.text
        assert re.search(r'<span class="sold-out" id="quantity-TEE-LMHR-XL">Out of stock</span>', page.text)
        assert 'id="quantity-TEE-LMHR-L" name="quantity" type="number"' in page.text
        assert "Love Music Hate Racism" in page.text
        for name in ("donation", "first_name", "address_line1", "postcode", "gift_aid", "email_updates", "website"):
            assert f'name="{name}"' in page.text


@pytest.mark.usefixtures("catalogue")
class TestBasket:
    def test_the_basket_is_stored_then_one_stripe_session_has_a_line_per_sku_and_the_donation(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = buy(
            client,
            {"TEE-SOLIDARITY-M": "2", "TEE-LMHR-L": "1"},
            donation="5",
            gift_aid="yes",
            email_updates="yes",
        )

        assert response.status_code == 303
        assert response.headers["location"] == "https://checkout.stripe.test/c/pay/cs_test_0001"
        [order] = rows(runtime, Order)
        [checkout] = rows(runtime, Checkout)
        [declaration] = rows(runtime, Declaration)
        [consent] = rows(runtime, Consent)
        lmhr, solidarity = rows(runtime, OrderLine, col(OrderLine.sku))
        [campaign] = rows(runtime, PartnerCampaign)
        # Prices include VAT at 20%: the VAT in £30.00 is £5.00, in £18.00 it is £3.00.
        assert (order.status, order.goods_amount, order.vat_amount, order.donation_amount) == (
            "pending",
            4000,
            800,
            500,
        )
        assert order.supporter_id == checkout.supporter_id
        assert (lmhr.sku, lmhr.product_name, lmhr.size, lmhr.quantity, lmhr.unit_price, lmhr.vat_amount) == (
            "TEE-LMHR-L",
            "Love Music Hate Racism T-shirt",
            "L",
            1,
            1800,
            300,
        )
        assert (lmhr.partner_campaign_id, lmhr.partner_share_amount) == (campaign.id, 500)
        assert (solidarity.sku, solidarity.quantity, solidarity.unit_price, solidarity.vat_amount) == (
            "TEE-SOLIDARITY-M",
            2,
            1500,
            500,
        )
        assert (solidarity.partner_campaign_id, solidarity.partner_share_amount) == (None, 0)
        assert (checkout.kind, checkout.order_id, checkout.amount, checkout.status) == ("shop", order.id, 5300, "open")
        assert (checkout.declaration_id, checkout.stripe_checkout_session_id) == (declaration.id, "cs_test_0001")
        assert (declaration.source, consent.source) == ("shop", "shop")
        # Stock is taken when the order is paid, not when the donor goes to pay.
        assert {s.sku: s.stock for s in rows(runtime, Sku)}["TEE-SOLIDARITY-M"] == 30

        [sent] = stripe.requests
        assert sent.headers["idempotency-key"] == f"checkout:{checkout.id}:session"
        ids = {
            "checkout_id": str(checkout.id),
            "supporter_id": str(checkout.supporter_id),
            "declaration_id": str(declaration.id),
            "order_id": str(order.id),
        }
        assert form_of(sent) == {
            "mode": "payment",
            "client_reference_id": str(checkout.id),
            "customer_email": "amina.okafor@example.org",
            "success_url": f"http://testserver/shop/thank-you?checkout={checkout.id}",
            "cancel_url": f"http://testserver/shop/cancelled?checkout={checkout.id}",
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
            "line_items[2][price_data][unit_amount]": "500",
            "line_items[2][price_data][product_data][name]": "Donation",
            "line_items[2][quantity]": "1",
            **{f"metadata[{k}]": v for k, v in ids.items()},
            **{f"payment_intent_data[metadata][{k}]": v for k, v in ids.items()},
        }

    def test_no_donation_means_no_donation_line_and_a_share_can_be_a_percentage_of_the_net(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        with runtime.unit_of_work() as uow:
            campaign = uow.session.exec(select(PartnerCampaign)).one()
            campaign.share_kind, campaign.share_value = "percent_of_net", 1000  # 10% of the net
            uow.session.add(campaign)

        assert buy(client, {"TEE-LMHR-S": "3"}).status_code == 303

        [line] = rows(runtime, OrderLine)
        assert (line.quantity, line.vat_amount, line.partner_share_amount) == (3, 900, 450)  # 10% of £45 net
        [order] = rows(runtime, Order)
        assert (order.goods_amount, order.vat_amount, order.donation_amount) == (4500, 900, 0)
        assert order.vat_rate_bp == runtime.settings.shop.vat_rate_bp == 2000  # kept for its sale receipt
        sent = form_of(stripe.requests[0])
        assert "line_items[1][quantity]" not in sent and "metadata[declaration_id]" not in sent

    def test_repeated_lines_of_one_sku_are_one_line(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        unpaired = client.post("/shop/checkout", data={**DONOR, "sku": ["TEE-LMHR-S", "TEE-LMHR-M"], "quantity": ["1"]})
        assert unpaired.status_code == 400 and "Each shirt needs a quantity" in unpaired.text
        response = client.post(
            "/shop/checkout",
            data={**DONOR, "sku": ["TEE-LMHR-S", "TEE-LMHR-S"], "quantity": ["1", "2"]},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert [(line.sku, line.quantity) for line in rows(runtime, OrderLine)] == [("TEE-LMHR-S", 3)]


BAD_BASKETS = [
    # (basket, other fields, status, words of the message)
    ({"TEE-BOGUS-M": "1"}, {}, 400, "We do not sell"),
    ({"TEE-SOLIDARITY-M": "31"}, {}, 409, "only 30 left in size M"),
    ({"TEE-LMHR-XL": "1"}, {}, 409, "size XL is sold out"),
    ({}, {}, 400, "Choose at least one shirt"),
    ({}, {"donation": "10"}, 400, "Choose at least one shirt"),
    ({"TEE-LMHR-S": "-1"}, {}, 400, "whole number"),
    ({"TEE-LMHR-S": "two"}, {}, 400, "whole number"),
    ({"TEE-LMHR-S": "51"}, {}, 400, "At most 50"),
    ({"TEE-LMHR-S": "1"}, {"donation": "0.50"}, 400, "smallest donation"),
    ({"TEE-LMHR-S": "1"}, {"donation": "1.001"}, 400, "2 decimal places"),
    ({"TEE-LMHR-S": "1"}, {"address_line1": ""}, 400, "first line of the address"),
    ({"TEE-LMHR-S": "1"}, {"town": ""}, 400, "town or city"),
    ({"TEE-LMHR-S": "1"}, {"postcode": ""}, 400, "UK postcode"),
    ({"TEE-LMHR-S": "1"}, {"website": "spam"}, 400, "could not accept"),
]


@pytest.mark.usefixtures("catalogue")
class TestBadBaskets:
    def test_each_re_renders_the_shop_with_its_error_and_creates_nothing(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout, fake_stripe: FakeProvider
    ) -> None:
        for basket, fields, status, message in BAD_BASKETS:
            response = buy(client, dict(basket), **fields)
            assert response.status_code == status, (basket, fields, response.text[:200])
            assert "There is a problem" in response.text and message in response.text, (basket, fields)
            assert re.findall(r'<input name="sku" value="([^"]+)"', response.text) == SKUS
        assert nothing_recorded(runtime)
        assert fake_stripe.requests == []

    def test_what_was_typed_is_kept(self, client: TestClient, stripe: StripeCheckout) -> None:
        response = buy(client, {"TEE-SOLIDARITY-M": "31", "TEE-LMHR-S": "2"}, donation="7.50")
        assert response.status_code == 409
        assert 'id="quantity-TEE-LMHR-S" name="quantity" type="number"' in response.text
        assert re.search(r'id="quantity-TEE-LMHR-S"[^>]*value="2"', response.text)
        assert 'value="7.50"' in response.text and 'value="Okafor"' in response.text


@pytest.mark.usefixtures("catalogue")
class TestShopClosed:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, stripe={"webhook_secret": ""}
        )

    def test_without_stripe_the_checkout_answers_503_and_records_nothing(
        self, client: TestClient, runtime: Runtime, fake_stripe: FakeProvider
    ) -> None:
        assert "cannot take card payments" in client.get("/shop").text
        response = buy(client, {"TEE-LMHR-S": "1"})
        assert response.status_code == 503
        assert nothing_recorded(runtime) and fake_stripe.requests == []
