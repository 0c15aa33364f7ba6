"""Our schedule check against HMRC's own validator fixtures (F7): good data passes, every bad row of the BadData
fixture is caught with HMRC's message, in HMRC's order; a wrong sheet name, an empty schedule and a bad earliest
date are refused as HMRC refuses them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from giftaid.validator import clean, parse_date, validate_schedule
from tests.giftaid.hmrc_files import ODS

TODAY = dt.date(2025, 11, 1)

# HMRC's expected result for its BadData fixture: (field, message number).
BAD_DATA = [
    ("earliestDonationDate", 2),
    ("previouslyOverClaimedAmount", 4),
    ("donorFirstName[0]", 14),
    ("donorLastName[1]", 15),
    ("donorHouse[2]", 18),
    ("postcode[3]", 20),
    ("donationDate[4]", 7),
    ("donationAmount[5]", 11),
    ("donationDate[6]", 8),
    ("donationDate[7]", 9),
    ("donationAmount[8]", 10),
    ("donorTitle[9]", 13),
    ("donorFirstName[10]", 16),
    ("donorLastName[11]", 17),
    ("donorHouse[12]", 19),
    ("sponsoredEvent[13]", 22),
    ("aggregateDonationsConflict[14]", 23),
    ("donationAmount[14]", 12),
    ("aggregateDonationsConflict[15]", 24),
    ("donationAmount[15]", 12),
    ("aggregateDonationsConflict[16]", 25),
    ("donationAmount[16]", 12),
    ("aggregateDonationsConflict[17]", 26),
    ("donationAmount[17]", 12),
    ("aggregateDonationsConflict[18]", 27),
    ("donationAmount[18]", 12),
    ("aggregateDonationsConflict[19]", 28),
    ("donationAmount[19]", 12),
    ("aggregateDonations[20]", 5),
    ("donationAmount[21]", 12),
    ("item[22]", 6),
    ("item[23]", 6),
    ("donorFirstName[24]", 14),
    ("donorLastName[24]", 15),
    ("donorHouse[24]", 18),
    ("postcode[24]", 20),
    ("donationDate[24]", 7),
    ("donationAmount[24]", 11),
    ("donorFirstName[25]", 14),
    ("donorLastName[25]", 15),
    ("donorHouse[25]", 18),
    ("postcode[25]", 20),
]


def fixture(name: str) -> bytes:
    return (ODS / f"hmrc-validation__Gift-Aid-Schedule-Excel-{name}.ods").read_bytes()


@pytest.mark.parametrize("name", ["GoodData", "GoodDataWithAttributes", "GoodDataWithMultipleSpaces"])
def test_hmrcs_good_schedules_pass(name: str) -> None:
    report = validate_schedule(fixture(name), today=TODAY)
    assert report.errors == []
    assert report.earliest == dt.date(2017, 11, 10)
    first = report.donations[0]
    assert (first.item, first.title, first.last_name, first.house, first.postcode) == (
        1,
        "Prof",
        "House Martin",
        "152A" if name != "GoodDataWithMultipleSpaces" else "152A Multiple Spaces",
        "M99 2QD",
    )
    assert first.date == dt.date(2015, 3, 24) and first.amount == Decimal("240.00")


def test_hmrcs_good_data_reads_as_hmrc_reads_it() -> None:
    report = validate_schedule(fixture("GoodData"), today=TODAY)
    assert [(d.item, d.aggregated, d.sponsored, d.postcode, str(d.amount)) for d in report.donations] == [
        (1, None, False, "M99 2QD", "240.00"),
        (2, None, False, "X", "250.00"),
        (3, "One off Gift Aid donations", False, None, "880.00"),
        (4, None, True, "L43 4FB", "80.00"),
    ]
    assert report.total == Decimal("1450.00")
    spaces = validate_schedule(fixture("GoodDataWithMultipleSpaces"), today=TODAY)
    assert spaces.donations[0].first_name == "Henry Multiple Spaces"
    assert spaces.donations[2].aggregated == "One off Gift Aid donations"


def test_every_bad_row_is_caught_with_hmrcs_message() -> None:
    report = validate_schedule(fixture("BadData"), today=TODAY)
    assert [(e.field, int(e.key.rsplit(".", 1)[1])) for e in report.errors] == BAD_DATA
    assert all(e.key.startswith("validationService.giftAid.message.") for e in report.errors)
    messages = {e.field: str(e) for e in report.errors}
    assert messages["donorFirstName[0]"] == "row 25: Enter a donor first name"
    assert messages["donationDate[7]"] == "row 32: Gift Aid donation date cannot be in the future"
    assert (
        messages["sponsoredEvent[13]"]
        == "row 38: Enter \u2018Yes\u2019 if this is a sponsored event, otherwise leave blank"
    )
    assert messages["donationAmount[21]"] == "row 46: Enter an aggregated donation amount that is £1000 or smaller"
    assert messages["item[23]"] == "row 48: There is an issue with this item number"
    assert report.donations == []


def test_a_wrong_sheet_name_is_refused() -> None:
    report = validate_schedule(fixture("BadSheetNameData"), today=TODAY)
    assert [(e.field, e.message) for e in report.errors] == [
        ("fileError", "The selected file must use the template required")
    ]


def test_an_empty_schedule_is_refused() -> None:
    report = validate_schedule(fixture("EmptyData"), today=TODAY)
    assert [e.message for e in report.errors] == ["Enter details for at least one Gift Aid donation"]


def test_an_invalid_earliest_date_and_overclaimed_amount_are_refused() -> None:
    report = validate_schedule(fixture("InvalidEarliestDonationDate"), today=TODAY)
    assert [e.message for e in report.errors] == [
        "Enter the earliest donation date in the correct format",
        "Enter a previously overclaimed amount in the correct format",
    ]
    assert len(report.donations) == 4


def test_not_a_spreadsheet_is_refused() -> None:
    assert [e.field for e in validate_schedule(b"not a zip", today=TODAY).errors] == ["fileError"]


@pytest.mark.parametrize(
    ("text", "day"),
    [("24/06/15", dt.date(2015, 6, 24)), ("29/02/24", dt.date(2024, 2, 29)), ("29/02/25", None), ("2026-01-12", None),
     ("12/01/2026", dt.date(2026, 1, 12)), ("31/02/2026", None), ("12-01-26", None), ("1/1/25", None)],
)  # fmt: skip
def test_dates_are_strictly_dd_mm_yy_or_yyyy(text: str, day: dt.date | None) -> None:
    assert parse_date(text) == day


def test_hmrcs_cleaning_keeps_printable_latin1() -> None:
    assert clean("\u263a24/06/15") == "24/06/15"
    assert clean(" Zoë\u00a0 ") == "Zoë"
    assert clean("100   Champs\n Paris", collapse=True) == "100 Champs Paris"
