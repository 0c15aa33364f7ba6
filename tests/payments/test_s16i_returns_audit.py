"""`POST /api/orders/{id}/returns` with a key the endpoint never reads (session 16 review).

The audit entry kept the request's `lines` as sent, every key of them. A NUL in one (`"note": "a\\u0000b"`), which
PostgreSQL's jsonb refuses, turned a return that had been checked and applied into a 500 with nothing recorded.
The audit now keeps what was returned: each line's id or SKU and its quantity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from core.settings import Settings
from payments.models import OrderLine
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def test_a_return_with_an_unread_key_holding_a_nul_is_recorded_and_audited(
    runtime: Runtime, client: TestClient
) -> None:
    make.product(runtime, "TEE-AUD", 1500, {"M": 8}, None)
    order_id = make.order(runtime, make.supporter(runtime), [{"sku": "TEE-AUD-M", "quantity": 2, "unit_price": 1500}])
    token = make.staff_token(runtime, "fundraiser")
    body = {"lines": [{"sku": "TEE-AUD-M", "quantity": 1, "note": "parcel\u0000torn"}]}

    response = client.post(
        f"/api/orders/{order_id}/returns",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )

    assert response.status_code == 200, response.text
    with runtime.read_session() as session:
        line = session.exec(select(OrderLine).where(OrderLine.order_id == order_id)).one()
        assert line.refunded_quantity == 1
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "record_return")).all()
        assert entry.object_id == str(order_id)
        assert entry.detail == {"lines": [{"sku": "TEE-AUD-M", "quantity": 1}]}


def test_a_return_by_line_id_is_audited_by_that_id(runtime: Runtime, client: TestClient) -> None:
    make.product(runtime, "TEE-AUD", 1500, {"M": 8}, None)
    order_id = make.order(runtime, make.supporter(runtime), [{"sku": "TEE-AUD-M", "quantity": 2, "unit_price": 1500}])
    with runtime.read_session() as session:
        line_id = str(session.exec(select(OrderLine.id).where(OrderLine.order_id == order_id)).one())
    token = make.staff_token(runtime, "fundraiser")

    response = client.post(
        f"/api/orders/{order_id}/returns",
        json={"lines": [{"line_id": line_id, "quantity": 2}]},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 200, response.text
    with runtime.read_session() as session:
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "record_return")).all()
        assert entry.detail == {"lines": [{"line_id": line_id, "quantity": 2}]}
