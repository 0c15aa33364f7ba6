"""contract.md: the history gives "every item unless `?limit=` asks for fewer (then `next` gives the rest)". A limit
larger than one page may hold (1000) asks for no fewer than a page: it is served a full page and a `next` to the
rest, not refused with a 400 (found in review: `?limit=5000` was a 400 `InvalidDonorDetails`). A limit that is no
whole number of at least 1 is still the caller's mistake (400 `BadRequest`). The review items page the same way."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm import service
from crm.models import ReviewItem
from tests.crm.helpers import make_supporter, staff_token

PAGE = 1000
BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def add_gifts(runtime: Runtime, supporter_id: uuid.UUID, count: int) -> None:
    with runtime.unit_of_work() as uow:
        for n in range(count):
            service.record_history(
                uow,
                supporter_id,
                type="gift",
                summary=f"Gift {n}",
                at=BASE + dt.timedelta(minutes=n),
                amount=100,
                currency="GBP",
                data={"gift_id": str(uuid.uuid4()), "provider_ids": [f"pi_{n}"]},
                dedupe_key=f"gift:s17n:{n}",
            )


def every_page(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    pages = []
    next_url: str | None = url
    while next_url:
        answer = client.get(next_url, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        next_url = pages[-1].get("next")
    return pages


@pytest.mark.parametrize("limit", ["1001", "5000", "99999999999999999999"])
def test_a_history_limit_above_a_page_gives_a_full_page_and_next(
    runtime: Runtime, client: TestClient, limit: str
) -> None:
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    add_gifts(runtime, ada, PAGE + 2)
    pages = every_page(client, f"/api/supporters/{ada}/history?limit={limit}", staff)
    assert [len(page["items"]) for page in pages] == [PAGE, 2]
    assert parse_qs(urlsplit(pages[0]["next"]).query)["limit"] == [str(PAGE)]
    everything = client.get(f"/api/supporters/{ada}/history", headers=staff).json()
    assert [i["id"] for page in pages for i in page["items"]] == [i["id"] for i in everything["items"]]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "%C2%B2", "00"])
def test_a_history_limit_that_is_no_whole_number_of_at_least_one_is_a_400(
    runtime: Runtime, client: TestClient, limit: str
) -> None:
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    answer = client.get(f"/api/supporters/{ada}/history?limit={limit}", headers=staff)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "BadRequest"


def test_a_review_items_limit_above_a_page_gives_a_full_page_and_next(runtime: Runtime, client: TestClient) -> None:
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        for n in range(PAGE + 1):
            uow.session.add(
                ReviewItem(
                    supporter_id=ada,
                    kind="name_mismatch",
                    detail=f"item {n}",
                    created_at=BASE + dt.timedelta(minutes=n),
                )
            )
    pages = every_page(client, "/api/review-items?limit=5000", staff)
    assert [len(page["items"]) for page in pages] == [PAGE, 1]
    assert len({i["id"] for page in pages for i in page["items"]}) == PAGE + 1
