"""A claim's donor rows (`giftaid_claim_donors`, what finance sees of what was sent) hold the donor's details as the
files carry them, not as legacy declarations stored them: without the characters no file can carry (C0 controls,
U+FFFE, U+FFFF, stored before crm dropped them), and with a title HMRC takes or none.

Titles: HMRC's XSD `Ttl` is optional, 1-4 characters of `[A-Za-z][A-Za-z'-]*`; HMRC's schedule validator takes
2-4 (`^[A-Za-z][A-Za-z'-]{1,3}$`). A title is trimmed of spaces; one that still fits neither file is left out of
both (a one-letter title too, which the schedule would refuse), rather than failing the whole message."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from lxml import etree
from sqlmodel import select

from core.runtime import Runtime
from crm.models import Declaration
from giftaid import service
from giftaid.models import ClaimDonor
from giftaid.sendable import sendable, sendable_title
from giftaid.validator import validate_schedule
from giftaid.xml import R68_NS
from tests.giftaid.factories import TODAY, make_declaration, make_gift, make_supporter
from tests.giftaid.hmrc_files import envelope_errors, r68_errors

D = Declaration.__table__  # type: ignore[attr-defined]
CD = ClaimDonor.__table__  # type: ignore[attr-defined]


def _legacy_donor(runtime: Runtime, last_name: str, **values: Any) -> uuid.UUID:
    """A donor (`last_name` finds their line in the files) whose declaration row holds `values` as stored
    long ago: no crm cleaning on the way in. Returns the declaration."""
    supporter_id = make_supporter(runtime)
    declaration_id = make_declaration(runtime, supporter_id)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(D).where(D.c.id == declaration_id).values(last_name=last_name, **values))
    make_gift(runtime, supporter_id, amount=5_000)
    return declaration_id


def _build(runtime: Runtime) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.claim_id is not None and not result.held_back
    return result.claim_id


def _stored(runtime: Runtime, claim_id: uuid.UUID) -> dict[uuid.UUID, ClaimDonor]:
    """The claim's donor rows by declaration."""
    with runtime.read_session() as session:
        return {d.declaration_id: d for d in session.exec(select(ClaimDonor).where(ClaimDonor.claim_id == claim_id))}


def _files(
    runtime: Runtime, claim_id: uuid.UUID, folder: Path
) -> tuple[dict[str, dict[str, str]], dict[str | None, Any]]:
    """The claim's XML (checked against HMRC's schemas) and schedule (checked by HMRC's rules), each donor's line by
    last name: the XML's `Donor` elements, the schedule's rows."""
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        written = service.write_claim_files(uow.session, runtime.settings, claim, folder, "both")
    by_suffix = {path.suffix: path.read_bytes() for path in written}
    document = by_suffix[".xml"]
    assert r68_errors(document) == [] and envelope_errors(document) == []
    root = etree.fromstring(document)
    donors = [
        {etree.QName(child).localname: child.text or "" for child in element}
        for element in root.iter(f"{{{R68_NS}}}Donor")
    ]
    report = validate_schedule(by_suffix[".ods"], today=TODAY)
    assert report.ok, [str(e) for e in report.errors]
    return {d["Sur"]: d for d in donors}, {r.last_name: r for r in report.donations}


def test_the_stored_donor_rows_hold_the_details_the_files_carry(runtime: Runtime, tmp_path: Path) -> None:
    legacy = {
        "first_name": "Gr\ufffeace\x07",
        "last_name": "\x1bHop\x1fper",
        "house": "12\x0b Acacia\tAvenue\uffff",
    }
    dirty = _legacy_donor(runtime, **legacy)
    _legacy_donor(runtime, "Clean", first_name="Ada")
    claim_id = _build(runtime)
    stored = _stored(runtime, claim_id)
    hopper = stored[dirty]
    # Cleaned as the files clean them (giftaid.sendable), nothing else changed.
    assert (hopper.first_name, hopper.last_name, hopper.house) == ("Grace", "Hopper", "12 AcaciaAvenue")
    assert {key: sendable(value) for key, value in legacy.items()} == {
        "first_name": hopper.first_name,
        "last_name": hopper.last_name,
        "house": hopper.house,
    }
    xml, ods = _files(runtime, claim_id, tmp_path)
    for row in stored.values():
        assert xml[row.last_name] == {
            "Ttl": row.title,
            "Fore": row.first_name,
            "Sur": row.last_name,
            "House": row.house,
            "Postcode": row.postcode,
        }
        line = ods[row.last_name]
        assert (line.title, line.first_name, line.house, line.postcode) == (
            row.title,
            row.first_name,
            row.house,
            row.postcode,
        )


TITLES = [
    # (as stored long ago, as sent and stored in the claim: None when left out)
    (" Ms", "Ms"),
    ("Dr  ", "Dr"),
    (" Mr ", "Mr"),
    ("\x01Mrs", "Mrs"),
    ("Ms\n", "Ms"),
    ("Mrs.", None),  # a dot: neither file takes it
    ("M", None),  # one letter: the XSD would, HMRC's schedule would not; left out of both
    ("M s", None),
    ("1st", None),
    ("Fr'-", "Fr'-"),  # the pattern's apostrophe and hyphen
    ("\x01", None),
]


@pytest.mark.parametrize(("title", "sent"), TITLES)
def test_sendable_title(title: str, sent: str | None) -> None:
    assert sendable_title(title) == sent


def test_a_legacy_title_is_trimmed_or_left_out_and_both_files_agree(runtime: Runtime, tmp_path: Path) -> None:
    declarations = {}
    for number, (title, _sent) in enumerate(TITLES):
        surname = f"Donor{chr(ord('a') + number)}"
        declarations[surname] = (_legacy_donor(runtime, surname, title=title), title)
    claim_id = _build(runtime)
    stored = _stored(runtime, claim_id)
    xml, ods = _files(runtime, claim_id, tmp_path)
    for surname, (declaration_id, title) in declarations.items():
        sent = sendable_title(title)
        assert stored[declaration_id].title == sent, (title, stored[declaration_id].title)
        assert xml[surname].get("Ttl") == sent, (title, xml[surname])
        assert ods[surname].title == sent, (title, ods[surname])


def test_a_claim_built_before_titles_were_fitted_still_sends_valid_files(runtime: Runtime, tmp_path: Path) -> None:
    """A claim whose donor rows were stored as the declarations held them (built before this change): a title that
    fits neither file is left out of both when they are written, the other details cleaned as before."""
    _legacy_donor(runtime, "Spaced")
    _legacy_donor(runtime, "Dotted")
    _legacy_donor(runtime, "Controlled")
    claim_id = _build(runtime)
    with runtime.unit_of_work() as uow:
        for surname, title in (("Spaced", " Ms"), ("Dotted", "Mrs."), ("Controlled", "M\x01s")):
            uow.session.execute(
                sa.update(CD).where(CD.c.claim_id == claim_id, CD.c.last_name == surname).values(title=title)
            )
    xml, ods = _files(runtime, claim_id, tmp_path)
    assert "Ttl" not in xml["Spaced"] and ods["Spaced"].title is None
    assert "Ttl" not in xml["Dotted"] and ods["Dotted"].title is None
    assert xml["Controlled"]["Ttl"] == "Ms" and ods["Controlled"].title == "Ms"
