"""Donor details as HMRC can take them: the characters XML cannot hold, dropped.

crm drops C0 control characters, U+FFFE and U+FFFF from names and addresses as they are typed, but declarations
stored before it did may still hold them (and lone surrogates, in memory). One of them in a `<Fore>` makes the whole
claim message malformed, and in a schedule cell it stops the file being written. So every file we write drops them
(`sendable` in Python, `sendable_sql` where the database renders the XML), as HMRC's own schedule reader drops
whatever is not printable Latin-1 (tab and line breaks included); and a name or house that holds nothing else
(`blank`, `blank_sql`) is no name: the eligibility holds its gifts back (`missing_name`, `missing_house`).

The schedule carries a name as `latin1_text` makes it (transliterated into printable Latin-1). A name of nothing but
what that leaves out (an Arabic alef, a private-use character, a lone combining mark, C1 controls, non-breaking
spaces) is no name there either (`schedule_blank`): HMRC's checks refuse the row, and with it the whole schedule. No
SQL can transliterate, so a claim finds such donors among its donor rows (`schedule_blank_candidate_sql` picks the
few that could be, by their first character; Python confirms) and holds their gifts back, in both files.

A claim stores its donors' details as its files carry them (`giftaid_claim_donors`, what finance sees of what HMRC
got): cleaned, and with a title HMRC takes (`sendable_title`) or none, when the claim is built.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from anyascii import anyascii
from sqlalchemy.sql import ColumnElement

# C0 controls (tab, line feed and carriage return too: one line of a name or house) and the two non-characters.
# Lone surrogates cannot reach either database (neither stores them), only Python strings.
UNSENDABLE = "".join(map(chr, range(0x01, 0x20))) + "\ufffe\uffff"
_DROP = {code: None for code in [0, *map(ord, UNSENDABLE), *range(0xD800, 0xE000)]}
# Whether a value holds any character that is neither unsendable nor a space. Regular expressions as each database
# runs them: PostgreSQL's own (the characters themselves: it stores no NUL), SQLite's through Python's `re`.
_SOMETHING_PG = f"[^{chr(1)}- \ufffe\uffff]"
_SOMETHING_SQLITE = r"[^\x00- \ufffe\uffff]"
# Whether a value holds a printable Latin-1 character other than a space: `latin1_text` keeps it, so not blank.
_SHOWN_PG = "[!-~\u00a1-\u00ff]"
_SHOWN_SQLITE = r"[!-~\xa1-\xff]"
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


def _printable_latin1(ch: str) -> bool:
    return " " <= ch <= "~" or "\xa1" <= ch <= "\xff"


def latin1_text(value: str | None) -> str:
    """What survives HMRC's schedule reader (printable Latin-1): accents kept, any other letter transliterated
    (anyascii: Cyrillic, Greek, Ł, Œ, CJK, ...), so a donor named in another script still gets a line (giftaid.md
    §2); the characters no file can hold dropped first, as they are from the XML, and whatever else HMRC's reader
    would drop (what anyascii leaves as it is: DEL) dropped too, so what is written is what HMRC reads."""
    value = " ".join(sendable(value or "").split())
    if all(map(_printable_latin1, value)):
        return value
    out = [ch if _printable_latin1(ch) else "".join(filter(_printable_latin1, anyascii(ch))) for ch in value]
    return " ".join("".join(out).split())


def schedule_blank(value: str | None) -> bool:
    """Nothing at all in HMRC's schedule (`latin1_text` makes it ""): a missing name or house there. Wider than
    `blank`: an Arabic alef, a private-use character, a lone combining mark, C1 controls, non-breaking spaces."""
    return not latin1_text(value)


def blank(value: str | None) -> bool:
    """Nothing but spaces once the unsendable characters are dropped (a missing name or house; None too)."""
    return not sendable(value or "").strip(" ")


def unsendable_words(*values: str | None) -> str:
    """For a held-back gift's words: what a blank name or house held (written as Python escapes, readable)."""
    held = [value for value in values if value and value.strip(" ") and schedule_blank(value)]
    unsendable = ", ".join(ascii(value) for value in held if blank(value))
    unshown = ", ".join(ascii(value) for value in held if not blank(value))
    words = [
        *([f"it holds only characters no claim file can carry: {unsendable}"] if unsendable else []),
        *([f"HMRC's schedule can show none of its characters, even transliterated: {unshown}"] if unshown else []),
    ]
    return f" ({'; '.join(words)})" if words else ""


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


def schedule_blank_candidate_sql(value: Any, dialect: str) -> ColumnElement[bool]:
    """Whether the value may be `schedule_blank` (Python confirms: no SQL transliterates). Only a value starting with
    a space, a control or a character outside printable Latin-1 (or empty) can be, and then only one holding no
    printable Latin-1 character but spaces: the first character's code is all a Latin name costs, and the regular
    expression runs for the few others (names in another script among them, which Python then keeps)."""
    first = sa.func.coalesce(sa.func.ascii(value) if dialect == "postgresql" else sa.func.unicode(value), 0)
    pattern = _SHOWN_PG if dialect == "postgresql" else _SHOWN_SQLITE
    return sa.case(
        (
            sa.or_(first <= 32, first.between(0x7F, 0xA0), first > 0xFF),
            sa.not_(sa.func.coalesce(value, "").regexp_match(pattern)),
        ),
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
