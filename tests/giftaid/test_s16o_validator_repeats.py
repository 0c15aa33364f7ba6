"""A schedule whose `number-rows-repeated`, `number-columns-repeated` (or a `text:s` space count) is not a whole
number: HMRC's reader takes it as 1; ours did the same instead of failing with a traceback (`int()`)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest
from lxml import etree

from giftaid import schedule
from giftaid.validator import validate_schedule
from giftaid.xml import Line

TODAY = dt.date(2025, 11, 1)
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"


def _schedule() -> bytes:
    lines = [
        Line("Ms", "Ada", "Lovelace", "12", "CT16 1AA", False, None, dt.date(2025, 6, 1), 10_000),
        Line("Mr", "Alan", "Turing", "3", "CT16 1AA", False, None, dt.date(2025, 6, 2), 5_000),
    ]
    return schedule.render_schedule(lines, earliest=dt.date(2025, 6, 1))


def _edited(source: bytes, edit: object) -> bytes:
    with zipfile.ZipFile(io.BytesIO(source)) as zin:
        root = etree.fromstring(zin.read("content.xml"))
        edit(root)  # type: ignore[operator]
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for item in zin.infolist():
                data = etree.tostring(root) if item.filename == "content.xml" else zin.read(item.filename)
                zout.writestr(item, data)
    return out.getvalue()


def _row(root: etree._Element, number: int) -> etree._Element:
    """The sheet's row `number` (1-based), as written (our schedules write the donation rows one element each)."""
    rows = list(root.iter(f"{TABLE}table-row"))
    return rows[number - 1]


@pytest.mark.parametrize("value", ["many", "2.5", "", " 3", "3_0", "-1", "0", "1e3"])
def test_a_repeat_count_that_is_no_whole_number_is_one(value: str) -> None:
    def edit(root: etree._Element) -> None:
        donation = _row(root, 25)
        donation.set(f"{TABLE}number-rows-repeated", value)
        first_cell = donation.find(f"{TABLE}table-cell")
        assert first_cell is not None
        first_cell.set(f"{TABLE}number-columns-repeated", value)
        paragraph = donation.findall(f"{TABLE}table-cell")[3].find(f"{TEXT}p")
        assert paragraph is not None
        space = etree.SubElement(paragraph, f"{TEXT}s")
        space.set(f"{TEXT}c", value)
        space.tail = "King"

    report = validate_schedule(_edited(_schedule(), edit), today=TODAY)
    assert report.ok, [str(e) for e in report.errors]
    assert [(d.first_name, d.item) for d in report.donations] == [("Ada King", 1), ("Alan", 2)]


def test_a_whole_repeat_count_still_repeats() -> None:
    def edit(root: etree._Element) -> None:
        _row(root, 25).set(f"{TABLE}number-rows-repeated", "2")

    report = validate_schedule(_edited(_schedule(), edit), today=TODAY)
    # The donation row read twice, so the next one is row 27 (item 2 is written in the repeated row's copy).
    assert [d.first_name for d in report.donations][:2] == ["Ada", "Ada"]
