"""contract.md: `GET /api/payouts` gives "every payout unless `?limit=` asks for fewer", and lists page with `next`.
Found in review: a limit above one page (1000) was refused with a 400 instead of being served a full page and a
`next` to the rest; `GET /api/orders?limit=N` cut the list at N with no `next` at all, so the rest could not be
had. A limit that is no whole number of at least 1 stays the caller's mistake (400)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Payout, PayoutStatus, Provider
from tests.payments import factories_money as make

PAGE = 1000


def headers(runtime: Runtime, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make.staff_token(runtime, role)}"}


def every_page(client: TestClient, url: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    pages = []
    next_url: str | None = url
    while next_url:
        answer = client.get(next_url, headers=auth)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        next_url = pages[-1].get("next")
    return pages


@pytest.mark.parametrize("limit", ["1001", "5000", "99999999999999999999"])
def test_a_payouts_limit_above_a_page_gives_a_full_page_and_next(
    runtime: Runtime, client: TestClient, limit: str
) -> None:
    with runtime.unit_of_work() as uow:
        for n in range(PAGE + 2):
            uow.session.add(
                Payout(
                    provider=Provider.STRIPE,
                    provider_payout_id=f"po_s17n_{n:05d}",
                    amount=100,
                    status=PayoutStatus.PAID,
                    arrival_date=dt.date(2023, 1, 1) + dt.timedelta(days=n),
                )
            )
    auth = headers(runtime, "finance")
    pages = every_page(client, f"/api/payouts?limit={limit}", auth)
    assert [len(page["items"]) for page in pages] == [PAGE, 2]
    assert parse_qs(urlsplit(pages[0]["next"]).query)["limit"] == [str(PAGE)]
    seen = [p["provider_payout_id"] for page in pages for p in page["items"]]
    assert seen == [f"po_s17n_{n:05d}" for n in reversed(range(PAGE + 2))]


@pytest.mark.parametrize("path", ["/api/payouts", "/api/orders"])
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "%C2%B2", "+5", "%D9%A3"])
def test_a_limit_that_is_no_whole_number_of_at_least_one_is_a_400(
    runtime: Runtime, client: TestClient, path: str, limit: str
) -> None:
    answer = client.get(f"{path}?limit={limit}", headers=headers(runtime, "admin"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "BadRequest"


def test_orders_page_with_next_and_a_large_limit_is_not_refused(runtime: Runtime, client: TestClient) -> None:
    supporter = make.supporter(runtime)
    start = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
    for n in range(5):
        make.order(runtime, supporter, [], paid_at=start + dt.timedelta(hours=n))
    auth = headers(runtime, "fundraiser")
    everything = client.get("/api/orders", headers=auth).json()
    assert len(everything["items"]) == 5 and "next" not in everything
    pages = every_page(client, "/api/orders?limit=2", auth)
    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    assert [o["id"] for page in pages for o in page["items"]] == [o["id"] for o in everything["items"]]
    large = client.get("/api/orders?limit=5000", headers=auth)
    assert large.status_code == 200, large.text
    assert large.json()["items"] == everything["items"] and "next" not in large.json()
