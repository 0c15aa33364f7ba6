"""contract.md: 'Errors are `{"error": "<Code>", "detail": "<words>"}` with a fitting 4xx/5xx status' — a NUL in a
query or path parameter of the payments API (PostgreSQL refuses NUL in text) is the caller's mistake: 400 or 404,
never a 500. `GET /api/payouts/{id}` takes our id or the provider's (`po_...`/`PO...`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.payments import factories_money as make


@pytest.fixture
def lenient(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a browser sees it: a server error is a 500 answer, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/payouts/po_%00x", 404),
        ("/api/orders?status=paid%00", 400),
        ("/api/orders?status=posted", 400),
        ("/api/shop/partner-statement?from=2025-01-01&to=2025-12-31&campaign=a%00", 400),
    ],
)
def test_a_nul_or_an_unknown_value_is_the_callers_mistake(
    path: str, status: int, runtime: Runtime, lenient: TestClient
) -> None:
    headers = {"Authorization": f"Bearer {make.staff_token(runtime, 'admin')}"}
    response = lenient.get(path, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}


def test_every_order_status_may_be_asked_for(runtime: Runtime, lenient: TestClient) -> None:
    from payments.models import OrderStatus

    headers = {"Authorization": f"Bearer {make.staff_token(runtime, 'fundraiser')}"}
    for value in OrderStatus:
        response = lenient.get(f"/api/orders?status={value.value}", headers=headers)
        assert response.status_code == 200, (value, response.text)
        assert response.json() == {"items": []}
