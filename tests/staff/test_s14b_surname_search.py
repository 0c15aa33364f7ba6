"""The staff search page finds a supporter by a later word of their surname, as crm's search does: "Smith" finds
Sarah Jones-Smith (also written as lists write names, "Smith, Sarah") and "Berg" finds Anna van der Berg, in the
page's order (by last name)."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.staff.conftest import add_supporter


def shown(client: TestClient, q: str) -> list[str]:
    page = client.get("/staff/supporters", params={"q": q})
    assert page.status_code == 200, page.text
    return re.findall(r'<a href="/staff/supporters/([0-9a-f-]{36})">', page.text)


def test_the_search_page_finds_a_later_word_of_a_surname(client: TestClient, runtime: Runtime, logged_in) -> None:
    sarah = str(add_supporter(runtime, "Sarah", "Jones-Smith", "sarah@example.org"))
    john = str(add_supporter(runtime, "John", "Smith", "john@example.org"))
    anna = str(add_supporter(runtime, "Anna", "van der Berg", "anna@example.org", "N1 9GU"))
    logged_in("fundraiser")
    assert shown(client, "Smith") == [sarah, john]
    for q in ("Smith, Sarah", "sarah jones-smith", "Jones Smith"):
        assert shown(client, q) == [sarah], q
    for q in ("Berg", "anna berg", "Anna van der Berg", "der Berg, Anna"):
        assert shown(client, q) == [anna], q
    assert shown(client, "mith") == []
