"""Keyset paging of the payouts and shop orders pages (as the history and audit pages): rows added between two page
loads neither repeat nor get skipped on the next page."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid

from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Order, OrderStatus, Payout, Provider
from tests.staff.conftest import add_supporter
from tests.staff.test_s12_paging import link

PAYOUT = re.compile(r"<code>po_(\d+)</code>")
ORDER = re.compile(r"(\d+) \N{MULTIPLICATION SIGN} Shirt")
BASE = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)


def add_payouts(runtime: Runtime, numbers: range, *, arrived: bool = True) -> None:
    """Payout n arrived n days after 01/01/2025 (or has no arrival date yet), recorded in that order."""
    with runtime.unit_of_work() as uow:
        for n in numbers:
            uow.session.add(
                Payout(
                    provider=Provider.STRIPE,
                    provider_payout_id=f"po_{n}",
                    amount=1000 + n,
                    arrival_date=(BASE + dt.timedelta(days=n)).date() if arrived else None,
                    created_at=BASE + dt.timedelta(days=n, hours=1),
                )
            )


def payouts_of(page: str) -> list[int]:
    return [int(n) for n in PAYOUT.findall(page)]


def test_payout_pages_stay_put_when_payouts_arrive_between_page_loads(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    add_payouts(runtime, range(0, 70))
    logged_in("finance")
    first = client.get("/staff/finance/payouts")
    assert payouts_of(first.text) == list(range(69, 19, -1))
    assert link(first.text, "prev") is None
    # Three newer payouts and one still in transit (no arrival date: shown first) before the next page is opened.
    add_payouts(runtime, range(100, 103))
    add_payouts(runtime, range(200, 201), arrived=False)
    second = client.get(link(first.text, "next"))
    assert second.status_code == 200
    assert payouts_of(second.text) == list(range(19, -1, -1))  # nothing of the first page again, nothing skipped
    assert link(second.text, "next") is None
    back = client.get(link(second.text, "prev"))
    assert payouts_of(back.text) == list(range(69, 19, -1))
    newest = client.get(link(back.text, "prev"))
    assert payouts_of(newest.text) == [200, 102, 101, 100]
    assert link(newest.text, "prev") is None


def test_payouts_in_transit_page_with_the_rest(client: TestClient, runtime: Runtime, logged_in) -> None:
    """Payouts without an arrival date come first, by when they were recorded: the cursor across them works too."""
    add_payouts(runtime, range(0, 30), arrived=False)
    add_payouts(runtime, range(30, 60))
    logged_in("finance")
    first = client.get("/staff/finance/payouts")
    assert payouts_of(first.text) == list(range(29, -1, -1)) + list(range(59, 39, -1))
    second = client.get(link(first.text, "next"))
    assert payouts_of(second.text) == list(range(39, 29, -1))
    back = client.get(link(second.text, "prev"))
    assert payouts_of(back.text) == payouts_of(first.text)
    # Newer than the oldest payout of the first page: all of that page but that payout.
    older = link(first.text, "next")
    assert older is not None
    newer = client.get(older.replace("before=", "after="))
    assert payouts_of(newer.text) == list(range(29, -1, -1)) + list(range(59, 40, -1))


def add_orders(runtime: Runtime, numbers: range) -> None:
    """Order n (n shirts), paid n hours after noon on 01/01/2025."""
    supporter_id = add_supporter(runtime, email=f"buyer{numbers.start}@example.org")
    from payments.models import OrderLine

    with runtime.unit_of_work() as uow:
        for n in numbers:
            at = BASE + dt.timedelta(hours=n)
            order = Order(supporter_id=supporter_id, status=OrderStatus.PAID, paid_at=at, created_at=at)
            uow.session.add(order)
            uow.session.flush()
            uow.session.add(
                OrderLine(order_id=order.id, sku="TS-M", product_name="Shirt", size="M", quantity=n, unit_price=1500)
            )


def orders_of(page: str) -> list[int]:
    return [int(n) for n in ORDER.findall(page)]


def test_order_pages_stay_put_when_orders_arrive_between_page_loads(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    add_orders(runtime, range(1, 71))
    logged_in("finance")
    first = client.get("/staff/finance/shop")
    assert orders_of(first.text) == list(range(70, 20, -1))
    assert link(first.text, "prev") is None
    add_orders(runtime, range(100, 105))  # five more sold while the page is read
    second = client.get(link(first.text, "next"))
    assert second.status_code == 200
    assert orders_of(second.text) == list(range(20, 0, -1))
    assert link(second.text, "next") is None
    back = client.get(link(second.text, "prev"))
    assert orders_of(back.text) == list(range(70, 20, -1))
    newest = client.get(link(back.text, "prev"))
    assert orders_of(newest.text) == list(range(104, 99, -1))


def test_a_cursor_not_for_this_page_shows_the_newest(client: TestClient, runtime: Runtime, logged_in) -> None:
    add_payouts(runtime, range(0, 3))
    add_orders(runtime, range(1, 4))
    logged_in("finance")
    # A history page's cursor (a time and an id): a payout's names an arrival date too.
    history_cursor = base64.urlsafe_b64encode(f"{BASE.isoformat(timespec='microseconds')}|{uuid.UUID(int=0)}".encode())
    for query in (
        "before=nonsense",
        "after=%C2%B2",
        "before=" + "A" * 500,
        "page=2",
        "before=" + history_cursor.decode(),
    ):
        payouts = client.get(f"/staff/finance/payouts?{query}")
        assert payouts.status_code == 200 and payouts_of(payouts.text) == [2, 1, 0], query
        shop = client.get(f"/staff/finance/shop?{query}")
        assert shop.status_code == 200 and orders_of(shop.text) == [3, 2, 1], query
