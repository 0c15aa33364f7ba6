"""A claim still `built` whose submission got no answer (`unknown`: HMRC may hold it, `service.hmrc_may_have`) then
loses a donor line when its files are written (a donor the schedule shows as nothing, in a claim built before that
rule: `take_off_what_hmrc_would_refuse`). The adjustment about that gift (its money was refunded after the claim) was
void "as HMRC never had that tax", deleted and taken off the claim carrying it; but HMRC may have the message that
claimed it, and paid it. Maybe sent counts as sent: the adjustment stands where it is, and the take-off's event
lists it (`adjustments_kept`). Sent again once finance found HMRC does not have it (`--again`), the take-off voids it
as for a claim never sent."""

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


def _maybe_sent_with_a_doomed_line(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> tuple[uuid.UUID, uuid.UUID]:
    """Claim A claims Ada's gift and the refunded gift of "Doomed", and is sent with no answer; claim B carries the
    adjustment about the refund. A's donor row for Doomed then holds a name the schedule shows as nothing (a rule
    newer than A). Returns (A, B)."""
    make_gift(runtime, donor(runtime), amount=5_000, received_on=dt.date(2025, 1, 10))
    refunded = make_gift(runtime, donor(runtime, last_name="Doomed"), amount=10_000, received_on=dt.date(2025, 1, 11))
    first = build_claim_through(runtime, settings, dt.date(2025, 2, 1), TODAY)
    assert first.claim_id is not None
    gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, first.claim_id, actor="finance@example.org", today=TODAY)
        assert (sent.status, [e["type"] for e in sent.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    carrier = build_claim_through(runtime, settings, dt.date(2025, 7, 1), TODAY)
    assert carrier.claim_id is not None and carrier.adjustment == 2_500
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == first.claim_id, CD.c.last_name == "Doomed").values(first_name="\u0627")
        )
    return first.claim_id, carrier.claim_id


def _take_off_event(runtime: Runtime, claim_id: uuid.UUID) -> ClaimEvent:
    with runtime.read_session() as session:
        events = session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == claim_id)).all()
    [event] = [e for e in events if "gifts_taken_off" in e.detail]
    return event


def test_the_adjustment_about_a_line_taken_off_a_claim_hmrc_may_hold_stands(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, carrier_id = _maybe_sent_with_a_doomed_line(runtime, settings, gateway)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, first_id)
        service.write_claim_files(uow.session, settings, claim, tmp_path, "ods", today=TODAY)
    assert claim_of(runtime, first_id).gifts == 1  # the line no file can carry is off
    with runtime.read_session() as session:
        [adjustment] = session.exec(select(Adjustment)).all()
    assert (adjustment.applied_claim_id, adjustment.withdrawn_at) == (carrier_id, None)
    assert claim_of(runtime, carrier_id).adjustment == 2_500
    event = _take_off_event(runtime, first_id)
    assert event.detail["adjustments_kept"] == [str(adjustment.id)]
    assert "adjustments_void" not in event.detail


def test_sent_again_after_the_gateway_list_the_adjustment_is_void(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> None:
    first_id, carrier_id = _maybe_sent_with_a_doomed_line(runtime, settings, gateway)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, settings, first_id, actor="finance@example.org", again=True, today=TODAY)
    with runtime.read_session() as session:
        assert session.exec(select(Adjustment)).all() == []
    assert claim_of(runtime, carrier_id).adjustment == 0
    assert "adjustments_void" in _take_off_event(runtime, first_id).detail
