"""Adjustments after `--again`, and withdrawn adjustments kept through a rejection or a take-off.

- A claim carrying an adjustment is submitted with no answer (`unknown`: HMRC may hold it), then sent again once
  finance found HMRC does not have it (`--again`), losing a donor line on the way (a donor the schedule shows as
  nothing). Its Gift Aid is now smaller than the adjustment it carries: the adjustment must wait for the next claim
  (HMRC takes no negative claim), as for a claim never sent; it stayed on, because the claim still carried its
  `unknown` error while it was sent again.
- An adjustment withdrawn because the money came back (kept with when and why, "never deleted") was deleted when
  the claim that claimed its gift was rejected, or when that gift was taken off an unsent claim."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Adjustment, ClaimDonor, ClaimEvent, ClaimStatus
from tests.giftaid.claim_locks import build_claim_through, claim_of
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

CD = ClaimDonor.__table__  # type: ignore[attr-defined]


def _adjustments(runtime: Runtime) -> list[Adjustment]:
    with runtime.read_session() as session:
        return list(session.exec(select(Adjustment)))


def _events(runtime: Runtime, claim_id: uuid.UUID) -> list[ClaimEvent]:
    with runtime.read_session() as session:
        return list(session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == claim_id)))


def _carrier_maybe_sent_with_a_doomed_line(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> tuple[uuid.UUID, uuid.UUID]:
    """Claim A (submitted) claims a gift later refunded; claim B claims Ada's £50 and Doomed's £100 and carries the
    £25 adjustment (Gift Aid £37.50), and is submitted with no answer. B's donor row for Doomed then holds a name the
    schedule shows as nothing. Returns (A, B)."""
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 1, 10))
    first = build_claim_through(runtime, settings, dt.date(2025, 2, 1), TODAY)
    assert first.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first.claim_id, ClaimStatus.SUBMITTED, actor="finance@example.org")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=5_000, received_on=dt.date(2025, 6, 1))
    make_gift(runtime, donor(runtime, last_name="Doomed"), amount=10_000, received_on=dt.date(2025, 6, 2))
    carrier = build_claim_through(runtime, settings, dt.date(2025, 7, 1), TODAY)
    assert carrier.claim_id is not None and (carrier.gift_aid, carrier.adjustment) == (3_750, 2_500)
    gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, carrier.claim_id, actor="finance@example.org", today=TODAY)
        assert (sent.status, [e["type"] for e in sent.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD)
            .where(CD.c.claim_id == carrier.claim_id, CD.c.last_name == "Doomed")
            .values(first_name="\u0627")
        )
    return first.claim_id, carrier.claim_id


def _assert_the_adjustment_waits(runtime: Runtime, carrier_id: uuid.UUID) -> None:
    claim = claim_of(runtime, carrier_id)
    assert (claim.status, claim.gifts, claim.gift_aid) == (ClaimStatus.SUBMITTED, 1, 1_250)
    # £25 no longer fits £12.50 of Gift Aid: it waits for the next claim, and the message carried no deduction.
    assert claim.adjustment == 0
    [adjustment] = _adjustments(runtime)
    assert (adjustment.applied_claim_id, adjustment.withdrawn_at) == (None, None)
    released = [
        e.detail["adjustments_released"] for e in _events(runtime, carrier_id) if "adjustments_released" in e.detail
    ]
    assert released == [[str(adjustment.id)]]


def test_sent_again_without_a_line_the_adjustment_that_no_longer_fits_waits(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> None:
    _, carrier_id = _carrier_maybe_sent_with_a_doomed_line(runtime, settings, gateway)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, settings, carrier_id, actor="finance@example.org", again=True, today=TODAY)
    _assert_the_adjustment_waits(runtime, carrier_id)


def test_written_while_maybe_sent_then_sent_again_the_adjustment_that_no_longer_fits_waits(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    _, carrier_id = _carrier_maybe_sent_with_a_doomed_line(runtime, settings, gateway)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, carrier_id)
        service.write_claim_files(uow.session, settings, claim, tmp_path, "ods", today=TODAY)
    # HMRC may hold B as first sent, deduction included: it stays while that is so.
    assert claim_of(runtime, carrier_id).adjustment == 2_500
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, settings, carrier_id, actor="finance@example.org", again=True, today=TODAY)
    _assert_the_adjustment_waits(runtime, carrier_id)


def _withdrawn_adjustment(runtime: Runtime, settings: Settings) -> tuple[uuid.UUID, uuid.UUID]:
    """Claim A (built) claims Doomed's gift, then refunded; the money comes back before any claim carried the
    adjustment. Returns (A, the withdrawn adjustment)."""
    ada = donor(runtime, last_name="Doomed")
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    make_gift(runtime, donor(runtime), amount=5_000, received_on=dt.date(2025, 6, 2))
    first = build_claim_through(runtime, settings, dt.date(2025, 7, 1), TODAY)
    assert first.claim_id is not None
    set_gift(runtime, gift, returned_amount=10_000)  # dispute lost
    make_gift(runtime, ada, amount=2_000, received_on=dt.date(2025, 10, 1))
    assert build_claim_through(runtime, settings, dt.date(2025, 10, 1), TODAY).adjustment == 0  # £25 waits
    set_gift(runtime, gift, returned_amount=0)  # won on appeal
    assert build_claim_through(runtime, settings, TODAY, TODAY).claim_id is None  # the search runs
    [adjustment] = _adjustments(runtime)
    assert adjustment.withdrawn_at is not None and adjustment.applied_claim_id is None
    return first.claim_id, adjustment.id


def test_a_rejection_keeps_a_withdrawn_adjustment(runtime: Runtime, settings: Settings) -> None:
    first_id, adjustment_id = _withdrawn_adjustment(runtime, settings)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first_id, ClaimStatus.REJECTED, actor="finance@example.org", reason="HMRC said no")
    [adjustment] = _adjustments(runtime)  # kept, with when and why: never deleted
    assert adjustment.id == adjustment_id and adjustment.withdrawn_at is not None
    assert "came back" in adjustment.withdrawn_reason and adjustment.applied_claim_id is None


def test_a_take_off_keeps_a_withdrawn_adjustment(runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    first_id, adjustment_id = _withdrawn_adjustment(runtime, settings)
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == first_id, CD.c.last_name == "Doomed").values(first_name="\u0627")
        )
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, first_id)
        service.write_claim_files(uow.session, settings, claim, tmp_path, "ods", today=TODAY)
    assert claim_of(runtime, first_id).gifts == 1
    [adjustment] = _adjustments(runtime)
    assert adjustment.id == adjustment_id and adjustment.withdrawn_at is not None
    [event] = [e for e in _events(runtime, first_id) if "gifts_taken_off" in e.detail]
    assert "adjustments_void" not in event.detail
