"""A review of Gift Aid against giftaid.md §1 and contract.md: declarations' four-year reach, refunds of gifts
whose void declaration another declaration still covers, and what a voided declaration says it took back — on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from crm.models import DeclarationMethod, DeclarationScope
from giftaid import service
from giftaid.models import Adjustment, AdjustmentReason, ClaimGift
from tests.giftaid.factories import TODAY, donor, make_declaration, make_gift, make_supporter, set_gift, staff_headers

ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "address_line1": "12 Acacia Avenue",
    "postcode": "CT16 1AA",
    "country": "GB",
}


def build(runtime: Runtime, settings: Settings | None = None, today: dt.date = TODAY) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, settings or runtime.settings, through=today, actor="test", today=today)


def code_of(runtime: Runtime, gift_id: uuid.UUID, today: dt.date = TODAY) -> str:
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift_id, today=today)
    return explanation.code or "claimable"


def refund_adjustments(runtime: Runtime) -> list[tuple[uuid.UUID, str, int, int]]:
    with runtime.read_session() as session:
        rows = session.exec(select(Adjustment).order_by(col(Adjustment.detected_at))).all()
        return [(a.gift_id, a.reason, a.returned_amount, a.amount) for a in rows]


# --- §1C rule 11: a declaration reaches back four years, whatever its scope ---------------------------------------


def test_a_declaration_for_one_gift_does_not_reach_back_more_than_four_years(runtime: Runtime, client: Any) -> None:
    """A gift of 1 June 2021 is still within its time limit on 1 Nov 2025 (its tax year ended 5 April 2022), but a
    declaration made on 1 Nov 2025 reaches back to 1 Nov 2021 at most: naming the gift does not make it covered.
    The gift of exactly four years before is covered."""
    supporter = make_supporter(runtime)
    too_old = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2021, 6, 1))
    four_years = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2021, 11, 1))
    headers = staff_headers(runtime, "fundraiser")
    for gift in (too_old, four_years):
        body = {"method": "written", "made_on": "2025-11-01", "scope": "this_gift", "gift_id": str(gift)}
        answer = client.post(
            f"/api/supporters/{supporter}/declarations", headers=headers, json={**body, "address": ADDRESS}
        )
        assert answer.status_code == 201, answer.text

    assert code_of(runtime, too_old) == "no_declaration"
    assert code_of(runtime, four_years) == "claimable"
    result = build(runtime)
    assert result.total == 10_000
    assert [(h.gift_id, h.reason.split(":")[0]) for h in result.held_back] == [(too_old, "no_declaration")]


# --- §5: money returned on a claimed gift is always taken back ----------------------------------------------------


def test_a_refund_is_taken_back_when_the_gifts_void_declaration_is_not_its_only_one(runtime: Runtime) -> None:
    """Ada's gift was claimed under her newer oral declaration; that declaration was later voided (a cancellation
    within its 30 days, recorded late), but her written one still covers the gift, so voiding takes nothing back.
    When the gift is then refunded, the Gift Aid claimed on it must still be taken back by the next claim."""
    ada = donor(runtime, made_on=dt.date(2024, 1, 10))
    oral = make_declaration(
        runtime,
        ada,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 3, 1),
        confirmation_sent_on=dt.date(2025, 3, 2),
    )
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime)
    assert first.total == 10_000
    with runtime.read_session() as session:
        assert session.exec(select(ClaimGift.declaration_id).where(ClaimGift.gift_id == gift)).one() == oral
    with runtime.unit_of_work() as uow:
        change = service.cancel_declaration(
            uow, runtime.settings, oral, effective_on=dt.date(2025, 3, 20), actor="test", today=TODAY
        )
    assert change.adjusted_gift_ids == []  # the written declaration still covers it

    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, donor(runtime, first_name="Bob"), amount=20_000, received_on=dt.date(2025, 10, 1))
    second = build(runtime)

    assert refund_adjustments(runtime) == [(gift, AdjustmentReason.REFUND, 10_000, 2_500)]
    assert second.adjustment == 2_500


# --- what a voided declaration says it changed ---------------------------------------------------------------------


def test_a_voided_declaration_lists_only_the_gifts_it_took_back(runtime: Runtime, client: Any) -> None:
    """Cancelling Ada's oral declaration within its 30 days takes back the Gift Aid on her claimed gift; the answer
    names that gift, not Bea's gift refunded meanwhile (its adjustment is found by the same search, but Ada's
    declaration did not take it back, and a fundraiser has no business seeing another supporter's gifts there)."""
    ada = donor(
        runtime,
        method=DeclarationMethod.ORAL,
        scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
        made_on=dt.date(2025, 3, 1),
        confirmation_sent_on=dt.date(2025, 3, 2),
    )
    bea = donor(runtime, first_name="Bea")
    adas = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    beas = make_gift(runtime, bea, amount=10_000, received_on=dt.date(2025, 6, 1))
    assert build(runtime).total == 20_000
    set_gift(runtime, beas, returned_amount=10_000)
    with runtime.read_session() as session:
        from crm.models import Declaration

        oral = session.exec(select(Declaration.id).where(Declaration.supporter_id == ada)).one()

    answer = client.post(
        f"/api/declarations/{oral}/cancel",
        json={"effective_on": "2025-03-20"},
        headers=staff_headers(runtime, "fundraiser"),
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["voided"] is True
    assert answer.json()["adjusted_gift_ids"] == [str(adas)]
    # Bea's refund is still taken back, by the next claim.
    assert {(gift, reason) for gift, reason, _, _ in refund_adjustments(runtime)} == {
        (adas, AdjustmentReason.DECLARATION_VOIDED),
        (beas, AdjustmentReason.REFUND),
    }


# --- §4 check 5: a declaration is made on or before the claim ----------------------------------------------------


def test_a_declaration_dated_after_today_covers_nothing_yet(runtime: Runtime) -> None:
    """crm takes a declaration dated up to a day ahead (UTC against UK dates); one dated tomorrow does not yet exist
    for a claim built today, so the gifts it would cover are held back today and claimable from tomorrow."""
    supporter = make_supporter(runtime)
    make_declaration(runtime, supporter, made_on=TODAY + dt.timedelta(days=1))
    gift = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2025, 6, 1))

    assert code_of(runtime, gift) == "no_declaration"
    assert code_of(runtime, gift, today=TODAY + dt.timedelta(days=1)) == "claimable"
    assert [h.gift_id for h in build(runtime).held_back] == [gift]


# --- §1C rule 15, §4: each gift is claimed with the address in force on its date -------------------------------------


def test_each_gift_is_claimed_with_the_address_of_the_declaration_in_force_on_its_date(runtime: Runtime) -> None:
    """Ada gave monthly from 2023 under the declaration made when she started (12, CT16 1AA); she moved, and in
    March 2025 a one-off gift brought a new enduring declaration (7, M99 2QD), reaching back four years. Her cheque of
    June 2024 (no declaration given with it) is claimed with the old address, in force then, not the newest; her
    instalment of June 2025 with the new one, though the instalment still names the declaration it started with."""
    ada = make_supporter(runtime)
    first = make_declaration(runtime, ada, made_on=dt.date(2023, 1, 10), house="12", postcode="CT16 1AA")
    make_declaration(runtime, ada, made_on=dt.date(2025, 3, 1), house="7", postcode="M99 2QD")
    make_gift(runtime, ada, amount=5_000, received_on=dt.date(2024, 6, 1))
    make_gift(runtime, ada, amount=5_000, received_on=dt.date(2025, 6, 1), declaration_id=first)

    result = build(runtime)

    assert result.claim_id is not None
    with runtime.read_session() as session:
        lines = list(service.claim_lines(session, result.claim_id, 1, result.lines))
    assert [(line.date, line.house, line.postcode) for line in lines] == [
        (dt.date(2024, 6, 1), "12", "CT16 1AA"),
        (dt.date(2025, 6, 1), "7", "M99 2QD"),
    ]
