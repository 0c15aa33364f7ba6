"""The authorised official HMRC's claim names (`AuthOfficial`) comes from `[charity]` settings, written as people
write them: a phone number as +44, a postcode in lower case or without its space, two forenames, a surname of
several words, a name in another script. HMRC's schema takes none of those as they are (`r68_NameStructure`,
`r68_PostCodeType`, `r68_TelephoneNumberType`), our own checks did not see it, and HMRC refused the whole message;
or the name lost its spaces, or became "Official Official". The message now carries them in HMRC's form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from pathlib import Path

import pytest
from lxml import etree

from core.runtime import Runtime
from giftaid import service
from giftaid import xml as claim_xml
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.hmrc_files import envelope_errors, r68_errors

R68 = f"{{{claim_xml.R68_NS}}}"
CHARITY = claim_xml.Charity(
    name="Calais Refugee Aid",
    hmrc_reference="AB12345",
    regulator="CCEW",
    registration_number="1234567",
    official_first_name="Jane",
    official_last_name="Treasurer",
    official_postcode="CT16 1AA",
    official_phone="01304 000000",
    vendor_id="0000",
    test_mode=True,
)
LINE = claim_xml.Line("Mrs", "Ann", "Smith", "12", "AB1 2CD", False, None, dt.date(2025, 10, 5), 10_000)


def official(**details: str) -> tuple[bytes, dict[str, list[str]]]:
    out = io.BytesIO()
    result = claim_xml.write_message(
        out, dataclasses.replace(CHARITY, **details), [LINE], earliest=LINE.date, period_end=LINE.date
    )
    document = out.getvalue()
    assert claim_xml.irmark_of(document) == result.irmark
    node = etree.fromstring(document).find(f".//{R68}AuthOfficial")
    assert node is not None
    return document, {
        "fore": [e.text or "" for e in node.iter(f"{R68}Fore")],
        "sur": [e.text or "" for e in node.iter(f"{R68}Sur")],
        "postcode": [e.text or "" for e in node.iter(f"{R68}Postcode")],
        "phone": [e.text or "" for e in node.iter(f"{R68}Phone")],
    }


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ({"official_phone": "+44 1304 000000"}, {"phone": ["01304 000000"]}),
        ({"official_phone": "+44 (0)1304 000000"}, {"phone": ["01304 000000"]}),
        ({"official_phone": "+33 1 23 45 67 89"}, {"phone": ["0033 1 23 45 67 89"]}),
        ({"official_phone": "01304 000 000 ext. 12"}, {"phone": ["01304 000 000 12"]}),
        ({"official_postcode": "ct16 1aa"}, {"postcode": ["CT16 1AA"]}),
        ({"official_postcode": " CT161AA "}, {"postcode": ["CT16 1AA"]}),
        (
            {"official_first_name": "Mary Ann", "official_last_name": "de la Cruz"},
            {"fore": ["Mary", "Ann"], "sur": ["de la Cruz"]},
        ),
        ({"official_first_name": "Siobhán", "official_last_name": "O'Brien-Smith Jr."}, {"sur": ["O'Brien-Smith Jr."]}),
        ({"official_first_name": "Иван", "official_last_name": "Петров"}, {"fore": ["Ivan"], "sur": ["Petrov"]}),
        (
            {"official_first_name": "Bartholomew-Maximilian-Alexander-Christopher"},
            {"fore": ["Bartholomew-Maximilian-Alexander-Ch"]},
        ),
    ],
)
def test_the_authorised_official_is_written_in_hmrcs_form(given: dict[str, str], written: dict[str, list[str]]) -> None:
    document, found = official(**given)
    assert r68_errors(document) == [] and envelope_errors(document) == []
    for key, value in written.items():
        assert found[key] == value


def test_a_claim_exported_with_such_settings_is_one_hmrcs_schema_takes(
    runtime: Runtime, tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        charity={
            "authorised_official_first_name": "Mary Ann",
            "authorised_official_last_name": "de la Cruz",
            "authorised_official_phone": "+44 1304 000000",
            "postcode": "ct16 1aa",
        },
    )
    make_gift(runtime, donor(runtime), received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, settings, through=TODAY, actor="test", today=TODAY)
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        (path,) = service.write_claim_files(uow.session, settings, claim, tmp_path / "out", "xml")
    document = path.read_bytes()
    assert r68_errors(document) == []
    assert b"<Phone>01304 000000</Phone>" in document and b"<Postcode>CT16 1AA</Postcode>" in document
    assert b"<OffName><Fore>Mary</Fore><Fore>Ann</Fore><Sur>de la Cruz</Sur></OffName>" in document
