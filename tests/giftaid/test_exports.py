"""HMRC's formats (giftaid.md §7, F1-F7): the schedule cell by cell on HMRC's template, the Charities Online
message against HMRC's schema and business rules, the IRmark against HMRC's vectors, and several files when a claim
is larger than one schedule or one message."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import subprocess
import uuid
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from core.runtime import Runtime
from giftaid import schedule, service
from giftaid import xml as claim_xml
from giftaid.validator import validate_schedule
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift, make_many_gifts
from tests.giftaid.hmrc_files import ODS, SAMPLES, envelope_errors, r68_errors

ODF_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
ODF_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
ODF_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
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


def line(
    total: int = 10_000,
    date: dt.date = dt.date(2025, 10, 5),
    *,
    first: str = "Ann",
    last: str = "Smith",
    house: str = "12",
    postcode: str = "AB1 2CD",
    overseas: bool = False,
    aggregated: str | None = None,
    title: str | None = "Mrs",
) -> claim_xml.Line:
    return claim_xml.Line(title, first, last, house, postcode, overseas, aggregated, date, total)


def message(lines: list[claim_xml.Line], **options) -> tuple[bytes, claim_xml.MessageResult]:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    options.setdefault("earliest", min(item.date for item in lines))
    options.setdefault("period_end", max(item.date for item in lines))
    result = claim_xml.write_message(out, CHARITY, lines, **options)
    return out.getvalue(), result


def cell(data: bytes, row: int, column: int) -> etree._Element:
    root = etree.fromstring(zipfile.ZipFile(io.BytesIO(data)).read("content.xml"))
    table = root.find(f".//{ODF_TABLE}table")
    rows: list[etree._Element] = []
    for element in table.iter(f"{ODF_TABLE}table-row"):
        rows.extend([element] * int(element.get(f"{ODF_TABLE}number-rows-repeated", "1")))
        if len(rows) >= row:
            break
    cells: list[etree._Element] = []
    for element in rows[row - 1]:
        cells.extend([element] * int(element.get(f"{ODF_TABLE}number-columns-repeated", "1")))
    return cells[column]


def shown(element: etree._Element) -> str:
    return "".join(element.itertext())


# --- F1 dates and amounts -----------------------------------------------------------------------------------------


def test_f1_dates_and_amounts_in_both_formats() -> None:
    item = line(123_450, dt.date(2025, 10, 5))
    document, _ = message([item])
    assert b"<Date>2025-10-05</Date><Total>1234.50</Total>" in document
    assert b"\xc2\xa3" not in document and b"1,234" not in document
    assert claim_xml.money(123_450) == "1234.50" and claim_xml.money(5) == "0.05" and claim_xml.money(100) == "1.00"

    ods = schedule.render_schedule([item], earliest=dt.date(2025, 10, 5))
    date_cell, amount_cell = cell(ods, 25, 9), cell(ods, 25, 10)
    assert date_cell.get(f"{ODF_OFFICE}value-type") == "date"
    assert date_cell.get(f"{ODF_OFFICE}date-value") == "2025-10-05"
    assert shown(date_cell) == "05/10/25"
    assert amount_cell.get(f"{ODF_OFFICE}value-type") == "float"
    assert Decimal(amount_cell.get(f"{ODF_OFFICE}value")) == Decimal("1234.50")
    assert shown(amount_cell) == "1,234.50"  # HMRC's own amount style (#,##0.00)
    # HMRC's reader takes the stored number to the penny: 1234.50.
    report = validate_schedule(ods, today=TODAY)
    assert (
        report.ok and report.donations[0].amount == Decimal("1234.50") and str(report.donations[0].amount) == "1234.50"
    )


# --- F2 future dates -----------------------------------------------------------------------------------------------


def test_f2_a_future_date_is_refused_by_the_schedule_check_and_hmrcs_rule_7040() -> None:
    ods = schedule.render_schedule([line(date=dt.date(2025, 11, 2))], earliest=dt.date(2025, 11, 2))
    report = validate_schedule(ods, today=dt.date(2025, 11, 1))
    assert [e.message for e in report.errors] == ["Gift Aid donation date cannot be in the future"]
    document, _ = message([line(date=dt.date(2025, 11, 2))])
    problems = claim_xml.check_business_rules(io.BytesIO(document), today=dt.date(2025, 11, 1))
    assert [(p.code, p.location) for p in problems] == [(7040, "GAD[1]")] or all(p.code == 7040 for p in problems)


# --- F3 row counts -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_f3_1001_lines_give_two_schedules_and_one_message(runtime: Runtime, tmp_path: Path) -> None:
    make_many_gifts(runtime, donor(runtime), 1_001)
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.lines == 1_001
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        files = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path)
        one_by_one = [service.schedule_part(uow.session, runtime.settings, claim, part) for part in (1, 2)]
    schedules = sorted(f for f in files if f.suffix == ".ods")
    messages = [f for f in files if f.suffix == ".xml"]
    assert [f.name.rsplit("-", 3)[-3:] for f in schedules] == [["1", "of", "2.ods"], ["2", "of", "2.ods"]]

    # Written in one pass over the claim, the schedules are the ones the API serves part by part (the same files,
    # but for the zip entries' timestamps).
    def members(data: bytes) -> dict[str, bytes]:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    assert [members(f.read_bytes()) for f in schedules] == [members(data) for data in one_by_one]
    first, second = (validate_schedule(f, today=TODAY) for f in schedules)
    assert (len(first.donations), len(second.donations)) == (1_000, 1)
    assert first.overclaimed is None and second.overclaimed is None
    assert first.total + second.total == Decimal(result.total).scaleb(-2)
    assert [d.item for d in second.donations] == [1]
    assert len(messages) == 1
    document = messages[0].read_bytes()
    assert document.count(b"<GAD>") == 1_001
    assert r68_errors(document) == []
    assert claim_xml.irmark_of(document) == claim.irmarks[0]


def test_a_claim_over_the_message_limit_writes_several_messages(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claim_xml, "MAX_GAD_PER_MESSAGE", 2)
    ada = donor(runtime)
    for day in range(1, 6):
        make_gift(runtime, ada, amount=10_000 + day, received_on=dt.date(2025, 6, day))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        files = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path, "xml")
        irmarks = list(claim.irmarks)
    assert [f.name.split("-")[-3:] for f in files] == [["1", "of", "3.xml"], ["2", "of", "3.xml"], ["3", "of", "3.xml"]]
    documents = [f.read_bytes() for f in files]
    assert [d.count(b"<GAD>") for d in documents] == [2, 2, 1]
    assert [claim_xml.irmark_of(d) for d in documents] == irmarks
    assert all(r68_errors(d) == [] for d in documents)
    assert b"<Date>2025-06-05</Date>" in documents[2] and b"<EarliestGAdate>2025-06-05</EarliestGAdate>" in documents[2]


# --- F4 sheet checks -----------------------------------------------------------------------------------------------


def test_f4_the_sheet_is_hmrcs_and_box_1_holds_the_earliest_date() -> None:
    ods = schedule.render_schedule([line(date=dt.date(2025, 10, 5))], earliest=dt.date(2025, 9, 30), overclaimed=1_234)
    root = etree.fromstring(zipfile.ZipFile(io.BytesIO(ods)).read("content.xml"))
    assert root.find(f".//{ODF_TABLE}table").get(f"{ODF_TABLE}name") == "R68GAD_V1_00_0_EN"
    assert cell(ods, 13, 3).get(f"{ODF_OFFICE}date-value") == "2025-09-30" and shown(cell(ods, 13, 3)) == "30/09/25"
    assert shown(cell(ods, 17, 3)) == "12.34"
    assert cell(ods, 20, 9).get(f"{ODF_TABLE}formula") == "of:=SUM([.K25:.K1024])"
    with zipfile.ZipFile(io.BytesIO(ods)) as package:
        assert package.infolist()[0].filename == "mimetype"
        assert package.read("mimetype") == b"application/vnd.oasis.opendocument.spreadsheet"
    blank_box_1 = schedule.render_schedule([line()], earliest=None)
    assert [e.message for e in validate_schedule(blank_box_1, today=TODAY).errors] == [
        "Enter the earliest donation date"
    ]


def test_the_packaged_template_is_hmrcs_good_data_schedule_blanked() -> None:
    source = (ODS / "hmrc-charities-claims__Gift-Aid-Schedule-Excel-GoodData.ods").read_bytes()
    ours = zipfile.ZipFile(io.BytesIO(schedule.template_bytes()))
    remade = zipfile.ZipFile(io.BytesIO(schedule.blank_template(source)))
    assert ours.namelist() == remade.namelist()
    for name in ours.namelist():
        assert ours.read(name) == remade.read(name), name
    assert [e.message for e in validate_schedule(schedule.template_bytes()).errors] == [
        "Enter details for at least one Gift Aid donation"
    ]


def test_schedule_text_is_what_hmrcs_reader_keeps() -> None:
    assert schedule.latin1_text("Zoë  Łukasz") == "Zoë Lukasz"
    assert schedule.schedule_title("M") == "" and schedule.schedule_title("Mrs") == "Mrs"
    ods = schedule.render_schedule(
        [line(first="Łukasz", title="M", overseas=True, postcode="", house="100 Champs Elysees, Paris")],
        earliest=dt.date(2025, 10, 5),
    )
    report = validate_schedule(ods, today=TODAY)
    assert report.ok
    donation = report.donations[0]
    assert (donation.title, donation.first_name, donation.postcode) == (None, "Lukasz", "X")


# --- F5 IRmark -----------------------------------------------------------------------------------------------------


def test_f5_irmark_of_hmrcs_sample_and_test_vectors() -> None:
    flat = (SAMPLES / "test-chris-submission-1-flat.xml").read_bytes()
    assert claim_xml.irmark_of(flat) == "oCHbGp+XAIi/AYdxWxLNLMmbEno="
    assert claim_xml.submission_reference("oCHbGp+XAIi/AYdxWxLNLMmbEno=") == "UAQ5WGU7S4AIRPYBQ5YVWEWNFTEZWET2"
    for number, expected in [
        (1, "KIYpXR8h95dWC6kB6HDq2c0d5TY="),
        (2, "4YeSgqkJKGEgmCEhasYuwsxqfnM="),
        (3, "RXvO9aWqS4RSVmxzx9uvPe2FmtI="),
    ]:
        assert claim_xml.irmark_of((SAMPLES / f"test-irmark-{number}.xml").read_bytes()) == expected
    # One whitespace character more inside the Body changes it.
    changed = flat.replace(b"<Sur>Smith</Sur>", b"<Sur>Smith </Sur>")
    assert claim_xml.irmark_of(changed) != "oCHbGp+XAIi/AYdxWxLNLMmbEno="


@pytest.mark.parametrize("number", [1, 2, 3, 5, 6, 7, 8])
def test_hmrcs_pretty_printed_samples_verify_once_compacted(number: int) -> None:
    parser = etree.XMLParser(remove_blank_text=True)
    root = etree.fromstring((SAMPLES / f"test-chris-submission-{number}.xml").read_bytes(), parser)
    stated = root.findtext(".//{*}IRmark")
    assert claim_xml.irmark_of(etree.tostring(root)) == stated


def test_our_streamed_irmark_equals_the_reference_computation() -> None:
    document, result = message(
        [
            line(first="Ann & <Co>", last="O'Brien"),
            line(5_000, overseas=True, postcode="", house="100 Champs Elysees, Paris", title=None),
            line(2_500, aggregated="Small donations, 3 donors", first="", last="", house="", postcode="", title=None),
        ],
        adjustment=2_500,
        other_info="Adjustment 25.00: refund",
    )
    assert claim_xml.irmark_of(document) == result.irmark
    assert f'<IRmark Type="generic">{result.irmark}</IRmark>'.encode() in document
    assert result.submission_reference == claim_xml.submission_reference(result.irmark)
    # The same lines give the same Body whatever the time of writing.
    again, second = message(
        [
            line(first="Ann & <Co>", last="O'Brien"),
            line(5_000, overseas=True, postcode="", house="100 Champs Elysees, Paris", title=None),
            line(2_500, aggregated="Small donations, 3 donors", first="", last="", house="", postcode="", title=None),
        ],
        adjustment=2_500,
        other_info="Adjustment 25.00: refund",
        timestamp=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    assert second.irmark == result.irmark and again != document


# --- F6 schema -----------------------------------------------------------------------------------------------------


def test_f6_our_message_validates_against_hmrcs_schemas() -> None:
    document, _ = message(
        [
            line(),
            line(5_000, overseas=True, postcode="", house="100 Champs Elysees, Paris", title=None),
            line(2_500, aggregated="Small donations, 3 donors", first="", last="", house="", postcode="", title=None),
        ],
        adjustment=2_500,
        other_info="Adjustment 25.00: refund",
    )
    assert r68_errors(document) == []
    assert envelope_errors(document) == []
    assert claim_xml.check_business_rules(io.BytesIO(document), today=TODAY) == []


@pytest.mark.parametrize("number", ["1-flat", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
def test_f6_hmrcs_valid_samples_pass_the_schema(number: str) -> None:
    assert r68_errors((SAMPLES / f"test-chris-submission-{number}.xml").read_bytes()) == []


def test_f6_hmrcs_invalid_samples_fail_the_schema() -> None:
    assert r68_errors((SAMPLES / "test-chris-submission-invalid-max-occurs.xml").read_bytes()) != []
    # This one lacks GovTalkDetails: the envelope schema refuses it.
    invalid = (SAMPLES / "test-chris-submission-invalid.xml").read_bytes()
    assert r68_errors(invalid) == [] and envelope_errors(invalid) != []


def test_business_rules_catch_what_the_schema_allows() -> None:
    document, _ = message([line()])
    no_other_info = document.replace(b"</EarliestGAdate>", b"</EarliestGAdate><Adjustment>1.00</Adjustment>")
    assert [p.code for p in claim_xml.check_business_rules(io.BytesIO(no_other_info), today=TODAY)] == [7059]
    big_aggregate, _ = message([line(100_001, aggregated="Envelopes", first="", last="", house="", postcode="")])
    assert [p.code for p in claim_xml.check_business_rules(io.BytesIO(big_aggregate), today=TODAY)] == [7038]
    wrong_key = document.replace(
        b'<Key Type="CHARID">AB12345</Key></Keys><TargetDetails>',
        b'<Key Type="CHARID">XR4010</Key></Keys><TargetDetails>',
    )
    assert 5005 in [p.code for p in claim_xml.check_business_rules(io.BytesIO(wrong_key), today=TODAY)]
    assert claim_xml.check_business_rules(SAMPLES / "test-chris-submission-1-flat.xml") == []
    with pytest.raises(ValueError, match="7059"):
        message([line()], adjustment=100)


# --- the schedule, converted by LibreOffice ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_libreoffice_reads_our_schedule_cell_for_cell(runtime: Runtime, tmp_path: Path) -> None:
    ada = donor(runtime, title="Prof", first_name="Henry", last_name="House Martin", house="152A", postcode="M99 2QD")
    luc = donor(
        runtime,
        title="Mr",
        first_name="Luc",
        last_name="Martin",
        house="100 Champs Elysees, Paris",
        postcode="",
        country="FR",
    )
    make_gift(runtime, ada, amount=24_000, received_on=dt.date(2025, 3, 24))
    make_gift(runtime, ada, amount=123_450, received_on=dt.date(2025, 10, 5))
    make_gift(runtime, luc, amount=25_000, received_on=dt.date(2025, 6, 24))
    for day in range(3):
        make_gift(runtime, donor(runtime), amount=1_500, received_on=dt.date(2025, 9, 1 + day))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        (path,) = service.write_claim_files(uow.session, runtime.settings, claim, tmp_path / "out", "ods")

    profile = tmp_path / "lo-profile"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true",
            "--outdir",
            str(tmp_path / "csv"),
            str(path),
        ],
        check=True,
        env=env,
        timeout=120,
        capture_output=True,
    )
    rows = list(csv.reader((tmp_path / "csv" / (path.stem + ".csv")).open(encoding="utf-8")))
    assert rows[12][2:4] == ["Box 1", "24/03/25"]
    assert rows[16][2:4] == ["Box 2", ""]
    assert rows[19][7:10] == ["Total donations:", "", "£1,769.50"]
    assert rows[22][1:11] == [
        "Item", "Title", "First name", "Last name", "House name or number", "Postcode",
        "Aggregated donations", "Sponsored event", "Donation date", "Amount",
    ]  # fmt: skip
    assert [r[1:11] for r in rows[24:29]] == [
        ["1", "Prof", "Henry", "House Martin", "152A", "M99 2QD", "", "", "24/03/25", "240.00"],
        ["2", "Mr", "Luc", "Martin", "100 Champs Elysees, Paris", "X", "", "", "24/06/25", "250.00"],
        ["3", "Prof", "Henry", "House Martin", "152A", "M99 2QD", "", "", "05/10/25", "1,234.50"],
        ["4", "", "", "", "", "", "Small donations, 3 donors", "", "03/09/25", "45.00"],
        ["5", "", "", "", "", "", "", "", "", ""],
    ]
    assert rows[1023][1] == "1000" and rows[1024][1].startswith("Stop!")


def test_exports_are_refused_when_they_fail_hmrcs_checks(runtime: Runtime, tmp_path: Path) -> None:
    settings = make_settings(
        runtime.settings.database.url, tmp_path, charity={"hmrc_reference": "CH12345", "regulator": "CCEW"}
    )
    make_gift(runtime, donor(runtime))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, settings, through=TODAY, actor="test", today=TODAY)
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        out = io.BytesIO()
        # A CH reference has no regulator: we write NoReg, and rule 7033 is kept.
        service.write_xml_part(uow.session, settings, claim, 1, out)
    assert b"<Regulator><NoReg>yes</NoReg></Regulator>" in out.getvalue()
    assert r68_errors(out.getvalue()) == []
    assert uuid.UUID(str(claim.id))


def test_the_database_renders_each_gad_exactly_as_python_does(runtime: Runtime) -> None:
    # The claim's XML lines come from SQL (fast); they must be byte for byte what giftaid.xml.gad writes.
    odd = donor(runtime, title="Dr", first_name="Ann & <Co>", last_name="O'Brien > Smith", house="Flat 3 & 4")
    make_gift(runtime, odd, amount=123_405, received_on=dt.date(2025, 10, 5))
    make_gift(runtime, odd, amount=7, received_on=dt.date(2025, 10, 6))
    make_gift(runtime, donor(runtime, title=None, country="FR", postcode="", house="1 Rue X"), amount=100_000)
    # Non-ASCII and a backslash come through PostgreSQL's binary COPY untouched.
    make_gift(runtime, donor(runtime, first_name="Zoë Łucja", last_name="Back\\slash 北"), amount=4_321)
    for _ in range(3):
        make_gift(runtime, donor(runtime), amount=1_999, received_on=dt.date(2025, 9, 9))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        from giftaid import repository

        chunks = list(repository.stream_gad_xml(uow.session, claim.id, 1, claim.lines))
        expected = [claim_xml.gad(item) for item in service.claim_lines(uow.session, claim.id, 1, claim.lines)]
    rendered = b"".join(data for data, _ in chunks).decode()
    assert rendered == "".join(expected)
    assert sum(n for _, n in chunks) == len(expected) == claim.lines
    assert "&amp; &lt;Co&gt;" in rendered and "<Total>0.07</Total>" in rendered
    assert "<AggDonation>Small donations, 3 donors</AggDonation>" in rendered
    assert "<Fore>Zoë Łucja</Fore><Sur>Back\\slash 北</Sur>" in rendered


def test_a_charity_with_another_regulator_names_it_in_the_claim() -> None:
    """Found in review: regulator "other" wrote the words "Other regulator" to HMRC. The charity's regulator is named
    (`[charity] other_regulator`), and settings without the name are refused at start-up."""
    import dataclasses

    from pydantic import ValidationError

    from core.settings import CharitySettings
    from tests.giftaid.hmrc_files import r68_errors

    other = dataclasses.replace(CHARITY, regulator="other", other_regulator="Jersey Charity Commissioner")
    out = io.BytesIO()
    claim_xml.write_message(out, other, [line()], earliest=line().date, period_end=line().date)
    root = etree.fromstring(out.getvalue())
    assert root.findtext(f".//{{{claim_xml.R68_NS}}}OtherReg") == "Jersey Charity Commissioner"
    assert r68_errors(out.getvalue()) == []
    with pytest.raises(ValidationError, match="other_regulator"):
        CharitySettings(regulator="other")
