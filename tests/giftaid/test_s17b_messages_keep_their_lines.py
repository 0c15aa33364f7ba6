"""A claim of several Charities Online messages (500,000 lines each) whose schedule (1,000 lines) in an earlier
message is left empty by a take-off (`take_off_what_hmrc_would_refuse`): the empty schedule was dropped and every
later schedule moved down by one, so the first schedule of the next message slid into the earlier one. A message
already handed out then shared its lines with the earlier message written afterwards (HMRC would get them twice),
and the claim's record of the written message pointed at lines of another. The parts left empty now move only the
later schedules of their own message: the messages keep their boundaries.

The part sizes are made small (as test_s14r and test_exports do) so a few gifts make several of each."""

from __future__ import annotations

import datetime as dt
import io
import re
import uuid
from pathlib import Path

import pytest
from sqlmodel import select

from core.runtime import Runtime
from giftaid import schedule, service
from giftaid import xml as claim_xml
from giftaid.errors import NothingLeftToSend
from giftaid.models import ClaimGift
from giftaid.validator import validate_schedule
from tests.giftaid.factories import donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["FakeGateway", "gateway", "settings"]

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer

DATES = [
    dt.date(2021, 6, 1),  # schedule 1 (message 1): both out of time on LATE
    dt.date(2021, 7, 1),
    dt.date(2022, 5, 1),  # schedule 2 (message 1)
    dt.date(2023, 5, 1),
    dt.date(2024, 5, 1),  # schedule 3 (message 2)
    dt.date(2025, 5, 1),
]


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "ROWS_PER_SCHEDULE", 2)
    monkeypatch.setattr(claim_xml, "MAX_GAD_PER_MESSAGE", 4)


def _build(runtime: Runtime) -> uuid.UUID:
    for day in DATES:
        make_gift(runtime, donor(runtime), amount=10_000, received_on=day)
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert result.claim_id is not None
    return result.claim_id


def _message(runtime: Runtime, claim_id: uuid.UUID, part: int, today: dt.date) -> list[dt.date]:
    out = io.BytesIO()
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.write_xml_part(uow.session, runtime.settings, claim, part, out, actor="f@example.org", today=today)
    gads = re.findall(rb"<GAD>.*?</GAD>", out.getvalue(), re.S)
    return [dt.date.fromisoformat(re.search(rb"<Date>([0-9-]+)</Date>", g).group(1).decode()) for g in gads]  # type: ignore[union-attr]


def _claimed(runtime: Runtime, claim_id: uuid.UUID) -> list[dt.date]:
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.claim_id == claim_id)).all()
    return sorted(row.received_on for row in rows)


def test_an_emptied_schedule_moves_no_line_into_another_message(
    runtime: Runtime, small_parts: None, tmp_path: Path
) -> None:
    claim_id = _build(runtime)
    second = _message(runtime, claim_id, 2, BUILT_ON)  # handed out while every gift was in time
    assert second == DATES[4:]
    first = _message(runtime, claim_id, 1, LATE)  # schedule 1 never handed out: its two gifts are taken off
    assert first == DATES[2:4]
    # Every gift still claimed is in one message handed out, once; message 2 written again is what was handed out.
    assert sorted(first + second) == _claimed(runtime, claim_id) == DATES[2:]
    assert _message(runtime, claim_id, 2, LATE) == second
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert service.message_count(claim) == 2
        # The history follows the messages: message 2 as written is still lines 5-6.
        written = {(w.kind, w.part): w.lines() for w in service.parts_written(session, claim_id)}
    assert written[("message", 2)] == (5, 6)
    # The files written in one go agree: message by message, and schedule by schedule (no empty schedule written).
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        files = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "both", today=LATE)
    schedules = [f for f in files if f.suffix == ".ods"]
    assert [[d.date for d in validate_schedule(f.read_bytes(), today=LATE).donations] for f in schedules] == [
        DATES[2:4],
        DATES[4:],
    ]
    messages = [f.read_bytes() for f in files if f.suffix == ".xml"]
    assert [m.count(b"<GAD>") for m in messages] == [2, 2]


def test_the_schedule_a_take_off_left_empty_is_refused_in_words(runtime: Runtime, small_parts: None) -> None:
    """Message 1's schedules moved down within it: its last schedule (lines 3-4) is left empty. Its download is a
    409 saying so, not HMRC's "Enter details for at least one Gift Aid donation" as a failed export."""
    claim_id = _build(runtime)
    _message(runtime, claim_id, 2, BUILT_ON)
    _message(runtime, claim_id, 1, LATE)
    refused = pytest.raises(NothingLeftToSend, match=r"schedule 2 of claim .* has no lines left")
    with refused, runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.schedule_part(uow.session, runtime.settings, claim, 2, actor="f@example.org", today=LATE)


def test_a_message_left_empty_is_dropped_whole_and_the_next_moves_down_whole(
    runtime: Runtime, small_parts: None
) -> None:
    """Every gift of message 1 is out of time and it was never handed out: it goes, and message 2 (handed out)
    becomes message 1 as it was, its history following it."""
    for day in [dt.date(2021, 6, 1), dt.date(2021, 7, 1), dt.date(2021, 8, 1), dt.date(2021, 9, 1), *DATES[4:]]:
        make_gift(runtime, donor(runtime), amount=10_000, received_on=day)
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    claim_id = built.claim_id
    assert claim_id is not None
    second = _message(runtime, claim_id, 2, BUILT_ON)
    assert second == DATES[4:]
    assert _message(runtime, claim_id, 1, LATE) == second
    assert _claimed(runtime, claim_id) == DATES[4:]
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (service.message_count(claim), claim.lines) == (1, 2)
        written = [(w.kind, w.lines()) for w in service.parts_written(session, claim_id)]
    assert ("message", (1, 2)) in written and all(lines[0] <= 2 for _, lines in written)
