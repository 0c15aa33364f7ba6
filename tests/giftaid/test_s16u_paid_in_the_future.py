"""HMRC's payment of a claim cannot be dated in the future (found in review, h15): a slip such as 2062 for 2026 was
kept as the claim's payment date; now refused, the claim left as it was."""

from __future__ import annotations

import datetime as dt

import pytest

from core.clock import uk_today
from core.runtime import Runtime
from giftaid import service
from giftaid.errors import InvalidClaimRequest
from giftaid.models import ClaimStatus
from tests.giftaid.factories import TODAY, donor, make_gift


def test_a_payment_dated_tomorrow_is_refused_and_one_dated_today_is_kept(runtime: Runtime) -> None:
    make_gift(runtime, donor(runtime))
    with runtime.unit_of_work() as uow:
        claim_id = service.build_claim(uow, runtime.settings, through=TODAY, actor="f", today=TODAY).claim_id
    assert claim_id is not None
    for status in (ClaimStatus.SUBMITTED, ClaimStatus.ACCEPTED):
        with runtime.unit_of_work() as uow:
            service.change_status(uow, claim_id, status, actor="f")
    tomorrow = uk_today() + dt.timedelta(days=1)
    with runtime.unit_of_work() as uow, pytest.raises(InvalidClaimRequest, match="cannot be in the future"):
        service.change_status(uow, claim_id, ClaimStatus.PAID, actor="f", paid_amount=2_500, paid_on=tomorrow)
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.status, claim.paid_on) == (ClaimStatus.ACCEPTED, None)
    with runtime.unit_of_work() as uow:
        claim = service.change_status(uow, claim_id, ClaimStatus.PAID, actor="f", paid_amount=2_500, paid_on=uk_today())
        assert (claim.status, claim.paid_on) == (ClaimStatus.PAID, uk_today())
