"""A claim still `built` whose submission got no usable answer (an `unknown` error: an HTML page or a timeout
answered it, or an acknowledgement came without a CorrelationID) may be held by HMRC, deductions included. For its
adjustments it counts as sent (`service.hmrc_may_have`), wherever adjustments ask: an adjustment it carries is never
withdrawn from it nor moved to another claim, so the same tax is never deducted twice.

- Money that comes back on a gift whose Gift Aid it took back: as for a sent claim, the gift is claimed again by the
  next claim and the claim keeps its deduction (it was withdrawn from it, as if never sent).
- A rejection of the claim that claimed the gift: the adjustment stays with the claim that may have sent it, listed
  for finance (`adjustments_already_deducted`); it was deleted and taken off that claim."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Adjustment, ClaimEvent, ClaimGift, ClaimStatus
from tests.giftaid.claim_locks import build_claim_through, claim_of
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

NO_ANSWERS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "html_page": lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>",
    "no_correlation_id": lambda raw, reply: re.sub(
        rb"<CorrelationID>[^<]*</CorrelationID>", b"<CorrelationID/>", reply
    ),
}


def _carrier_maybe_sent(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, how: str
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Claim A (sent) claims a gift later refunded; claim B carries the adjustment that takes its Gift Aid back, and
    is submitted with no usable answer. Returns (A, B, the refunded gift)."""
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 1, 10))
    first = build_claim_through(runtime, settings, dt.date(2025, 2, 1), TODAY)
    assert first.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first.claim_id, ClaimStatus.SUBMITTED, actor="finance@example.org")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    carrier = build_claim_through(runtime, settings, dt.date(2025, 7, 1), TODAY)
    assert carrier.claim_id is not None and carrier.adjustment == 2_500
    gateway.hook = NO_ANSWERS[how]
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, carrier.claim_id, actor="finance@example.org", today=TODAY)
        assert (sent.status, [e["type"] for e in sent.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None
    return first.claim_id, carrier.claim_id, refunded


def _adjustments(runtime: Runtime) -> list[Adjustment]:
    with runtime.read_session() as session:
        return list(session.exec(select(Adjustment)))


def _events(runtime: Runtime, claim_id: uuid.UUID) -> list[ClaimEvent]:
    with runtime.read_session() as session:
        return list(session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == claim_id)))


@pytest.mark.parametrize("how", sorted(NO_ANSWERS))
def test_money_back_keeps_the_deduction_of_a_claim_hmrc_may_hold_and_claims_the_gift_again(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, how: str
) -> None:
    first_id, carrier_id, refunded = _carrier_maybe_sent(runtime, settings, gateway, how)
    set_gift(runtime, refunded, returned_amount=0)  # a dispute won: the money came back
    make_gift(runtime, donor(runtime), amount=20_000, received_on=dt.date(2025, 9, 1))
    after = build_claim_through(runtime, settings, TODAY, TODAY)
    # HMRC may have B with its deduction: B keeps it, and the gift is claimed again (HMRC's net: claimed, taken
    # back, claimed again). Treated as never sent, B lost its deduction and the gift stayed claimed in A: had HMRC
    # held B, the gift's Gift Aid was deducted for good.
    assert claim_of(runtime, carrier_id).adjustment == 2_500
    [adjustment] = _adjustments(runtime)
    assert adjustment.applied_claim_id == carrier_id and adjustment.withdrawn_reason.endswith("claimed again")
    assert after.claim_id is not None and after.gifts == 2 and after.total == 30_000 and after.adjustment == 0
    with runtime.read_session() as session:
        rows = {row.claim_id: row.live for row in session.exec(select(ClaimGift).where(ClaimGift.gift_id == refunded))}
    assert rows == {first_id: None, after.claim_id: True}
    assert any("adjustment_claimed_again" in e.detail for e in _events(runtime, carrier_id))


@pytest.mark.parametrize("how", sorted(NO_ANSWERS))
def test_a_rejection_leaves_the_adjustment_with_a_claim_hmrc_may_hold(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, how: str
) -> None:
    first_id, carrier_id, _ = _carrier_maybe_sent(runtime, settings, gateway, how)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first_id, ClaimStatus.REJECTED, actor="finance@example.org", reason="HMRC said no")
    # B may be with HMRC, deduction and all: the adjustment stays on it and the rejection lists it for finance.
    assert claim_of(runtime, carrier_id).adjustment == 2_500
    [adjustment] = _adjustments(runtime)
    assert adjustment.applied_claim_id == carrier_id and adjustment.withdrawn_at is None
    [rejection] = [e for e in _events(runtime, first_id) if e.status == ClaimStatus.REJECTED]
    assert rejection.detail["adjustments_already_deducted"] == [str(adjustment.id)]
    assert not any("adjustment_withdrawn" in e.detail for e in _events(runtime, carrier_id))
