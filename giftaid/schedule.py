"""HMRC's Gift Aid schedule spreadsheet (.ods), filled in cell by cell on HMRC's own template.

The template (`hmrc_gift_aid_schedule.ods`, package data) is HMRC's good-data schedule with its example rows, Box 1
and Box 2 blanked (`blank_template`), so every style, merged cell, note and formula stays HMRC's. We only set values:
sheet `R68GAD_V1_00_0_EN`, Box 1 at D13 (earliest date), Box 2 at D17 (over-claimed tax), donation rows 25-1024 in
columns C-K (B is the pre-filled item number), dates as ODF date cells shown DD/MM/YY, amounts as numbers shown to
2 dp in HMRC's own cell styles. The "Total donations" formula at J20 keeps its formula; we refresh its cached value.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import re
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from lxml import etree

# The schedule's transliteration (`latin1_text`) lives with the other rules of what a file can carry: what it makes
# "" is a blank name or house (giftaid.sendable).
from giftaid.sendable import latin1_text, sendable
from giftaid.xml import Line

NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
}
OFFICE = "{" + NS["office"] + "}"
TABLE = "{" + NS["table"] + "}"
TEXT = "{" + NS["text"] + "}"
SHEET_NAME = "R68GAD_V1_00_0_EN"
MIMETYPE = "application/vnd.oasis.opendocument.spreadsheet"
TEMPLATE = "hmrc_gift_aid_schedule.ods"
ROWS_PER_SCHEDULE = 1000
FIRST_ROW = 25  # 1-based spreadsheet rows
BOX1 = (13, 3)  # row, 0-based column (D13)
BOX2 = (17, 3)  # D17
TOTAL = (20, 9)  # J20
COLUMNS = 11  # A-K


def template_bytes() -> bytes:
    return resources.files("giftaid").joinpath(TEMPLATE).read_bytes()


def schedule_title(title: str | None) -> str:
    """HMRC's schedule takes titles of 2-4 letters (`^[A-Za-z][A-Za-z'-]{1,3}$`); a title is optional, so any other
    is left out rather than failing the row."""
    title = sendable(title or "")
    if re.fullmatch(r"[A-Za-z][A-Za-z'-]{1,3}", title):
        return title
    return ""


def display_date(day: dt.date) -> str:
    return day.strftime("%d/%m/%y")


def display_amount(pence: int) -> str:
    """HMRC's amount style (`#,##0.00`)."""
    return f"{Decimal(pence).scaleb(-2):,.2f}"


# --- table access -----------------------------------------------------------------------------------------------------


def _table(root: Any) -> Any:
    table = root.find(f".//{TABLE}table")
    if table is None:
        raise ValueError("the template has no sheet")
    return table


def _rows(table: Any, upto: int) -> list[Any]:
    """The first `upto` rows, each its own element (repeated rows are split)."""
    rows: list[Any] = []
    for row in list(table.iter(f"{TABLE}table-row")):
        repeat = int(row.get(f"{TABLE}number-rows-repeated", "1"))
        if repeat > 1 and len(rows) < upto:
            take = min(repeat, upto - len(rows))
            row.attrib.pop(f"{TABLE}number-rows-repeated")
            parent = row.getparent()
            index = parent.index(row)
            for offset in range(1, take):
                parent.insert(index + offset, copy.deepcopy(row))
            if repeat > take:
                rest = copy.deepcopy(row)
                rest.set(f"{TABLE}number-rows-repeated", str(repeat - take))
                parent.insert(index + take, rest)
            rows.extend(parent[index : index + take])
        else:
            rows.append(row)
        if len(rows) >= upto:
            break
    return rows


def _cells(row: Any) -> list[Any]:
    """The row's first 11 cells (A-K), each its own element (repeated cells are split)."""
    cells: list[Any] = []
    for cell in list(row):
        if cell.tag not in (f"{TABLE}table-cell", f"{TABLE}covered-table-cell"):
            continue
        repeat = int(cell.get(f"{TABLE}number-columns-repeated", "1"))
        if repeat > 1 and len(cells) < COLUMNS:
            take = min(repeat, COLUMNS - len(cells))
            cell.attrib.pop(f"{TABLE}number-columns-repeated")
            index = row.index(cell)
            for offset in range(1, take):
                row.insert(index + offset, copy.deepcopy(cell))
            if repeat > take:
                rest = copy.deepcopy(cell)
                rest.set(f"{TABLE}number-columns-repeated", str(repeat - take))
                row.insert(index + take, rest)
            cells.extend(row[index : index + take])
        else:
            cells.append(cell)
        if len(cells) >= COLUMNS:
            break
    return cells


def _clear(cell: Any) -> None:
    for name in ("value-type", "value", "date-value", "string-value", "currency"):
        cell.attrib.pop(f"{OFFICE}{name}", None)
    for attr in list(cell.attrib):
        if attr.startswith("{urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0}"):
            del cell.attrib[attr]
    for child in list(cell):
        if child.tag == f"{TEXT}p":
            cell.remove(child)


def _paragraph(cell: Any, shown: str) -> None:
    paragraph = etree.SubElement(cell, f"{TEXT}p")
    paragraph.text = shown


def set_text(cell: Any, value: str) -> None:
    _clear(cell)
    if value:
        cell.set(f"{OFFICE}value-type", "string")
        _paragraph(cell, value)


def set_date(cell: Any, day: dt.date | None) -> None:
    _clear(cell)
    if day is not None:
        cell.set(f"{OFFICE}value-type", "date")
        cell.set(f"{OFFICE}date-value", day.isoformat())
        _paragraph(cell, display_date(day))


def set_amount(cell: Any, pence: int | None) -> None:
    _clear(cell)
    if pence is not None:
        cell.set(f"{OFFICE}value-type", "float")
        cell.set(f"{OFFICE}value", str(Decimal(pence).scaleb(-2)))
        _paragraph(cell, display_amount(pence))


def _set_total(cell: Any, pence: int) -> None:
    """The formula cell's cached result (the formula itself is HMRC's and stays)."""
    for child in list(cell):
        if child.tag == f"{TEXT}p":
            cell.remove(child)
    cell.set(f"{OFFICE}value", str(Decimal(pence).scaleb(-2)))
    _paragraph(cell, "£" + display_amount(pence))


# --- files ------------------------------------------------------------------------------------------------------------


def _rewrite(source: bytes, content: bytes) -> bytes:
    """The same package with a new content.xml; `mimetype` first and stored, as ODF requires."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as zin, zipfile.ZipFile(out, "w") as zout:
        zout.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE, compress_type=zipfile.ZIP_STORED)
        for item in zin.infolist():
            if item.filename == "mimetype":
                continue
            data = content if item.filename == "content.xml" else zin.read(item.filename)
            zout.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _content(source: bytes) -> Any:
    with zipfile.ZipFile(io.BytesIO(source)) as zin:
        return etree.fromstring(zin.read("content.xml"), parser=etree.XMLParser(huge_tree=True))


def _serialise(root: Any) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")  # type: ignore[no-any-return]


def _fill(root: Any, lines: Sequence[Line], earliest: dt.date | None, overclaimed: int | None) -> None:
    table = _table(root)
    rows = _rows(table, FIRST_ROW + ROWS_PER_SCHEDULE - 1)
    set_date(_cells(rows[BOX1[0] - 1])[BOX1[1]], earliest)
    set_amount(_cells(rows[BOX2[0] - 1])[BOX2[1]], overclaimed)
    for index in range(ROWS_PER_SCHEDULE):
        cells = _cells(rows[FIRST_ROW - 1 + index])
        line = lines[index] if index < len(lines) else None
        if line is None:
            for cell in cells[2:COLUMNS]:
                _clear(cell)
            continue
        if line.aggregated is not None:
            values = ["", "", "", "", "", latin1_text(line.aggregated)[:35]]
        else:
            values = [
                schedule_title(line.title),
                # Transliterating can lengthen a name (Œ → Oe): HMRC's columns hold 35 characters.
                latin1_text(line.first_name)[:35],
                latin1_text(line.last_name)[:35],
                latin1_text(line.house)[:40],
                "X" if line.overseas else sendable(line.postcode),
                "",
            ]
        for cell, value in zip(cells[2:8], values, strict=True):
            set_text(cell, value)
        set_text(cells[8], "")  # sponsored event: never, for our gifts
        set_date(cells[9], line.date)
        set_amount(cells[10], line.total)
    _set_total(_cells(rows[TOTAL[0] - 1])[TOTAL[1]], sum(line.total for line in lines))


def render_schedule(lines: Sequence[Line], *, earliest: dt.date | None, overclaimed: int | None = None) -> bytes:
    """One schedule (at most 1,000 lines) as .ods bytes."""
    if len(lines) > ROWS_PER_SCHEDULE:
        raise ValueError(f"a schedule holds at most {ROWS_PER_SCHEDULE} lines, not {len(lines)}")
    source = template_bytes()
    root = _content(source)
    _fill(root, lines, earliest, overclaimed if overclaimed else None)
    return _rewrite(source, _serialise(root))


def blank_template(source: bytes) -> bytes:
    """HMRC's schedule with its example donations, Box 1 and Box 2 removed: how our template was made."""
    root = _content(source)
    _fill(root, [], None, None)
    return _rewrite(source, _serialise(root))


def write_schedule(
    path: Path, lines: Sequence[Line], *, earliest: dt.date | None, overclaimed: int | None = None
) -> None:
    path.write_bytes(render_schedule(lines, earliest=earliest, overclaimed=overclaimed))
