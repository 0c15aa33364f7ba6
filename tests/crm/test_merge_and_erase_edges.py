"""Merges and erasure at their edges (found in review): the email moving to a survivor whatever the ids' order, an
erased record never merged, and the words staff typed on a declaration's cancellation erased with the rest."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm import service
from crm.models import DeclarationMethod, DeclarationScope, Supporter
from crm.validation import DonorDetails
from giving.privacy import erase_supporter
from tests.crm.helpers import make_supporter, staff_token


def _supporter_with_id(runtime: Runtime, supporter_id: uuid.UUID, email: str | None) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        uow.session.add(Supporter(id=supporter_id, email=email, first_name="Ann", last_name="Smith"))
    return supporter_id


@pytest.mark.parametrize("survivor_sorts_first", [True, False])
def test_the_survivor_without_email_takes_the_old_records_whatever_the_ids_order(
    runtime: Runtime, client: TestClient, survivor_sorts_first: bool
) -> None:
    """The email is unique: the old record lets go of it before the survivor takes it, in whichever order the ids
    would have the rows written."""
    staff = staff_token(runtime, "fundraiser")
    low, high = uuid.UUID(int=1), uuid.UUID(int=2)
    survivor_id, loser_id = (low, high) if survivor_sorts_first else (high, low)
    survivor = _supporter_with_id(runtime, survivor_id, None)
    loser = _supporter_with_id(runtime, loser_id, "ann.smith@example.org")
    response = client.post(f"/api/supporters/{loser}/merge", json={"into": str(survivor)}, headers=staff)
    assert response.status_code == 200, response.text
    found = client.get("/api/supporters", params={"email": "ann.smith@example.org"}, headers=staff).json()["items"]
    assert [s["id"] for s in found] == [str(survivor)]


@pytest.mark.parametrize("erased_side", ["survivor", "old record"])
def test_an_erased_record_is_never_merged(runtime: Runtime, client: TestClient, erased_side: str) -> None:
    """A live donor folded into an erased record would get no more documents and put their details on a record
    that must hold none (and the other way round brings an erased record back): 409, and nothing moves."""
    staff = staff_token(runtime, "fundraiser")
    erased = make_supporter(runtime, email="gone@example.org", first_name="Gone", last_name="Person")
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, erased)
    live = make_supporter(runtime, email="live@example.org", first_name="Live", last_name="Donor")
    loser, survivor = (live, erased) if erased_side == "survivor" else (erased, live)
    response = client.post(f"/api/supporters/{loser}/merge", json={"into": str(survivor)}, headers=staff)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "CannotMergeErased"
    body = client.get(f"/api/supporters/{live}", headers=staff).json()
    assert (body["id"], body["email"], body["merged_ids"]) == (str(live), "live@example.org", [])


def test_erasure_blanks_the_words_of_a_declaration_cancellation(runtime: Runtime, client: TestClient) -> None:
    staff = staff_token(runtime, "fundraiser")
    supporter_id = make_supporter(runtime, email="ann@example.org", first_name="Ann", last_name="Smith")
    donor = DonorDetails(
        first_name="Ann",
        last_name="Smith",
        email="ann@example.org",
        title="Ms",
        address_line1="12 Acacia Avenue",
        town="Dover",
        postcode="CT16 1AA",
    ).normalised()
    with runtime.unit_of_work() as uow:
        declaration = service.record_declaration(
            uow,
            supporter_id,
            method=DeclarationMethod.WRITTEN,
            made_on=dt.date(2026, 1, 5),
            scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
            donor=donor,
            source="staff",
            wording_version="v1",
            wording_text="I want to Gift Aid my donations.",
        )
        declaration_id = declaration.id
    with runtime.unit_of_work() as uow:
        service.cancel_declaration(
            uow,
            declaration_id,
            effective_on=dt.date(2026, 2, 1),
            reason="Ann Smith phoned from 12 Acacia Avenue: husband John now pays tax",
        )
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter_id)
    (listed,) = client.get(f"/api/supporters/{supporter_id}/declarations", headers=staff).json()["items"]
    assert listed["first_name"] == "Erased"
    assert listed["cancellation_reason"] == ""


def test_what_hmrc_needs_is_kept_six_years_after_the_end_of_the_gifts_financial_period(runtime: Runtime) -> None:
    """A gift of 1 May 2021 (tax year to 5 April 2022), claimed in 2025: records are kept six years after the end of
    the period they relate to, so what the claim sent stays until 5 April 2028 (it went on 1 May 2027)."""
    from giftaid import service as giftaid_service
    from giftaid.models import ClaimDonor
    from giving.privacy import purge_due
    from tests.giftaid.factories import donor, make_gift

    ada = donor(runtime, made_on=dt.date(2024, 1, 10))
    make_gift(runtime, ada, amount=10_000, received_on=dt.date(2021, 5, 1))
    claim_day = dt.date(2025, 2, 1)
    with runtime.unit_of_work() as uow:
        built = giftaid_service.build_claim(uow, runtime.settings, through=claim_day, actor="test", today=claim_day)
    assert built.lines == 1
    with runtime.unit_of_work() as uow:
        assert erase_supporter(uow, runtime.settings, ada).purge_after == dt.date(2028, 4, 5)
    with runtime.unit_of_work() as uow:
        purge_due(uow, runtime.settings, today=dt.date(2027, 6, 1))
    with runtime.read_session() as session:
        assert session.exec(select(ClaimDonor)).one().last_name == "Lovelace"


def test_history_written_or_revised_after_an_erasure_keeps_no_words(runtime: Runtime) -> None:
    """A late webhook after an erasure: a new item, or one revised (a refund's allocation, a chargeback replacing a
    failure), is kept as the erasure keeps the others: type, time, amount and ids, no words; and a revision still
    finds its item (no second one is written beside it)."""
    supporter_id = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        service.record_history(
            uow,
            supporter_id,
            type="refund",
            summary="Refund of £5.00 to Ada Lovelace",
            amount=-500,
            currency="GBP",
            data={"refund_id": "r1", "reason": "Ada asked by phone"},
            dedupe_key="refund:r1",
        )
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter_id)
    with runtime.unit_of_work() as uow:
        revised = {"refund_id": "r1", "note": "Ada"}
        assert service.revise_history(uow, "refund:r1", summary="Refund of £7.00 to Ada", data=revised, amount=-700)
        service.record_history(
            uow, supporter_id, type="dispute", summary="Ada disputed it", data={"dispute_id": "d1", "by": "Ada"}
        )
    with runtime.read_session() as session:
        _, rows, _ = service.history(session, supporter_id)
        items = {row.type: row for row in rows}
    assert (items["refund"].summary, items["refund"].data, items["refund"].amount) == (
        "Refund (details erased)",
        {"refund_id": "r1"},
        -700,
    )
    assert (items["dispute"].summary, items["dispute"].data) == ("Dispute (details erased)", {"dispute_id": "d1"})
