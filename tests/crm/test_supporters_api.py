"""The staff JSON API on supporters: search, one supporter with totals, history, notes, interests, consents,
review items; every read is in the audit log; bad input is a clear 4xx that changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlmodel import func, select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.money import Money
from core.runtime import Runtime
from crm import service
from crm.errors import SupporterNotFound
from crm.models import HistoryEntry, ReviewItem, Supporter
from crm.validation import DonorDetails
from tests.crm.helpers import make_supporter, staff_token


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser", email="fran@example.org")


def audit_actions(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.at)).all()  # type: ignore[arg-type]
        return [(r.action, r.object_id) for r in rows if r.actor == "fran@example.org"]


def test_search_by_email_is_exact_and_normalised(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    ada = make_supporter(runtime, email="ada@example.org")
    make_supporter(runtime, email="ada.other@example.org", first_name="Adah")
    response = client.get("/api/supporters", params={"email": "  ADA@Example.ORG "}, headers=staff)
    assert response.status_code == 200
    assert [i["id"] for i in response.json()["items"]] == [str(ada)]
    assert client.get("/api/supporters", params={"email": "ad@example.org"}, headers=staff).json() == {"items": []}
    assert ("search", "") in audit_actions(runtime)


def test_search_by_name_email_or_postcode(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    ada = make_supporter(runtime, email="ada@example.org", postcode="CT16 1AA")
    bob = make_supporter(runtime, email="bob@example.org", first_name="Bob", last_name="Lovett", postcode="SW1A 1AA")
    make_supporter(runtime, email="cy@example.org", first_name="Cy", last_name="Young", postcode="M1 1AE")

    def ids(q: str) -> list[str]:
        response = client.get("/api/supporters", params={"q": q}, headers=staff)
        assert response.status_code == 200
        return [i["id"] for i in response.json()["items"]]

    # Ordered by last name, first name, id.
    assert ids("lov") == [str(ada), str(bob)]
    assert ids("bob lov") == [str(bob)]
    assert ids("sw1a") == [str(bob)]
    assert ids("ct16 1aa") == [str(ada)]
    assert ids("BOB@example.org") == [str(bob)]
    assert ids("nobody") == []
    assert ids("100%_") == []


def test_search_needs_a_query_and_a_valid_email(client: TestClient, staff: dict[str, str]) -> None:
    assert client.get("/api/supporters", headers=staff).status_code == 400
    response = client.get("/api/supporters", params={"email": "not-an-email"}, headers=staff)
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidDonorDetails"


def test_one_supporter_with_totals_and_an_audit_entry(
    runtime: Runtime, client: TestClient, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = make_supporter(runtime)
    body = client.get(f"/api/supporters/{ada}", headers=staff).json()
    assert body["id"] == str(ada)
    assert body["email"] == "ada@example.org"
    assert body["title"] == "Ms" and body["first_name"] == "Ada" and body["last_name"] == "Lovelace"
    assert body["address"]["address_line1"] == "12 Acacia Avenue" and body["address"]["postcode"] == "CT16 1AA"
    zero = {"amount": 0, "currency": "GBP"}
    assert body["totals"] == {
        "donated": zero,
        "gift_aid_claimable": zero,
        "gift_aid_claimed": zero,
        "purchases": zero,
        "regular_gifts": 0,
    }
    assert ("view", str(ada)) in audit_actions(runtime)

    # Other wings add their totals through the registry; each is added once.
    calls: list[list[uuid.UUID]] = []

    def payments_like(session, supporter_ids):  # type: ignore[no-untyped-def]
        calls.append(supporter_ids)
        return {"donated": Money(2500), "purchases": 1500, "regular_gifts": 1}

    def giftaid_like(session, supporter_ids):  # type: ignore[no-untyped-def]
        return {"gift_aid_claimable": Money(625), "gift_aid_claimed": Money(0)}

    monkeypatch.setattr(service, "_totals_providers", [])
    service.register_totals_provider(payments_like)
    service.register_totals_provider(payments_like)
    service.register_totals_provider(giftaid_like)
    totals = client.get(f"/api/supporters/{ada}", headers=staff).json()["totals"]
    assert totals == {
        "donated": {"amount": 2500, "currency": "GBP"},
        "gift_aid_claimable": {"amount": 625, "currency": "GBP"},
        "gift_aid_claimed": {"amount": 0, "currency": "GBP"},
        "purchases": {"amount": 1500, "currency": "GBP"},
        "regular_gifts": 1,
    }
    assert calls == [[ada]]


def test_unknown_or_malformed_id_is_404_json(client: TestClient, staff: dict[str, str]) -> None:
    for raw in (str(uuid.uuid4()), "not-a-uuid"):
        response = client.get(f"/api/supporters/{raw}", headers=staff)
        assert response.status_code == 404
        assert response.json()["error"] == "SupporterNotFound"


def add_entries(runtime: Runtime, supporter_id: uuid.UUID, moments: list[dt.datetime]) -> None:
    with runtime.unit_of_work() as uow:
        for n, at in enumerate(moments):
            service.record_history(
                uow,
                supporter_id,
                type="gift",
                summary=f"Gift {n}",
                at=at,
                amount=100 * (n + 1),
                currency="GBP",
                data={"gift_id": str(uuid.uuid4()), "provider_ids": [f"pi_{n}"]},
                dedupe_key=f"gift:test:{n}",
            )


def test_history_is_newest_first_in_a_total_order_and_pages_with_next(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    # Several entries share a moment: the id breaks the tie, so pages never skip or repeat.
    moments = [base, base + dt.timedelta(days=2), base, base + dt.timedelta(days=1), base, base + dt.timedelta(days=2)]
    add_entries(runtime, ada, moments)
    everything = client.get(f"/api/supporters/{ada}/history", headers=staff).json()
    assert everything["next"] is None
    gifts = [i for i in everything["items"] if i["type"] == "gift"]
    assert len(gifts) == 6
    keys = [(i["at"], i["id"]) for i in everything["items"]]
    assert keys == sorted(keys, reverse=True)
    first = gifts[0]
    assert first["amount"]["currency"] == "GBP" and "gift_id" in first and first["provider_ids"]
    assert first["at"] == "2026-03-03T12:00:00Z"

    seen: list[str] = []
    url: str | None = f"/api/supporters/{ada}/history?limit=2"
    pages = 0
    while url:
        page = client.get(url, headers=staff).json()
        assert len(page["items"]) <= 2
        seen.extend(i["id"] for i in page["items"])
        url = page["next"]
        pages += 1
    assert seen == [i["id"] for i in everything["items"]]
    assert len(seen) == 6 and pages == 3


def test_history_rejects_a_bad_limit_or_cursor(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    ada = make_supporter(runtime)
    # A limit above a page (1000) is served a full page and `next`: tests/crm/test_s17n_large_limit.py.
    for params in ({"limit": "0"}, {"limit": "abc"}, {"limit": "2", "cursor": "garbage!"}):
        response = client.get(f"/api/supporters/{ada}/history", params=params, headers=staff)
        assert response.status_code == 400, params


def test_notes_interests_and_staff_consents_show_in_the_history(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    note = client.post(f"/api/supporters/{ada}/notes", json={"text": "Called: prefers post."}, headers=staff)
    assert note.status_code == 201 and note.json()["type"] == "note" and note.json()["author"] == "fran@example.org"
    interest = client.post(
        f"/api/supporters/{ada}/interests", json={"kind": "volunteering", "note": "weekends"}, headers=staff
    )
    assert interest.status_code == 201 and interest.json()["source"] == "staff"
    consent = client.post(
        f"/api/supporters/{ada}/consents", json={"channel": "post", "status": "granted"}, headers=staff
    )
    assert consent.status_code == 201
    types = [i["type"] for i in client.get(f"/api/supporters/{ada}/history", headers=staff).json()["items"]]
    assert {"note", "interest", "consent"} <= set(types)
    detail = client.get(f"/api/supporters/{ada}", headers=staff).json()
    assert detail["consents"]["post"]["status"] == "granted" and detail["consents"]["post"]["source"] == "staff"
    assert detail["interests"][0]["kind"] == "volunteering"
    # Bad input: nothing written.
    assert client.post(f"/api/supporters/{ada}/notes", json={"text": ""}, headers=staff).status_code == 400
    assert client.post(f"/api/supporters/{ada}/notes", json={"txt": "x"}, headers=staff).status_code == 400
    assert (
        client.post(f"/api/supporters/{ada}/interests", json={"kind": "DROP TABLE"}, headers=staff).status_code == 400
    )
    bad_consent = {"channel": "email", "status": "pending"}
    assert client.post(f"/api/supporters/{ada}/consents", json=bad_consent, headers=staff).status_code == 400
    with runtime.read_session() as session:
        notes = session.exec(select(func.count()).select_from(HistoryEntry).where(HistoryEntry.type == "note")).one()
        assert notes == 1


def test_a_different_name_on_a_known_email_is_a_review_item(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        details = DonorDetails(first_name="Charles", last_name="Babbage", email="ada@example.org").normalised()
        assert service.find_or_create_supporter(uow, details, source="donate_form").id == ada
    with runtime.read_session() as session:
        supporter = session.get(Supporter, ada)
        assert supporter is not None and supporter.first_name == "Ada"
    items = client.get("/api/review-items", headers=staff).json()["items"]
    assert [(i["kind"], i["supporter_id"]) for i in items] == [("name_mismatch", str(ada))]
    resolved = client.post(f"/api/review-items/{items[0]['id']}/resolve", headers=staff)
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "fran@example.org"
    assert client.get("/api/review-items", headers=staff).json()["items"] == []
    assert len(client.get("/api/review-items", params={"status": "all"}, headers=staff).json()["items"]) == 1
    with runtime.read_session() as session:
        assert session.exec(select(ReviewItem)).one().resolved_at is not None


def test_an_oversized_body_is_413_json_and_changes_nothing(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    limit = runtime.settings.web.max_body_bytes
    response = client.post(
        f"/api/supporters/{ada}/notes",
        content=b'{"text": "' + b"x" * (limit + 10) + b'"}',
        headers={**staff, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    with runtime.read_session() as session:
        assert session.exec(select(HistoryEntry).where(HistoryEntry.type == "note")).all() == []


def test_history_items_have_the_same_shape_on_both_databases(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    at = dt.datetime(2026, 4, 5, 23, 30, 15, 123456, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        # Keys a wing put in `data` never replace the fixed ones.
        service.record_history(
            uow, ada, type="note", summary="S", at=at, data={"amount": 999, "type": "bogus", "by": "x"}, dedupe_key="a"
        )
        service.record_history(
            uow,
            ada,
            type="refund",
            summary="R",
            at=at - dt.timedelta(days=1),
            amount=-250,
            currency="GBP",
            data={"refund_id": "r1", "provider_ids": ["re_1"]},
            dedupe_key="b",
        )
    items = client.get(f"/api/supporters/{ada}/history", headers=staff).json()["items"]
    assert [{k: v for k, v in i.items() if k != "id"} for i in items] == [
        {"at": "2026-04-05T23:30:15Z", "type": "note", "summary": "S", "by": "x"},
        {
            "at": "2026-04-04T23:30:15Z",
            "type": "refund",
            "summary": "R",
            "amount": {"amount": -250, "currency": "GBP"},
            "refund_id": "r1",
            "provider_ids": ["re_1"],
        },
    ]
    assert all(uuid.UUID(i["id"]) for i in items)


def test_a_history_entry_is_written_once_and_never_for_an_unknown_supporter(runtime: Runtime) -> None:
    ada = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        assert service.record_history(uow, ada, type="note", summary="First", dedupe_key="once") is True
        assert service.record_history(uow, ada, type="note", summary="Again", dedupe_key="once") is False
    with pytest.raises(SupporterNotFound), runtime.unit_of_work() as uow:
        service.record_history(uow, uuid.uuid4(), type="note", summary="Nobody", dedupe_key="nobody")
    with runtime.read_session() as session:
        summaries = session.exec(select(HistoryEntry.summary).where(HistoryEntry.type == "note")).all()
    assert summaries == ["First"]


def test_a_search_with_a_nul_is_answered_not_a_500(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    """PostgreSQL text cannot hold NUL: a search carrying one (a fuzzer, a pasted binary) is searched without it, and
    audited without it, rather than failing with a 500."""
    ada = make_supporter(runtime, email="ada@example.org", first_name="Ada")
    found = client.get("/api/supporters", params={"q": "\x00Ada"}, headers=staff)
    assert found.status_code == 200, found.text
    assert [i["id"] for i in found.json()["items"]] == [str(ada)]
    by_email = client.get("/api/supporters", params={"email": "ada@example.org\x00"}, headers=staff)
    assert by_email.status_code == 200, by_email.text
    assert [i["id"] for i in by_email.json()["items"]] == [str(ada)]
    only_nul = client.get("/api/supporters", params={"q": "\x00"}, headers=staff)
    assert only_nul.status_code == 400 and only_nul.json()["error"] == "InvalidDonorDetails"
