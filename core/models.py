"""Tables of the shared infrastructure: durable jobs, periodic runs, generated secrets, staff access, audit."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import UTCDateTime, created_at_field, id_field, json_field, utc_field


class JobStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    # A periodic job's failed run after a later run of the same job succeeded: nothing left to do.
    SUPERSEDED = "superseded"


class Job(SQLModel, table=True):
    """A job that must not be lost: written with the work that asked for it, marked done by the actor.

    `attempts` counts the runs started that the database knows of (docs/operations.md: a run that dies leaves no
    failure to record, so the count is what stops a job that kills its worker)."""

    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_status_created_at", "status", "created_at"),)

    id: uuid.UUID = id_field()
    actor_name: str = Field(max_length=100)
    arguments: dict[str, Any] = json_field()
    status: JobStatus = Field(default=JobStatus.PENDING, sa_type=sa.String(16))
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: dt.datetime = created_at_field()
    available_at: dt.datetime = created_at_field()
    last_sent_at: dt.datetime | None = utc_field()
    done_at: dt.datetime | None = utc_field()
    # A job whose claim commits apart from its work: the run holding it (a random id per run) and until when (its
    # time limit). Another message for it does nothing meanwhile; only the run holding it marks it done or failed.
    # A run counted apart names itself here (not `running_until`) until it claims: a delivery counted past the job's
    # last run leaves the job to it while it may be alive (`jobs._give_up`).
    run_id: uuid.UUID | None = None
    running_until: dt.datetime | None = utc_field()
    # The process of the run holding it: its machine (host name, PID namespace and boot id: `jobs._machine`) and
    # `pid:start` (the start time tells a reused pid apart). A broker-less process starting up ends at once only the
    # claims of its machine's processes that have exited (`jobs.resend_pending(older_than=0)`); others wait for their
    # time limit.
    run_host: str | None = Field(default=None, max_length=255)
    run_process: str | None = Field(default=None, max_length=64)


class ScheduledRun(SQLModel, table=True):
    """One row per periodic job and period: whoever inserts it runs the job, so it runs once."""

    __tablename__ = "scheduled_runs"

    name: str = Field(primary_key=True, max_length=100)
    period_start: dt.datetime = Field(primary_key=True, sa_type=UTCDateTime)
    started_at: dt.datetime = created_at_field()


class AppSecret(SQLModel, table=True):
    """Secrets generated once and kept (the session and link signing key when none is configured)."""

    __tablename__ = "app_secrets"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)
    created_at: dt.datetime = created_at_field()


class StaffRole(StrEnum):
    ADMIN = "admin"
    FINANCE = "finance"
    FUNDRAISER = "fundraiser"


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_users"

    id: uuid.UUID = id_field()
    email: str = Field(max_length=254, unique=True)
    role: StaffRole = Field(sa_type=sa.String(16))
    password_hash: str = Field(max_length=256)
    totp_secret: str | None = Field(default=None, max_length=64)
    # The time step of the last TOTP code accepted: a code is good once, not for its whole 90-second window.
    totp_last_step: int | None = Field(default=None, sa_type=sa.BigInteger)
    active: bool = True
    created_at: dt.datetime = created_at_field()


class ApiToken(SQLModel, table=True):
    """Shown once; stored as a SHA-256 hash of the random token."""

    __tablename__ = "api_tokens"

    id: uuid.UUID = id_field()
    user_id: uuid.UUID = Field(foreign_key="staff_users.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    name: str = Field(default="", max_length=100)
    created_at: dt.datetime = created_at_field()
    expires_at: dt.datetime | None = utc_field()
    revoked_at: dt.datetime | None = utc_field()
    last_used_at: dt.datetime | None = utc_field()


class StaffSession(SQLModel, table=True):
    """Server-side login sessions: the cookie holds a random id whose hash is the key."""

    __tablename__ = "staff_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    user_id: uuid.UUID = Field(foreign_key="staff_users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: dt.datetime = created_at_field()
    expires_at: dt.datetime = created_at_field()
    revoked_at: dt.datetime | None = utc_field()


class PasswordReset(SQLModel, table=True):
    __tablename__ = "password_resets"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: uuid.UUID = Field(foreign_key="staff_users.id", index=True)
    created_at: dt.datetime = created_at_field()
    expires_at: dt.datetime = created_at_field()
    used_at: dt.datetime | None = utc_field()


class AuditEntry(SQLModel, table=True):
    """Who read or exported what, when: every view of personal data and every export."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_at", "at"),)

    id: uuid.UUID = id_field()
    at: dt.datetime = created_at_field()
    user_id: uuid.UUID | None = Field(default=None, foreign_key="staff_users.id", index=True)
    actor: str = Field(max_length=254)
    action: str = Field(max_length=64)
    object_type: str = Field(max_length=64)
    object_id: str = Field(default="", max_length=64, index=True)
    detail: dict[str, Any] = json_field()


class RateLimitHit(SQLModel, table=True):
    """Fixed-window counters shared by every web process."""

    __tablename__ = "rate_limits"

    key: str = Field(primary_key=True, max_length=200)
    window_start: dt.datetime = Field(primary_key=True, sa_type=UTCDateTime)
    count: int = 0
