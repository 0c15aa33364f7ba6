"""contract.md, staff JSON API: "`401` without, `403` for a role that may not". Gift Aid claims are for finance and
admin: a fundraiser is told 403 whatever claim id, `?part=` or body it sends, not 404 or 400 (which would tell it
how its request was wrong, and a client could not tell a refusal from a typo)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import staff_token

REQUESTS = [
    ("GET", "/api/giftaid/claims/not-a-claim"),
    ("GET", "/api/giftaid/claims/not-a-claim/schedule.ods"),
    ("GET", "/api/giftaid/claims/00000000-0000-0000-0000-000000000000/schedule.ods?part=0"),
    ("GET", "/api/giftaid/claims/not-a-claim/claim.xml"),
    ("GET", "/api/giftaid/claims/00000000-0000-0000-0000-000000000000/claim.xml?part=x"),
    ("GET", "/api/giftaid/claims/not-a-claim/messages"),
    ("POST", "/api/giftaid/claims/not-a-claim/status"),
    ("POST", "/api/giftaid/claims/not-a-claim/submit"),
    ("POST", "/api/giftaid/claims/not-a-claim/poll"),
    ("POST", "/api/giftaid/claims/not-a-claim/attach"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_a_fundraiser_is_refused_whatever_the_claim_id_or_part(
    method: str, path: str, runtime: Runtime, client: TestClient
) -> None:
    fundraiser = staff_token(runtime, "fundraiser")
    response = client.request(method, path, headers=fundraiser, json={"status": "paid"} if method == "POST" else None)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "Forbidden"


@pytest.mark.parametrize(("method", "path"), REQUESTS[:2])
def test_finance_is_still_told_what_is_wrong_with_the_id(
    method: str, path: str, runtime: Runtime, client: TestClient
) -> None:
    finance = staff_token(runtime, "finance")
    response = client.request(method, path, headers=finance)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "ClaimNotFound"


def test_finance_is_told_a_bad_part_is_a_bad_request(runtime: Runtime, client: TestClient) -> None:
    finance = staff_token(runtime, "finance")
    response = client.get(REQUESTS[2][1], headers=finance)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "InvalidClaimRequest"
