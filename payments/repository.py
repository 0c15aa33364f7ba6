"""Queries for payments tables. Private to the package: other packages call payments.service.

Idempotency rests on the unique provider-id columns: `insert_once` is `INSERT ... ON CONFLICT DO NOTHING`, then
`first_locked` reads the row with `SELECT ... FOR UPDATE` on PostgreSQL (SQLite's `BEGIN IMMEDIATE` already
serialises writers), so concurrent copies of one business event queue on the row instead of both acting.
Lock order, everywhere: checkout, order, regular gift, gift, refund/dispute; an order's lines and the SKU stock rows
it changes (in SKU order) only under the order's lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.db import conflict_insert, is_postgres
from payments.models import (
    Checkout,
    Dispute,
    DisputeStatus,
    Gift,
    GiftStatus,
    Order,
    OrderStatus,
    Refund,
    RefundStatus,
    RegularGift,
    RegularGiftStatus,
)

T = TypeVar("T", bound=SQLModel)


def first_locked(session: Session, query: SelectOfScalar[T]) -> T | None:
    query = query.execution_options(populate_existing=True)
    if is_postgres(session):
        query = query.with_for_update()
    return session.exec(query).first()


def all_locked(session: Session, query: SelectOfScalar[T]) -> list[T]:
    query = query.execution_options(populate_existing=True)
    if is_postgres(session):
        query = query.with_for_update()
    return list(session.exec(query).all())


def row_values(obj: SQLModel) -> dict[str, Any]:
    table: sa.Table = obj.__table__  # type: ignore[attr-defined]
    return {column.name: getattr(obj, column.name) for column in table.columns}


def insert_once(session: Session, obj: SQLModel) -> bool:
    """Insert unless a row with one of its unique keys exists; True when this call inserted it."""
    table: sa.Table = obj.__table__  # type: ignore[attr-defined]
    insert = conflict_insert(session.get_bind().dialect.name)
    statement = insert(table).values(**row_values(obj)).on_conflict_do_nothing().returning(table.c.id)
    return session.execute(statement).first() is not None


_insert_returning: dict[tuple[str, type[SQLModel]], Any] = {}


def insert_returning(session: Session, obj: T) -> T | None:
    """`INSERT ... ON CONFLICT DO NOTHING RETURNING id`, then `obj` joins the session as the persistent row it now
    is (one round trip, no re-read), or None when a row with one of its unique keys exists (then read it with
    `first_locked`). The statement is built once per table and dialect and the row goes in as parameters: building
    a 40-column VALUES, or loading the returned row into an ORM object, costs more CPU than the round trip."""
    model = type(obj)
    dialect = session.get_bind().dialect.name
    statement = _insert_returning.get((dialect, model))
    if statement is None:
        table: sa.Table = model.__table__  # type: ignore[attr-defined]
        insert = conflict_insert(dialect)
        statement = insert(table).on_conflict_do_nothing().returning(table.c.id)
        _insert_returning[(dialect, model)] = statement
    session.flush()  # what autoflush did for the ORM statement: rows this one refers to are written first
    if session.execute(statement, row_values(obj)).first() is None:
        return None
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def by_key(model: type[T], column: str, key: Any) -> SelectOfScalar[T]:
    return select(model).where(getattr(model, column) == key)


def gocardless_id_of_checkout(
    session: Session, model: type[Gift] | type[RegularGift], column: str, checkout_id: uuid.UUID
) -> str | None:
    """The GoCardless payment (or subscription) a checkout's gift (or plan) was recorded with, if any."""
    found = session.exec(
        select(getattr(model, column)).where(model.checkout_id == checkout_id, getattr(model, column).is_not(None))
    ).first()
    return str(found) if found is not None else None


_LOCK_KEYS = sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")


def serialise_keys(session: Session, keys: list[str]) -> None:
    """PostgreSQL: hold a transaction lock per business key, so an event deciding to wait for an object and the
    event recording that object run one after the other around that decision (SQLite serialises all writers)."""
    if not keys or not is_postgres(session):
        return
    # 64-bit lock ids from the keys, sorted so that two transactions always take shared keys in the same order.
    ids = sorted(
        {int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True) for key in keys}
    )
    session.execute(_LOCK_KEYS, {"keys": ids})


# --- checkouts and orders


def checkout_locked(session: Session, checkout_id: uuid.UUID | None, **provider_ids: str | None) -> Checkout | None:
    if checkout_id is not None:
        found = first_locked(session, select(Checkout).where(Checkout.id == checkout_id))
        if found is not None:
            return found
    for column, value in provider_ids.items():
        if value:
            found = first_locked(session, by_key(Checkout, column, value))
            if found is not None:
                return found
    return None


def order_locked(session: Session, order_id: uuid.UUID) -> Order | None:
    return first_locked(session, select(Order).where(Order.id == order_id))


def order_for_stripe_payment(session: Session, payment_intent_id: str | None, charge_id: str | None) -> Order | None:
    for column, value in (("stripe_payment_intent_id", payment_intent_id), ("stripe_charge_id", charge_id)):
        if value:
            found = first_locked(session, by_key(Order, column, value))
            if found is not None:
                return found
    return None


def gift_for_stripe_payment(session: Session, payment_intent_id: str | None, charge_id: str | None) -> Gift | None:
    for column, value in (("stripe_payment_intent_id", payment_intent_id), ("stripe_charge_id", charge_id)):
        if value:
            found = first_locked(session, by_key(Gift, column, value))
            if found is not None:
                return found
    return None


def gift_for_order(session: Session, order_id: uuid.UUID) -> Gift | None:
    return first_locked(session, select(Gift).where(Gift.order_id == order_id))


# --- regular gifts


def regular_gifts_for_mandate(session: Session, mandate_id: str) -> list[RegularGift]:
    return all_locked(
        session,
        select(RegularGift)
        .where(RegularGift.gocardless_mandate_id == mandate_id)
        .order_by(col(RegularGift.created_at)),
    )


def instalments(session: Session, regular_gift_id: uuid.UUID) -> list[Gift]:
    return list(session.exec(select(Gift).where(Gift.regular_gift_id == regular_gift_id)).all())


def running_regular_gifts(session: Session) -> list[RegularGift]:
    return list(
        session.exec(
            select(RegularGift)
            .where(col(RegularGift.status).in_([RegularGiftStatus.ACTIVE, RegularGiftStatus.IN_ARREARS]))
            .order_by(col(RegularGift.next_due_on), col(RegularGift.id))
        ).all()
    )


def latest_paid_on(session: Session, regular_gift_id: uuid.UUID) -> dt.date | None:
    value = session.exec(
        select(sa.func.max(Gift.due_on)).where(Gift.regular_gift_id == regular_gift_id, Gift.status == GiftStatus.PAID)
    ).one()
    return value  # type: ignore[no-any-return]


# --- refunds and disputes


def refunds_of(session: Session, gift: Gift | None, order: Order | None) -> list[Refund]:
    conditions = []
    if gift is not None:
        conditions.append(col(Refund.gift_id) == gift.id)
    if order is not None:
        conditions.append(col(Refund.order_id) == order.id)
    if not conditions:
        return []
    return all_locked(
        session,
        select(Refund)
        .where(sa.or_(*conditions))
        .order_by(col(Refund.refunded_at), col(Refund.created_at), col(Refund.id)),
    )


def lost_disputes_of(session: Session, gift: Gift | None, order: Order | None) -> list[Dispute]:
    conditions = []
    if gift is not None:
        conditions.append(col(Dispute.gift_id) == gift.id)
    if order is not None:
        conditions.append(col(Dispute.order_id) == order.id)
    if not conditions:
        return []
    return list(
        session.exec(
            select(Dispute)
            .where(sa.or_(*conditions), Dispute.status == DisputeStatus.LOST, Dispute.kind == "dispute")
            .order_by(col(Dispute.opened_at), col(Dispute.id))
        ).all()
    )


# --- totals and merges


def gift_totals(session: Session, supporter_ids: Sequence[uuid.UUID]) -> list[tuple[str, int]]:
    rows = session.exec(
        select(Gift.currency, sa.func.coalesce(sa.func.sum(Gift.amount - Gift.returned_amount), 0))
        .where(col(Gift.supporter_id).in_(supporter_ids), Gift.status == GiftStatus.PAID)
        .group_by(col(Gift.currency))
    ).all()
    return [(currency, int(total)) for currency, total in rows]


PURCHASED = [OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED]


def order_totals(session: Session, supporter_ids: Sequence[uuid.UUID]) -> list[tuple[str, int]]:
    rows = session.exec(
        select(
            Order.currency,
            sa.func.coalesce(sa.func.sum(Order.goods_amount + Order.vat_amount - Order.refunded_amount), 0),
        )
        .where(col(Order.supporter_id).in_(supporter_ids), col(Order.status).in_(PURCHASED))
        .group_by(col(Order.currency))
    ).all()
    return [(currency, int(total)) for currency, total in rows]


def running_regular_count(session: Session, supporter_ids: Sequence[uuid.UUID]) -> int:
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(RegularGift)
            .where(
                col(RegularGift.supporter_id).in_(supporter_ids),
                col(RegularGift.status).in_([RegularGiftStatus.ACTIVE, RegularGiftStatus.IN_ARREARS]),
            )
        ).one()
    )


SUPPORTER_OWNED: tuple[type[SQLModel], ...] = (Checkout, Order, RegularGift, Gift, Refund, Dispute)


def move_supporter(session: Session, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    moved: dict[str, int] = {}
    for model in SUPPORTER_OWNED:
        table: sa.Table = model.__table__  # type: ignore[attr-defined]
        result = session.execute(sa.update(table).where(table.c.supporter_id == from_id).values(supporter_id=to_id))
        moved[table.name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return moved


def one_off_gift_on_mandate(session: Session, mandate_id: str) -> bool:
    """Whether a one-off Direct Debit gift (no regular gift) was collected on this mandate."""
    query = (
        sa.select(col(Gift.id))
        .where(col(Gift.gocardless_mandate_id) == mandate_id, col(Gift.regular_gift_id).is_(None))
        .limit(1)
    )
    return session.execute(query).first() is not None


def exists(session: Session, model: type[SQLModel], column: str, key: str) -> bool:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return session.execute(sa.select(table.c.id).where(table.c[column] == key).limit(1)).first() is not None


def succeeded(refund: Refund) -> bool:
    return refund.status == RefundStatus.SUCCEEDED


# Gift Aid's claimed gifts, read by name: payments never imports giftaid (pyproject's import contracts), and a gift's
# date must not move once a live claim has sent it to HMRC.
_CLAIM_GIFTS = sa.table(
    "giftaid_claim_gifts",
    sa.column("gift_id", Gift.__table__.c.id.type),  # type: ignore[attr-defined]
    sa.column("live", sa.Boolean()),
)


def gift_in_a_claim(session: Session, gift_id: uuid.UUID) -> bool:
    """Whether a live Gift Aid claim has the gift (built, submitted or later: HMRC has, or will have, its date)."""
    query = sa.select(sa.literal(1)).where(_CLAIM_GIFTS.c.gift_id == gift_id, _CLAIM_GIFTS.c.live.is_(True)).limit(1)
    return session.execute(query).first() is not None


def provider_records(session: Session, supporter_ids: Sequence[uuid.UUID]) -> tuple[list[str], list[str], list[str]]:
    """What Stripe and GoCardless hold for these records on our behalf, by id: (GoCardless mandates, Stripe
    customers, GoCardless customers), each sorted. Mandates are those of their regular gifts and of their one-off
    Direct Debit gifts (and dashboard payments) alike."""
    mandates: set[str] = set()
    stripe_customers: set[str] = set()
    gocardless_customers: set[str] = set()
    regular_rows = session.execute(
        sa.select(
            col(RegularGift.gocardless_mandate_id),
            col(RegularGift.stripe_customer_id),
            col(RegularGift.gocardless_customer_id),
        ).where(col(RegularGift.supporter_id).in_(supporter_ids))
    ).all()
    for mandate_id, stripe_customer_id, gocardless_customer_id in regular_rows:
        mandates.update([mandate_id] if mandate_id else [])
        stripe_customers.update([stripe_customer_id] if stripe_customer_id else [])
        gocardless_customers.update([gocardless_customer_id] if gocardless_customer_id else [])
    mandates.update(
        str(mandate_id)
        for (mandate_id,) in session.execute(
            sa.select(col(Gift.gocardless_mandate_id))
            .where(col(Gift.supporter_id).in_(supporter_ids), col(Gift.gocardless_mandate_id).is_not(None))
            .distinct()
        ).all()
    )
    return sorted(mandates), sorted(stripe_customers), sorted(gocardless_customers)
