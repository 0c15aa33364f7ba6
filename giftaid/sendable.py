"""Donor details as HMRC can take them: the characters XML cannot hold, dropped.

crm drops C0 control characters, U+FFFE and U+FFFF from names and addresses as they are typed, but declarations
stored before it did may still hold them (and lone surrogates, in memory). One of them in a `<Fore>` makes the whole
claim message malformed, and in a schedule cell it stops the file being written. So every file we write drops them
(`sendable` in Python, `sendable_sql` where the database renders the XML), as HMRC's own schedule reader drops
whatever is not printable Latin-1 (tab and line breaks included); and a name or house that holds nothing else
(`blank`, `blank_sql`) is no name: the eligibility holds its gifts back (`missing_name`, `missing_house`).

A claim stores its donors' details as its files carry them (`giftaid_claim_donors`, what finance sees of what HMRC
got): cleaned, and with a title HMRC takes (`sendable_title`) or none, when the claim is built.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement

# C0 controls (tab, line feed and carriage return too: one line of a name or house) and the two non-characters.
# Lone surrogates cannot reach either database (neither stores them), only Python strings.
UNSENDABLE = "".join(map(chr, range(0x01, 0x20))) + "\ufffe\uffff"
_DROP = {code: None for code in [0, *map(ord, UNSENDABLE), *range(0xD800, 0xE000)]}
# Whether a value holds any character that is neither unsendable nor a space. Regular expressions as each database
# runs them: PostgreSQL's own (the characters themselves: it stores no NUL), SQLite's through Python's `re`.
_SOMETHING_PG = f"[^{chr(1)}- \ufffe\uffff]"
_SOMETHING_SQLITE = r"[^\x00- \ufffe\uffff]"
_UNSENDABLE_PG = f"[{chr(1)}-{chr(0x1F)}\ufffe\uffff]"
_UNSENDABLE_SQLITE = r"[\x01-\x1f\ufffe\uffff]"


# A title both files take: HMRC's schedule validator's `^[A-Za-z][A-Za-z'-]{1,3}$` (2-4 characters), within the
# XSD's `Ttl` (optional; 1-4 characters of `[A-Za-z][A-Za-z'-]*`): one rule, so the two files carry the same title.
_TITLE = re.compile(r"[A-Za-z][A-Za-z'-]{1,3}")
# The same as each database matches it (PostgreSQL's `$` is the end of the text; SQLite's REGEXP is Python's
# `re.search`, whose `$` also matches before a final line feed); then a value that is such a title once its
# unsendable characters are dropped.
_TITLE_PG = "^[A-Za-z][A-Za-z'-]{1,3}$"
TITLE_SQLITE = r"\A[A-Za-z][A-Za-z'-]{1,3}\Z"
_SKIP_PG = f"[{chr(1)}-{chr(0x1F)}\ufffe\uffff]*"
_SENT_TITLE_PG = f"^{_SKIP_PG}[A-Za-z]{_SKIP_PG}(?:[A-Za-z'-]{_SKIP_PG}){{1,3}}$"
_SKIP_SQLITE = r"[\x01-\x1f\ufffe\uffff]*"
_SENT_TITLE_SQLITE = rf"\A{_SKIP_SQLITE}[A-Za-z]{_SKIP_SQLITE}(?:[A-Za-z'-]{_SKIP_SQLITE}){{1,3}}\Z"


def sendable(value: str) -> str:
    """The value without the characters XML cannot hold (nothing else changes)."""
    return value.translate(_DROP)


def sendable_title(title: str | None) -> str | None:
    """The title as a claim sends it: cleaned (`sendable`) and trimmed of spaces, or None when it is still not one
    HMRC's files take (a title is optional: one left out costs nothing, one that does not fit fails the message)."""
    cleaned = sendable(title or "").strip(" ")
    return cleaned if _TITLE.fullmatch(cleaned) else None


def blank(value: str | None) -> bool:
    """Nothing but spaces once the unsendable characters are dropped (a missing name or house; None too)."""
    return not sendable(value or "").strip(" ")


def unsendable_words(*values: str | None) -> str:
    """For a held-back gift's words: what a blank name or house held (written as Python escapes, readable)."""
    held = [value for value in values if value and blank(value) and value.strip(" ")]
    if not held:
        return ""
    shown = ", ".join(ascii(value) for value in held)
    return f" (it holds only characters no claim file can carry: {shown})"


def blank_sql(value: Any, dialect: str) -> ColumnElement[bool]:
    """`blank` in SQL. Only a value starting with a space or an unsendable character (or empty) can be blank, so
    the regular expression runs for those alone: the first character's code is all most names cost."""
    # The code of the first character (0 for an empty value, or NULL).
    first = sa.func.coalesce(sa.func.ascii(value) if dialect == "postgresql" else sa.func.unicode(value), 0)
    pattern = _SOMETHING_PG if dialect == "postgresql" else _SOMETHING_SQLITE
    return sa.case(
        (sa.or_(first <= 32, first >= 0xFFFE), sa.not_(sa.func.coalesce(value, "").regexp_match(pattern))),
        else_=sa.false(),
    )


def unsendable_sql(value: Any, dialect: str = "postgresql") -> ColumnElement[bool]:
    """Whether the value holds an unsendable character."""
    return sa.func.coalesce(value, "").regexp_match(_UNSENDABLE_PG if dialect == "postgresql" else _UNSENDABLE_SQLITE)


def sendable_sql(value: Any) -> Any:
    """PostgreSQL: `sendable` (translate drops each character of its second argument that has no counterpart in
    its third)."""
    return sa.func.translate(value, sa.literal(UNSENDABLE, sa.String), sa.literal("", sa.String))


def title_fits_sql(value: Any, dialect: str) -> ColumnElement[bool]:
    """Whether the value, once its unsendable characters are dropped, is a title both files take as it is (not
    trimmed: as `giftaid.schedule.schedule_title` takes it). False for none."""
    if dialect != "postgresql":
        return sa.func.coalesce(value, "").regexp_match(_SENT_TITLE_SQLITE)
    # A title that fits as it is (every title of a claim's donor rows: `insert_claim_gifts`) costs the simpler match.
    return sa.case(
        (value.regexp_match(_TITLE_PG), sa.true()),
        else_=sa.func.coalesce(value, "").regexp_match(_SENT_TITLE_PG),
    )


def sendable_title_sql(value: Any) -> Any:
    """PostgreSQL: `sendable_title`. A title that fits is taken as it is (one regular expression on a few
    characters); only the others are cleaned and trimmed, then taken if they fit (NULL otherwise)."""
    cleaned = sa.func.btrim(sendable_sql(value))
    return sa.case(
        (value.regexp_match(_TITLE_PG), value),
        (cleaned.regexp_match(_TITLE_PG), cleaned),
        else_=sa.null(),
    )
