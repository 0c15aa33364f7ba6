"""Supporter records from the public forms and staff search, at edges found in review: a newsletter subscriber
who later donates, the same new email from two forms at once, a confirmation link opened twice at once, control
characters in what people type, accented names, the order of results, review items past the first page, and an
oral declaration recorded with a letter date still to come."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.db import UnitOfWork
from core.runtime import Runtime
from crm import service
from crm.models import Consent, ConsentStatus, HistoryEntry, ReviewItem, Supporter, SupporterAddress
from crm.validation import DonorDetails
from tests.crm.helpers import at_the_same_moment, make_supporter, staff_token


def test_a_subscriber_without_a_name_who_then_donates_gets_their_name_and_address(runtime: Runtime) -> None:
    """The newsletter form's names are optional; the donation's name is not "a different name", so it fills the
    record (no review item) and the address is recorded."""
    with runtime.unit_of_work() as uow:
        service.start_subscription(uow, "sam@example.org")
    details = DonorDetails(
        first_name="Sam", last_name="Ng", email="sam@example.org", address_line1="3 High Street",
        town="Dover", postcode="CT16 1AA",
    ).normalised()  # fmt: skip
    with runtime.unit_of_work() as uow:
        supporter_id = service.find_or_create_supporter(uow, details, source="donate_form").id
    with runtime.read_session() as session:
        supporter = session.get(Supporter, supporter_id)
        assert supporter is not None and (supporter.first_name, supporter.last_name) == ("Sam", "Ng")
        addresses = session.exec(select(SupporterAddress).where(SupporterAddress.supporter_id == supporter_id)).all()
        assert [a.line1 for a in addresses] == ["3 High Street"]
        assert session.exec(select(ReviewItem)).all() == []


def test_two_subscriptions_with_the_same_new_email_at_once_make_one_supporter(runtime: Runtime) -> None:
    def subscribe(uow: UnitOfWork) -> None:
        service.start_subscription(uow, "nadia@example.org")

    errors = at_the_same_moment(runtime, subscribe, subscribe)
    assert errors == []
    with runtime.read_session() as session:
        assert len(session.exec(select(Supporter)).all()) == 1


def test_a_confirmation_link_opened_twice_at_once_grants_the_consent_once(runtime: Runtime) -> None:
    """A mail scanner's prefetch and the person's click."""
    with runtime.unit_of_work() as uow:
        pending = service.start_subscription(uow, "sam@example.org")
        assert pending is not None
        pending_id = pending.id

    def confirm(uow: UnitOfWork) -> None:
        service.confirm_subscription(uow, pending_id)

    errors = at_the_same_moment(runtime, confirm, confirm)
    assert errors == []
    with runtime.read_session() as session:
        granted = session.exec(select(Consent).where(Consent.status == ConsentStatus.GRANTED)).all()
        items = session.exec(select(HistoryEntry).where(HistoryEntry.type == "consent")).all()
    assert (len(granted), len(items)) == (1, 1)


def test_control_characters_people_type_are_dropped_not_a_server_error(runtime: Runtime, client: TestClient) -> None:
    """PostgreSQL's text cannot hold NUL: a name, a volunteer's note or a staff note carrying one was a 500."""
    assert client.post("/subscribe", data={"email": "sam@example.org", "first_name": "Sam\x00"}).status_code == 200
    assert client.post("/volunteer", data={"email": "vic@example.org", "note": "weekends\x00"}).status_code == 200
    ada = make_supporter(runtime)
    noted = client.post(
        f"/api/supporters/{ada}/notes", json={"text": "called\u0000\nback"}, headers=staff_token(runtime, "fundraiser")
    )
    assert noted.status_code == 201, noted.text
    with runtime.read_session() as session:
        sam = session.exec(select(Supporter).where(Supporter.email == "sam@example.org")).one()
        note = session.exec(select(HistoryEntry).where(HistoryEntry.type == "note")).one()
    assert sam.first_name == "Sam" and note.data["text"] == "called\nback"


def test_search_is_case_insensitive_for_accented_names(runtime: Runtime, client: TestClient) -> None:
    """On SQLite too: its own lower() folds A-Z only."""
    staff = staff_token(runtime, "fundraiser")
    elodie = make_supporter(runtime, email="elodie@example.org", first_name="Élodie", last_name="Ölander")
    for q in ("élodie", "ÉLODIE", "ölander", "ÖLANDER"):
        found = client.get("/api/supporters", params={"q": q}, headers=staff).json()["items"]
        assert [i["id"] for i in found] == [str(elodie)], q


def test_search_orders_by_last_name_whatever_its_case(runtime: Runtime, client: TestClient) -> None:
    staff = staff_token(runtime, "fundraiser")
    for last in ("Zhang", "de Souza", "Adams", "van Dijk"):
        make_supporter(runtime, email=f"{last.replace(' ', '').lower()}@example.org", first_name="Kim", last_name=last)
    items = client.get("/api/supporters", params={"q": "kim"}, headers=staff).json()["items"]
    assert [i["last_name"] for i in items] == ["Adams", "de Souza", "van Dijk", "Zhang"]


def test_review_items_come_in_pages_that_lose_none(runtime: Runtime, client: TestClient) -> None:
    """The list stopped at 100 with nothing to say there were more."""
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        for n in range(105):
            service.raise_review_item(uow, ada, kind="name_mismatch", detail=f"item {n}")
    first = client.get("/api/review-items", headers=staff).json()
    assert len(first["items"]) == 100 and first["next"]
    second = client.get(first["next"], headers=staff).json()
    assert len(second["items"]) == 5 and "next" not in second
    assert len({i["id"] for i in first["items"] + second["items"]}) == 105
    assert client.get("/api/review-items?offset=-1", headers=staff).status_code == 400


def test_an_oral_declaration_cannot_be_recorded_with_a_letter_sent_in_the_future(
    runtime: Runtime, client: TestClient
) -> None:
    """Confirming refuses a letter date to come; recording with one did not, and the declaration was in effect at
    once although no letter had been sent."""
    today = uk_today()
    response = client.post(
        f"/api/supporters/{make_supporter(runtime)}/declarations",
        json={
            "method": "oral",
            "made_on": today.isoformat(),
            "scope": "future",
            "confirmation_sent_on": (today + dt.timedelta(days=60)).isoformat(),
            "address": {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 Acacia Avenue",
                        "postcode": "CT16 1AA", "country": "GB"},
        },
        headers=staff_token(runtime, "fundraiser"),
    )  # fmt: skip
    assert response.status_code == 400 and "confirmation_sent_on" in response.json()["detail"], response.text


def test_search_finds_a_surname_with_a_space_typed_in_full(runtime: Runtime, client: TestClient) -> None:
    """Each word had to start a field on its own, so "van der berg" found nobody: "der" starts none."""
    staff = staff_token(runtime, "fundraiser")
    anna = make_supporter(runtime, email="anna@example.org", first_name="Anna", last_name="van der Berg")
    make_supporter(runtime, email="vince@example.org", first_name="Vince", last_name="Vance")
    for q in ("van der berg", "Anna van der Berg", "van der berg anna", "anna van der", "VAN DER B"):
        found = client.get("/api/supporters", params={"q": q}, headers=staff).json()["items"]
        assert [i["id"] for i in found] == [str(anna)], q
    # Words still start where a word starts: nothing matches from inside one. ("der berg", "berg van der" and
    # "anna berg" find her: a later word of a surname is matched too, tests/crm/test_s14b_surname_words.py.)
    for q in ("er berg", "nna van", "anna erg"):
        assert client.get("/api/supporters", params={"q": q}, headers=staff).json()["items"] == [], q
    both = client.get("/api/supporters", params={"q": "van"}, headers=staff).json()["items"]
    assert [i["last_name"] for i in both] == ["van der Berg", "Vance"]


def test_a_nul_in_any_api_field_is_dropped_not_a_server_error(runtime: Runtime, client: TestClient) -> None:
    """Only notes were cleaned: a NUL in a consent's wording, a declaration's evidence or a cancellation reason
    reached PostgreSQL (text and jsonb cannot hold it) and was a 500."""
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    consent = client.post(
        f"/api/supporters/{ada}/consents",
        json={"channel": "email", "status": "granted", "wording_version": "v\x002", "note": "by phone\x00"},
        headers=staff,
    )
    assert consent.status_code in (200, 201), consent.text
    declared = client.post(
        f"/api/supporters/{ada}/declarations",
        json={
            "method": "online", "made_on": uk_today().isoformat(), "scope": "past_4_years_and_future",
            "evidence": {"form\x00": "web\x00"},
            "address": {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 High St",
                        "town": "Dover", "postcode": "CT16 1AA"},
        },
        headers=staff,
    )  # fmt: skip
    assert declared.status_code == 201, declared.text
    cancelled = client.post(
        f"/api/declarations/{declared.json()['id']}/cancel",
        json={"effective_on": uk_today().isoformat(), "reason": "asked\x00 to stop"},
        headers=staff,
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancellation_reason"] == "asked to stop"
    with runtime.read_session() as session:
        granted = session.exec(select(Consent).where(Consent.supporter_id == ada)).one()
    assert granted.wording_version == "v2" and "\x00" not in str(granted.evidence)


def test_a_joiner_inside_a_name_is_kept_and_invisible_characters_elsewhere_are_dropped() -> None:
    """Persian and Indic names need the zero-width (non-)joiner between letters; a BOM, a direction mark or a
    zero-width space around or between words prints nothing and would split one name into two in a search."""
    from crm.validation import clean_name

    assert clean_name("Mahs\u200cid") == "Mahs\u200cid"
    assert clean_name("\ufeffAnn\u200e  \u200bSmith\u200b") == "Ann Smith"
    assert clean_name("\u200c\u200d") == ""
