"""Inbound provider events, stored once each with the raw body, before anything acts on them."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import created_at_field, id_field, utc_field


class EventStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # needs an object we have not recorded yet; re-run when it is
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class InboundEvent(SQLModel, table=True):
    __tablename__ = "inbound_events"
    __table_args__ = (
        sa.UniqueConstraint("provider", "external_id"),
        sa.Index("ix_inbound_events_status_received_at", "status", "received_at"),
    )

    id: uuid.UUID = id_field()
    provider: str = Field(max_length=16)
    external_id: str = Field(max_length=255)
    event_type: str = Field(max_length=100)
    # The provider's own time of the event (Stripe `created`, GoCardless `created_at`).
    occurred_at: dt.datetime | None = utc_field()
    # Raw body of this event as received (kept for replay, pruned after [web] keep_webhook_bodies_days).
    body: str | None = Field(default=None, sa_type=sa.Text)
    livemode: bool = False
    status: EventStatus = Field(default=EventStatus.PENDING, sa_type=sa.String(16))
    # What this event waits for (e.g. "stripe_charge:ch_..."), so recording that object wakes it.
    waiting_for: str | None = Field(default=None, max_length=255, index=True)
    # Times the event was run (waiting for an object included), and times a run failed with an error: only the
    # failures count against its retries, so an event that waited long is still retried after one provider error.
    attempts: int = 0
    failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    received_at: dt.datetime = created_at_field()
    processed_at: dt.datetime | None = utc_field()
    # Last time the event was handled or sent to the workers again (the sweep's clock).
    touched_at: dt.datetime | None = utc_field()
    # "delivery" for what reached the endpoint, "catch_up" for what the nightly listing found missing.
    source: str = Field(default="delivery", max_length=16)
