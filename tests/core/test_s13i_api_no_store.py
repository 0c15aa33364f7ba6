"""The JSON API's answers carry supporters' personal data (names, addresses, gifts; a claim's schedule lists every
donor): like the staff pages, they are sent `Cache-Control: no-store`, so no browser or proxy cache keeps them."""

from __future__ import annotations

import uuid

from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import make_supporter, staff_token


def test_api_answers_are_not_kept_in_any_cache(runtime: Runtime, client: TestClient) -> None:
    supporter_id = make_supporter(runtime)
    headers = staff_token(runtime, "finance")
    for path in (
        f"/api/supporters/{supporter_id}",
        f"/api/supporters/{supporter_id}/history",
        "/api/supporters?q=ada",
        "/api/giftaid/claims",
        f"/api/supporters/{uuid.uuid4()}",  # a 404 too
    ):
        answer = client.get(path, headers=headers)
        assert answer.status_code in (200, 404), (path, answer.text)
        assert answer.headers.get("cache-control") == "no-store", path
    assert client.get("/api/supporters?q=ada").headers.get("cache-control") == "no-store"  # the 401


def test_public_assets_stay_cacheable(client: TestClient) -> None:
    assert client.get("/staff/static/staff.css").headers.get("cache-control") != "no-store"
    assert client.get("/assets/checkout.css").headers.get("cache-control") == "max-age=3600"
