"""Donor details stored before crm dropped the characters XML cannot hold (C0 controls, U+FFFE, U+FFFF): written
straight into the declaration's row, as legacy data would be. The claim's files drop them (the XML parses and
validates, its IRmark is the reference one; the schedule passes HMRC's checks); a name or house holding nothing
else holds its gift back with a reason, and the rest of the claim goes on."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from lxml import etree

from core.runtime import Runtime
from crm.models import Declaration
from giftaid import repository, schedule, service
from giftaid import xml as claim_xml
from giftaid.sendable import blank, sendable
from giftaid.validator import validate_schedule
from giftaid.xml import R68_NS, Line
from tests.giftaid.factories import TODAY, donor, make_declaration, make_gift, make_supporter, staff_headers
from tests.giftaid.hmrc_files import envelope_errors, r68_errors

D = Declaration.__table__  # type: ignore[attr-defined]


def _legacy(runtime: Runtime, **values: Any) -> uuid.UUID:
    """A donor whose declaration row holds `values` as stored long ago (no crm cleaning on the way in)."""
    supporter_id = make_supporter(runtime)
    declaration_id = make_declaration(runtime, supporter_id)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(D).where(D.c.id == declaration_id).values(**values))
    return supporter_id


def _claim(runtime: Runtime) -> tuple[service.ClaimResult, dict[str, uuid.UUID]]:
    gifts = {
        "good": make_gift(runtime, donor(runtime), amount=5_000),
        "dirty": make_gift(
            runtime,
            _legacy(
                runtime,
                title="M\x01s",
                first_name="Gr\ufffeace\x07",
                last_name="\x1bHopper\uffff",
                house="12\x0b Acacia\tAvenue",
            ),
            amount=7_000,
        ),
        "no_name": make_gift(runtime, _legacy(runtime, first_name="\x01\ufffe \x02"), amount=8_000),
        "no_house": make_gift(runtime, _legacy(runtime, house=" \x1f"), amount=9_000),
        "no_title": make_gift(runtime, _legacy(runtime, title="\x01"), amount=6_000),
    }
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    return result, gifts


def _irenvelope(document: bytes) -> Any:
    return etree.fromstring(document).find(f".//{{{R68_NS}}}IRenvelope")


def test_a_claim_with_legacy_control_characters_exports_valid_files(runtime: Runtime, tmp_path: Path) -> None:
    result, gifts = _claim(runtime)
    held = {h.gift_id: h.reason for h in result.held_back}
    assert set(held) == {gifts["no_name"], gifts["no_house"]}
    assert held[gifts["no_name"]].startswith("no_declaration: missing name: the declaration lacks the donor's first")
    assert "characters no claim file can carry" in held[gifts["no_name"]]
    assert held[gifts["no_house"]].startswith("missing_house: the declaration has no house name or number")
    assert result.lines == 3
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        written = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "both")
    by_suffix = {path.suffix: path for path in written}
    document = by_suffix[".xml"].read_bytes()
    # Parses (lxml refuses a malformed document), and validates against HMRC's schemas.
    root = etree.fromstring(document)
    assert r68_errors(document) == [] and envelope_errors(document) == []
    # The streamed IRmark is HMRC's computation over what was written.
    irmark = root.find(f".//{{{R68_NS}}}IRmark")
    assert irmark is not None and irmark.text == claim_xml.irmark_of(document)
    donors = [
        {etree.QName(child).localname: child.text for child in element} for element in root.iter(f"{{{R68_NS}}}Donor")
    ]
    assert {"Ttl": "Ms", "Fore": "Grace", "Sur": "Hopper", "House": "12 AcaciaAvenue", "Postcode": "CT16 1AA"} in donors
    assert {"Fore": "Ada", "Sur": "Lovelace", "House": "12", "Postcode": "CT16 1AA"} in donors  # a blank title: none
    report = validate_schedule(by_suffix[".ods"].read_bytes(), today=TODAY)
    assert report.ok, [str(e) for e in report.errors]
    assert ("Grace", "Hopper", "12 AcaciaAvenue") in {(d.first_name, d.last_name, d.house) for d in report.donations}


def test_the_database_renders_cleaned_details_exactly_as_python_does(runtime: Runtime) -> None:
    result, _gifts = _claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        rendered = b"".join(d for d, _ in repository.stream_gad_xml(uow.session, claim.id, 1, claim.lines)).decode()
        expected = "".join(claim_xml.gad(line) for line in service.claim_lines(uow.session, claim.id, 1, claim.lines))
    assert rendered == expected
    assert "<Ttl>Ms</Ttl><Fore>Grace</Fore><Sur>Hopper</Sur>" in rendered


def test_the_api_downloads_of_such_a_claim_are_valid(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    result, _gifts = _claim(runtime)
    finance = staff_headers(runtime, "finance")
    xml = client.get(f"/api/giftaid/claims/{result.claim_id}/claim.xml", headers=finance)
    assert xml.status_code == 200 and r68_errors(xml.content) == []
    ods = client.get(f"/api/giftaid/claims/{result.claim_id}/schedule.ods", headers=finance)
    assert ods.status_code == 200 and validate_schedule(ods.content, today=TODAY).ok


def test_explain_names_a_name_of_nothing_but_control_characters(runtime: Runtime) -> None:
    gift_id = make_gift(runtime, _legacy(runtime, last_name="\x01\x02"))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift_id, today=TODAY)
    assert explanation.code == "missing_name" and not explanation.claimable
    assert "'\\x01\\x02'" in explanation.reason


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [("Ada", "Ada"), ("A\x00d\x1fa", "Ada"), ("A\ud800da\udfff", "Ada"), ("\ufffeZoë\uffff", "Zoë"),
     ("12\tHigh\nStreet\r", "12HighStreet"), ("O'Brien & <Co>", "O'Brien & <Co>")],
)  # fmt: skip
def test_sendable_drops_what_xml_cannot_hold(value: str, cleaned: str) -> None:
    assert sendable(value) == cleaned
    # Any text the message writer is given comes out as XML can hold it (tab and line breaks are legal there).
    assert etree.fromstring(f"<a>{claim_xml.text(value)}</a>".encode()).text == value.translate(
        {c: None for c in [0, *range(0xD800, 0xE000), 0xFFFE, 0xFFFF, *range(1, 9), 11, 12, *range(14, 32)]}
    )


def test_blank_is_nothing_but_spaces_once_cleaned() -> None:
    assert blank(None) and blank("") and blank("  ") and blank("\x01 \ud800\ufffe")
    assert not blank("A") and not blank(" \x01A")


def test_python_lines_with_lone_surrogates_write_valid_files(tmp_path: Path) -> None:
    """Lone surrogates reach no database, but a Line built in Python may hold them: both writers drop them."""
    line = Line("D\ud800r", "Ad\udfffa", "Love\x01lace", "1\ufffe2", "CT16 1AA", False, None, dt.date(2025, 6, 1), 100)
    data = schedule.render_schedule([line], earliest=line.date)
    assert validate_schedule(data, today=TODAY).ok
    path = tmp_path / "claim.xml"
    with path.open("w+b") as out:
        claim_xml.write_message(
            out,
            claim_xml.Charity(
                "Charity", "AB12345", "CCEW", "1234567", "Jane", "Doe", "AB1 2CD", "01234", "1234", False
            ),
            [line],
            earliest=line.date,
            period_end=line.date,
        )
    document = path.read_bytes()
    assert r68_errors(document) == []
    assert b"<Ttl>Dr</Ttl><Fore>Ada</Fore><Sur>Lovelace</Sur><House>12</House>" in document
