"""Storing and processing inbound provider events."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from webhooks.models import EventStatus, InboundEvent


def pending_event_count(session: Session) -> int:
    query = (
        select(sa.func.count())
        .select_from(InboundEvent)
        .where(col(InboundEvent.status).in_([EventStatus.PENDING, EventStatus.WAITING]))
    )
    return int(session.exec(query).one())
