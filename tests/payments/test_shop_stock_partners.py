"""The shop after the sale: stock and the low-stock list, fulfilment, shirts sent back, partner shares and the
partner statement."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import shop
from payments.models import Order, OrderLine, OrderStatus, Sku
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, run_giving


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless, shop={"low_stock_threshold": 3})


def stock_of(runtime: Runtime, code: str) -> int:
    with runtime.read_session() as session:
        return session.exec(select(Sku).where(Sku.sku == code)).one().stock


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_vat_inside_a_price_and_partner_shares_per_shirt_and_percent_of_net() -> None:
    assert shop.vat_included(1500, 2000) == 250
    assert shop.vat_included(1000, 2000) == 167  # 166.67 rounded half up
    assert shop.vat_included(1500, 0) == 0
    per_item = make_campaign("per_item", 500)
    percent = make_campaign("percent_of_net", 1250)  # 12.5% of the net
    line = OrderLine(
        order_id=uuid.uuid4(), sku="S", product_name="T", size="M", quantity=3, unit_price=1800, vat_amount=900
    )
    assert shop.partner_share_for(per_item, line) == 1500
    assert shop.partner_share_for(percent, line) == 563  # 12.5% of (5400 - 900) = 562.5, half up
    line.refunded_quantity = 1
    assert shop.partner_share_for(per_item, line) == 1000
    assert shop.partner_share_for(percent, line) == 375  # 12.5% of 3000


def make_campaign(kind: str, value: int) -> Any:
    from payments.models import PartnerCampaign

    return PartnerCampaign(code="X", name="X", partner_name="X", share_kind=kind, share_value=value)


def shop_with_an_order(runtime: Runtime) -> dict[str, Any]:
    lmhr = make.campaign(runtime, "LMHR", "per_item", 500)
    make.product(runtime, "TEE-LMHR", 1800, {"S": 4, "M": 10}, lmhr)
    make.product(runtime, "TEE-PLAIN", 1500, {"M": 2, "L": 8})
    donor = make.supporter(runtime)
    order_id = make.order(
        runtime,
        donor,
        [
            {
                "sku": "TEE-LMHR-M",
                "quantity": 3,
                "unit_price": 1800,
                "partner_campaign_id": lmhr,
                "partner_share_amount": 1500,
            },
            {"sku": "TEE-PLAIN-L", "quantity": 1, "unit_price": 1500},
        ],
        stripe_charge_id="ch_shop_1",
    )
    with runtime.unit_of_work() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        shop.take_stock(uow, order)
    return {"order": order_id, "campaign": lmhr, "donor": donor}


def test_a_paid_order_takes_stock_and_shirts_sent_back_return_it_and_reduce_the_partner_share(
    runtime: Runtime, client: TestClient
) -> None:
    made = shop_with_an_order(runtime)
    assert (stock_of(runtime, "TEE-LMHR-M"), stock_of(runtime, "TEE-PLAIN-L")) == (7, 7)
    token = make.staff_token(runtime, "fundraiser")

    response = client.post(
        f"/api/orders/{made['order']}/returns",
        json={"lines": [{"sku": "TEE-LMHR-M", "quantity": 2}]},
        headers=auth(token),
    )

    assert response.status_code == 200, response.text
    line = next(line for line in response.json()["lines"] if line["sku"] == "TEE-LMHR-M")
    assert (line["returned"], line["partner_share"]["amount"]) == (2, 500)
    assert stock_of(runtime, "TEE-LMHR-M") == 9

    too_many = client.post(
        f"/api/orders/{made['order']}/returns",
        json={"lines": [{"sku": "TEE-PLAIN-L", "quantity": 1}, {"sku": "TEE-LMHR-M", "quantity": 2}]},
        headers=auth(token),
    )
    assert too_many.status_code == 400
    assert "1 shirt(s) left to return" in too_many.json()["detail"]
    assert (stock_of(runtime, "TEE-PLAIN-L"), stock_of(runtime, "TEE-LMHR-M")) == (7, 9), "nothing half-written"
    assert (
        client.post(f"/api/orders/{made['order']}/returns", json={"lines": []}, headers=auth(token)).status_code == 400
    )
    assert (
        client.post(f"/api/orders/{made['order']}/returns", json={"lines": [{"sku": "X", "quantity": 1}]}).status_code
        == 401
    )


def test_low_stock_list_through_the_api_and_the_command(
    runtime: Runtime, client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shop_with_an_order(runtime)  # TEE-PLAIN-M has 2, TEE-LMHR-S 4 (threshold 3)
    token = make.staff_token(runtime, "fundraiser")

    low = client.get("/api/shop/low-stock", headers=auth(token)).json()
    assert low["threshold"] == 3
    assert [(row["sku"], row["stock"]) for row in low["items"]] == [("TEE-PLAIN-M", 2)]
    every = client.get("/api/shop/stock", headers=auth(token)).json()["items"]
    assert [row["sku"] for row in every] == ["TEE-LMHR-S", "TEE-LMHR-M", "TEE-PLAIN-M", "TEE-PLAIN-L"]

    result = run_giving(["shop", "low-stock", "--json"], settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    assert [row["sku"] for row in json.loads(result.stdout)["items"]] == ["TEE-PLAIN-M"]


def test_staff_mark_a_paid_order_fulfilled_once(runtime: Runtime, client: TestClient) -> None:
    made = shop_with_an_order(runtime)
    token = make.staff_token(runtime, "fundraiser")

    first = client.post(f"/api/orders/{made['order']}/fulfil", headers=auth(token))
    assert first.status_code == 200 and first.json()["fulfilled"] is True
    again = client.post(f"/api/orders/{made['order']}/fulfil", headers=auth(token))
    assert again.json()["fulfilled_at"] == first.json()["fulfilled_at"]
    unfulfilled = client.get("/api/orders?unfulfilled=1", headers=auth(token)).json()["items"]
    assert unfulfilled == []

    refunded = make.order(
        runtime, made["donor"], [{"sku": "TEE-PLAIN-M", "quantity": 1, "unit_price": 1500}], status=OrderStatus.REFUNDED
    )
    refused = client.post(f"/api/orders/{refunded}/fulfil", headers=auth(token))
    assert refused.status_code == 409
    assert client.post(f"/api/orders/{uuid.uuid4()}/fulfil", headers=auth(token)).status_code == 404
    assert client.post("/api/orders/not-an-id/fulfil", headers=auth(token)).status_code == 400


def test_partner_statement_reports_what_is_owed_per_campaign_and_period(
    runtime: Runtime, client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = shop_with_an_order(runtime)  # paid 2 March 2026: 3 LMHR shirts, 15.00 owed
    other = make.campaign(runtime, "BOATS", "percent_of_net", 1000)
    make.order(
        runtime,
        made["donor"],
        [
            {
                "sku": "TEE-LMHR-S",
                "quantity": 1,
                "unit_price": 1800,
                "partner_campaign_id": made["campaign"],
                "partner_share_amount": 500,
            },
            {
                "sku": "TEE-BOATS-M",
                "quantity": 2,
                "unit_price": 2000,
                "partner_campaign_id": other,
                "partner_share_amount": 400,
            },
        ],
        # 23:30 on 31 March UTC is 00:30 on 1 April in the UK (BST): April's statement.
        paid_at=dt.datetime(2026, 3, 31, 23, 30, tzinfo=dt.UTC),
    )
    make.order(
        runtime,
        made["donor"],
        [
            {
                "sku": "TEE-LMHR-M",
                "quantity": 5,
                "unit_price": 1800,
                "partner_campaign_id": made["campaign"],
                "partner_share_amount": 2500,
            }
        ],
        status=OrderStatus.PENDING,  # never paid: owes nothing
    )
    with runtime.unit_of_work() as uow:
        shop.record_returns(uow, made["order"], [{"sku": "TEE-LMHR-M", "quantity": 1}])

    result = run_giving(
        ["shop", "partner-statement", "--from", "2026-03-01", "--to", "2026-03-31", "--json"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    march = json.loads(result.stdout)
    by_code = {c["code"]: c for c in march["campaigns"]}
    assert (by_code["LMHR"]["shirts_sold"], by_code["LMHR"]["shirts_returned"]) == (3, 1)
    assert by_code["LMHR"]["owed"] == {"amount": 1000, "currency": "GBP"}
    assert by_code["BOATS"]["owed"]["amount"] == 0
    assert march["total_owed"]["amount"] == 1000

    april = run_giving(
        ["shop", "partner-statement", "--campaign", "BOATS", "--from", "2026-04-01", "--to", "2026-04-30", "--csv"],
        settings,
        monkeypatch,
        tmp_path,
    )
    rows = list(csv.DictReader(io.StringIO(april.stdout)))
    assert [(r["campaign"], r["sku"], r["quantity"], r["share"]) for r in rows] == [
        ("BOATS", "TEE-BOATS-M", "2", "4.00")
    ]

    finance = make.staff_token(runtime, "finance")
    api = client.get("/api/shop/partner-statement?from=2026-04-01&to=2026-04-30", headers=auth(finance)).json()
    assert {c["code"]: c["owed"]["amount"] for c in api["campaigns"]} == {"BOATS": 400, "LMHR": 500}
    fundraiser = make.staff_token(runtime, "fundraiser")
    assert (
        client.get("/api/shop/partner-statement?from=2026-04-01&to=2026-04-30", headers=auth(fundraiser)).status_code
        == 403
    )
    table = run_giving(
        ["shop", "partner-statement", "--from", "2026-04-01", "--to", "2026-04-30"], settings, monkeypatch, tmp_path
    )
    assert "LMHR" in table.stdout and "£5.00" in table.stdout and "£9.00" in table.stdout
