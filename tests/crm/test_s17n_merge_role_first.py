"""contract.md: the staff JSON API answers `403` for a role that may not. Found in review: finance (who may read but
not merge) asking `POST /api/supporters/{id}/merge` with an id that is no id at all was told 404 (the path was read
before the caller's role); `GET` on the same path already answered 403. Role first, then path, query, body."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import make_supporter, staff_token


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/supporters/not-an-id/merge", {"into": "00000000-0000-0000-0000-000000000000"}),
        ("POST", "/api/supporters/not-an-id/merge", {"into": "nor this"}),
        ("POST", "/api/supporters/00000000-0000-0000-0000-000000000000/merge", {"into": "not an id"}),
        ("GET", "/api/supporters/not-an-id/merge?into=nor-this", None),
    ],
    ids=["post-bad-path", "post-bad-path-and-body", "post-bad-body", "get-bad-path-and-query"],
)
def test_finance_may_not_merge_whatever_the_request(
    client: TestClient, runtime: Runtime, method: str, path: str, body: dict[str, str] | None
) -> None:
    answer = client.request(method, path, headers=staff_token(runtime, "finance"), json=body)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "Forbidden"


def test_a_fundraiser_still_gets_the_404_or_400_their_request_earns(client: TestClient, runtime: Runtime) -> None:
    fundraiser = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    bad_path = client.post("/api/supporters/not-an-id/merge", headers=fundraiser, json={"into": str(ada)})
    assert bad_path.status_code == 404 and bad_path.json()["error"] == "SupporterNotFound"
    bad_body = client.post(f"/api/supporters/{ada}/merge", headers=fundraiser, json={"into": "x", "extra": 1})
    assert bad_body.status_code == 400, bad_body.text
