"""Queries for crm tables. Private to the package: other packages call crm.service."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from crm.models import HistoryEntry, Supporter, SupporterAddress


def supporter_by_email(session: Session, email: str) -> Supporter | None:
    return session.exec(select(Supporter).where(Supporter.email == email)).first()


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


def insert_history_once(session: Session, values: dict[str, Any]) -> bool:
    """Insert a history entry unless one with the same dedupe key exists (safe under concurrent copies)."""
    table = HistoryEntry.__table__  # type: ignore[attr-defined]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id)
    return session.execute(stmt).first() is not None
