"""Queries for crm tables. Private to the package: other packages call crm.service."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, func, or_
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col, select

from core.db import UTCDateTime, conflict_insert
from crm.models import (
    SURNAME_WORDS_INDEXED,
    Consent,
    ConsentChannel,
    ConsentStatus,
    Declaration,
    HistoryEntry,
    Interest,
    PendingSubscription,
    ReviewItem,
    Supporter,
    SupporterAddress,
    Wording,
    surname_from_word,
)


def supporter_by_email(session: Session, email: str) -> Supporter | None:
    return session.exec(select(Supporter).where(Supporter.email == email)).first()


def lock_supporter(session: Session, supporter_id: uuid.UUID) -> Supporter:
    """The supporter's row locked for the rest of the transaction and re-read (`SELECT ... FOR UPDATE`)."""
    return session.exec(
        select(Supporter)
        .where(Supporter.id == supporter_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def current_address(session: Session, supporter_id: uuid.UUID) -> SupporterAddress | None:
    return session.exec(
        select(SupporterAddress)
        .where(SupporterAddress.supporter_id == supporter_id, col(SupporterAddress.valid_to).is_(None))
        .order_by(col(SupporterAddress.valid_from).desc())
    ).first()


def address_at(session: Session, supporter_id: uuid.UUID, moment: dt.datetime) -> SupporterAddress | None:
    return session.exec(
        select(SupporterAddress)
        .where(SupporterAddress.supporter_id == supporter_id, col(SupporterAddress.valid_from) <= moment)
        .where((col(SupporterAddress.valid_to).is_(None)) | (col(SupporterAddress.valid_to) > moment))
        .order_by(col(SupporterAddress.valid_from).desc())
    ).first()


_history_inserts: dict[tuple[str, bool], Any] = {}


def insert_history_once(session: Session, values: dict[str, Any], *, to_survivor: bool = False) -> bool:
    """Insert a history entry unless one with the same dedupe key exists (safe under concurrent copies). The
    statement is built once per dialect and the row goes in as parameters: every gift, refund and failure writes
    one, so this is on the webhook worker's hot path.

    `to_survivor`: the entry goes to the record `supporter_id` was merged into, if it was (merges leave one hop:
    `repoint_merged`), resolved inside the same INSERT; nothing is written if there is no such supporter. A
    supporter who was erased gets `erased_summary` and `erased_data` instead of the summary and data."""
    dialect = session.get_bind().dialect.name
    statement = _history_inserts.get((dialect, to_survivor))
    if statement is None:
        table: sa.Table = HistoryEntry.__table__  # type: ignore[attr-defined]
        insert = conflict_insert(dialect)(table)
        if to_survivor:
            supporters: sa.Table = Supporter.__table__  # type: ignore[attr-defined]
            erased = supporters.c.erased_at.is_not(None)

            def value(column: sa.Column[Any]) -> Any:
                if column.name == "supporter_id":
                    return sa.func.coalesce(supporters.c.merged_into_id, supporters.c.id)
                given = sa.bindparam(column.name, type_=column.type)
                if column.name in ("summary", "data"):
                    return sa.case((erased, sa.bindparam(f"erased_{column.name}", type_=column.type)), else_=given)
                return given

            columns = [value(column) for column in table.columns]
            rows = sa.select(*columns).where(supporters.c.id == sa.bindparam("supporter_id"))
            insert = insert.from_select([column.name for column in table.columns], rows)
        statement = insert.on_conflict_do_nothing().returning(table.c.id)
        _history_inserts[(dialect, to_survivor)] = statement
    return session.execute(statement, values).first() is not None


def history_item_by_key(session: Session, dedupe_key: str) -> Any:
    """(type, whether its supporter was erased) of the item with this key, or None."""
    table: sa.Table = HistoryEntry.__table__  # type: ignore[attr-defined]
    supporters: sa.Table = Supporter.__table__  # type: ignore[attr-defined]
    return session.execute(
        sa.select(table.c.type, supporters.c.erased_at.is_not(None).label("erased"))
        .select_from(table.join(supporters, supporters.c.id == table.c.supporter_id))
        .where(table.c.dedupe_key == dedupe_key)
    ).first()


def revise_history(
    session: Session, dedupe_key: str, values: dict[str, Any], *, no_later_than: dt.datetime | None = None
) -> bool:
    """Set `values` on the item with this key; with `no_later_than`, also move its time back to that (never on)."""
    table: sa.Table = HistoryEntry.__table__  # type: ignore[attr-defined]
    if no_later_than is not None:
        # Decided in the UPDATE itself, so two events re-dating one item at once keep the earlier time.
        earlier = sa.literal(no_later_than, UTCDateTime)
        values = {**values, "at": sa.case((table.c.at > earlier, earlier), else_=table.c.at)}
    result = session.execute(sa.update(table).where(table.c.dedupe_key == dedupe_key).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def supporters_by_ids(session: Session, ids: list[uuid.UUID]) -> list[Supporter]:
    return list(session.exec(select(Supporter).where(col(Supporter.id).in_(ids))).all())


def merged_into(session: Session, survivor_id: uuid.UUID) -> list[uuid.UUID]:
    """Every id that resolves to this survivor (merged into it directly or through a chain)."""
    found: list[uuid.UUID] = []
    frontier = [survivor_id]
    while frontier:
        rows = session.exec(select(Supporter.id).where(col(Supporter.merged_into_id).in_(frontier))).all()
        frontier = [r for r in rows if r not in found and r != survivor_id]
        found.extend(frontier)
    return found


# Last name, first name, whatever their case ("de Souza" among the Ds), then id.
NAME_ORDER = (func.lower(Supporter.last_name), func.lower(Supporter.first_name), col(Supporter.id))


def search_supporters(session: Session, terms: list[str], limit: int, offset: int = 0) -> list[Supporter]:
    """Every term must start the first name, last name, email or postcode (case-insensitive), or a later word of
    the last name (after a space or a hyphen: "Berg" finds van der Berg, "Smith" Jones-Smith); consecutive terms
    may start one together as a phrase, so "anna van der berg" finds Anna van der Berg. Merged records are left
    out. Ordered by last name, first name, id.

    Each way of grouping the terms into phrases is a condition of its own (at most 16 for 5 terms): every phrase
    is still a prefix, of a field or of the surname from one of its words on, which PostgreSQL's search indexes
    serve; a term matched anywhere inside a name would not be. A phrase's condition is built once and shared by
    every grouping it is in (15 distinct phrases for 5 terms, against 48 places): building and keying the
    statement took longer than PostgreSQL took to answer it."""
    postgres = session.get_bind().dialect.name == "postgresql"
    conditions: dict[str, sa.ColumnElement[bool]] = {}

    def starts(phrase: str) -> sa.ColumnElement[bool]:
        if phrase not in conditions:
            conditions[phrase] = _starts_a_field(phrase, postgres=postgres)
        return conditions[phrase]

    matches = [and_(*(starts(phrase) for phrase in grouping)) for grouping in _phrase_groupings(terms)]
    query = select(Supporter).where(col(Supporter.merged_into_id).is_(None), or_(*matches))
    return list(session.exec(query.order_by(*NAME_ORDER).limit(limit).offset(offset)).all())


def _phrase_groupings(terms: list[str]) -> Iterator[list[str]]:
    """["a", "b", "c"] → [a b c], [a b, c], [a, b c], [a, b, c]: the terms in order, joined into phrases."""
    for cuts in itertools.product((False, True), repeat=max(len(terms) - 1, 0)):
        phrases = [terms[0]]
        for term, cut in zip(terms[1:], cuts, strict=True):
            if cut:
                phrases.append(term)
            else:
                phrases[-1] = f"{phrases[-1]} {term}"
        yield phrases


# What each phrase is compared with, built once (the expressions of the search indexes of a1c0ffee5ea1).
_LOWER_FIELDS = (
    func.lower(Supporter.first_name),
    func.lower(Supporter.last_name),
    func.lower(Supporter.email),
)
_COMPACT_POSTCODE = func.lower(func.replace(Supporter.postcode, " ", ""))
# PostgreSQL: the surname from its second, third and fourth word on, each the expression of its index.
_SURNAME_FROM_LATER_WORDS = tuple(surname_from_word(word) for word in SURNAME_WORDS_INDEXED)
# Whether the surname has several words: the rows the indexes find are checked against every condition of the
# search, and a regular expression costs microseconds a row where this costs next to nothing.
_SEVERAL_WORDS = or_(
    col(Supporter.last_name).like(sa.literal_column("'% %'")), col(Supporter.last_name).like(sa.literal_column("'%-%'"))
)
# SQLite: the surname after a space, its hyphens made spaces, to find " word" anywhere in it.
_SPACED_SURNAME = sa.literal_column("' '", sa.Text) + func.replace(func.lower(Supporter.last_name), "-", " ")


def _starts_a_field(phrase: str, *, postgres: bool) -> sa.ColumnElement[bool]:
    pattern = phrase.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    first_name, last_name, email = (field.like(pattern, escape="\\") for field in _LOWER_FIELDS)
    fields: list[sa.ColumnElement[bool]] = [first_name, last_name]
    if " " not in phrase:
        # A later word of the surname, for a single term only: a phrase of several words matching there is
        # matched anyway by its words one by one (another grouping), so it would only cost time. Past the first
        # word a hyphen is a space (the index's expression makes it one): "cruz-garc" goes on into García in
        # "de la Cruz-García".
        words = pattern.replace("-", " ")
        if postgres:
            later = or_(*(surname.like(words, escape="\\") for surname in _SURNAME_FROM_LATER_WORDS))
            fields.append(and_(_SEVERAL_WORDS, later))
        else:
            # SQLite scans its small tables: any word after a space or hyphen, however many the surname has.
            fields.append(_SPACED_SURNAME.like(f"% {words}", escape="\\"))
    # Names before the email and postcode: a row is checked against these in this order until one holds.
    return or_(*fields, email, _COMPACT_POSTCODE.like(pattern.replace(" ", ""), escape="\\"))


def supporters_with_postcode(session: Session, postcode: str, limit: int, offset: int = 0) -> list[Supporter]:
    return list(
        session.exec(
            select(Supporter)
            .where(Supporter.postcode == postcode, col(Supporter.merged_into_id).is_(None))
            .order_by(*NAME_ORDER)
            .limit(limit)
            .offset(offset)
        ).all()
    )


def history_page(
    session: Session, supporter_id: uuid.UUID, *, limit: int | None, before: tuple[dt.datetime, uuid.UUID] | None
) -> list[sa.Row[Any]]:
    """Newest first, in the total order (at desc, id desc); `before` continues after a cursor. Plain rows with the
    entry's columns as attributes, not ORM objects: a long timeline is read often, and building hundreds of
    instances costs more than the query."""
    table = HistoryEntry.__table__  # type: ignore[attr-defined]
    c = table.c
    query = sa.select(c.id, c.supporter_id, c.at, c.type, c.summary, c.amount, c.currency, c.data).where(
        c.supporter_id == supporter_id
    )
    if before is not None:
        at, entry_id = before
        query = query.where(or_(table.c.at < at, and_(table.c.at == at, table.c.id < entry_id)))
    query = query.order_by(table.c.at.desc(), table.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).all())


def history_page_json(
    session: Session, supporter_id: uuid.UUID, *, limit: int | None, before: tuple[dt.datetime, uuid.UUID] | None
) -> list[sa.Row[Any]]:
    """PostgreSQL only: the same page as `history_page`, each item already rendered as the API's JSON object by
    the database (`item`), with its `at` and `id` for the cursor. Python then only joins strings, which keeps a
    500-entry timeline cheap to serve."""
    c = HistoryEntry.__table__.c  # type: ignore[attr-defined]
    amount = sa.case(
        (c.amount.is_(None), sa.cast(sa.literal("{}"), JSONB)),
        else_=func.jsonb_build_object(
            "amount", func.jsonb_build_object("amount", c.amount, "currency", func.coalesce(c.currency, "GBP"))
        ),
    )
    fixed = func.jsonb_build_object(
        "id",
        sa.cast(c.id, sa.Text),
        "at",
        func.to_char(func.timezone("UTC", c.at), 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        "type",
        c.type,
        "summary",
        c.summary,
    )
    # The entry's own ids are spread into the item but never replace the fixed keys (as schemas.history_item).
    item = sa.cast(sa.cast(c.data, JSONB).op("-")("amount").op("||")(fixed).op("||")(amount), sa.Text)
    query = sa.select(item.label("item"), c.at, c.id).where(c.supporter_id == supporter_id)
    if before is not None:
        at, entry_id = before
        query = query.where(or_(c.at < at, and_(c.at == at, c.id < entry_id)))
    query = query.order_by(c.at.desc(), c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list(session.execute(query).all())


def current_consents(session: Session, supporter_id: uuid.UUID) -> dict[ConsentChannel, Consent]:
    """The consent in force per channel: the newest grant or withdrawal; a pending request (a subscription waiting
    for its link) only where nothing was decided yet. A request changes no consent: one merged in from another
    record must not hide the grant or withdrawal the person gave."""
    rows = session.exec(
        select(Consent)
        .where(Consent.supporter_id == supporter_id)
        .order_by(col(Consent.at).desc(), col(Consent.id).desc())
    ).all()
    current: dict[ConsentChannel, Consent] = {}
    waiting: dict[ConsentChannel, Consent] = {}
    for row in rows:
        (waiting if row.status == ConsentStatus.PENDING else current).setdefault(ConsentChannel(row.channel), row)
    return {**waiting, **current}


def interests_of(session: Session, supporter_id: uuid.UUID) -> list[Interest]:
    return list(
        session.exec(
            select(Interest).where(Interest.supporter_id == supporter_id).order_by(col(Interest.at).desc())
        ).all()
    )


def wording(session: Session, version: str, digest: str) -> Wording | None:
    return session.exec(select(Wording).where(Wording.version == version, Wording.digest == digest)).first()


def latest_wording(session: Session, version: str) -> Wording | None:
    query = select(Wording).where(Wording.version == version)
    return session.exec(query.order_by(col(Wording.first_used_at).desc(), col(Wording.id))).first()


def wording_texts(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    query = sa.select(col(Wording.id), col(Wording.text)).where(col(Wording.id).in_(ids))
    return {wording_id: text for wording_id, text in session.execute(query)}


def declarations_of(session: Session, supporter_id: uuid.UUID) -> list[Declaration]:
    return list(
        session.exec(
            select(Declaration)
            .where(Declaration.supporter_id == supporter_id)
            .order_by(col(Declaration.made_on).desc(), col(Declaration.created_at).desc(), col(Declaration.id).desc())
        ).all()
    )


def review_items(
    session: Session, *, open_only: bool, limit: int, before: tuple[dt.datetime, uuid.UUID] | None = None
) -> list[ReviewItem]:
    """Newest first, in the total order (created_at desc, id desc); `before` continues after a cursor."""
    query = select(ReviewItem)
    if open_only:
        query = query.where(col(ReviewItem.resolved_at).is_(None))
    if before is not None:
        at, item_id = before
        created = col(ReviewItem.created_at)
        query = query.where(or_(created < at, and_(created == at, col(ReviewItem.id) < item_id)))
    query = query.order_by(col(ReviewItem.created_at).desc(), col(ReviewItem.id).desc())
    return list(session.exec(query.limit(limit)).all())


def open_review_items(session: Session, *, kind: str, key_prefix: str) -> list[ReviewItem]:
    query = select(ReviewItem).where(ReviewItem.kind == kind, col(ReviewItem.resolved_at).is_(None))
    if key_prefix:
        query = query.where(col(ReviewItem.dedupe_key).startswith(key_prefix, autoescape=True))
    return list(session.exec(query.order_by(col(ReviewItem.created_at), col(ReviewItem.id))).all())


def review_item_exists(session: Session, dedupe_key: str) -> bool:
    return session.exec(select(ReviewItem.id).where(ReviewItem.dedupe_key == dedupe_key)).first() is not None


# Every crm table that belongs to a supporter, and so moves with a merge.
SUPPORTER_OWNED = (SupporterAddress, Consent, Interest, Declaration, HistoryEntry, ReviewItem, PendingSubscription)


def count_owned(session: Session, supporter_id: uuid.UUID) -> dict[str, int]:
    counts = {}
    for model in SUPPORTER_OWNED:
        table: sa.Table = model.__table__  # type: ignore[union-attr,attr-defined]
        counts[table.name] = int(
            session.execute(
                sa.select(func.count()).select_from(table).where(table.c.supporter_id == supporter_id)
            ).scalar_one()
        )
    return counts


def move_owned(session: Session, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """Re-point every crm row of `from_id` at `to_id`; returns how many rows of each table moved."""
    moved = {}
    for model in SUPPORTER_OWNED:
        table: sa.Table = model.__table__  # type: ignore[union-attr,attr-defined]
        result = session.execute(sa.update(table).where(table.c.supporter_id == from_id).values(supporter_id=to_id))
        moved[table.name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return moved


def close_open_addresses(session: Session, supporter_id: uuid.UUID, at: dt.datetime) -> None:
    session.execute(
        sa.update(SupporterAddress)
        .where(col(SupporterAddress.supporter_id) == supporter_id, col(SupporterAddress.valid_to).is_(None))
        .values(valid_to=at)
    )


def repoint_merged(session: Session, from_id: uuid.UUID, to_id: uuid.UUID) -> None:
    """Records merged earlier into `from_id` now point straight at the survivor."""
    session.execute(sa.update(Supporter).where(col(Supporter.merged_into_id) == from_id).values(merged_into_id=to_id))


def history_by_dedupe_key(session: Session, dedupe_key: str) -> HistoryEntry | None:
    return session.exec(select(HistoryEntry).where(HistoryEntry.dedupe_key == dedupe_key)).first()
