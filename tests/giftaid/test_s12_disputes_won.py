"""A claimed gift charged back or lost in a dispute gets a Gift Aid adjustment; when the dispute is then won (the
money comes back: payments puts the gift back to `paid`, or its `returned_amount` back down), the adjustment must
not stand, or finance repays HMRC tax on money the charity kept:

- an adjustment no claim carries yet, or one carried by a claim not yet sent, is withdrawn (kept, with when and
  why; a claim still `built` loses it from its Box 2 / XML, its history says so);
- one a sent claim already deducted at HMRC means the gift's Gift Aid is claimed again: when HMRC's net on the gift
  is nothing (all of it was taken back), the next claim claims the gift again (HMRC's own way of putting right an
  under-claim: the donation in a later claim); when only part was taken back, that cannot be written as a claim
  line, so it is shown to finance on the claim that deducted it."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlmodel import select

from core.runtime import Runtime
from giftaid import service
from giftaid.models import Adjustment, ClaimGift, ClaimStatus
from payments.models import GiftStatus
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift


def build(runtime: Runtime) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)


def the_adjustment(runtime: Runtime) -> Adjustment:
    with runtime.read_session() as session:
        (adjustment,) = session.exec(select(Adjustment)).all()
        return adjustment


def claimed_gift_aid(runtime: Runtime, supporter: uuid.UUID) -> int:
    with runtime.read_session() as session:
        return service.supporter_totals(session, [supporter], runtime.settings)["gift_aid_claimed"].amount


def mark(runtime: Runtime, claim_id: uuid.UUID | None, *statuses: ClaimStatus) -> None:
    assert claim_id is not None
    with runtime.unit_of_work() as uow:
        for status in statuses:
            service.change_status(uow, claim_id, status, actor="f@example.org")


def test_an_adjustment_not_yet_carried_is_withdrawn_when_the_chargeback_is_cancelled(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    set_gift(runtime, gift, status=GiftStatus.REVERSED)  # GoCardless chargeback
    make_gift(runtime, ada, amount=2_000, received_on=dt.date(2025, 10, 1))
    small = build(runtime)
    assert small.adjustment == 0  # £25.00 does not fit £5.00 of Gift Aid: it waits
    assert (the_adjustment(runtime).applied_claim_id, the_adjustment(runtime).withdrawn_at) == (None, None)
    assert claimed_gift_aid(runtime, ada) == 500  # 2,500 + 500 claimed, 2,500 taken back

    set_gift(runtime, gift, status=GiftStatus.PAID)  # chargeback cancelled: the money is the charity's again
    make_gift(runtime, ada, amount=40_000, received_on=dt.date(2025, 10, 2))
    later = build(runtime)

    assert later.adjustment == 0 and later.gift_aid == 10_000
    adjustment = the_adjustment(runtime)  # recorded, not deleted
    assert adjustment.withdrawn_at is not None and adjustment.applied_claim_id is None
    assert "came back" in adjustment.withdrawn_reason and str(first) in adjustment.detail
    assert claimed_gift_aid(runtime, ada) == 2_500 + 500 + 10_000
    # Lost again later: taken back again, once.
    set_gift(runtime, gift, status=GiftStatus.REVERSED)
    make_gift(runtime, ada, amount=40_000, received_on=dt.date(2025, 10, 3))
    assert build(runtime).adjustment == 2_500


def test_an_adjustment_on_an_unsent_claim_comes_off_it_when_the_dispute_is_won(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=10_000)  # Stripe dispute lost
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.claim_id is not None and carrying.adjustment == 2_500

    set_gift(runtime, gift, returned_amount=0)  # won on appeal
    assert build(runtime).claim_id is None  # nothing new to claim: the search still runs (and is kept)

    with runtime.read_session() as session:
        claim = service.get_claim(session, carrying.claim_id)
        body = service.claim_json(session, claim, detail=True)
    assert claim.adjustment == 0 and claim.irmarks == []
    [event] = [e["detail"] for e in body["events"] if "adjustment_withdrawn" in e["detail"]]
    assert event["adjustment_withdrawn"] == {"amount": 2_500, "currency": "GBP"} and event["gift_id"] == str(gift)
    assert "came back" in event["reason"]
    adjustment = the_adjustment(runtime)
    assert adjustment.withdrawn_at is not None and adjustment.applied_claim_id is None
    assert claimed_gift_aid(runtime, ada) == 2_500 + 5_000


def test_a_gift_whose_adjustment_hmrc_already_has_is_claimed_again(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    mark(runtime, first, ClaimStatus.SUBMITTED, ClaimStatus.ACCEPTED)
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.adjustment == 2_500
    mark(runtime, carrying.claim_id, ClaimStatus.SUBMITTED)  # HMRC has the deduction
    assert claimed_gift_aid(runtime, ada) == 5_000

    set_gift(runtime, gift, returned_amount=0)  # won on appeal
    again = build(runtime)

    assert again.claim_id is not None and again.gifts == 1 and again.total == 10_000 and again.adjustment == 0
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.gift_id == gift)).all()
        assert {(r.claim_id, r.live) for r in rows} == {(first, None), (again.claim_id, True)}
        first_claim = service.get_claim(session, first)  # type: ignore[arg-type]
        assert first_claim.status == ClaimStatus.ACCEPTED  # its files and history are as they were
        events = service.claim_json(session, service.get_claim(session, carrying.claim_id), detail=True)["events"]  # type: ignore[arg-type]
    adjustment = the_adjustment(runtime)
    assert adjustment.withdrawn_at is not None and adjustment.applied_claim_id == carrying.claim_id
    assert "claimed again" in adjustment.withdrawn_reason
    assert any("claimed again" in e["detail"].get("reason", "") for e in events)
    # HMRC: +25.00 (first), -25.00 (carrying), +25.00 (again), and the £200 gift's 50.00.
    assert claimed_gift_aid(runtime, ada) == 7_500
    assert build(runtime).claim_id is None  # claimed once again, not every time


def test_a_part_taken_back_at_hmrc_on_money_kept_is_shown_to_finance(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=6_000)  # a dispute of £60 lost
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.adjustment == 1_500
    mark(runtime, carrying.claim_id, ClaimStatus.SUBMITTED)

    set_gift(runtime, gift, returned_amount=0)  # won
    assert build(runtime).claim_id is None
    assert build(runtime).claim_id is None  # said once

    with runtime.read_session() as session:
        events = service.claim_json(session, service.get_claim(session, carrying.claim_id), detail=True)["events"]  # type: ignore[arg-type]
    notes = [e["detail"] for e in events if "gift_aid_owed" in e["detail"]]
    assert len(notes) == 1
    assert notes[0]["gift_aid_owed"] == {"amount": 1_500, "currency": "GBP"} and notes[0]["gift_id"] == str(gift)
    assert "HMRC" in notes[0]["reason"]
    adjustment = the_adjustment(runtime)
    assert adjustment.withdrawn_at is None and adjustment.applied_claim_id == carrying.claim_id


def test_a_rejected_claim_whose_deduction_was_claimed_again_says_so(runtime: Runtime) -> None:
    """The claim that deducted the gift's Gift Aid is rejected after the gift was claimed again: HMRC never had the
    deduction, so the gift's first claim stands; the rejection lists the gift for finance."""
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime).claim_id
    mark(runtime, carrying, ClaimStatus.SUBMITTED)
    set_gift(runtime, gift, returned_amount=0)
    assert build(runtime).gifts == 1
    with runtime.unit_of_work() as uow:
        service.change_status(uow, carrying, ClaimStatus.REJECTED, actor="f@example.org", reason="typo")  # type: ignore[arg-type]
    with runtime.read_session() as session:
        events = service.claim_json(session, service.get_claim(session, carrying), detail=True)["events"]  # type: ignore[arg-type]
    assert events[-1]["detail"]["gifts_claimed_again"] == [str(gift)]
    assert the_adjustment(runtime).applied_claim_id == carrying
