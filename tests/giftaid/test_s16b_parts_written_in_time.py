"""A part of a claim (a schedule of 1,000 lines, a message of 500,000) written before the four-year cut-off day of
some of its gifts was handed out in time: HMRC may have received it in time, and judges those gifts. Each part's
first writing is kept in the claim's history (who, when, which part: `parts_written` in a claim event), and the
take-off (`take_off_what_hmrc_would_refuse`) keeps the gifts of a part first written while they were in time. It
took them off, so the claim stopped counting gifts HMRC may have had, in time, in a file it was handed.

The part size is made small (as test_s14r does) so a few gifts make several parts."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from giftaid import schedule, service
from giftaid.models import ClaimEvent, ClaimGift, ClaimStatus
from giftaid.validator import validate_schedule
from tests.giftaid.factories import donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer: their four years ended on 5 April 2026

DATES = [
    dt.date(2021, 6, 1),  # out of time on LATE
    dt.date(2022, 5, 1),
    dt.date(2023, 5, 1),
    dt.date(2024, 5, 1),
    dt.date(2025, 5, 1),
]


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(schedule, "ROWS_PER_SCHEDULE", 2)
    return 2


def _build(runtime: Runtime, settings: Settings, dates: list[dt.date]) -> uuid.UUID:
    for day in dates:
        make_gift(runtime, donor(runtime), amount=10_000, received_on=day)
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert result.claim_id is not None
    return result.claim_id


def _part(runtime: Runtime, settings: Settings, claim_id: uuid.UUID, part: int, today: dt.date) -> list[dt.date]:
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        data = service.schedule_part(uow.session, settings, claim, part, actor="finance@example.org", today=today)
    return [d.date for d in validate_schedule(data, today=today).donations]


def _claimed(runtime: Runtime, claim_id: uuid.UUID) -> list[dt.date]:
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.claim_id == claim_id)).all()
    return sorted(row.received_on for row in rows)


def _written(runtime: Runtime, claim_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    """(who, what) of each part's first writing, from the claim's history."""
    with runtime.read_session() as session:
        events = session.exec(
            select(ClaimEvent).where(ClaimEvent.claim_id == claim_id).order_by(col(ClaimEvent.at), col(ClaimEvent.id))
        ).all()
    return [(e.actor, record) for e in events for record in e.detail.get("parts_written", [])]


def test_a_schedule_handed_out_in_time_keeps_its_gifts_after_the_cut_off(
    runtime: Runtime, settings: Settings, small_parts: int
) -> None:
    claim_id = _build(runtime, settings, DATES)
    assert _part(runtime, settings, claim_id, 1, BUILT_ON) == DATES[:2]  # handed out while every gift was in time
    later = [_part(runtime, settings, claim_id, part, LATE) for part in (2, 3)]
    assert later == [DATES[2:4], DATES[4:]]
    # The gift of 2021 was handed out in time (schedule 1): HMRC judges it, and the claim still counts it.
    assert _claimed(runtime, claim_id) == DATES
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.gifts, claim.total, claim.held_back, claim.earliest_on) == (5, 50_000, 0, DATES[0])
    # Downloaded again, schedule 1 is what was handed out.
    assert _part(runtime, settings, claim_id, 1, LATE) == DATES[:2]
    # Each part's first writing, once: who, which part, the day.
    written = _written(runtime, claim_id)
    assert [(who, r["kind"], r["part"], r["lines"], r["on"], r["via"]) for who, r in written] == [
        ("finance@example.org", "schedule", 1, [1, 2], BUILT_ON.isoformat(), "download"),
        ("finance@example.org", "schedule", 2, [3, 4], LATE.isoformat(), "download"),
        ("finance@example.org", "schedule", 3, [5, 5], LATE.isoformat(), "download"),
    ]


def test_a_part_not_handed_out_loses_its_late_gifts_and_the_parts_handed_out_keep_theirs_when_they_move_down(
    runtime: Runtime, settings: Settings, small_parts: int
) -> None:
    """Schedule 2 handed out in time holds a gift that passes the limit afterwards; schedule 1, never handed out,
    holds two. At the cut-off schedule 1 loses both and is dropped, schedule 2 moving down to be schedule 1: it keeps
    its gift, then and at every later writing."""
    dates = [dt.date(2021, 6, 1), dt.date(2021, 7, 1), dt.date(2021, 8, 1), *DATES[1:]]
    claim_id = _build(runtime, settings, dates)
    assert _part(runtime, settings, claim_id, 2, BUILT_ON) == [dt.date(2021, 8, 1), DATES[1]]
    assert _part(runtime, settings, claim_id, 1, LATE) == [dt.date(2021, 8, 1), DATES[1]]  # moved down, whole
    assert _claimed(runtime, claim_id) == dates[2:]
    assert _part(runtime, settings, claim_id, 3, LATE + dt.timedelta(days=30)) == DATES[4:]
    assert _part(runtime, settings, claim_id, 1, LATE + dt.timedelta(days=30)) == [dt.date(2021, 8, 1), DATES[1]]
    assert _claimed(runtime, claim_id) == dates[2:]
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        held = service.claim_json(session, claim, detail=True)["held_back"]
    assert (claim.gifts, claim.held_back, len(held)) == (5, 2, 2)
    # Schedule 1 as it is now is the schedule 2 first written in time: not recorded again.
    assert [(r["kind"], r["part"], r["on"]) for _, r in _written(runtime, claim_id)] == [
        ("schedule", 2, BUILT_ON.isoformat()),
        ("schedule", 3, (LATE + dt.timedelta(days=30)).isoformat()),
    ]


def test_the_files_written_in_time_keep_every_gift_they_hold(
    runtime: Runtime, settings: Settings, small_parts: int, tmp_path: Path
) -> None:
    """`giving giftaid claim` (or `export`) writes every part: all were handed out in time."""
    claim_id = _build(runtime, settings, DATES)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.write_claim_files(uow.session, settings, claim, tmp_path / "in-time", actor="cli", today=BUILT_ON)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        written = service.write_claim_files(uow.session, settings, claim, tmp_path / "late", "xml", today=LATE)
    assert b"<Date>2021-06-01</Date>" in written[0].read_bytes()
    assert _claimed(runtime, claim_id) == DATES
    assert [(who, r["kind"], r["part"]) for who, r in _written(runtime, claim_id)] == [
        ("cli", "schedule", 1),
        ("cli", "schedule", 2),
        ("cli", "schedule", 3),
        ("cli", "message", 1),
    ]


def test_a_message_sent_in_time_without_an_answer_keeps_its_gifts_when_sent_again(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> None:
    """HMRC may hold a submission that got no usable answer: sent again after the cut-off (`--again`), the message
    still holds the gifts that were in time when it was first sent."""
    claim_id = _build(runtime, settings, DATES)
    gateway.hook = lambda raw, reply: re.sub(rb"<CorrelationID>[^<]*</CorrelationID>", b"<CorrelationID/>", reply)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, settings, claim_id, actor="finance@example.org", today=BUILT_ON)
        assert (claim.status, [e["type"] for e in claim.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, settings, claim_id, actor="finance@example.org", again=True, today=LATE)
        assert claim.status == ClaimStatus.SUBMITTED and claim.correlation_id
    sent = gateway.submissions[claim.correlation_id].document
    assert b"<Date>2021-06-01</Date>" in sent
    assert _claimed(runtime, claim_id) == DATES
    assert [(r["kind"], r["part"], r["on"], r["via"]) for _, r in _written(runtime, claim_id)] == [
        ("message", 1, BUILT_ON.isoformat(), "submit")
    ]
