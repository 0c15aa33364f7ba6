"""contract.md: the staff JSON API answers `401` without a valid token and `403` for a role that may not, before
anything else. Found in review: a caller with a revoked or made-up token, or a fundraiser on finance's endpoints,
got 400 or 404 when the path, query or body was also off (the request was read before the caller was checked)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import staff_token

MADE_UP = {"Authorization": "Bearer not-a-real-token"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/giftaid/claims", {"through": "not a date"}),
        ("POST", "/api/giftaid/claims", None),
        ("GET", "/api/payouts?limit=0", None),
        ("GET", "/api/supporters/00000000-0000-0000-0000-000000000000/history?limit=abc", None),
        ("GET", "/api/supporters/not-an-id", None),
    ],
    ids=["claims-bad-body", "claims-no-body", "payouts-bad-limit", "history-bad-limit", "supporter-bad-id"],
)
def test_a_token_that_is_not_valid_is_401_whatever_the_request(
    client: TestClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    answer = client.request(method, path, headers=MADE_UP, json=body)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/giftaid/claims", {"through": "not a date"}),
        ("POST", "/api/giftaid/claims/00000000-0000-0000-0000-000000000000/status", {"status": "nonsense"}),
        ("GET", "/api/payouts?limit=0", None),
    ],
    ids=["claims-bad-body", "status-bad-body", "payouts-bad-limit"],
)
def test_a_fundraiser_is_403_on_finances_endpoints_whatever_the_request(
    client: TestClient, runtime: Runtime, method: str, path: str, body: dict[str, str] | None
) -> None:
    answer = client.request(method, path, headers=staff_token(runtime, "fundraiser"), json=body)
    assert answer.status_code == 403, answer.text


def test_a_valid_token_still_gets_the_400_its_request_earns(client: TestClient, runtime: Runtime) -> None:
    finance = staff_token(runtime, "finance")
    assert client.post("/api/giftaid/claims", headers=finance, json={"through": "not a date"}).status_code == 400
    assert client.get("/api/payouts?limit=0", headers=finance).status_code == 400
