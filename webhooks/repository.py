"""Queries for inbound_events. Private to webhooks."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.db import conflict_insert, is_postgres
from webhooks.models import EventStatus, InboundEvent

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_table: sa.Table = InboundEvent.__table__  # type: ignore[attr-defined]
_insert_statements: dict[str, Any] = {}


def _insert_once(dialect: str) -> Any:
    """`INSERT ... ON CONFLICT (provider, external_id) DO NOTHING RETURNING id`, built once per dialect."""
    statement = _insert_statements.get(dialect)
    if statement is None:
        insert = conflict_insert(dialect)
        statement = (
            insert(_table).on_conflict_do_nothing(index_elements=["provider", "external_id"]).returning(_table.c.id)
        )
        _insert_statements[dialect] = statement
    return statement


def insert_event(connection: sa.Connection | Session, values: dict[str, Any]) -> uuid.UUID | None:
    """The new row's id, or None when the provider already delivered this event."""
    dialect = connection.dialect.name if isinstance(connection, sa.Connection) else connection.get_bind().dialect.name
    row = connection.execute(_insert_once(dialect), values).first()
    return row[0] if row is not None else None


_INSERT_COLUMNS = [column.name for column in _table.columns]
# The statement the event loop runs through plain psycopg (core.db.AsyncDatabase): the same as `_insert_once`.
_INSERT_SQL = (
    f"INSERT INTO {_table.name} ({', '.join(_INSERT_COLUMNS)}) VALUES {{values}} "
    "ON CONFLICT (provider, external_id) DO NOTHING RETURNING id"
)
_ROWS_PER_STATEMENT = 1000
_ROW_PLACEHOLDERS = "(" + ", ".join(["%s"] * len(_INSERT_COLUMNS)) + ")"


async def insert_events_async(connection: AsyncConnection[Any], rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    """PostgreSQL: one INSERT of every row, skipping those already stored; the new ids. One statement, so a batch
    is stored entirely or not at all on an autocommit connection."""
    if len(rows) > _ROWS_PER_STATEMENT:  # past PostgreSQL's 65,535 parameters: several statements, one transaction
        async with connection.transaction():
            chunks = [rows[at : at + _ROWS_PER_STATEMENT] for at in range(0, len(rows), _ROWS_PER_STATEMENT)]
            return [event_id for chunk in chunks for event_id in await _insert_rows(connection, chunk)]
    return await _insert_rows(connection, rows)


async def _insert_rows(connection: AsyncConnection[Any], rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    sql = _INSERT_SQL.format(values=", ".join([_ROW_PLACEHOLDERS] * len(rows)))
    params = [_db_value(row[name]) for row in rows for name in _INSERT_COLUMNS]
    cursor = await connection.execute(sql.encode(), params)
    return [row[0] for row in await cursor.fetchall()]


def _db_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


@dataclass(frozen=True, slots=True)
class LockedEvent:
    """What processing reads of a stored event: the row is locked, and written back with `update_event`."""

    id: uuid.UUID
    provider: str
    event_type: str
    occurred_at: dt.datetime | None
    body: str | None
    status: EventStatus
    attempts: int
    failures: int


_LOCKED_COLUMNS = [_table.c[field] for field in LockedEvent.__slots__]  # type: ignore[attr-defined]
# These run for every event a worker processes: built once, with the values as parameters (building a statement
# costs more CPU than running it).
_SELECT_LOCKED = sa.select(*_LOCKED_COLUMNS).where(_table.c.id == sa.bindparam("event_id"))
_SELECT_LOCKED_FOR_UPDATE = _SELECT_LOCKED.with_for_update()
# The columns to set come from the parameters' names (only `event_id` is not one).
_UPDATE_EVENT = sa.update(_table).where(_table.c.id == sa.bindparam("event_id"))
_WAKE_WAITING = (
    sa.update(_table)
    .where(_table.c.status == EventStatus.WAITING, _table.c.waiting_for.in_(sa.bindparam("keys", expanding=True)))
    .values(status=EventStatus.PENDING, waiting_for=None, touched_at=sa.bindparam("now"))
    .returning(_table.c.id)
)


def lock_event_row(session: Session, event_id: uuid.UUID) -> LockedEvent | None:
    """The event's processing fields, its row locked on PostgreSQL so two copies of one message run one after the
    other. Plain columns, not an ORM object: this and `update_event` run for every event the workers process."""
    query = _SELECT_LOCKED_FOR_UPDATE if is_postgres(session) else _SELECT_LOCKED
    row = session.execute(query, {"event_id": event_id}).first()
    if row is None:
        return None
    values = row._asdict()
    return LockedEvent(**{**values, "status": EventStatus(values["status"])})


def update_event(session: Session, event_id: uuid.UUID, values: dict[str, Any]) -> None:
    session.execute(_UPDATE_EVENT, {**values, "event_id": event_id})


def event_by_reference(session: Session, reference: str) -> InboundEvent | None:
    """By our id, or by the provider's event id (evt_..., EV...)."""
    try:
        found = session.get(InboundEvent, uuid.UUID(reference))
        if found is not None:
            return found
    except ValueError:
        pass
    return session.exec(select(InboundEvent).where(InboundEvent.external_id == reference)).first()


def wake_waiting(session: Session, keys: list[str], now: dt.datetime) -> list[uuid.UUID]:
    """Waiting events whose object has just been recorded go back to pending; their ids come back."""
    if not keys:
        return []
    result = session.execute(_WAKE_WAITING, {"keys": sorted(set(keys)), "now": now})
    return [row[0] for row in result]


def wake_one(session: Session, event_id: uuid.UUID, now: dt.datetime) -> bool:
    result = session.execute(
        sa.update(_table)
        .where(_table.c.id == event_id, _table.c.status == EventStatus.WAITING)
        .values(status=EventStatus.PENDING, waiting_for=None, touched_at=now)
        .returning(_table.c.id)
    )
    return result.first() is not None


def due_for_sweep(
    session: Session,
    now: dt.datetime,
    *,
    pending_after: dt.timedelta,
    waiting_after: dt.timedelta,
    failed_after: Sequence[dt.timedelta],
    max_failures: int,
    limit: int,
) -> list[InboundEvent]:
    """Pending events nobody touched for a while, failed ones whose back-off is over, and (rarely) waiting ones,
    locked (rows a run holds are skipped).

    `failed_after[n]`: how long after its last run an event that failed n times is due; the last entry holds for
    every count past it. Events that failed `max_failures` times are left alone."""
    last = sa.func.coalesce(col(InboundEvent.touched_at), col(InboundEvent.received_at))
    failures = col(InboundEvent.failures)
    *spaced, longest = failed_after
    failed_due = [sa.and_(failures == count, last < now - after) for count, after in enumerate(spaced)]
    failed_due.append(sa.and_(failures >= len(spaced), last < now - longest))
    query = (
        select(InboundEvent)
        .where(
            sa.or_(
                sa.and_(col(InboundEvent.status) == EventStatus.PENDING, last < now - pending_after),
                sa.and_(col(InboundEvent.status) == EventStatus.WAITING, last < now - waiting_after),
                sa.and_(col(InboundEvent.status) == EventStatus.FAILED, failures < max_failures, sa.or_(*failed_due)),
            )
        )
        .order_by(col(InboundEvent.received_at))
        .limit(limit)
        # Locked as read, and any row a run holds skipped: the sweep writes each row's status back, and read without
        # a lock, a row processed meanwhile would be set back to pending (or, past its give-up, to ignored). Locked,
        # PostgreSQL reads the row again after a run commits and leaves it out if it is no longer due.
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query).all())


def known_external_ids(session: Session, provider: str, external_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(external_ids), 500):
        chunk = external_ids[start : start + 500]
        found.update(
            session.exec(
                select(InboundEvent.external_id).where(
                    InboundEvent.provider == provider, col(InboundEvent.external_id).in_(chunk)
                )
            ).all()
        )
    return found


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(InboundEvent.status, sa.func.count()).group_by(col(InboundEvent.status))).all()
    return {str(status): int(count) for status, count in rows}
