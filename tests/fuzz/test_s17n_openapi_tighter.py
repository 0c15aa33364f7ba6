"""`GET /api/openapi.json` is no looser than the API: a body or query value the endpoint refuses with 400 (a consent
channel that is none of email, post, phone; an interest that is no short word; a title of more than 4 letters; an
order status that is none) is one the document refuses too, and values the endpoint takes (a `?limit=` above a page,
which is served a page and `next`) are ones it allows. Found in review: `consents.channel` was any string."""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema_rs
import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import make_supporter, staff_token
from tests.payments import factories_money as money


def schema_of(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def body_errors(document: dict[str, Any], path: str, method: str, body: Any) -> list[str]:
    described = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return [e.message for e in schema_of(document, described).iter_errors(body)]


def query_errors(document: dict[str, Any], path: str, method: str, name: str, value: Any) -> list[str]:
    (param,) = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
    return [e.message for e in schema_of(document, param["schema"]).iter_errors(value)]


ADDRESS = {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 Acacia Avenue", "postcode": "CT16 1AA"}
DECLARATION = {"method": "written", "made_on": "2026-03-02", "scope": "past_4_years_and_future"}
REFUSED_BODIES = [
    ("consents", {"channel": "sms", "status": "granted"}),
    ("consents", {"channel": "EMAIL ", "status": "granted"}),
    ("interests", {"kind": "x!"}),
    ("interests", {"kind": "9 lives"}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "title": "Sirrr"}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "title": "M1"}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "country": "GBR"}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "first_name": "A" * 36}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "last_name": ""}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "address_line1": "1" + " x" * 50}}),
    ("declarations", {**DECLARATION, "address": {**ADDRESS, "town": "T" * 61}}),
]


@pytest.mark.parametrize(("endpoint", "body"), REFUSED_BODIES)
def test_a_supporter_body_the_api_refuses_is_one_the_document_refuses(
    runtime: Runtime, client: TestClient, endpoint: str, body: dict[str, Any]
) -> None:
    supporter = make_supporter(runtime)
    answer = client.post(f"/api/supporters/{supporter}/{endpoint}", json=body, headers=staff_token(runtime, "admin"))
    assert answer.status_code == 400, answer.text
    document = client.get("/api/openapi.json").json()
    assert body_errors(document, f"/api/supporters/{{supporter_id}}/{endpoint}", "post", body) != []


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("consents", {"channel": "post", "status": "withdrawn"}),
        ("interests", {"kind": "Volunteering"}),
        ("declarations", {**DECLARATION, "address": {**ADDRESS, "title": "Dr.", "country": "gb"}}),
    ],
)
def test_a_supporter_body_the_api_takes_is_one_the_document_allows(
    runtime: Runtime, client: TestClient, endpoint: str, body: dict[str, Any]
) -> None:
    supporter = make_supporter(runtime)
    answer = client.post(f"/api/supporters/{supporter}/{endpoint}", json=body, headers=staff_token(runtime, "admin"))
    assert answer.status_code == 201, answer.text
    document = client.get("/api/openapi.json").json()
    assert body_errors(document, f"/api/supporters/{{supporter_id}}/{endpoint}", "post", body) == []


def test_payments_and_receipts_values_the_api_refuses_are_ones_the_document_refuses(
    runtime: Runtime, client: TestClient
) -> None:
    admin = staff_token(runtime, "admin")
    document = client.get("/api/openapi.json").json()
    assert client.get("/api/orders?status=posted", headers=admin).status_code == 400
    assert query_errors(document, "/api/orders", "get", "status", "posted") != []
    assert query_errors(document, "/api/orders", "get", "status", "paid") == []
    assert client.get("/api/payouts?offset=1000000001", headers=admin).status_code == 400
    assert query_errors(document, "/api/payouts", "get", "offset", 1000000001) != []
    order = money.order(runtime, money.supporter(runtime), [{"sku": "TEE-M", "quantity": 1, "unit_price": 2000}])
    for lines in ([{"sku": "TEE-M", "quantity": 0}], [{"sku": "TEE-M"}], [{"quantity": 1}]):
        answer = client.post(f"/api/orders/{order}/returns", json={"lines": lines}, headers=admin)
        assert answer.status_code == 400, (lines, answer.text)
        assert body_errors(document, "/api/orders/{order_id}/returns", "post", {"lines": lines}) != [], lines
    resend = client.post(f"/api/receipts/documents/{uuid.uuid4()}/resend", json={"to_email": "nobody"}, headers=admin)
    assert resend.status_code == 400, resend.text
    assert body_errors(document, "/api/receipts/documents/{document_id}/resend", "post", {"to_email": "nobody"})


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("/api/supporters", "/api/supporters?q=ada&limit=5000"),
        ("/api/payouts", "/api/payouts?limit=5000"),
        ("/api/orders", "/api/orders?limit=5000"),
        ("/api/review-items", "/api/review-items?limit=5000"),
        ("/api/supporters/{supporter_id}/history", "/api/supporters/{supporter_id}/history?limit=5000"),
    ],
)
def test_a_limit_above_a_page_is_taken_and_allowed(runtime: Runtime, client: TestClient, path: str, url: str) -> None:
    supporter = make_supporter(runtime)
    answer = client.get(url.replace("{supporter_id}", str(supporter)), headers=staff_token(runtime, "admin"))
    assert answer.status_code == 200, answer.text
    document = client.get("/api/openapi.json").json()
    assert query_errors(document, path, "get", "limit", 5000) == []
    assert query_errors(document, path, "get", "limit", 0) != []
