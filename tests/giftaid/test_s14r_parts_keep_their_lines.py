"""A claim in several parts (schedules of 1,000 lines, messages of 500,000) whose gifts are taken off before it is
written (`take_off_what_hmrc_would_refuse`): each part is a file of its own, handed out on its own, so a part
downloaded before the cut-off day and another after must between them hold every gift the claim still claims,
each once. Numbering every line 1..N again moved lines from one part into another: the lines that slid into a part
already handed out were in no file at all, yet still claimed. The parts keep their lines (each part numbered again
within itself), and the files written in one go are cut the same way.

The part size is made small (as test_exports does for messages) so a few gifts make several parts."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from lxml import etree
from sqlmodel import select

from core.runtime import Runtime
from giftaid import schedule, service
from giftaid.models import ClaimGift
from giftaid.validator import validate_schedule
from tests.giftaid.factories import donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer

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


def _build(runtime: Runtime) -> uuid.UUID:
    for day in DATES:
        make_gift(runtime, donor(runtime), amount=10_000, received_on=day)
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert result.claim_id is not None
    return result.claim_id


def _part(runtime: Runtime, claim_id: uuid.UUID, part: int, today: dt.date) -> list[dt.date]:
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        data = service.schedule_part(uow.session, runtime.settings, claim, part, actor="f@example.org", today=today)
    return [d.date for d in validate_schedule(data, today=today).donations]


def _claimed(runtime: Runtime, claim_id: uuid.UUID) -> list[dt.date]:
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.claim_id == claim_id)).all()
    return sorted(row.received_on for row in rows)


def test_a_part_handed_out_before_the_cut_off_and_the_next_after_hold_every_claimed_gift_once(
    runtime: Runtime, small_parts: int
) -> None:
    claim_id = _build(runtime)
    first = _part(runtime, claim_id, 1, BUILT_ON)  # handed out while every gift was in time
    assert first == DATES[:2]
    later = [_part(runtime, claim_id, part, LATE) for part in (2, 3)]
    handed_out = first + [day for part in later for day in part]
    still_claimed = _claimed(runtime, claim_id)
    # The first part's oldest gift, out of time since, was handed out in time: HMRC may have it, so it stays claimed.
    assert DATES[0] in still_claimed
    # Every gift still claimed is in a file handed out, and in one only.
    assert sorted(set(handed_out) & set(still_claimed)) == still_claimed
    assert len(handed_out) == len(set(handed_out))
    assert later == [DATES[2:4], DATES[4:]]
    # The first part, downloaded again, is what it was.
    assert _part(runtime, claim_id, 1, LATE) == DATES[:2]


def test_the_files_written_in_one_go_are_the_same_parts(runtime: Runtime, small_parts: int, tmp_path: Path) -> None:
    claim_id = _build(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        written = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "ods", today=LATE)
    parts = [[d.date for d in validate_schedule(path.read_bytes(), today=LATE).donations] for path in sorted(written)]
    assert parts == [DATES[1:2], DATES[2:4], DATES[4:]]


def test_hmrc_errors_on_a_message_with_short_parts_map_to_the_gad_as_sent(
    runtime: Runtime, small_parts: int, gateway: FakeGateway
) -> None:
    """A message's GAD[n] is its n-th line as sent: once a part is short, that is not line number n."""
    claim_id = _build(runtime)
    gateway.outcome = "business_error"
    gateway.error_gad = 2  # the message's second GAD: the gift of 2023 (line 3, the first part holding one line)
    with runtime.unit_of_work() as uow:
        correlation_id = service.submit_claim(uow, runtime.settings, claim_id, actor="f", today=LATE).correlation_id
    sent = gateway.submissions[correlation_id].document  # type: ignore[index]
    dates = etree.fromstring(sent).xpath("//*[local-name()='GAD']/*[local-name()='Date']/text()")
    assert [str(d) for d in dates] == [day.isoformat() for day in DATES[1:]]
    with runtime.unit_of_work() as uow:
        claim = service.poll_claim(uow, runtime.settings, claim_id, actor="f")
        (mapped,) = [e for e in claim.errors if e["line"] is not None]
    with runtime.read_session() as session:
        received = {row.gift_id: row.received_on for row in session.exec(select(ClaimGift))}
    assert [received[uuid.UUID(g)] for g in mapped["gift_ids"]] == [DATES[2]]


def test_a_part_left_empty_is_dropped_and_the_later_parts_move_down_whole(runtime: Runtime, small_parts: int) -> None:
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 7, 1))  # with DATES[0]: part 1
    claim_id = _build(runtime)
    before = [_part(runtime, claim_id, part, BUILT_ON) for part in (2, 3)]
    assert before == [DATES[1:3], DATES[3:5]]
    # Both gifts of part 1 go: the same files, each one part lower.
    assert [_part(runtime, claim_id, part, LATE) for part in (1, 2)] == before
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.lines, claim.gifts) == (4, 4)
