"""A withdrawn adjustment (the money came back before any claim carried it) is not Gift Aid "the next claim is to
deduct": the supporter page's figure (`giving.staff.queries.open_adjustments`) leaves it out, as every claim
build does."""

from __future__ import annotations

from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giftaid.models import Adjustment
from giving.staff import queries
from tests.giftaid.fake_gateway import gateway, settings
from tests.giftaid.test_s17y_adjustments_after_again import _withdrawn_adjustment

__all__ = ["gateway", "settings"]


def test_a_withdrawn_adjustment_is_not_shown_as_to_deduct(runtime: Runtime, settings: Settings) -> None:
    _, adjustment_id = _withdrawn_adjustment(runtime, settings)
    with runtime.read_session() as session:
        adjustment = session.exec(select(Adjustment).where(Adjustment.id == adjustment_id)).one()
        assert queries.open_adjustments(session, [adjustment.gift_id]) == {}
