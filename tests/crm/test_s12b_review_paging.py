"""`GET /api/review-items` pages by a cursor (`next` carries it): items raised or resolved between two page loads
neither repeat on the next page nor push one off it, as `?offset=` did."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import time_machine
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm import service
from tests.crm.helpers import make_supporter, staff_token

BASE = dt.datetime(2025, 3, 1, 9, tzinfo=dt.UTC)


def raise_items(runtime: Runtime, supporter_id: uuid.UUID, numbers: range) -> None:
    """Item n raised n minutes after 09:00 on 01/03/2025."""
    for n in numbers:
        with time_machine.travel(BASE + dt.timedelta(minutes=n), tick=False), runtime.unit_of_work() as uow:
            service.raise_review_item(uow, supporter_id, kind="name_mismatch", detail=f"item {n}")


def numbers(page: dict[str, Any]) -> list[int]:
    return [int(i["detail"].removeprefix("item ")) for i in page["items"]]


def test_review_items_page_by_cursor_whatever_is_raised_or_resolved_meanwhile(
    runtime: Runtime, client: TestClient
) -> None:
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    raise_items(runtime, ada, range(0, 25))
    first = client.get("/api/review-items", params={"limit": 10}, headers=staff).json()
    assert numbers(first) == list(range(24, 14, -1))
    assert parse_qs(urlsplit(first["next"]).query)["limit"] == ["10"]
    # Meanwhile three more are raised and one on the first page is resolved.
    raise_items(runtime, ada, range(100, 103))
    assert client.post(f"/api/review-items/{first['items'][0]['id']}/resolve", headers=staff).status_code == 200
    second = client.get(first["next"], headers=staff).json()
    assert numbers(second) == list(range(14, 4, -1))  # nothing of the first page again, nothing skipped
    third = client.get(second["next"], headers=staff).json()
    assert numbers(third) == [4, 3, 2, 1, 0] and "next" not in third
    # `status=all` is kept by the link, resolved items included.
    everything = client.get("/api/review-items", params={"status": "all", "limit": 4}, headers=staff).json()
    assert numbers(everything) == [102, 101, 100, 24]
    rest = client.get(everything["next"], headers=staff).json()
    assert numbers(rest)[:2] == [23, 22] and "status=all" in everything["next"]


def test_a_cursor_not_ours_or_an_offset_is_refused(runtime: Runtime, client: TestClient) -> None:
    staff = staff_token(runtime, "fundraiser")
    for query in ("cursor=nonsense", "cursor=%C2%B2", "cursor=" + "A" * 500, "offset=100", "offset=-1"):
        answer = client.get(f"/api/review-items?{query}", headers=staff)
        assert answer.status_code == 400, query
