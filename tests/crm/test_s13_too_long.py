"""What people type into the newsletter and volunteer forms, and a staff note, is refused when it is longer than
what is kept, never cut to fit: a name over 35 characters, a volunteer's note over 500, a staff note over 4,000.
Nothing is written, and the answer names the field."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import HistoryEntry, Interest, PendingSubscription, Supporter
from tests.crm.helpers import make_supporter, staff_token

LONG_NAME = "Bartholomew-Maximilian-Wolfeschlegel"  # 36 letters


def nothing_written(runtime: Runtime) -> bool:
    with runtime.read_session() as session:
        return not (
            session.exec(select(Supporter)).all()
            or session.exec(select(PendingSubscription)).all()
            or session.exec(select(Interest)).all()
        )


def test_a_name_too_long_on_the_newsletter_form_is_refused(runtime: Runtime, client: TestClient) -> None:
    assert len(LONG_NAME) == 36
    response = client.post("/subscribe", data={"email": "sam@example.org", "first_name": LONG_NAME})
    assert response.status_code == 400, response.text
    assert "35" in response.text
    assert nothing_written(runtime)


def test_a_name_too_long_on_the_volunteer_form_is_refused(runtime: Runtime, client: TestClient) -> None:
    response = client.post("/volunteer", data={"email": "vic@example.org", "last_name": LONG_NAME})
    assert response.status_code == 400, response.text
    assert nothing_written(runtime)


def test_a_volunteer_note_too_long_is_refused_and_one_that_fits_is_kept_whole(
    runtime: Runtime, client: TestClient
) -> None:
    refused = client.post("/volunteer", data={"email": "vic@example.org", "note": "w" * 501})
    assert refused.status_code == 400, refused.text
    assert nothing_written(runtime)
    kept = client.post("/volunteer", data={"email": "vic@example.org", "first_name": "A" * 35, "note": "w" * 500})
    assert kept.status_code == 200, kept.text
    with runtime.read_session() as session:
        assert [i.note for i in session.exec(select(Interest)).all()] == ["w" * 500]
        assert [s.first_name for s in session.exec(select(Supporter)).all()] == ["A" * 35]


def test_a_staff_note_too_long_is_refused_and_one_that_fits_is_kept_whole(runtime: Runtime, client: TestClient) -> None:
    ada = make_supporter(runtime)
    headers = staff_token(runtime, "fundraiser")
    refused = client.post(f"/api/supporters/{ada}/notes", json={"text": "n" * 4001}, headers=headers)
    assert refused.status_code == 400, refused.text
    assert "4000" in refused.text or "4,000" in refused.text
    with runtime.read_session() as session:
        assert session.exec(select(HistoryEntry).where(HistoryEntry.type == "note")).all() == []
    kept = client.post(f"/api/supporters/{ada}/notes", json={"text": "n" * 4000}, headers=headers)
    assert kept.status_code == 201, kept.text
    with runtime.read_session() as session:
        note = session.exec(select(HistoryEntry).where(HistoryEntry.type == "note")).one()
    assert note.data["text"] == "n" * 4000
