"""Read-only queries that only the staff pages need, across packages (the composition root may read every
package's tables). Use cases that change anything go through the packages' own services."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
from payments import service as payments_service
from payments.models import (
    Dispute,
    DisputeStatus,
    Gift,
    Order,
    OrderLine,
    OrderStatus,
    Payout,
    RegularGift,
    RegularGiftStatus,
    Sku,
)
from payments.payouts import payout_summaries

SEARCH_LIMIT = 50
# A whole UK postcode typed with or without its space ("ct16 1aa"): searched as one term.
WHOLE_POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2}$")


def search_supporters(session: Session, query: str, *, limit: int = SEARCH_LIMIT) -> list[Supporter]:
    """crm's search (every word, or run of words, starts a first or last name, an email or a postcode; an email
    exactly), with a whole postcode typed with its space kept as one term. A comma separates words ("Okafor, Amina",
    as lists write names; a rare name with a comma in it is still found by its first word)."""
    text = " ".join(query.replace(",", " ").split())
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


# --- keyset paging (history, audit log, payouts, shop orders) ----------------------------------------------------
# A page is named by where it starts, not by its number: `?before=<cursor>` is the page of rows older than the row
# the cursor names, `?after=<cursor>` the page of rows newer than it. Rows added between two page loads then
# neither repeat on the next page nor push one off it (OFFSET paging did both). A cursor is the values of the row's
# sort key (`Keyset`), each a UTC timestamp, a date or an id, joined by "|" in URL-safe base64.

CursorValue = dt.datetime | dt.date | uuid.UUID
Cursor = tuple[CursorValue, ...]
CURSOR_MAX_LENGTH = 160

R = TypeVar("R")


@dataclass(frozen=True)
class Keyset(Generic[R]):
    """The total order a keyset-paged list is shown in, newest first: `columns` each descending in turn (the last one
    unique), `kinds` the type of each one's values (`datetime`, `date` or `UUID`), `of(row)` a row's values."""

    columns: tuple[Any, ...]  # column expressions
    kinds: tuple[type, ...]
    of: Callable[[R], Cursor]

    def fits(self, cursor: Cursor | None) -> Cursor | None:
        """The cursor when it names a row of this order; None for one of another list (the newest page then)."""
        if cursor is None or len(cursor) != len(self.kinds):
            return None
        return cursor if all(type(value) is kind for value, kind in zip(cursor, self.kinds, strict=True)) else None


def time_order(model: type[Any], at: str = "at") -> Keyset[Any]:
    """Newest first by a timestamp column (`at` unless named), then by id."""
    return Keyset(
        (col(getattr(model, at)), col(model.id)),
        (dt.datetime, uuid.UUID),
        lambda row: (getattr(row, at), row.id),
    )


def _cursor_part(value: CursorValue) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return str(value)  # a date's ISO form, an id's


def _cursor_value(text: str) -> CursorValue | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    try:
        if len(text) == len("2025-01-01"):
            return dt.date.fromisoformat(text)
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def encode_cursor(row: Any, order: Keyset[Any] | None = None) -> str:
    """The cursor naming this row (in the `at`, id order unless another is given)."""
    values = (order or time_order(type(row))).of(row)
    raw = "|".join(_cursor_part(value) for value in values)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor | None:
    """The values a cursor of ours names; None for anything else (the page then starts from the newest)."""
    if not text or len(text) > CURSOR_MAX_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except ValueError:  # also binascii.Error and UnicodeDecodeError
        return None
    values = [_cursor_value(part) for part in raw.split("|")]
    if not values or any(value is None for value in values):
        return None
    return tuple(value for value in values if value is not None)


@dataclass
class KeysetPage(Generic[R]):
    items: list[R]
    # The cursors of the pages either side (`?after=` newer, `?before=` older); None when there is none.
    newer: str | None
    older: str | None


def _after(columns: tuple[Any, ...], cursor: Cursor, *, newer: bool) -> sa.ColumnElement[bool]:
    """Rows after the cursor's in the order of `columns` (each descending): older ones, or newer ones."""
    column, value = columns[0], cursor[0]
    beyond = column > value if newer else column < value
    if len(columns) == 1:
        return beyond
    return sa.or_(beyond, sa.and_(column == value, _after(columns[1:], cursor[1:], newer=newer)))


def keyset_page(
    session: Session,
    query: SelectOfScalar[R],
    order: type[R] | Keyset[R],
    *,
    before: Cursor | None,
    after: Cursor | None,
    size: int,
) -> KeysetPage[R]:
    """One page of `query`'s rows, newest first in a total order (a model's `at` desc, id desc, or a `Keyset`): the
    `size` rows just older than `before`, or just newer than `after`, or else the newest. A cursor with nothing
    beyond it, or not of this order, shows the newest."""
    keyset: Keyset[R] = order if isinstance(order, Keyset) else time_order(order)
    columns = keyset.columns
    before, after = keyset.fits(before), keyset.fits(after)

    def any_row(condition: sa.ColumnElement[bool]) -> bool:
        return session.exec(query.where(condition).limit(1)).first() is not None

    if after is not None:
        ascending = [c.asc() for c in columns]
        rows = list(session.exec(query.where(_after(columns, after, newer=True)).order_by(*ascending).limit(size + 1)))
        if rows:
            has_newer = len(rows) > size
            rows = rows[:size][::-1]
            has_older = any_row(_after(columns, keyset.of(rows[-1]), newer=False))
            return _keyset(keyset, rows, has_newer, has_older)
        before = None
    condition = _after(columns, before, newer=False) if before is not None else sa.true()
    descending = [c.desc() for c in columns]
    rows = list(session.exec(query.where(condition).order_by(*descending).limit(size + 1)))
    has_older = len(rows) > size
    rows = rows[:size]
    if before is not None and not rows:
        # Nothing older than the cursor (its rows were deleted meanwhile): the newest page, not an empty one.
        return keyset_page(session, query, keyset, before=None, after=None, size=size)
    has_newer = before is not None and any_row(_after(columns, keyset.of(rows[0]), newer=True))
    return _keyset(keyset, rows, has_newer, has_older)


def _keyset(keyset: Keyset[R], rows: list[R], has_newer: bool, has_older: bool) -> KeysetPage[R]:
    return KeysetPage(
        rows,
        newer=encode_cursor(rows[0], keyset) if rows and has_newer else None,
        older=encode_cursor(rows[-1], keyset) if rows and has_older else None,
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
    """The supporter's gifts and what became of them. Not a free month's £0 row (an instalment invoice paid with
    nothing, kept by payments for its schedule): nothing was given or due, so it is no gift. Gifts not received yet
    (pending, failed) come first, as the newest: explicitly, since PostgreSQL puts NULL first in a descending order
    and SQLite last."""
    return list(
        session.exec(
            select(Gift)
            .where(Gift.supporter_id == supporter_id, col(Gift.amount) > 0)
            .order_by(col(Gift.received_at).desc().nulls_first(), col(Gift.id).desc())
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


def latest_deliveries(session: Session, document_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The newest delivery (the original or a copy) of each of these documents: whether it was emailed, posted, is
    waiting, or failed (a document stays `issued` whatever became of its email)."""
    from receipts.models import Delivery

    if not document_ids:
        return {}
    rows = session.exec(
        select(Delivery)
        .where(col(Delivery.document_id).in_(document_ids))
        .order_by(col(Delivery.copy_number), col(Delivery.created_at))
    ).all()
    return {delivery.document_id: delivery for delivery in rows}  # the last of each document wins


def open_adjustments(session: Session, gift_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Gift Aid (pence) that the next claim is to deduct for each of these gifts: giftaid's adjustments not yet
    carried by a claim and not withdrawn (the money came back: nothing to deduct)."""
    from giftaid.models import Adjustment

    if not gift_ids:
        return {}
    rows = session.exec(
        select(Adjustment.gift_id, sa.func.sum(Adjustment.amount))
        .where(
            col(Adjustment.gift_id).in_(gift_ids),
            col(Adjustment.applied_claim_id).is_(None),
            col(Adjustment.withdrawn_at).is_(None),
        )
        .group_by(col(Adjustment.gift_id))
    ).all()
    return {gift_id: int(total) for gift_id, total in rows}


# --- finance ------------------------------------------------------------------------------------------------


@dataclass
class MissingInstalment:
    regular_gift: RegularGift
    supporter: Supporter
    days_late: int | None  # None: its next instalment is not due yet (a plan in arrears for an earlier one)


def missing_instalments(session: Session, today: dt.date, grace_days: int) -> list[MissingInstalment]:
    """The regular gifts whose instalment is missing by payments' own rule (`payments.service.missing_instalments`,
    as `giving payments overdue` and the alerts have it: overdue by more than `grace_days`, no instalment paid for
    that due date, cancellation not asked for), and also those in arrears (a failed instalment) whose next
    instalment is not overdue yet, but not those whose cancellation was asked for (being stopped)."""
    overdue = sorted(
        m.regular_gift_id for m in payments_service.missing_instalments(session, today=today, grace_days=grace_days)
    )
    rows = session.exec(
        select(RegularGift, Supporter)
        .join(Supporter, Supporter.id == RegularGift.supporter_id)  # type: ignore[arg-type]
        .where(
            col(RegularGift.cancel_requested_at).is_(None),
            sa.or_(col(RegularGift.status) == RegularGiftStatus.IN_ARREARS, col(RegularGift.id).in_(overdue)),
        )
        .order_by(col(RegularGift.next_due_on), col(RegularGift.id))
        .limit(500)
    ).all()
    return [MissingInstalment(rg, s, _days_late(today, rg.next_due_on)) for rg, s in rows]


def _days_late(today: dt.date, due: dt.date | None) -> int | None:
    if due is None or due > today:
        return None
    return (today - due).days


@dataclass
class OrderRow:
    order: Order
    supporter: Supporter
    lines: list[OrderLine]


ORDER_ORDER: Keyset[Order] = time_order(Order, "created_at")


def recent_orders(
    session: Session, *, before: Cursor | None, after: Cursor | None, page_size: int
) -> KeysetPage[OrderRow]:
    """Orders but those never paid for, newest first (created_at desc, id desc), a keyset page at a time."""
    query = select(Order).where(Order.status != OrderStatus.PENDING)
    page = keyset_page(session, query, ORDER_ORDER, before=before, after=after, size=page_size)
    ids = [o.id for o in page.items]
    lines: dict[uuid.UUID, list[OrderLine]] = {i: [] for i in ids}
    supporters: dict[uuid.UUID, Supporter] = {}
    if ids:
        for line in session.exec(
            select(OrderLine).where(col(OrderLine.order_id).in_(ids)).order_by(col(OrderLine.sku))
        ):
            lines[line.order_id].append(line)
        wanted = {o.supporter_id for o in page.items}
        supporters = {s.id: s for s in session.exec(select(Supporter).where(col(Supporter.id).in_(wanted)))}
    rows = [OrderRow(o, supporters[o.supporter_id], lines[o.id]) for o in page.items]
    return KeysetPage(rows, newer=page.newer, older=page.older)


# Payouts as payments lists them (`payouts.payout_order`): those not yet arrived (no arrival date) first, then by
# arrival date, when recorded and id, all newest first.
NOT_ARRIVED = dt.date.max
PAYOUT_ORDER: Keyset[Payout] = Keyset(
    (sa.func.coalesce(col(Payout.arrival_date), NOT_ARRIVED), col(Payout.created_at), col(Payout.id)),
    (dt.date, dt.datetime, uuid.UUID),
    lambda p: (p.arrival_date or NOT_ARRIVED, p.created_at, p.id),
)


def payouts_page(
    session: Session, *, before: Cursor | None, after: Cursor | None, page_size: int
) -> KeysetPage[dict[str, Any]]:
    """A keyset page of payouts, each as payments summarises it with how many of its lines are not matched yet."""
    page = keyset_page(session, select(Payout), PAYOUT_ORDER, before=before, after=after, size=page_size)
    return KeysetPage(payout_summaries(session, page.items), newer=page.newer, older=page.older)


def stock(session: Session) -> list[dict[str, Any]]:
    from payments.models import Product

    rows = session.exec(
        select(Sku, Product)
        .join(Product, Product.id == Sku.product_id)  # type: ignore[arg-type]
        .order_by(col(Product.name), col(Sku.position), col(Sku.sku))
    ).all()
    return [{"sku": s.sku, "product": p.name, "size": s.size, "price": s.price, "stock": s.stock} for s, p in rows]
