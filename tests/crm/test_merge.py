"""Merging two supporters: everything moves to the survivor in one unit of work, the old id keeps resolving,
both timelines record it, nothing is lost or counted twice; merging a record into itself is a 400."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm import service
from crm.models import ConsentChannel, ConsentStatus, Declaration, DeclarationMethod, DeclarationScope, HistoryEntry
from crm.validation import DonorDetails
from giving.registry import metadata
from payments.models import Gift, GiftStatus, Method, Provider, RegularGift, RegularGiftStatus
from tests.crm.helpers import get_supporter, make_supporter, staff_token

PAID_AT = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser", email="fran@example.org")


def give(
    runtime: Runtime, supporter_id: uuid.UUID, amount: int, *, regular_gift_id: uuid.UUID | None = None
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        gift = Gift(
            supporter_id=supporter_id,
            amount=amount,
            status=GiftStatus.PAID,
            provider=Provider.GOCARDLESS if regular_gift_id else Provider.STRIPE,
            method=Method.DIRECT_DEBIT if regular_gift_id else Method.CARD,
            received_at=PAID_AT,
            received_on=PAID_AT.date(),
            regular_gift_id=regular_gift_id,
            gocardless_payment_id=f"PM{uuid.uuid4().hex[:10].upper()}" if regular_gift_id else None,
            stripe_payment_intent_id=None if regular_gift_id else f"pi_{uuid.uuid4().hex}",
        )
        uow.session.add(gift)
        uow.session.flush()
        service.record_history(
            uow,
            supporter_id,
            type="gift",
            summary="Gift",
            at=PAID_AT,
            amount=amount,
            currency="GBP",
            data={"gift_id": str(gift.id)},
            dedupe_key=f"gift:{gift.id}",
        )
        return gift.id


def live_regular_gift(runtime: Runtime, supporter_id: uuid.UUID) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        regular = RegularGift(
            supporter_id=supporter_id,
            amount=1000,
            provider=Provider.GOCARDLESS,
            method=Method.DIRECT_DEBIT,
            status=RegularGiftStatus.ACTIVE,
            started_at=PAID_AT,
            gocardless_mandate_id="MD000TEST",
            gocardless_subscription_id="SB000TEST",
            gocardless_customer_id="CU000TEST",
        )
        uow.session.add(regular)
        uow.session.flush()
        return regular.id


def rows_by_supporter(runtime: Runtime) -> dict[str, dict[str, int]]:
    """For every table with a supporter foreign key: rows per supporter id."""
    counts: dict[str, dict[str, int]] = {}
    with runtime.read_session() as session:
        for table in metadata.sorted_tables:
            for fk in table.foreign_keys:
                if fk.column.table.name == "supporters" and table.name != "supporters":
                    column = fk.parent
                    for supporter_id, n in session.execute(
                        sa.select(column, sa.func.count()).select_from(table).group_by(column)
                    ):
                        counts.setdefault(table.name, {})[str(supporter_id)] = n
    return counts


def populate_the_record_that_goes(runtime: Runtime, loser: uuid.UUID) -> None:
    regular = live_regular_gift(runtime, loser)
    give(runtime, loser, 1000, regular_gift_id=regular)
    give(runtime, loser, 2500)
    with runtime.unit_of_work() as uow:
        donor = DonorDetails(
            first_name="Ada", last_name="Lovelace", address_line1="3 Old Road", postcode="CT17 9AB"
        ).normalised(require_address=True)
        service.record_declaration(
            uow,
            loser,
            method=DeclarationMethod.ONLINE,
            made_on=PAID_AT.date(),
            scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
            donor=donor,
            source="donate_form",
            wording_version="v1",
            wording_text="I want to Gift Aid my donations.",
        )
        service.record_consent(uow, loser, channel=ConsentChannel.POST, status=ConsentStatus.GRANTED, source="staff")
        service.add_note(uow, loser, "Met at the Dover event", author="fran@example.org")
        service.record_interest(uow, loser, kind="volunteering", source="volunteer_form")


def test_merge_moves_everything_to_the_survivor(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    survivor = make_supporter(runtime, email="ada@example.org")
    loser = make_supporter(runtime, email=None, address_line1="3 Old Road", postcode="CT17 9AB")
    populate_the_record_that_goes(runtime, loser)
    give(runtime, survivor, 500)
    before = rows_by_supporter(runtime)
    assert before["regular_gifts"] == {str(loser): 1}

    preview = client.get(f"/api/supporters/{loser}/merge", params={"into": str(survivor)}, headers=staff)
    assert preview.status_code == 200
    moves = preview.json()["moved"]
    assert moves["gifts"] == 2 and moves["regular_gifts"] == 1 and moves["declarations"] == 1
    assert rows_by_supporter(runtime) == before  # the preview changed nothing

    response = client.post(f"/api/supporters/{loser}/merge", json={"into": str(survivor)}, headers=staff)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["merged_id"] == str(loser) and body["survivor"]["id"] == str(survivor)
    assert body["moved"] == moves

    after = rows_by_supporter(runtime)
    for table, per_supporter in before.items():
        # Nothing lost, nothing duplicated, nothing left on the old record (its own "merged" item aside).
        expected = sum(per_supporter.values()) + (2 if table == "history" else 0)
        assert sum(after[table].values()) == expected, table
        assert after[table].get(str(loser), 0) == (1 if table == "history" else 0), table
    with runtime.read_session() as session:
        regular = session.exec(select(RegularGift)).one()
        assert regular.supporter_id == survivor and regular.status == RegularGiftStatus.ACTIVE
        assert regular.gocardless_customer_id == "CU000TEST"
        assert session.exec(select(Declaration)).one().supporter_id == survivor

    # The old id resolves to the survivor; totals count each gift once.
    old = client.get(f"/api/supporters/{loser}", headers=staff).json()
    assert old["id"] == str(survivor) and old["merged_ids"] == [str(loser)]
    assert old["totals"]["donated"] == {"amount": 4000, "currency": "GBP"}
    assert old["totals"]["regular_gifts"] == 1
    # The survivor's current address stays current; the old one is history.
    assert old["address"]["postcode"] == "CT16 1AA"

    history = client.get(f"/api/supporters/{survivor}/history", headers=staff).json()["items"]
    types = [i["type"] for i in history]
    assert types.count("gift") == 3 and {"note", "interest", "declaration", "consent", "merged"} <= set(types)
    merged = next(i for i in history if i["type"] == "merged")
    assert merged["merged_id"] == str(loser) and merged["by"] == "fran@example.org"
    with runtime.read_session() as session:
        [own] = session.exec(select(HistoryEntry).where(HistoryEntry.supporter_id == loser)).all()
        assert own.type == "merged" and str(survivor) in own.summary


def test_a_late_event_naming_the_old_id_lands_on_the_survivor(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    survivor = make_supporter(runtime, email="ada@example.org")
    loser = make_supporter(runtime, email="ada.work@example.org")
    assert client.post(f"/api/supporters/{loser}/merge", json={"into": str(survivor)}, headers=staff).status_code == 200
    with runtime.unit_of_work() as uow:
        service.record_history(uow, loser, type="gift", summary="Late gift", dedupe_key="gift:late")
        found = service.find_or_create_supporter(
            uow,
            DonorDetails(first_name="Ada", last_name="Lovelace", email="ada.work@example.org").normalised(),
            source="t",
        )
        assert found.id == survivor
    items = client.get(f"/api/supporters/{survivor}/history", headers=staff).json()["items"]
    assert "Late gift" in [i["summary"] for i in items]
    by_email = client.get("/api/supporters", params={"email": "ada.work@example.org"}, headers=staff).json()["items"]
    assert [i["id"] for i in by_email] == [str(survivor)]


def test_a_chain_of_merges_resolves_to_the_last_survivor(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    a, b, c = (make_supporter(runtime, email=f"{n}@example.org") for n in "abc")
    assert client.post(f"/api/supporters/{a}/merge", json={"into": str(b)}, headers=staff).status_code == 200
    assert client.post(f"/api/supporters/{b}/merge", json={"into": str(c)}, headers=staff).status_code == 200
    assert client.get(f"/api/supporters/{a}", headers=staff).json()["id"] == str(c)
    assert get_supporter(runtime, a).merged_into_id == c
    assert sorted(client.get(f"/api/supporters/{c}", headers=staff).json()["merged_ids"]) == sorted([str(a), str(b)])


def test_merging_a_record_into_itself_is_400_and_changes_nothing(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    a = make_supporter(runtime, email="a@example.org")
    b = make_supporter(runtime, email="b@example.org")
    before = rows_by_supporter(runtime)
    response = client.post(f"/api/supporters/{a}/merge", json={"into": str(a)}, headers=staff)
    assert response.status_code == 400 and response.json()["error"] == "CannotMergeIntoItself"
    assert rows_by_supporter(runtime) == before and get_supporter(runtime, a).merged_into_id is None
    assert client.post(f"/api/supporters/{a}/merge", json={"into": str(b)}, headers=staff).status_code == 200
    # a now resolves to b: merging them again is merging b into itself.
    again = client.post(f"/api/supporters/{b}/merge", json={"into": str(a)}, headers=staff)
    assert again.status_code == 400
    missing = client.post(f"/api/supporters/{a}/merge", json={"into": str(uuid.uuid4())}, headers=staff)
    assert missing.status_code == 404
    assert client.post(f"/api/supporters/{a}/merge", json={"onto": str(b)}, headers=staff).status_code == 400
