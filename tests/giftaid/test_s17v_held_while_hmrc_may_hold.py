"""A gift taken off a claim HMRC may hold is never claimed twice, and no tax is deducted twice.

Claim A claims Ada's gift and the gift of "Doomed". A's donor row for Doomed then holds a name the schedule shows as
nothing (a rule newer than A), so writing A's files takes that line off (`take_off_what_hmrc_would_refuse`). But HMRC
may hold A as it was first sent or handed out, with that line: its submission got no answer (an `unknown` error), or
a part carrying it was already downloaded. The take-off deleted the gift's row, so the next claim (the donor's
details being fine) claimed the gift again: claimed twice if HMRC has A. Now the gift stays with A (its row kept, on
no line), claimed by no later claim until A is rejected or finance sends A again with `--again` (HMRC does not have
it). And an adjustment such a take-off kept (its gift was refunded after A) is void once A is sent again with
`--again`: HMRC never paid that tax, and the claim carrying it would deduct it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Adjustment, ClaimDonor, ClaimEvent, ClaimGift, ClaimStatus
from tests.giftaid.claim_locks import build_claim_through, claim_of
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

CD = ClaimDonor.__table__  # type: ignore[attr-defined]
CG = ClaimGift.__table__  # type: ignore[attr-defined]
FINANCE = "finance@example.org"


def _claim_a(runtime: Runtime, settings: Settings) -> tuple[uuid.UUID, uuid.UUID]:
    """Claim A of Ada's gift and Doomed's. Returns (A, Doomed's gift)."""
    make_gift(runtime, donor(runtime), amount=5_000, received_on=dt.date(2025, 1, 10))
    doomed = make_gift(runtime, donor(runtime, last_name="Doomed"), amount=10_000, received_on=dt.date(2025, 1, 11))
    first = build_claim_through(runtime, settings, dt.date(2025, 2, 1), TODAY)
    assert first.claim_id is not None and first.gifts == 2
    return first.claim_id, doomed


def _sent_without_answer(runtime: Runtime, settings: Settings, gateway: FakeGateway, claim_id: uuid.UUID) -> None:
    gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, claim_id, actor=FINANCE, today=TODAY)
        assert (sent.status, [e["type"] for e in sent.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None


def _doomed_row_blank(runtime: Runtime, claim_id: uuid.UUID) -> None:
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == claim_id, CD.c.last_name == "Doomed").values(first_name="\u0627")
        )


def _write_files(runtime: Runtime, settings: Settings, claim_id: uuid.UUID, out: Path, formats: str = "ods") -> None:
    out.mkdir(exist_ok=True)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        service.write_claim_files(uow.session, settings, claim, out, formats, today=TODAY)  # type: ignore[arg-type]


def _maybe_sent_and_taken_off(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> tuple[uuid.UUID, uuid.UUID]:
    claim_id, doomed = _claim_a(runtime, settings)
    _sent_without_answer(runtime, settings, gateway, claim_id)
    _doomed_row_blank(runtime, claim_id)
    _write_files(runtime, settings, claim_id, tmp_path / "a")
    assert claim_of(runtime, claim_id).gifts == 1  # the line no file can carry is off A's files
    return claim_id, doomed


def _next_claim(runtime: Runtime, settings: Settings) -> service.ClaimResult:
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    return build_claim_through(runtime, settings, dt.date(2025, 7, 1), TODAY)


def _claims_of(runtime: Runtime, gift_id: uuid.UUID) -> list[uuid.UUID]:
    with runtime.read_session() as session:
        live = sa.select(CG.c.claim_id).where(CG.c.gift_id == gift_id, CG.c.live.is_(True))
        return list(session.execute(live).scalars())


def test_a_gift_taken_off_a_claim_hmrc_may_hold_is_not_claimed_again(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _maybe_sent_and_taken_off(runtime, settings, gateway, tmp_path)
    later = _next_claim(runtime, settings)
    assert later.claim_id is not None
    assert later.gifts == 1  # the new gift only
    assert _claims_of(runtime, doomed) == [first_id]
    with runtime.read_session() as session:
        explained = service.explain(session, settings, doomed, today=TODAY)
    assert explained.code == "already_claimed"
    assert str(first_id) in explained.reason and "HMRC may hold" in explained.reason
    # A's files and totals are its one line: the gift held with it is on no line.
    a = claim_of(runtime, first_id)
    assert (a.lines, a.gifts, a.total) == (1, 1, 5_000)
    _write_files(runtime, settings, first_id, tmp_path / "again", "xml")
    [xml] = (tmp_path / "again").glob("*.xml")
    assert xml.read_text().count("<GAD>") == 1
    with runtime.read_session() as session:
        [event] = [
            e
            for e in session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == first_id)).all()
            if "gifts_taken_off" in e.detail
        ]
    assert event.detail["gifts_held"] == [str(doomed)]


def test_a_gift_held_with_a_rejected_claim_is_claimed_again(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _maybe_sent_and_taken_off(runtime, settings, gateway, tmp_path)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first_id, ClaimStatus.REJECTED, actor=FINANCE, reason="not at HMRC")
    later = _next_claim(runtime, settings)
    assert later.claim_id is not None and later.gifts == 3  # Ada's and Doomed's gifts, released, and the new one
    assert _claims_of(runtime, doomed) == [later.claim_id]


def test_a_gift_held_with_a_claim_sent_again_is_free(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _maybe_sent_and_taken_off(runtime, settings, gateway, tmp_path)
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, first_id, actor=FINANCE, again=True, today=TODAY)
        assert sent.status == ClaimStatus.SUBMITTED
    assert _claims_of(runtime, doomed) == []
    later = _next_claim(runtime, settings)
    assert later.claim_id is not None and later.gifts == 2
    assert _claims_of(runtime, doomed) == [later.claim_id]


def test_a_gift_taken_off_a_part_already_downloaded_is_held(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _claim_a(runtime, settings)
    _write_files(runtime, settings, first_id, tmp_path / "first", "xml")  # handed out, with Doomed's line
    _doomed_row_blank(runtime, first_id)
    _write_files(runtime, settings, first_id, tmp_path / "second", "xml")
    assert claim_of(runtime, first_id).gifts == 1
    later = _next_claim(runtime, settings)
    assert later.claim_id is not None and later.gifts == 1
    assert _claims_of(runtime, doomed) == [first_id]


def test_a_gift_taken_off_a_part_never_handed_out_is_free(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _claim_a(runtime, settings)
    _doomed_row_blank(runtime, first_id)
    _write_files(runtime, settings, first_id, tmp_path / "first", "xml")
    later = _next_claim(runtime, settings)
    assert later.claim_id is not None and later.gifts == 2
    assert _claims_of(runtime, doomed) == [later.claim_id]


def test_an_adjustment_kept_by_a_take_off_is_void_once_the_claim_is_sent_again(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, tmp_path: Path
) -> None:
    first_id, doomed = _claim_a(runtime, settings)
    _sent_without_answer(runtime, settings, gateway, first_id)
    set_gift(runtime, doomed, returned_amount=10_000)
    carrier = _next_claim(runtime, settings)
    assert carrier.claim_id is not None and carrier.adjustment == 2_500
    _doomed_row_blank(runtime, first_id)
    _write_files(runtime, settings, first_id, tmp_path / "a")  # maybe sent: the adjustment is kept
    with runtime.read_session() as session:
        [adjustment] = session.exec(select(Adjustment)).all()
    assert adjustment.applied_claim_id == carrier.claim_id
    # Finance found A is not at HMRC and sends it again: HMRC never paid the tax on Doomed's gift, and never will.
    with runtime.unit_of_work() as uow:
        sent = service.submit_claim(uow, settings, first_id, actor=FINANCE, again=True, today=TODAY)
        assert sent.status == ClaimStatus.SUBMITTED
    with runtime.read_session() as session:
        assert session.exec(select(Adjustment)).all() == []
        events = session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == first_id)).all()
    assert claim_of(runtime, carrier.claim_id).adjustment == 0
    assert [e.detail["adjustments_void"] for e in events if "adjustments_void" in e.detail] == [[str(adjustment.id)]]
