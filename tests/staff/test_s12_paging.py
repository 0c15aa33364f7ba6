"""Keyset paging of the supporter history and audit log pages: "older" and "newer" links carry a cursor, so rows
added between two page loads neither repeat nor get skipped on the next page."""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from crm import service as crm_service
from tests.staff.conftest import add_supporter

ITEM = re.compile(r"Item (\d+)\b")
OBJECT = re.compile(r"<code>(obj-\d+)</code>")


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def add_items(runtime: Runtime, supporter_id: uuid.UUID, numbers: range, base: dt.datetime) -> None:
    with runtime.unit_of_work() as uow:
        for i in numbers:
            crm_service.record_history(
                uow,
                supporter_id,
                type="gift" if i % 2 == 0 else "receipt",
                summary=f"Item {i}",
                at=base + dt.timedelta(days=i),
                dedupe_key=f"s12:{supporter_id}:{i}",
            )


def items_of(page: str) -> list[int]:
    return [int(n) for n in ITEM.findall(page)]


def test_history_pages_stay_put_when_items_arrive_between_page_loads(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    # Item 0 .. Item 119, a day apart from 01/01/2025, and the consent `add_supporter` records (now, the newest).
    supporter_id = add_supporter(runtime, history=120)
    logged_in("fundraiser")
    first = client.get(f"/staff/supporters/{supporter_id}/history")
    assert first.text.count('class="timeline-item') == 50
    assert items_of(first.text) == list(range(119, 70, -1))
    assert link(first.text, "prev") is None
    # Five newer items arrive (a late webhook, a note) before the next page is opened.
    add_items(runtime, supporter_id, range(200, 205), dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC))
    older = link(first.text, "next")
    assert older is not None
    second = client.get(older)
    assert second.status_code == 200
    assert items_of(second.text) == list(range(70, 20, -1))  # nothing of the first page again, nothing skipped
    third = client.get(link(second.text, "next"))
    assert items_of(third.text) == list(range(20, -1, -1)) and link(third.text, "next") is None
    # Back towards the newest: the same pages, then one with what arrived meanwhile.
    back = client.get(link(third.text, "prev"))
    assert items_of(back.text) == list(range(70, 20, -1))
    back = client.get(link(back.text, "prev"))
    assert items_of(back.text) == list(range(119, 70, -1))
    newest = client.get(link(back.text, "prev"))
    assert items_of(newest.text) == list(range(204, 199, -1)) and link(newest.text, "prev") is None


def test_history_paging_keeps_the_type_filter(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=120)
    logged_in("fundraiser")
    first = client.get(f"/staff/supporters/{supporter_id}/history", params={"type": "gift"})
    assert items_of(first.text) == list(range(118, 18, -2))
    add_items(runtime, supporter_id, range(300, 304), dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))
    second = client.get(link(first.text, "next"))
    assert items_of(second.text) == list(range(18, -1, -2))
    assert "type-receipt" not in second.text and link(second.text, "next") is None


def test_audit_log_pages_stay_put_when_entries_arrive_between_page_loads(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    logged_in("admin")
    base = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)

    def add_entries(numbers: range) -> None:
        with runtime.unit_of_work() as uow:
            for i in numbers:
                uow.session.add(
                    AuditEntry(
                        at=base + dt.timedelta(minutes=i),
                        actor="fundraiser@example.org",
                        action="view",
                        object_type="supporter",
                        object_id=f"obj-{i}",
                    )
                )

    add_entries(range(0, 70))
    first = client.get("/staff/admin/audit", params={"actor": "fundraiser@example.org"})
    shown = OBJECT.findall(first.text)
    assert shown == [f"obj-{i}" for i in range(69, 19, -1)]
    add_entries(range(100, 110))  # ten more while the admin reads the first page
    older = link(first.text, "next")
    assert older is not None and "actor=fundraiser%40example.org" in older
    second = client.get(older)
    assert OBJECT.findall(second.text) == [f"obj-{i}" for i in range(19, -1, -1)]
    assert link(second.text, "next") is None
    back = client.get(link(second.text, "prev"))
    assert OBJECT.findall(back.text) == shown
    newest = client.get(link(back.text, "prev"))
    assert OBJECT.findall(newest.text) == [f"obj-{i}" for i in range(109, 99, -1)]


def test_a_cursor_that_is_not_ours_shows_the_newest_page(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=3)
    logged_in("admin")
    for query in ("before=nonsense", "after=%C2%B2", "before=" + "A" * 500):
        page = client.get(f"/staff/supporters/{supporter_id}/history?{query}")
        assert page.status_code == 200 and items_of(page.text) == [2, 1, 0], query
        assert client.get(f"/staff/admin/audit?{query}").status_code == 200, query


def test_a_cursor_past_the_end_shows_the_newest_page(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=3)
    logged_in("fundraiser")
    oldest = items_of(client.get(f"/staff/supporters/{supporter_id}/history").text)
    assert oldest == [2, 1, 0]
    with runtime.read_session() as session:
        from crm.models import HistoryEntry
        from giving.staff.queries import encode_cursor

        first = session.exec(select(HistoryEntry).order_by(HistoryEntry.at)).first()  # type: ignore[arg-type]
        assert first is not None
        cursor = encode_cursor(first)
    for query in (f"before={cursor}", "after=" + encode_cursor_far_ahead()):
        page = client.get(f"/staff/supporters/{supporter_id}/history?{query}")
        assert page.status_code == 200 and items_of(page.text) == [2, 1, 0], query


def encode_cursor_far_ahead() -> str:
    import base64

    raw = f"2999-01-01T00:00:00.000000+00:00|{uuid.UUID(int=0)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
