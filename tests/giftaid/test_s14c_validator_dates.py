"""HMRC's schedule validator reads a date written DD/MM/YY or DD/MM/YYYY (java.time `dd/MM/uu`, then `dd/MM/uuuu`,
both strict): ours takes both too. Our exports still write DD/MM/YY (test_exports pins it)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from giftaid import schedule
from giftaid.validator import parse_date, validate_schedule
from giftaid.xml import Line

TODAY = dt.date(2025, 11, 1)


@pytest.mark.parametrize(
    ("text", "day"),
    [("12/01/2026", dt.date(2026, 1, 12)), ("29/02/2024", dt.date(2024, 2, 29)), ("01/06/1999", dt.date(1999, 6, 1)),
     ("12/01/26", dt.date(2026, 1, 12)), ("29/02/2025", None), ("31/04/2025", None), ("1/1/2025", None),
     ("01/1/2025", None), ("12/01/026", None), ("12/01/20260", None), ("12-01-2026", None), ("2026/01/12", None)],
)  # fmt: skip
def test_dates_are_strictly_dd_mm_yy_or_dd_mm_yyyy(text: str, day: dt.date | None) -> None:
    assert parse_date(text) == day


def _with_four_digit_years(data: bytes, days: list[dt.date]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        content = package.read("content.xml")
    for day in days:
        content = content.replace(f">{day:%d/%m/%y}<".encode(), f">{day:%d/%m/%Y}<".encode())
    assert b"/2025<" in content
    return schedule._rewrite(data, content)


def test_a_schedule_with_four_digit_years_passes_as_hmrc_passes_it() -> None:
    days = [dt.date(2025, 6, 1), dt.date(2025, 7, 2)]
    lines = [
        Line("Ms", "Ada", "Lovelace", "12", "CT16 1AA", False, None, days[0], 10_000),
        Line(None, "", "", "", "", False, "Small donations, 2 donors", days[1], 3_000),
    ]
    data = _with_four_digit_years(schedule.render_schedule(lines, earliest=days[0]), days)
    report = validate_schedule(data, today=TODAY)
    assert report.ok, [str(e) for e in report.errors]
    assert report.earliest == days[0]
    assert [d.date for d in report.donations] == days


def test_a_four_digit_date_in_the_future_is_still_refused() -> None:
    day = dt.date(2025, 12, 1)
    line = Line("Ms", "Ada", "Lovelace", "12", "CT16 1AA", False, None, day, 10_000)
    data = _with_four_digit_years(schedule.render_schedule([line], earliest=day), [day])
    report = validate_schedule(data, today=TODAY)
    assert [e.message for e in report.errors] == ["Gift Aid donation date cannot be in the future"]
