"""A donor whose first name, last name or house holds only characters HMRC's schedule cannot show, even transliterated
(an Arabic alef, a private-use character, a lone combining mark, C1 controls, non-breaking spaces): `latin1_text`
makes it "", which HMRC's schedule checks refuse ("Enter a donor first name"). One such donor must not sink the
claim: a build holds their gifts back with the reason, a claim built before (its donor row as it was) loses their
lines when written, and the rest of the claim is written, both files agreeing; `explain` says why."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from lxml import etree
from sqlmodel import col, select

from core.runtime import Runtime
from crm.models import Declaration
from giftaid import repository, service
from giftaid.models import ClaimDonor, ClaimGift, HeldBack
from giftaid.schedule import latin1_text
from giftaid.sendable import schedule_blank
from giftaid.validator import validate_schedule
from giftaid.xml import R68_NS
from tests.giftaid.factories import TODAY, donor, make_gift, make_supporter, staff_headers
from tests.giftaid.hmrc_files import r68_errors

D = Declaration.__table__  # type: ignore[attr-defined]
CD = ClaimDonor.__table__  # type: ignore[attr-defined]

# What crm accepts (or legacy rows hold) that the schedule cannot show at all.
NOTHING_SHOWN = ["\u0627", "\uf8ff", "\u0301", "\x85\x9f", "\xa0\xa0", " \u200b ", "\x7f"]


def _legacy_donor(runtime: Runtime, **values: Any) -> uuid.UUID:
    """A supporter whose declaration row holds `values` as stored (no crm cleaning on the way in)."""
    supporter_id = donor(runtime)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(D).where(D.c.supporter_id == supporter_id).values(**values))
    return supporter_id


def _build(runtime: Runtime) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)


def _write(runtime: Runtime, claim_id: uuid.UUID, out: Path, formats: str = "both") -> list[Path]:
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        return service.write_claim_files(uow.session, runtime.settings, claim, out, formats, today=TODAY)  # type: ignore[arg-type]


def _xml_donors(document: bytes) -> list[dict[str, str | None]]:
    root = etree.fromstring(document)
    return [
        {etree.QName(child).localname: child.text for child in element} for element in root.iter(f"{{{R68_NS}}}Donor")
    ]


@pytest.mark.parametrize("value", NOTHING_SHOWN)
def test_schedule_blank_is_what_the_schedule_shows_as_nothing(value: str) -> None:
    assert latin1_text(value) == "" and schedule_blank(value)
    assert not schedule_blank("\u0628")  # beh: "b"
    assert not schedule_blank("Zo\u00eb") and not schedule_blank(" \u0627A")


def test_a_donor_named_with_an_alef_is_held_back_and_the_rest_is_written(runtime: Runtime, tmp_path: Path) -> None:
    good = make_gift(runtime, donor(runtime), amount=5_000)
    cyrillic = make_gift(runtime, donor(runtime, first_name="\u0418\u0432\u0430\u043d"), amount=6_000)
    alef = make_gift(runtime, donor(runtime, first_name="\u0627"), amount=7_000)
    alef_small = make_gift(runtime, donor(runtime, first_name="\u0627"), amount=1_000)  # would be aggregated
    no_house = make_gift(runtime, _legacy_donor(runtime, house="\uf8ff"), amount=8_000)
    result = _build(runtime)
    held = {h.gift_id: h.reason for h in result.held_back}
    assert set(held) == {alef, alef_small, no_house}
    assert held[alef].startswith("no_declaration: missing name: the declaration lacks the donor's first or last name")
    assert "'\\u0627'" in held[alef] and "schedule" in held[alef]
    assert held[no_house].startswith("missing_house: the declaration has no house name or number")
    assert "'\\uf8ff'" in held[no_house]
    assert result.lines == 2 and result.gifts == 2 and result.total == 11_000
    assert result.claim_id is not None
    with runtime.read_session() as session:
        rows = session.exec(select(ClaimGift).where(ClaimGift.claim_id == result.claim_id)).all()
        assert {row.gift_id for row in rows} == {good, cyrillic} and sorted(row.line_no for row in rows) == [1, 2]
        assert len(session.exec(select(ClaimDonor).where(ClaimDonor.claim_id == result.claim_id)).all()) == 2
        stored = session.exec(select(HeldBack).where(HeldBack.claim_id == result.claim_id)).all()
        assert {h.gift_id: h.code for h in stored} == {alef: "no_declaration", alef_small: "no_declaration",
                                                       no_house: "missing_house"}  # fmt: skip
    written = _write(runtime, result.claim_id, tmp_path)
    by_suffix = {path.suffix: path for path in written}
    report = validate_schedule(by_suffix[".ods"].read_bytes(), today=TODAY)
    assert report.ok, [str(e) for e in report.errors]
    assert {d.first_name for d in report.donations} == {"Ada", "Ivan"}
    document = by_suffix[".xml"].read_bytes()
    assert r68_errors(document) == []
    assert {d["Fore"] for d in _xml_donors(document)} == {"Ada", "\u0418\u0432\u0430\u043d"}


def test_explain_says_why(runtime: Runtime) -> None:
    gift_id = make_gift(runtime, donor(runtime, last_name="\u0627"))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift_id, today=TODAY)
    assert explanation.code == "missing_name" and not explanation.claimable
    assert "'\\u0627'" in explanation.reason and "schedule" in explanation.reason
    house = make_gift(runtime, _legacy_donor(runtime, house="\xa0"))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, house, today=TODAY)
    assert explanation.code == "missing_house" and not explanation.claimable


def test_a_claim_whose_only_donor_is_such_is_nothing_to_claim(runtime: Runtime) -> None:
    alef = make_gift(runtime, donor(runtime, first_name="\u0627"))
    result = _build(runtime)
    assert result.claim_id is None and [h.gift_id for h in result.held_back] == [alef]


@pytest.mark.parametrize("value", NOTHING_SHOWN)
def test_a_claim_built_before_loses_the_line_when_written(runtime: Runtime, tmp_path: Path, value: str) -> None:
    """A claim built before this check: its donor row holds such a name (written here as the build held it). Writing
    its files takes the donor's line off with the reason; the rest is written, the schedule and the XML agreeing."""
    good = make_gift(runtime, donor(runtime), amount=5_000)
    bad = make_gift(runtime, donor(runtime, last_name="Doomed"), amount=7_000)
    result = _build(runtime)
    assert result.claim_id is not None and not result.held_back
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == result.claim_id, CD.c.last_name == "Doomed").values(first_name=value)
        )
    written = _write(runtime, result.claim_id, tmp_path, "ods")
    assert validate_schedule(written[0].read_bytes(), today=TODAY).ok
    with runtime.read_session() as session:
        lines = session.exec(select(ClaimGift.gift_id).where(col(ClaimGift.claim_id) == result.claim_id)).all()
        held = session.exec(select(HeldBack).where(HeldBack.claim_id == result.claim_id)).one()
    assert list(lines) == [good]
    assert held.gift_id == bad and held.reason.startswith("no_declaration: missing name:")
    assert "taken off this claim" in held.reason
    xml = _write(runtime, result.claim_id, tmp_path / "xml", "xml")
    assert [d["Fore"] for d in _xml_donors(xml[0].read_bytes())] == ["Ada"]


def test_the_schedule_download_of_such_a_claim_is_not_a_500(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    make_gift(runtime, donor(runtime), amount=5_000)
    make_gift(runtime, donor(runtime, last_name="Doomed"), amount=7_000)
    result = _build(runtime)
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == result.claim_id, CD.c.last_name == "Doomed").values(house="\u0301")
        )
    finance = staff_headers(runtime, "finance")
    ods = client.get(f"/api/giftaid/claims/{result.claim_id}/schedule.ods", headers=finance)
    assert ods.status_code == 200 and validate_schedule(ods.content, today=TODAY).ok
    assert len(validate_schedule(ods.content, today=TODAY).donations) == 1


def test_blank_donors_finds_them_with_a_first_character_test(runtime: Runtime) -> None:
    """The SQL finds the candidates (a first character outside printable Latin-1, or a space), Python confirms: a
    Cyrillic name is a candidate, not a blank donor."""
    make_gift(runtime, donor(runtime, first_name="\u0418\u0432\u0430\u043d"), amount=5_000)
    make_gift(runtime, donor(runtime, last_name="Doomed"), amount=7_000)
    make_supporter(runtime)
    result = _build(runtime)
    assert result.claim_id is not None
    with runtime.unit_of_work() as uow:
        assert repository.blank_donors(uow.session, result.claim_id) == []
        uow.session.execute(
            sa.update(CD).where(CD.c.claim_id == result.claim_id, CD.c.last_name == "Doomed").values(last_name="\u0627")
        )
        found = repository.blank_donors(uow.session, result.claim_id)
    assert [row.last_name for row in found] == ["\u0627"]
