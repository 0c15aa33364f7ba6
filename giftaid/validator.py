"""Our own check of a Gift Aid schedule (.ods), with HMRC's rules and HMRC's messages (giftaid.md §2).

It reads the sheet the way HMRC's upload validator does: the first sheet must be named `R68GAD_V1_00_0...`;
Box 1 (D13) and Box 2 (D17); donation rows 25-1025 in columns B-K, a row counting only if a cell other than the item
number holds something; text as shown in the cell, with characters outside printable Latin-1 removed and (for names,
house and description) runs of spaces collapsed; amounts from the cell's stored number, rounded to the penny, else its
text; dates from the text shown, strictly DD/MM/YY or DD/MM/YYYY (HMRC's validator takes both; our exports write
DD/MM/YY). Every export runs through it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from lxml import etree

from core.clock import uk_today
from crm.validation import UK_POSTCODE

TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
SHEET_PREFIX = "R68GAD_V1_00_0"
FIRST_ROW, LAST_ROW = 25, 1025  # 1-based, as HMRC reads them
BOX1_ROW, BOX2_ROW, BOX_COLUMN = 13, 17, 3

MESSAGES = {
    "giftAid.message.1": "Enter details for at least one Gift Aid donation",
    "giftAid.message.2": "Enter the earliest donation date",
    "giftAid.message.3": "Enter the earliest donation date in the correct format",
    "giftAid.message.4": "Enter a previously overclaimed amount in the correct format",
    "giftAid.message.5": "Enter an aggregated donations entry in the correct format",
    "giftAid.message.6": "There is an issue with this item number",
    "giftAid.message.7": "Enter a donation date",
    "giftAid.message.8": "Enter a donation date in the correct format",
    "giftAid.message.9": "Gift Aid donation date cannot be in the future",
    "giftAid.message.10": "Enter a donation amount in the correct format",
    "giftAid.message.11": "Donation amount is missing",
    "giftAid.message.12": "Enter an aggregated donation amount that is £1000 or smaller",
    "giftAid.message.13": "Enter a donor title in the correct format",
    "giftAid.message.14": "Enter a donor first name",
    "giftAid.message.15": "Enter a donor last name",
    "giftAid.message.16": "Enter a donor first name in the correct format",
    "giftAid.message.17": "Enter a donor last name in the correct format",
    "giftAid.message.18": "Enter a donor house name or number",
    "giftAid.message.19": "Enter a donor house name or number in the correct format",
    "giftAid.message.20": "Enter a donor postcode",
    "giftAid.message.21": "Enter a donor postcode in the correct format",
    "giftAid.message.22": "Enter \u2018Yes\u2019 if this is a sponsored event, otherwise leave blank",
    "giftAid.message.23": "The selected field must be an aggregated donation, sponsored event or ordinary donation",
    "giftAid.message.24": "You cannot provide a title for an aggregated donation",
    "giftAid.message.25": "You cannot provide a first name for an aggregated donation",
    "giftAid.message.26": "You cannot provide a last name for an aggregated donation",
    "giftAid.message.27": "You cannot provide a house name or number for an aggregated donation",
    "giftAid.message.28": "You cannot provide a postcode for an aggregated donation",
    "commonFile.message.2": "There is a problem with your spreadsheet",
    "commonFile.message.3": "The selected file must use the template required",
}

_NOT_LATIN1 = re.compile(r"[^\x20-\x7E\xA1-\xFF]")
_TITLE = re.compile(r"[A-Za-z][A-Za-z'-]{1,3}")
_ITEM = re.compile(r"[1-9][0-9]{0,3}")
# HMRC's validator tries `dd/MM/uu` then `dd/MM/uuuu` (java.time, STRICT): a two-digit year is 20YY, a four-digit
# one as written; day and month always two digits.
_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{2}|\d{4})")


@dataclass(frozen=True)
class ScheduleError:
    field: str  # HMRC's field key, e.g. "donorFirstName[0]" (index from the first donation row)
    key: str  # HMRC's message key, e.g. "validationService.giftAid.message.14"
    row: int | None = None  # the spreadsheet row (1-based), when the error is about a row

    @property
    def message(self) -> str:
        return MESSAGES[self.key.removeprefix("validationService.")]

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row else ""
        return f"{where}{self.message}"


@dataclass
class Donation:
    item: int
    title: str | None
    first_name: str | None
    last_name: str | None
    house: str | None
    postcode: str | None
    aggregated: str | None
    sponsored: bool
    date: dt.date
    amount: Decimal


@dataclass
class ScheduleReport:
    errors: list[ScheduleError] = field(default_factory=list)
    donations: list[Donation] = field(default_factory=list)
    earliest: dt.date | None = None
    overclaimed: Decimal | None = None
    sheet_name: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def total(self) -> Decimal:
        return sum((d.amount for d in self.donations), Decimal("0.00"))


def _key(short: str) -> str:
    return f"validationService.{short}"


def clean(value: str, *, collapse: bool = False) -> str:
    """HMRC's reading: non-Latin-1 characters removed, trimmed; optionally runs of whitespace made one space."""
    value = _NOT_LATIN1.sub("", value).strip()
    return re.sub(r"\s+", " ", value) if collapse else value


def parse_date(value: str) -> dt.date | None:
    match = _DATE.fullmatch(value)
    if not match:
        return None
    day, month, year = int(match[1]), int(match[2]), match[3]
    full_year = 2000 + int(year) if len(year) == 2 else int(year)
    try:
        return dt.date(full_year, month, day)
    except ValueError:
        return None


def _decimal(value: str) -> Decimal | None:
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _amount_format_ok(number: Decimal) -> bool:
    _sign, digits, exponent = number.as_tuple()
    return exponent == -2 and len(str(int("".join(map(str, digits)) or "0"))) <= 15


# --- reading the sheet ------------------------------------------------------------------------------------------------


_WHOLE = re.compile(r"\+?[0-9]+", re.ASCII)


def _count(value: str | None) -> int:
    """A repeat or space count as HMRC's reader takes it: a whole number of at least 1, and anything else (no number,
    "2.5", " 3", "0", "-1") as 1, rather than failing the whole file (Python's `int()` would also take " 3" and
    "3_0", which HMRC's does not)."""
    if value is None or not _WHOLE.fullmatch(value):
        return 1
    return max(int(value), 1)


def _cell_text(cell: Any) -> str:
    def walk(node: Any) -> str:
        parts = [node.text or ""]
        for child in node:
            tag = etree.QName(child).localname if isinstance(child.tag, str) else ""
            if tag == "s":
                parts.append(" " * min(_count(child.get(f"{TEXT}c")), 1_000))
            else:
                parts.append(walk(child))
            parts.append(child.tail or "")
        return "".join(parts)

    return "\n".join(walk(p) for p in cell.iter(f"{TEXT}p")).strip()


def _cell_value(cell: Any, money: bool) -> str:
    if money:
        stored = _decimal(cell.get(f"{OFFICE}value", ""))
        if stored is not None and stored.adjusted() < 20:
            return str(stored.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
    return _cell_text(cell)


def _grid(table: Any, last_row: int, columns: int = 11) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for row in table.iterchildren(f"{TABLE}table-row", f"{TABLE}table-header-rows", f"{TABLE}table-row-group"):
        members = [row] if row.tag == f"{TABLE}table-row" else list(row.iter(f"{TABLE}table-row"))
        for member in members:
            cells: list[Any] = []
            for cell in member:
                if cell.tag not in (f"{TABLE}table-cell", f"{TABLE}covered-table-cell"):
                    continue
                repeat = _count(cell.get(f"{TABLE}number-columns-repeated"))
                cells.extend([cell] * min(repeat, columns - len(cells)))
                if len(cells) >= columns:
                    break
            repeat = _count(member.get(f"{TABLE}number-rows-repeated"))
            rows.extend([cells] * min(repeat, last_row - len(rows)))
            if len(rows) >= last_row:
                return rows
    return rows


def _at(grid: list[list[Any]], row: int, column: int, *, money: bool = False) -> str:
    if row - 1 >= len(grid) or column >= len(grid[row - 1]):
        return ""
    return _cell_value(grid[row - 1][column], money)


# --- the checks -------------------------------------------------------------------------------------------------------


def validate_schedule(source: Path | bytes, *, today: dt.date | None = None) -> ScheduleReport:
    """Every problem HMRC's validator would report for this schedule, in HMRC's order and words."""
    today = today or uk_today()
    report = ScheduleReport()
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            content = package.read("content.xml")
        root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, huge_tree=True))
    except (zipfile.BadZipFile, KeyError, etree.XMLSyntaxError):
        report.errors.append(ScheduleError("fileError", _key("commonFile.message.3")))
        return report
    table = root.find(f".//{TABLE}table")
    report.sheet_name = table.get(f"{TABLE}name", "") if table is not None else ""
    if table is None or not report.sheet_name.strip().startswith(SHEET_PREFIX):
        report.errors.append(ScheduleError("fileError", _key("commonFile.message.3")))
        return report
    grid = _grid(table, LAST_ROW)
    rows = []
    for number in range(FIRST_ROW, LAST_ROW + 1):
        values = [_at(grid, number, column, money=column == 10) for column in range(1, 11)]
        if any(v.strip() for v in values[1:]):
            rows.append((number, [v.strip() for v in values]))
    if not rows:
        report.errors.append(ScheduleError("giftAidDonation", _key("giftAid.message.1")))
        return report

    earliest_text = clean(_at(grid, BOX1_ROW, BOX_COLUMN))
    if not earliest_text:
        report.errors.append(ScheduleError("earliestDonationDate", _key("giftAid.message.2")))
    elif (earliest := parse_date(earliest_text)) is None:
        report.errors.append(ScheduleError("earliestDonationDate", _key("giftAid.message.3")))
    else:
        report.earliest = earliest
    overclaimed_text = clean(_at(grid, BOX2_ROW, BOX_COLUMN, money=True)).replace(",", "")
    if overclaimed_text:
        overclaimed = _decimal(overclaimed_text)
        if overclaimed is None or not _amount_format_ok(overclaimed) or overclaimed <= 0:
            report.errors.append(ScheduleError("previouslyOverClaimedAmount", _key("giftAid.message.4")))
        else:
            report.overclaimed = overclaimed

    for index, (number, values) in enumerate(rows):
        errors, donation = _check_row(index, values, today)
        report.errors.extend(ScheduleError(f, k, number) for f, k in errors)
        if donation is not None:
            report.donations.append(donation)
    return report


def _check_row(index: int, values: list[str], today: dt.date) -> tuple[list[tuple[str, str]], Donation | None]:
    item, title, first, last, house, postcode, aggregated, sponsored, date, amount = values
    errors: list[tuple[str, str]] = []

    def fail(name: str, message: int) -> None:
        errors.append((f"{name}[{index}]", _key(f"giftAid.message.{message}")))

    is_aggregated = bool(clean(aggregated))
    item_text = clean(item)
    if not _ITEM.fullmatch(item_text) or not 1 <= int(item_text) <= 1000:
        fail("item", 6)
    if is_aggregated:
        conflicts = [(sponsored, 23), (title, 24), (first, 25), (last, 26), (house, 27), (postcode, 28)]
        for value, message in conflicts:
            if value.strip():
                errors.append((f"aggregateDonationsConflict[{index}]", _key(f"giftAid.message.{message}")))
    title_value = clean(title)
    if not is_aggregated and title_value and not _TITLE.fullmatch(title_value):
        fail("donorTitle", 13)
    names = {}
    for name, label, missing, wrong in (
        (first, "donorFirstName", 14, 16),
        (last, "donorLastName", 15, 17),
        (house, "donorHouse", 18, 19),
    ):
        value = clean(name, collapse=True)
        names[label] = value
        if is_aggregated:
            continue
        if not value:
            fail(label, missing)
        elif len(value) > (40 if label == "donorHouse" else 35):
            fail(label, wrong)
    postcode_value = clean(postcode).upper()
    if not is_aggregated:
        if not postcode_value:
            fail("postcode", 20)
        elif not (clean(postcode) == "X" or UK_POSTCODE.fullmatch(postcode_value)):
            fail("postcode", 21)
    description = clean(aggregated, collapse=True)
    if description and len(description) > 35:
        fail("aggregateDonations", 5)
    sponsored_value = clean(sponsored.lower())
    if not is_aggregated and sponsored_value not in ("", "yes"):
        fail("sponsoredEvent", 22)
    date_text = clean(date)
    day = parse_date(date_text) if date_text else None
    if not date_text:
        fail("donationDate", 7)
    elif day is None:
        fail("donationDate", 8)
    elif day > today:
        fail("donationDate", 9)
    amount_text = clean(amount)
    number = _decimal(amount_text.replace(",", "")) if amount_text else None
    if not amount_text:
        fail("donationAmount", 11)
    elif number is None or not _amount_format_ok(number):
        fail("donationAmount", 10)
    elif is_aggregated and number > 1000:
        fail("donationAmount", 12)
    elif number < Decimal("0.01") or number > Decimal("9999999999999.99"):
        fail("donationAmount", 10)
    if errors or day is None or number is None:
        return errors, None
    return errors, Donation(
        item=int(item_text),
        title=None if is_aggregated or not title_value else title_value,
        first_name=None if is_aggregated else names["donorFirstName"],
        last_name=None if is_aggregated else names["donorLastName"],
        house=None if is_aggregated else names["donorHouse"],
        postcode=None if is_aggregated else postcode_value,
        aggregated=description or None,
        sponsored=sponsored_value == "yes" and not is_aggregated,
        date=day,
        amount=number,
    )
