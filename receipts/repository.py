"""Queries for receipts tables (and the rows of other packages a document shows). Private to the package."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.db import conflict_insert
from crm.models import Declaration, Supporter
from giftaid.models import Adjustment, AdjustmentReason
from payments.models import (
    Checkout,
    Dispute,
    DisputeStatus,
    Gift,
    GiftStatus,
    OrderLine,
    Refund,
    RefundStatus,
    money_returned,
)
from receipts.models import (
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    Document,
    DocumentCounter,
    DocumentKind,
    DocumentStatus,
    PostalBatch,
)

# Gifts a statement lists: money that arrived (a reversed gift shows what was returned).
STATEMENT_GIFT_STATUSES = (GiftStatus.PAID, GiftStatus.REVERSED)


_DOCUMENTS = Document.__table__  # type: ignore[attr-defined]
_COUNTERS = DocumentCounter.__table__  # type: ignore[attr-defined]
_DELIVERIES = Delivery.__table__  # type: ignore[attr-defined]
_GIFTS = Gift.__table__  # type: ignore[attr-defined]
_SUPPORTERS = Supporter.__table__  # type: ignore[attr-defined]
_REFUNDS = Refund.__table__  # type: ignore[attr-defined]
_DECLARATIONS = Declaration.__table__  # type: ignore[attr-defined]

# The queries that run for every document issued are built once (Core, not the ORM): building and loading cost
# more than running them. They run on the session's connection (`session.connection().execute`): for a Core
# statement that is what `session.execute` ends up doing (no autoflush either way), without the ORM's execution
# layer in front of it.
_DOCUMENT_BY_SUBJECT = sa.select(_DOCUMENTS.c.id).where(
    _DOCUMENTS.c.kind == sa.bindparam("kind"), _DOCUMENTS.c.subject_key == sa.bindparam("subject_key")
)
_EXISTING_DOCUMENT = _DOCUMENT_BY_SUBJECT.scalar_subquery()
# What a document needs of its supporter (resolve merges with crm when `merged_into_id` is set).
SUPPORTER_COLUMNS = (
    _SUPPORTERS.c.email,
    _SUPPORTERS.c.title,
    _SUPPORTERS.c.first_name,
    _SUPPORTERS.c.last_name,
    _SUPPORTERS.c.statement_preference,
    _SUPPORTERS.c.merged_into_id,
    _SUPPORTERS.c.erased_at,
)
_GIFT_FOR_RECEIPT = (
    sa.select(
        _GIFTS.c.id,
        _GIFTS.c.supporter_id,
        _GIFTS.c.status,
        _GIFTS.c.amount,
        _GIFTS.c.currency,
        _GIFTS.c.method,
        _GIFTS.c.received_at,
        _GIFTS.c.received_on,
        _GIFTS.c.appeal,
        _GIFTS.c.order_id,
        _GIFTS.c.regular_gift_id,
        _GIFTS.c.donor,
        _GIFTS.c.benefit_amount,
        _GIFTS.c.benefit_description,
        money_returned().label("returned_amount"),
        *SUPPORTER_COLUMNS,
        _EXISTING_DOCUMENT.label("existing_document_id"),
        # Whether `succeeded_refunds(gift_id=...)` can find anything (it is asked only then): keep the two alike.
        sa.exists()
        .where(_REFUNDS.c.gift_id == _GIFTS.c.id, _REFUNDS.c.status == RefundStatus.SUCCEEDED.value)
        .label("has_refunds"),
    )
    .select_from(_GIFTS.join(_SUPPORTERS, _SUPPORTERS.c.id == _GIFTS.c.supporter_id))
    .where(_GIFTS.c.id == sa.bindparam("gift_id"))
)
_SUPPORTER_FOR_STATEMENT = sa.select(
    _SUPPORTERS.c.id,
    *SUPPORTER_COLUMNS,
    _EXISTING_DOCUMENT.label("existing_document_id"),
    sa.exists().where(_SUPPORTERS.alias("merged").c.merged_into_id == _SUPPORTERS.c.id).label("has_merged"),
    # Whether `refunds_from` can find anything for this supporter from any time (it is asked only then): its
    # conditions without the time, so never narrower than it.
    sa.exists()
    .where(
        _REFUNDS.c.supporter_id == _SUPPORTERS.c.id,
        _REFUNDS.c.status == RefundStatus.SUCCEEDED.value,
        _REFUNDS.c.gift_id.is_not(None),
    )
    .label("has_refunds"),
).where(_SUPPORTERS.c.id == sa.bindparam("supporter_id"))


def gift_for_receipt(session: Session, gift_id: uuid.UUID, subject_key: str) -> Any:
    """One row: the gift, its (direct) supporter, the id of the receipt it has already (or None) and whether a
    succeeded refund is recorded against it. None when there is no such gift."""
    return (
        session.connection()
        .execute(
            _GIFT_FOR_RECEIPT, {"gift_id": gift_id, "kind": DocumentKind.GIFT_RECEIPT.value, "subject_key": subject_key}
        )
        .first()
    )


def supporter_for_statement(session: Session, supporter_id: uuid.UUID, subject_key: str) -> Any:
    """One row: the supporter, the id of the statement it has already (or None), whether records were merged
    into it and whether it has succeeded gift refunds. None when there is no such supporter."""
    return (
        session.connection()
        .execute(
            _SUPPORTER_FOR_STATEMENT,
            {"supporter_id": supporter_id, "kind": DocumentKind.ANNUAL_STATEMENT.value, "subject_key": subject_key},
        )
        .first()
    )


def get_document(session: Session, document_id: uuid.UUID) -> Document | None:
    return session.get(Document, document_id, populate_existing=True)


def document_by_subject(session: Session, kind: DocumentKind, subject_key: str) -> Document | None:
    # A prebuilt Core query: this runs twice per document issued, and the usual answer is "none yet".
    found = session.connection().execute(_DOCUMENT_BY_SUBJECT, {"kind": str(kind), "subject_key": subject_key}).first()
    return None if found is None else get_document(session, found[0])


_BUMP_NUMBER = (
    sa.update(_COUNTERS)
    .where(_COUNTERS.c.kind == sa.bindparam("counter_kind"))
    .values(last_number=_COUNTERS.c.last_number + 1)
    .returning(_COUNTERS.c.last_number)
)


def take_number(session: Session, kind: DocumentKind) -> int:
    """The next number of a kind. The UPDATE locks the kind's counter row until the transaction ends (PostgreSQL;
    SQLite's BEGIN IMMEDIATE already serialises writers), so numbers are handed out one transaction at a time,
    and a rollback gives the number back."""
    connection = session.connection()
    params = {"counter_kind": str(kind)}
    row = connection.execute(_BUMP_NUMBER, params).first()
    if row is None:
        # The kind's first number ever (or the table was emptied): create its row, then take the number.
        insert = conflict_insert(session.get_bind().dialect.name)
        connection.execute(insert(_COUNTERS).values(kind=str(kind), last_number=0).on_conflict_do_nothing())
        row = connection.execute(_BUMP_NUMBER, params).one()
    return int(row[0])


@lru_cache(maxsize=4)
def _insert_document_statement(dialect: str) -> Any:
    return (
        conflict_insert(dialect)(_DOCUMENTS)
        .on_conflict_do_nothing(index_elements=[_DOCUMENTS.c.kind, _DOCUMENTS.c.subject_key])
        .returning(_DOCUMENTS.c.id)
    )


def insert_document(session: Session, document: Document) -> bool:
    """Insert a new document row unless its subject has one of its kind already (`uq_documents_kind_subject_key`):
    True if inserted. One statement in place of a lookup and an insert."""
    values = {column.name: getattr(document, column.name) for column in _DOCUMENTS.columns}
    values["kind"] = str(document.kind)
    values["status"] = str(document.status)
    statement = _insert_document_statement(session.get_bind().dialect.name)
    return session.connection().execute(statement, values).first() is not None


def lock_counter(session: Session, kind: DocumentKind) -> None:
    """Wait for (and hold until the transaction ends) the kind's counter row, as `take_number` would, without taking
    a number: what is read after it includes every document of the kind a transaction that held it committed.
    (Nothing on SQLite, whose BEGIN IMMEDIATE already serialises writers; nothing before the kind's first number.)"""
    session.connection().execute(
        sa.select(_COUNTERS.c.last_number).where(_COUNTERS.c.kind == str(kind)).with_for_update()
    ).first()


def give_back_number(session: Session, kind: DocumentKind) -> None:
    """Undo `take_number` in the same transaction (the row is still locked by it, so nobody took one since)."""
    session.execute(
        sa.update(_COUNTERS).where(_COUNTERS.c.kind == str(kind)).values(last_number=_COUNTERS.c.last_number - 1)
    )


_SUPPORTER_OF_DOCUMENT = _SUPPORTERS.alias("document_supporter")
_MARK_ISSUED = (
    sa.update(_DOCUMENTS)
    .where(_DOCUMENTS.c.id == sa.bindparam("document_id"), _DOCUMENTS.c.status == DocumentStatus.ALLOCATED.value)
    .values(
        status=DocumentStatus.ISSUED.value,
        storage_key=sa.bindparam("issued_storage_key"),
        sha256=sa.bindparam("digest"),
        size_bytes=sa.bindparam("size"),
        rendered_at=sa.bindparam("at", type_=_DOCUMENTS.c.rendered_at.type),
    )
    .returning(
        _DOCUMENTS.c.supporter_id,
        # The supporter as it is now (read in this transaction): where the original goes.
        *(
            sa.select(_SUPPORTER_OF_DOCUMENT.c[column.name])
            .where(_SUPPORTER_OF_DOCUMENT.c.id == _DOCUMENTS.c.supporter_id)
            .scalar_subquery()
            .label(column.name)
            for column in (_SUPPORTERS.c.email, _SUPPORTERS.c.merged_into_id, _SUPPORTERS.c.erased_at)
        ),
        # Whether a receipt's gift or order has a succeeded refund now: one recorded while the receipt was numbered
        # found no receipt to correct (`service.record_rendered`). False for every other kind.
        sa.exists()
        .where(
            _REFUNDS.c.status == RefundStatus.SUCCEEDED.value,
            sa.or_(
                sa.and_(
                    _DOCUMENTS.c.kind == DocumentKind.GIFT_RECEIPT.value, _REFUNDS.c.gift_id == _DOCUMENTS.c.gift_id
                ),
                sa.and_(
                    _DOCUMENTS.c.kind == DocumentKind.SALE_RECEIPT.value, _REFUNDS.c.order_id == _DOCUMENTS.c.order_id
                ),
            ),
        )
        .label("has_refunds"),
    )
)


def mark_issued(
    session: Session, document_id: uuid.UUID, *, storage_key: str, digest: str, size: int, at: dt.datetime
) -> Any:
    """allocated → issued in one statement. Returns (supporter_id, email, merged_into_id, erased_at) of the
    document's supporter and whether a receipt's gift or order has a succeeded refund (`has_refunds`), or None if
    it was issued already (or is missing)."""
    return (
        session.connection()
        .execute(
            _MARK_ISSUED,
            {"document_id": document_id, "issued_storage_key": storage_key, "digest": digest, "size": size, "at": at},
        )
        .first()
    )


_INSERT_DELIVERY = sa.insert(_DELIVERIES)


def insert_delivery(session: Session, delivery: Delivery) -> None:
    values = {column.name: getattr(delivery, column.name) for column in _DELIVERIES.columns}
    values["channel"] = str(delivery.channel)
    values["status"] = str(delivery.status)
    session.connection().execute(_INSERT_DELIVERY, values)


def lock_document(session: Session, document_id: uuid.UUID) -> Document | None:
    return session.exec(
        select(Document).where(Document.id == document_id).with_for_update().execution_options(populate_existing=True)
    ).first()


def lock_delivery(session: Session, delivery_id: uuid.UUID) -> Delivery | None:
    return session.exec(
        select(Delivery).where(Delivery.id == delivery_id).with_for_update().execution_options(populate_existing=True)
    ).first()


def next_copy_number(session: Session, document_id: uuid.UUID) -> int:
    highest = session.exec(select(sa.func.max(Delivery.copy_number)).where(Delivery.document_id == document_id)).one()
    return 0 if highest is None else int(highest) + 1


def went_out(session: Session, document_id: uuid.UUID) -> Sequence[Any]:
    """(sent_at, postal batch day) of each delivery of a document that went: an email accepted, or a page printed."""
    return session.exec(
        select(col(Delivery.sent_at), col(PostalBatch.created_on))
        .outerjoin(PostalBatch, col(PostalBatch.id) == col(Delivery.postal_batch_id))
        .where(
            Delivery.document_id == document_id,
            col(Delivery.status).in_([DeliveryStatus.SENT, DeliveryStatus.POSTED]),
        )
    ).all()


def deliveries_of(session: Session, document_id: uuid.UUID) -> Sequence[Delivery]:
    return session.exec(
        select(Delivery).where(Delivery.document_id == document_id).order_by(col(Delivery.copy_number))
    ).all()


def pending_postal(session: Session, limit: int, *, lock: bool = True) -> Sequence[Delivery]:
    query = (
        select(Delivery)
        .where(Delivery.channel == DeliveryChannel.POST, Delivery.status == DeliveryStatus.PENDING)
        .order_by(col(Delivery.created_at), col(Delivery.id))
        .limit(limit)
    )
    return session.exec(query.with_for_update() if lock else query).all()


def lock_deliveries(session: Session, delivery_ids: Sequence[uuid.UUID]) -> Sequence[Delivery]:
    """These deliveries, locked (in id order, so two lockers queue rather than deadlock), read afresh."""
    if not delivery_ids:
        return []
    return session.exec(
        select(Delivery)
        .where(col(Delivery.id).in_(delivery_ids))
        .order_by(col(Delivery.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()


def postal_batches_of(session: Session, supporter_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    rows = session.exec(
        select(Delivery.postal_batch_id)
        .where(col(Delivery.supporter_id).in_(supporter_ids), col(Delivery.postal_batch_id).is_not(None))
        .distinct()
    ).all()
    return sorted(batch_id for batch_id in rows if batch_id is not None)


def lock_postal_batch(session: Session, batch_id: uuid.UUID) -> PostalBatch | None:
    query = select(PostalBatch).where(PostalBatch.id == batch_id).execution_options(populate_existing=True)
    return session.exec(query.with_for_update()).first()


def batch_pages(session: Session, batch_id: uuid.UUID) -> Sequence[tuple[Document, Delivery]]:
    """A batch's documents in the order they were printed (as `pending_postal` took them)."""
    return session.exec(
        select(Document, Delivery)
        .join(Delivery, col(Delivery.document_id) == col(Document.id))
        .where(Delivery.postal_batch_id == batch_id)
        .order_by(col(Delivery.created_at), col(Delivery.id))
    ).all()


def documents_of(session: Session, supporter_id: uuid.UUID) -> Sequence[Document]:
    """Newest first, then by number (a total order)."""
    return session.exec(
        select(Document)
        .where(Document.supporter_id == supporter_id)
        .order_by(col(Document.issued_at).desc(), col(Document.kind), col(Document.number).desc())
    ).all()


def merged_supporter_ids(session: Session, supporter_id: uuid.UUID) -> list[uuid.UUID]:
    """The supporter and every record merged into it (their gifts are its gifts)."""
    found = [supporter_id]
    frontier = [supporter_id]
    while frontier:
        rows = session.exec(select(Supporter.id).where(col(Supporter.merged_into_id).in_(frontier))).all()
        frontier = [r for r in rows if r not in found]
        found.extend(frontier)
    return found


# What documents read of a declaration (which were in force, and `documents.declaration_summary`), as rows: loading
# ORM objects cost more than the query.
_DECLARATION_COLUMNS = (
    _DECLARATIONS.c.id,
    _DECLARATIONS.c.made_on,
    _DECLARATIONS.c.method,
    _DECLARATIONS.c.scope,
    _DECLARATIONS.c.start,
    _DECLARATIONS.c.end,
    _DECLARATIONS.c.voided,
    _DECLARATIONS.c.confirmation_sent_on,
    _DECLARATIONS.c.cancellation_effective_on,
    _DECLARATIONS.c.gift_id,
)
# A statement's: every declaration of its supporter.
_DECLARATIONS_OF = (
    sa.select(*_DECLARATION_COLUMNS)
    .where(_DECLARATIONS.c.supporter_id.in_(sa.bindparam("supporter_ids", expanding=True)))
    .order_by(_DECLARATIONS.c.made_on, _DECLARATIONS.c.created_at, _DECLARATIONS.c.id)
)


def declarations_of(session: Session, supporter_ids: list[uuid.UUID]) -> list[Any]:
    """The supporters' declarations, oldest first (rows with what `documents.declaration_summary` reads)."""
    return list(session.connection().execute(_DECLARATIONS_OF, {"supporter_ids": supporter_ids}).all())


@lru_cache(maxsize=16)
def _gift_aid_query(rules: Any, dialect: str, with_gift: bool) -> Any:
    """The Gift Aid rules' query for one supporter (and one gift), built once per day and database: building its
    expression tree costs more than running it. The ids are bound parameters, filled in at execution. Only what a
    document needs (`detail=False`: the code, the declaration, the amount)."""
    from giftaid.eligibility import eligibility_select

    supporter = sa.bindparam("receipts_supporter_id", type_=Gift.__table__.c.supporter_id.type)  # type: ignore[attr-defined]
    gift = sa.bindparam("receipts_gift_id", type_=Gift.__table__.c.id.type)  # type: ignore[attr-defined]
    return eligibility_select(
        rules,
        dialect,
        gift_ids=[gift] if with_gift else None,  # type: ignore[list-item]
        supporter_ids=[supporter],  # type: ignore[list-item]
        unclaimed_only=False,
        detail=False,
    )


# Stand-ins for the ids while the PostgreSQL text is written (`_gift_aid_text`); no gift or supporter has them.
_SUPPORTER_MARK = uuid.UUID("00000000-0000-4000-8000-5e1ec7ed0001")
_GIFT_MARK = uuid.UUID("00000000-0000-4000-8000-5e1ec7ed0002")


@lru_cache(maxsize=16)
def _gift_aid_text(rules: Any, dialect: Any, with_gift: bool) -> str:
    """PostgreSQL: the same query as SQL text with the rules' constants (today's dates, the codes, the limits)
    written into it and the ids as its only two parameters, built once per day. Executed as text it skips what
    each execution of the Core query costs the worker: SQLAlchemy's cache key over the whole expression tree, and
    binding and sending about a hundred parameters; PostgreSQL also parses fewer. It stays the Gift Aid rules'
    own query (`eligibility_select`), only compiled differently."""
    from giftaid.eligibility import eligibility_select

    query = eligibility_select(
        rules,
        dialect.name,
        gift_ids=[_GIFT_MARK] if with_gift else None,
        supporter_ids=[_SUPPORTER_MARK],
        unclaimed_only=False,
        detail=False,
    )
    text = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})).replace("%", "%%")
    for mark, name in ((_SUPPORTER_MARK, "supporter_id"), (_GIFT_MARK, "gift_id")):
        literal = f"'{mark}'"
        if (literal in text) != (mark == _SUPPORTER_MARK or with_gift):
            raise RuntimeError(f"the Gift Aid rules' query does not name the {name} as expected")
        text = text.replace(literal, f"%({name})s")
    return text


def gift_aid_rows(
    session: Session, rules: Any, supporter_ids: list[uuid.UUID], gift_ids: list[uuid.UUID] | None
) -> list[Any]:
    """The Gift Aid rules' decision for these gifts (or every received gift of these supporters), claimed or not:
    rows with `gift_id`, `code`, `declaration_id` and `claim_amount`."""
    dialect = session.get_bind().dialect
    one_gift = gift_ids is not None and len(gift_ids) == 1
    if len(supporter_ids) == 1 and (gift_ids is None or one_gift):
        params: dict[str, Any] = {"supporter_id": supporter_ids[0]}
        if gift_ids is not None:
            params["gift_id"] = gift_ids[0]
        if dialect.name == "postgresql":
            text = _gift_aid_text(rules, dialect, gift_ids is not None)
            return list(session.connection().exec_driver_sql(text, params).all())
        query = _gift_aid_query(rules, dialect.name, gift_ids is not None)
        return list(session.execute(query, {f"receipts_{name}": value for name, value in params.items()}).all())
    from giftaid.eligibility import eligibility_select

    query = eligibility_select(
        rules, dialect.name, gift_ids=gift_ids, supporter_ids=supporter_ids, unclaimed_only=False, detail=False
    )
    return list(session.execute(query).all())


# What a document says of a declaration (`documents.declaration_summary`). Joining this onto the rules' query
# instead costs the planner more than the separate read (bench/receipts).
_DECLARATION_SUMMARIES = sa.select(*_DECLARATION_COLUMNS).where(
    _DECLARATIONS.c.id.in_(sa.bindparam("ids", expanding=True))
)


def declaration_summaries(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The declarations' rows by id (what `documents.declaration_summary` reads)."""
    if not ids:
        return {}
    return {row.id: row for row in session.connection().execute(_DECLARATION_SUMMARIES, {"ids": list(ids)})}


def gift_of_declaration(session: Session, declaration_id: uuid.UUID, gift_id: uuid.UUID | None) -> Any:
    """The gift a declaration for one gift covers (amount, currency, received_on): the one it names, or else the
    one given with it (which names the declaration). None when there is none."""
    query = sa.select(_GIFTS.c.amount, _GIFTS.c.currency, _GIFTS.c.received_on)
    if gift_id is not None:
        query = query.where(_GIFTS.c.id == gift_id)
    else:
        query = query.where(_GIFTS.c.declaration_id == declaration_id).order_by(_GIFTS.c.created_at, _GIFTS.c.id)
    return session.connection().execute(query.limit(1)).first()


def order_lines(session: Session, order_id: uuid.UUID) -> Sequence[OrderLine]:
    return session.exec(
        select(OrderLine).where(OrderLine.order_id == order_id).order_by(col(OrderLine.sku), col(OrderLine.id))
    ).all()


def donation_gift_of_order(session: Session, order_id: uuid.UUID) -> Gift | None:
    return session.exec(select(Gift).where(Gift.order_id == order_id).order_by(col(Gift.created_at))).first()


def checkout_of_order(session: Session, order_id: uuid.UUID) -> Checkout | None:
    return session.exec(
        select(Checkout).where(Checkout.order_id == order_id).order_by(col(Checkout.created_at))
    ).first()


def corrections_of_refund(session: Session, refund_id: uuid.UUID) -> Sequence[Document]:
    """Every correction issued (or numbered) for a refund, on any part, oldest first."""
    return session.exec(
        select(Document)
        .where(Document.kind == DocumentKind.CORRECTION, Document.refund_id == refund_id)
        .order_by(col(Document.number))
    ).all()


def succeeded_refunds(
    session: Session, *, gift_id: uuid.UUID | None = None, order_id: uuid.UUID | None = None
) -> Sequence[Refund]:
    query = select(Refund).where(Refund.status == RefundStatus.SUCCEEDED)
    if gift_id is not None:
        query = query.where(Refund.gift_id == gift_id)
    if order_id is not None:
        query = query.where(Refund.order_id == order_id)
    return session.exec(query.order_by(col(Refund.refunded_at), col(Refund.created_at), col(Refund.id))).all()


def gifts_with_voided_claims(session: Session, gift_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Of these claimed gifts, those whose Gift Aid is being taken back because their declaration became void."""
    rows = session.exec(
        select(Adjustment.gift_id).where(
            col(Adjustment.gift_id).in_(gift_ids), Adjustment.reason == AdjustmentReason.DECLARATION_VOIDED
        )
    )
    return set(rows.all())


def lost_disputes(session: Session, gift_id: uuid.UUID) -> Sequence[Dispute]:
    """Disputes on the gift whose money the charity lost (the card network returned it to the donor)."""
    return session.exec(select(Dispute).where(Dispute.gift_id == gift_id, Dispute.status == DisputeStatus.LOST)).all()


_STATEMENT_GIFTS = (
    sa.select(
        _GIFTS.c.id,
        _GIFTS.c.amount,
        money_returned().label("returned_amount"),
        _GIFTS.c.currency,
        _GIFTS.c.received_on,
        _GIFTS.c.method,
        _GIFTS.c.appeal,
        # The declaration given with the gift (one for this gift only may name no gift: the gift names it).
        _GIFTS.c.declaration_id,
    )
    .where(
        _GIFTS.c.supporter_id.in_(sa.bindparam("supporter_ids", expanding=True)),
        _GIFTS.c.status.in_([status.value for status in STATEMENT_GIFT_STATUSES]),
        _GIFTS.c.received_on >= sa.bindparam("start"),
        _GIFTS.c.received_on <= sa.bindparam("end"),
    )
    .order_by(_GIFTS.c.received_on, _GIFTS.c.received_at, _GIFTS.c.id)
)


def statement_gifts(session: Session, supporter_ids: list[uuid.UUID], start: dt.date, end: dt.date) -> list[Any]:
    """What a statement lists of each gift received in the period (paid or since reversed), in date order."""
    params = {"supporter_ids": supporter_ids, "start": start, "end": end}
    return list(session.connection().execute(_STATEMENT_GIFTS, params).all())


def refunds_from(
    session: Session, supporter_ids: list[uuid.UUID], start: dt.datetime
) -> Sequence[tuple[Refund, Gift | None]]:
    """Succeeded refunds on gifts of these supporters that may have been made from `start` on: the provider's time
    is from then, or there is none. Which are (and when) is `service.refund_time`'s rule, applied by the caller."""
    rows = session.exec(
        select(Refund, Gift)
        .join(Gift, col(Gift.id) == col(Refund.gift_id), isouter=True)
        .where(
            col(Refund.supporter_id).in_(supporter_ids),
            Refund.status == RefundStatus.SUCCEEDED,
            col(Refund.gift_id).is_not(None),
            sa.or_(col(Refund.refunded_at).is_(None), col(Refund.refunded_at) >= start),
        )
    ).all()
    return [(refund, gift) for refund, gift in rows]


def statement_candidates(
    session: Session, start: dt.date, end: dt.date, tax_year: str, *, everyone: bool
) -> list[uuid.UUID]:
    """Supporters (not merged away, not erased) with a gift in the tax year and no statement for it yet, by id:
    unless `everyone`, those on yearly statements and the survivors owed one by a merged record that was.
    "Their statement" is the one whose subject is theirs (`statement:<id>:<year>`), not any statement now filed under
    them: a merge moves the old record's statement onto the survivor, which still gets one of its own."""
    gave = select(Gift.supporter_id).where(
        col(Gift.status).in_(STATEMENT_GIFT_STATUSES), col(Gift.received_on) >= start, col(Gift.received_on) <= end
    )
    query = select(Supporter.id).where(
        col(Supporter.id).in_(gave),
        col(Supporter.merged_into_id).is_(None),
        col(Supporter.erased_at).is_(None),
    )
    have_statement = set(
        session.exec(
            select(Document.subject_key).where(
                Document.kind == DocumentKind.ANNUAL_STATEMENT, Document.tax_year == tax_year
            )
        ).all()
    )
    if not everyone:
        chose: Any = Supporter.statement_preference == "annual"
        # A record on yearly statements merged into one that is not: its gifts, now the survivor's, had no receipts,
        # so the survivor gets the statement the old record would have had (unless it had that before the merge),
        # in a year with a gift that has no receipt of its own.
        # Owed by the record that survives: a chain of merges (A into B, then B into C) is followed to its end, as
        # `crm.service.resolve_supporter` follows it, since B is merged away too. Merged records are few.
        merged: Any = session.exec(
            select(Supporter.id, Supporter.merged_into_id, Supporter.statement_preference).where(
                col(Supporter.merged_into_id).is_not(None)
            )
        ).all()
        into = {old: survivor for old, survivor, _ in merged}
        owed = {
            _survivor(into, old)
            for old, _, preference in merged
            if preference == "annual" and statement_subject(old, tax_year) not in have_statement
        }
        if owed:
            receipted = sa.exists().where(
                col(Document.kind) == DocumentKind.GIFT_RECEIPT, col(Document.gift_id) == col(Gift.id)
            )
            unreceipted = gave.where(sa.not_(receipted))
            chose = sa.or_(chose, sa.and_(col(Supporter.id).in_(owed), col(Supporter.id).in_(unreceipted)))
        query = query.where(chose)
    return [
        supporter_id
        for supporter_id in session.exec(query.order_by(col(Supporter.id))).all()
        if statement_subject(supporter_id, tax_year) not in have_statement
    ]


def _survivor(into: dict[uuid.UUID, uuid.UUID], supporter_id: uuid.UUID) -> uuid.UUID:
    """The end of a chain of merges (`into`: each merged record's `merged_into_id`); a cycle stops where it loops."""
    seen = {supporter_id}
    while (supporter_id := into.get(supporter_id, supporter_id)) not in seen:
        seen.add(supporter_id)
    return supporter_id


def statement_subject(supporter_id: uuid.UUID, tax_year: str) -> str:
    """The subject key of a supporter's statement for a tax year."""
    return f"statement:{supporter_id}:{tax_year}"


def statement_progress(session: Session, tax_year: str) -> dict[str, int]:
    """How far a tax year's statements have got: documents by status (`allocated`, `issued`) and original
    deliveries by channel and status (`email_sent`, `post_pending`, ...)."""
    counts: dict[str, int] = {}
    rows: Any = session.exec(
        select(Document.status, sa.func.count())
        .where(Document.kind == DocumentKind.ANNUAL_STATEMENT, Document.tax_year == tax_year)
        .group_by(col(Document.status))
    ).all()
    for status, number in rows:
        counts[str(status)] = int(number)
    rows = session.exec(
        select(Delivery.channel, Delivery.status, sa.func.count())
        .join(Document, col(Document.id) == col(Delivery.document_id))
        .where(
            Document.kind == DocumentKind.ANNUAL_STATEMENT,
            Document.tax_year == tax_year,
            Delivery.copy_number == 0,
        )
        .group_by(col(Delivery.channel), col(Delivery.status))
    ).all()
    for channel, status, number in rows:
        counts[f"{channel}_{status}"] = int(number)
    return counts


def issued_documents(session: Session, *, kind: DocumentKind | None, limit: int) -> Sequence[Document]:
    query = select(Document).where(Document.status == DocumentStatus.ISSUED)
    if kind is not None:
        query = query.where(Document.kind == kind)
    return session.exec(query.order_by(col(Document.issued_at).desc(), col(Document.reference)).limit(limit)).all()


def allocated_documents(
    session: Session, *, kind: DocumentKind | None = None, tax_year: str | None = None
) -> list[uuid.UUID]:
    query = select(Document.id).where(Document.status == DocumentStatus.ALLOCATED)
    if kind is not None:
        query = query.where(Document.kind == kind)
    if tax_year is not None:
        query = query.where(Document.tax_year == tax_year)
    return list(session.exec(query.order_by(col(Document.number))).all())


def reassign(session: Session, from_id: uuid.UUID, to_id: uuid.UUID) -> int:
    moved = session.execute(
        sa.update(Document).where(col(Document.supporter_id) == from_id).values(supporter_id=to_id)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(sa.update(Delivery).where(col(Delivery.supporter_id) == from_id).values(supporter_id=to_id))
    return int(moved or 0)
