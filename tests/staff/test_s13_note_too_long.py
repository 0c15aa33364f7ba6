"""A staff note longer than a note may be is refused with the page and what was typed, never cut to fit."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import HistoryEntry
from tests.staff.conftest import add_supporter
from tests.staff.test_notices_and_forms import field_attributes


def test_a_note_too_long_is_refused_and_kept_on_the_page(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    text = "n" * 4001
    answer = client.post(f"/staff/supporters/{supporter_id}/notes", data={"csrf_token": csrf, "note_text": text})
    assert answer.status_code == 400
    assert "A note is at most 4,000 characters" in answer.text
    assert field_attributes(answer.text, "f-note_text").get("aria-invalid") == "true"
    with runtime.read_session() as session:
        assert session.exec(select(HistoryEntry).where(HistoryEntry.type == "note")).all() == []
