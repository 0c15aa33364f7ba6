"""Read-only queries that only the staff pages need, across packages (the composition root may read every
package's tables). Use cases that change anything go through the packages' own services."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.clock import UK
from crm import service as crm_service
from crm.models import (
    Consent,
    ConsentChannel,
    Declaration,
    HistoryEntry,
    Interest,
    ReviewItem,
    Supporter,
    SupporterAddress,
)
from payments.models import (
    Dispute,
    DisputeStatus,
    Gift,
    Order,
    OrderLine,
    OrderStatus,
    RegularGift,
    RegularGiftStatus,
    Sku,
)

SEARCH_LIMIT = 50
# A whole UK postcode typed with or without its space ("ct16 1aa"): searched as one term.
WHOLE_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2}$")


def search_supporters(session: Session, query: str, *, limit: int = SEARCH_LIMIT) -> list[Supporter]:
    """crm's search (every word, or run of words, starts a first or last name, an email or a postcode; an email
    exactly), with a whole postcode typed with its space kept as one term."""
    text = " ".join(query.split())
    if not text:
        return []
    if WHOLE_POSTCODE.match(text.upper()):
        text = text.replace(" ", "")
    return crm_service.find_supporters(session, q=text, limit=limit)


@dataclass
class SupporterProfile:
    supporter: Supporter
    address: SupporterAddress | None
    consents: dict[ConsentChannel, Consent]
    interests: list[Interest]
    declarations: list[tuple[Declaration, str]]
    regular_gifts: list[RegularGift]
    review_items: list[ReviewItem]
    # crm's totals: donated, gift_aid_claimable, gift_aid_claimed, purchases (Money), regular_gifts (a count).
    totals: dict[str, Any]
    merged_ids: list[uuid.UUID] = field(default_factory=list)
    # The words each consent was given on, by wording id (crm keeps them).
    consent_words: dict[uuid.UUID, str] = field(default_factory=dict)


def supporter_profile(session: Session, supporter_id: uuid.UUID) -> SupporterProfile:
    """Everything the supporter's page shows but the timeline (the survivor's, for an id merged away)."""
    view = crm_service.get_supporter(session, supporter_id)
    sid = view.supporter.id
    declarations = [(d, crm_service.declaration_status(d)) for d in crm_service.declarations(session, sid)]
    regular = list(
        session.exec(
            select(RegularGift)
            .where(RegularGift.supporter_id == sid)
            .order_by(col(RegularGift.created_at).desc(), col(RegularGift.id))
        ).all()
    )
    reviews = list(
        session.exec(
            select(ReviewItem)
            .where(ReviewItem.supporter_id == sid, col(ReviewItem.resolved_at).is_(None))
            .order_by(col(ReviewItem.created_at).desc(), col(ReviewItem.id))
        ).all()
    )
    return SupporterProfile(
        supporter=view.supporter,
        address=view.address,
        consents=view.consents,
        interests=view.interests,
        declarations=declarations,
        regular_gifts=regular,
        review_items=reviews,
        totals=crm_service.supporter_totals(session, sid),
        merged_ids=view.merged_ids,
        consent_words=view.consent_words,
    )


def history_types(session: Session, supporter_id: uuid.UUID) -> list[str]:
    return [
        str(t)
        for t in session.exec(
            select(HistoryEntry.type)
            .where(HistoryEntry.supporter_id == supporter_id)
            .distinct()
            .order_by(HistoryEntry.type)
        ).all()
    ]


# --- keyset paging (history, audit log) ----------------------------------------------------------------------
# A page is named by where it starts, not by its number: `?before=<cursor>` is the page of rows older than the row
# the cursor names, `?after=<cursor>` the page of rows newer than it. Rows added between two page loads then
# neither repeat on the next page nor push one off it (OFFSET paging did both).

Cursor = tuple[dt.datetime, uuid.UUID]
CURSOR_MAX_LENGTH = 120


class Timed(Protocol):
    at: dt.datetime
    id: uuid.UUID


T = TypeVar("T", bound=Timed)


def encode_cursor(row: Timed) -> str:
    raw = f"{row.at.astimezone(dt.UTC).isoformat(timespec='microseconds')}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor | None:
    """The (at, id) a cursor of ours names; None for anything else (the page then starts from the newest)."""
    if not text or len(text) > CURSOR_MAX_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at_text, _, id_text = raw.partition("|")
        at = dt.datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            return None
        return at, uuid.UUID(id_text)
    except ValueError:  # also binascii.Error and UnicodeDecodeError
        return None


@dataclass
class KeysetPage(Generic[T]):
    items: list[T]
    # The cursors of the pages either side (`?after=` newer, `?before=` older); None when there is none.
    newer: str | None
    older: str | None


def keyset_page(
    session: Session,
    query: SelectOfScalar[T],
    model: type[T],
    *,
    before: Cursor | None,
    after: Cursor | None,
    size: int,
) -> KeysetPage[T]:
    """One page of `query`'s rows, newest first in the total order (at desc, id desc): the `size` rows just older
    than `before`, or just newer than `after`, or else the newest. A cursor with nothing beyond it shows the newest."""
    at, ident = col(model.at), col(model.id)

    def older_than(cursor: Cursor) -> sa.ColumnElement[bool]:
        return sa.or_(at < cursor[0], sa.and_(at == cursor[0], ident < cursor[1]))

    def newer_than(cursor: Cursor) -> sa.ColumnElement[bool]:
        return sa.or_(at > cursor[0], sa.and_(at == cursor[0], ident > cursor[1]))

    def any_row(condition: sa.ColumnElement[bool]) -> bool:
        return session.exec(query.where(condition).limit(1)).first() is not None

    if after is not None:
        rows = list(session.exec(query.where(newer_than(after)).order_by(at.asc(), ident.asc()).limit(size + 1)))
        if rows:
            has_newer = len(rows) > size
            rows = rows[:size][::-1]
            has_older = any_row(older_than((rows[-1].at, rows[-1].id)))
            return _keyset(rows, has_newer, has_older)
        before = None
    condition = older_than(before) if before is not None else sa.true()
    rows = list(session.exec(query.where(condition).order_by(at.desc(), ident.desc()).limit(size + 1)))
    has_older = len(rows) > size
    rows = rows[:size]
    if before is not None and not rows:
        # Nothing older than the cursor (its rows were deleted meanwhile): the newest page, not an empty one.
        return keyset_page(session, query, model, before=None, after=None, size=size)
    has_newer = before is not None and any_row(newer_than((rows[0].at, rows[0].id)))
    return _keyset(rows, has_newer, has_older)


def _keyset(rows: list[T], has_newer: bool, has_older: bool) -> KeysetPage[T]:
    return KeysetPage(
        rows,
        newer=encode_cursor(rows[0]) if rows and has_newer else None,
        older=encode_cursor(rows[-1]) if rows and has_older else None,
    )


def history_page(
    session: Session,
    supporter_id: uuid.UUID,
    *,
    type: str | None,
    page_size: int,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> KeysetPage[HistoryEntry]:
    """Newest first (then by id, a total order); one page of `page_size`, optionally of one type only."""
    query = select(HistoryEntry).where(HistoryEntry.supporter_id == supporter_id)
    if type:
        query = query.where(HistoryEntry.type == type)
    return keyset_page(session, query, HistoryEntry, before=before, after=after, size=page_size)


def gifts_of(session: Session, supporter_id: uuid.UUID, *, limit: int = 20) -> list[Gift]:
    return list(
        session.exec(
            select(Gift)
            .where(Gift.supporter_id == supporter_id)
            .order_by(col(Gift.received_at).desc(), col(Gift.id).desc())
            .limit(limit)
        ).all()
    )


def disputed_gift_ids(session: Session, gift_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of these gifts with a card dispute still open (the money may be taken back; the gift still says paid)."""
    if not gift_ids:
        return set()
    rows = session.exec(
        select(Dispute.gift_id).where(col(Dispute.gift_id).in_(gift_ids), Dispute.status == DisputeStatus.OPEN)
    ).all()
    return {gift_id for gift_id in rows if gift_id is not None}


def gifts_received_on(session: Session, supporter_id: uuid.UUID, day: dt.date, *, limit: int = 50) -> list[Gift]:
    """The supporter's gifts received on this UK calendar day, newest first (a one-gift declaration can name any
    gift, not only the newest the page lists)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=UK).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=UK).astimezone(dt.UTC)
    return list(
        session.exec(
            select(Gift)
            .where(Gift.supporter_id == supporter_id, col(Gift.received_at) >= start, col(Gift.received_at) < end)
            .order_by(col(Gift.received_at).desc(), col(Gift.id).desc())
            .limit(limit)
        ).all()
    )


def gifts_by_id(session: Session, gift_ids: list[uuid.UUID], supporter_ids: list[uuid.UUID]) -> dict[uuid.UUID, Gift]:
    """These gifts, of these supporters only (a report of what a declaration changed names gifts by id)."""
    if not gift_ids:
        return {}
    rows = session.exec(select(Gift).where(col(Gift.id).in_(gift_ids), col(Gift.supporter_id).in_(supporter_ids))).all()
    return {g.id: g for g in rows}


def open_adjustments(session: Session, gift_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Gift Aid (pence) that the next claim is to deduct for each of these gifts: giftaid's adjustments not yet
    carried by a claim."""
    from giftaid.models import Adjustment

    if not gift_ids:
        return {}
    rows = session.exec(
        select(Adjustment.gift_id, sa.func.sum(Adjustment.amount))
        .where(col(Adjustment.gift_id).in_(gift_ids), col(Adjustment.applied_claim_id).is_(None))
        .group_by(col(Adjustment.gift_id))
    ).all()
    return {gift_id: int(total) for gift_id, total in rows}


# --- finance ------------------------------------------------------------------------------------------------


@dataclass
class MissingInstalment:
    regular_gift: RegularGift
    supporter: Supporter
    days_late: int


def missing_instalments(session: Session, today: dt.date, grace_days: int) -> list[MissingInstalment]:
    """Live regular gifts whose next instalment is more than `grace_days` overdue, or which are in arrears."""
    cutoff = today - dt.timedelta(days=grace_days)
    rows = session.exec(
        select(RegularGift, Supporter)
        .join(Supporter, Supporter.id == RegularGift.supporter_id)  # type: ignore[arg-type]
        .where(
            sa.or_(
                col(RegularGift.status) == RegularGiftStatus.IN_ARREARS,
                sa.and_(col(RegularGift.status) == RegularGiftStatus.ACTIVE, col(RegularGift.next_due_on) < cutoff),
            )
        )
        .order_by(col(RegularGift.next_due_on), col(RegularGift.id))
        .limit(500)
    ).all()
    return [MissingInstalment(rg, s, (today - rg.next_due_on).days if rg.next_due_on else 0) for rg, s in rows]


@dataclass
class OrderRow:
    order: Order
    supporter: Supporter
    lines: list[OrderLine]


def recent_orders(session: Session, *, page: int, page_size: int) -> tuple[list[OrderRow], bool]:
    rows = list(
        session.exec(
            select(Order, Supporter)
            .join(Supporter, Supporter.id == Order.supporter_id)  # type: ignore[arg-type]
            .where(Order.status != OrderStatus.PENDING)
            .order_by(col(Order.created_at).desc(), col(Order.id).desc())
            .offset((page - 1) * page_size)
            .limit(page_size + 1)
        ).all()
    )
    has_next = len(rows) > page_size
    rows = rows[:page_size]
    ids = [o.id for o, _ in rows]
    lines: dict[uuid.UUID, list[OrderLine]] = {i: [] for i in ids}
    if ids:
        for line in session.exec(
            select(OrderLine).where(col(OrderLine.order_id).in_(ids)).order_by(col(OrderLine.sku))
        ):
            lines[line.order_id].append(line)
    return [OrderRow(o, s, lines[o.id]) for o, s in rows], has_next


def stock(session: Session) -> list[dict[str, Any]]:
    from payments.models import Product

    rows = session.exec(
        select(Sku, Product)
        .join(Product, Product.id == Sku.product_id)  # type: ignore[arg-type]
        .order_by(col(Product.name), col(Sku.position), col(Sku.sku))
    ).all()
    return [{"sku": s.sku, "product": p.name, "size": s.size, "price": s.price, "stock": s.stock} for s, p in rows]
