"""A claim built in time but written or sent after some of its gifts passed the four-year limit (§1 rule 17; the
default `[charity] financial_year_end` is the tax year: a gift of 1 June 2021 may be claimed until 5 April 2026).
Before its files are written or it is sent, a claim still `built` loses those gifts: they are held back as
`out_of_time` (its held-back gifts, its history with who and when), its lines are numbered again, its totals and
adjustments follow, and the files hold only what HMRC can take. Nothing changes if nothing would be left (409)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from lxml import etree
from sqlmodel import col, select

from core.clock import UK
from core.runtime import Runtime
from core.settings import Settings
from giftaid import repository, service
from giftaid.errors import NothingLeftToSend
from giftaid.models import Adjustment, Claim, ClaimDonor, ClaimEvent, ClaimGift, ClaimStatus, HeldBack, Message
from giftaid.validator import validate_schedule
from giftaid.xml import R68_NS
from tests.giftaid.factories import donor, make_gift, set_gift, staff_headers
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings
from tests.giftaid.hmrc_files import envelope_errors, r68_errors

__all__ = ["gateway", "settings"]

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer: their four years ended on 5 April 2026


def _gifts(runtime: Runtime) -> dict[str, uuid.UUID]:
    return {
        "old": make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 6, 1)),
        "old_small": make_gift(runtime, donor(runtime), amount=1_000, received_on=dt.date(2021, 8, 1)),
        "later": make_gift(runtime, donor(runtime), amount=5_000, received_on=dt.date(2022, 5, 1)),
        "recent": make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1)),
        "small_1": make_gift(runtime, donor(runtime), amount=1_500, received_on=dt.date(2025, 7, 1)),
        "small_2": make_gift(runtime, donor(runtime), amount=1_500, received_on=dt.date(2025, 7, 2)),
    }


def _build(runtime: Runtime, settings: Settings, today: dt.date = BUILT_ON) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, settings, through=today, actor="builder@example.org", today=today)
    assert result.claim_id is not None and not result.held_back
    return result.claim_id


def _lines(runtime: Runtime, claim_id: uuid.UUID) -> dict[uuid.UUID, int]:
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.claim_id == claim_id)).all()
    return {row.gift_id: row.line_no for row in rows}


def _events(runtime: Runtime, claim_id: uuid.UUID) -> list[ClaimEvent]:
    with runtime.read_session() as session:
        return list(
            session.exec(
                select(ClaimEvent)
                .where(ClaimEvent.claim_id == claim_id)
                .order_by(col(ClaimEvent.at), col(ClaimEvent.id))
            )
        )


def test_gifts_out_of_time_when_the_files_are_written_are_taken_off_and_held_back(
    runtime: Runtime, tmp_path: Path
) -> None:
    gifts = _gifts(runtime)
    claim_id = _build(runtime, runtime.settings)
    assert len(set(_lines(runtime, claim_id).values())) == 5

    # Looked at on the last day of the limit: nothing would be taken off. (Not written then: files handed out in time
    # keep their gifts, test_s16b_parts_written_in_time.)
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (
            service.take_off_what_hmrc_would_refuse(
                session, runtime.settings, claim, actor="f", today=LATE - dt.timedelta(days=1)
            )
            == []
        )
    assert len(_lines(runtime, claim_id)) == 6 and len(_events(runtime, claim_id)) == 1

    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        written = service.write_claim_files(
            uow.session, runtime.settings, claim, tmp_path / "late", actor="finance@example.org", today=LATE
        )
    lines = _lines(runtime, claim_id)
    assert set(lines) == {gifts["later"], gifts["recent"], gifts["small_1"], gifts["small_2"]}
    # Numbered again, 1..N in the same order: the donor lines, then the aggregated line.
    assert lines[gifts["later"]] == 1 and lines[gifts["recent"]] == 2
    assert lines[gifts["small_1"]] == lines[gifts["small_2"]] == 3
    with runtime.read_session() as session:
        saved = session.get(Claim, claim_id)
        assert saved is not None
        held = {h.gift_id: h for h in session.exec(select(HeldBack).where(HeldBack.claim_id == claim_id))}
        donors = session.exec(select(ClaimDonor).where(ClaimDonor.claim_id == claim_id)).all()
        assert repository.claim_gift(session, gifts["old"]) is None  # in no claim
    assert (saved.lines, saved.gifts, saved.total, saved.gift_aid) == (3, 4, 108_000, 27_000)
    assert (saved.earliest_on, saved.latest_on, saved.held_back) == (dt.date(2022, 5, 1), dt.date(2025, 7, 2), 2)
    assert saved.status == ClaimStatus.BUILT
    assert len(donors) == 4  # the donor rows of the gifts taken off went with them
    assert set(held) == {gifts["old"], gifts["old_small"]}
    assert held[gifts["old"]].code == "out_of_time"
    assert held[gifts["old"]].reason.startswith(
        "out_of_time: received on 01/06/2021; the four-year limit for its financial period ended on 05/04/2026 "
        "(taken off this claim, built on "
    )
    event = _events(runtime, claim_id)[-1]
    assert event.actor == "finance@example.org" and event.status == "built"
    assert [g["gift_id"] for g in event.detail["gifts_taken_off"]] == [str(gifts["old"]), str(gifts["old_small"])]
    assert event.detail["lines"] == 3 and event.detail["total"] == {"amount": 108_000, "currency": "GBP"}

    # The files hold only what HMRC can take.
    by_suffix = {path.suffix: path.read_bytes() for path in written}
    document = by_suffix[".xml"]
    assert r68_errors(document) == [] and envelope_errors(document) == []
    root = etree.fromstring(document)
    dates = [e.text for e in root.iter(f"{{{R68_NS}}}Date")]
    assert dates == ["2022-05-01", "2025-06-01", "2025-07-02"]
    assert root.find(f".//{{{R68_NS}}}EarliestGAdate").text == "2022-05-01"  # type: ignore[union-attr]
    report = validate_schedule(by_suffix[".ods"], today=LATE)
    assert report.ok and len(report.donations) == 3 and report.earliest == dt.date(2022, 5, 1)

    # Written again: nothing more to take off, no new history.
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.write_claim_files(uow.session, runtime.settings, claim, tmp_path / "again", today=LATE)
    assert len(_events(runtime, claim_id)) == 2
    # The gifts are free, and no later claim takes them: they are out of time.
    with runtime.unit_of_work() as uow:
        later = service.build_claim(uow, runtime.settings, through=LATE, actor="t", today=LATE)
    assert later.claim_id is None
    assert {h.gift_id: h.reason.split(":")[0] for h in later.held_back} == {
        gifts["old"]: "out_of_time",
        gifts["old_small"]: "out_of_time",
    }


def test_a_claim_already_sent_keeps_its_files(runtime: Runtime, tmp_path: Path) -> None:
    _gifts(runtime)
    claim_id = _build(runtime, runtime.settings)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, claim_id, ClaimStatus.SUBMITTED, actor="finance@example.org")
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "xml", today=LATE)
    assert len(_lines(runtime, claim_id)) == 6


def test_nothing_left_to_send_changes_nothing_and_says_what_to_do(runtime: Runtime, client: Any) -> None:
    old = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 6, 1))
    claim_id = _build(runtime, runtime.settings)
    with time_machine.travel(dt.datetime(2026, 4, 6, 12, tzinfo=UK), tick=False):
        finance = staff_headers(runtime, "finance")
        answer = client.get(f"/api/giftaid/claims/{claim_id}/claim.xml", headers=finance)
        assert answer.status_code == 409
        assert answer.json()["error"] == "NothingLeftToSend"
        assert (
            str(old) in answer.json()["detail"]
            and f"giving giftaid status {claim_id} rejected" in answer.json()["detail"]
        )
        assert client.get(f"/api/giftaid/claims/{claim_id}/schedule.ods", headers=finance).status_code == 409
    assert list(_lines(runtime, claim_id)) == [old] and len(_events(runtime, claim_id)) == 1
    with runtime.unit_of_work() as uow, pytest.raises(NothingLeftToSend):
        service.submit_claim(uow, runtime.settings, claim_id, actor="f@example.org", today=LATE)


def test_the_api_download_takes_them_off_with_who_did_it(runtime: Runtime, client: Any) -> None:
    gifts = _gifts(runtime)
    claim_id = _build(runtime, runtime.settings)
    with time_machine.travel(dt.datetime(2026, 4, 6, 12, tzinfo=UK), tick=False):
        finance = staff_headers(runtime, "finance")
        ods = client.get(f"/api/giftaid/claims/{claim_id}/schedule.ods", headers=finance)
        assert ods.status_code == 200
        assert len(validate_schedule(ods.content).donations) == 3
        body = client.get(f"/api/giftaid/claims/{claim_id}", headers=finance).json()
    assert body["lines"] == 3 and body["gifts"] == 4 and body["held_back_count"] == 2
    assert body["total"] == {"amount": 108_000, "currency": "GBP"}
    assert sorted(h["gift_id"] for h in body["held_back"]) == sorted([str(gifts["old"]), str(gifts["old_small"])])
    assert all(h["reason"].startswith("out_of_time: ") for h in body["held_back"])
    # (The clock travelled back from the day the claim was built: the events are found by what they say.)
    taken = [e for e in body["events"] if "gifts_taken_off" in e["detail"]]
    assert len(taken) == 1 and taken[0]["actor"].startswith("finance-") and taken[0]["at"].startswith("2026-04-06")


def test_submitting_late_sends_only_what_is_in_time(runtime: Runtime, gateway: FakeGateway) -> None:
    gifts = _gifts(runtime)
    claim_id = _build(runtime, runtime.settings)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="finance@example.org", today=LATE)
        assert claim.status == ClaimStatus.SUBMITTED and claim.lines == 3
    with runtime.read_session() as session:
        sent = session.exec(select(Message).where(Message.claim_id == claim_id, Message.direction == "sent")).one()
    assert "<Date>2021-06-01</Date>" not in sent.body and "<Date>2022-05-01</Date>" in sent.body
    assert str(gifts["old"]) not in _lines(runtime, claim_id)


def _refund_earlier_claim(runtime: Runtime, amount: int) -> uuid.UUID:
    """An earlier claim, sent, one of whose gifts was then refunded: its adjustment waits for the next claim."""
    gift = make_gift(runtime, donor(runtime), amount=amount, received_on=dt.date(2025, 1, 10))
    earlier = _build(runtime, runtime.settings, dt.date(2025, 2, 1))
    with runtime.unit_of_work() as uow:
        service.change_status(uow, earlier, ClaimStatus.SUBMITTED, actor="t")
    set_gift(runtime, gift, returned_amount=amount)
    return gift


def test_adjustments_that_no_longer_fit_wait_for_the_next_claim(runtime: Runtime, tmp_path: Path) -> None:
    _refund_earlier_claim(runtime, 40_000)  # £100 of tax to take back
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2021, 6, 1))
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert result.adjustment == 10_000 and result.claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)
        written = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "xml", today=LATE)
        assert (claim.gift_aid, claim.adjustment) == (2_500, 0)  # £25 of Gift Aid cannot carry £100 back
    with runtime.read_session() as session:
        pending = session.exec(select(Adjustment)).one()
    assert pending.applied_claim_id is None and pending.withdrawn_at is None
    assert b"<Adjustment>" not in written[0].read_bytes() and r68_errors(written[0].read_bytes()) == []
    assert _events(runtime, result.claim_id)[-1].detail["adjustments_released"] == [str(pending.id)]


def test_an_adjustment_about_a_gift_taken_off_is_void(runtime: Runtime, tmp_path: Path) -> None:
    """The gift was refunded after its claim was built, and a later claim carries the tax back: once the gift is
    taken off its claim (never sent with it), there is nothing to take back."""
    old = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 6, 1))
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    first = _build(runtime, runtime.settings)
    set_gift(runtime, old, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=20_000, received_on=dt.date(2025, 7, 1))
    with runtime.unit_of_work() as uow:
        second = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert second.adjustment == 2_500 and second.claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, first)
        service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "xml", today=LATE)
    with runtime.read_session() as session:
        assert session.exec(select(Adjustment)).all() == []
        carrier = session.get(Claim, second.claim_id)
        assert carrier is not None and carrier.adjustment == 0
    assert "taken off claim" in _events(runtime, second.claim_id)[-1].detail["reason"]
    assert _events(runtime, first)[-1].detail["adjustments_void"]


def test_a_claim_built_before_blank_names_were_held_back_loses_that_line(runtime: Runtime, tmp_path: Path) -> None:
    """A claim built before the eligibility held back names of nothing but control characters: its donor row is
    written as such a claim held it. The line is taken off (held back with its reason), the rest is sent."""
    gifts = _gifts(runtime)
    claim_id = _build(runtime, runtime.settings)
    with runtime.unit_of_work() as uow:
        declaration_id = uow.session.exec(
            select(ClaimGift.declaration_id).where(ClaimGift.gift_id == gifts["recent"])
        ).one()
        uow.session.execute(
            sa.update(ClaimDonor.__table__)  # type: ignore[attr-defined]
            .where(col(ClaimDonor.declaration_id) == declaration_id)
            .values(first_name="\x01\ufffe")
        )
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        written = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, today=BUILT_ON)
    assert gifts["recent"] not in _lines(runtime, claim_id) and len(_lines(runtime, claim_id)) == 5
    with runtime.read_session() as session:
        held = session.exec(select(HeldBack).where(HeldBack.claim_id == claim_id)).one()
    assert held.gift_id == gifts["recent"]
    assert held.reason.startswith("no_declaration: missing name: the declaration lacks the donor's first or last name")
    for path in written:
        data = path.read_bytes()
        assert r68_errors(data) == [] if path.suffix == ".xml" else validate_schedule(data, today=BUILT_ON).ok
