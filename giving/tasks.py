"""Jobs that span packages (the composition root's own), and the sweep that re-sends lost jobs."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import col

from core import jobs, ratelimit
from core.clock import utc_now
from core.db import UnitOfWork
from core.models import PasswordReset, StaffSession


@jobs.periodic("core.resend_pending_jobs", every=dt.timedelta(minutes=1))
@jobs.actor("core.resend_pending_jobs", queue="default", time_limit_ms=60_000, max_retries=0)
def resend_pending_jobs(uow: UnitOfWork) -> int:
    return jobs.resend_pending(uow)


@jobs.periodic("core.prune_rate_limits", every=dt.timedelta(hours=1))
@jobs.actor("core.prune_rate_limits", queue="default", time_limit_ms=60_000, max_retries=0)
def prune_rate_limits(uow: UnitOfWork) -> int:
    """Rate-limit windows older than a day are of no use (the longest window is an hour)."""
    return ratelimit.prune(uow.session, before=utc_now() - dt.timedelta(days=1))


@jobs.periodic("core.prune_finished_jobs", every=dt.timedelta(hours=6))
@jobs.actor("core.prune_finished_jobs", queue="default", time_limit_ms=300_000, max_retries=0)
def prune_finished_jobs(uow: UnitOfWork) -> int:
    """Durable jobs done and periodic runs' rows are kept a week, then deleted: every periodic run and every job
    writes one, thousands a day, and nothing reads them after (failed jobs stay until staff deal with them)."""
    return jobs.prune_finished(uow.session, now=utc_now(), keep=dt.timedelta(days=7))


@jobs.periodic("core.prune_staff_sessions", every=dt.timedelta(hours=6))
@jobs.actor("core.prune_staff_sessions", queue="default", time_limit_ms=60_000, max_retries=0)
def prune_staff_sessions(uow: UnitOfWork) -> int:
    """Expired or revoked login sessions and used or expired reset links are kept a week, then deleted."""
    cutoff = utc_now() - dt.timedelta(days=7)
    sessions = uow.session.execute(
        sa.delete(StaffSession).where(
            sa.or_(col(StaffSession.expires_at) < cutoff, col(StaffSession.revoked_at) < cutoff)
        )
    )
    resets = uow.session.execute(sa.delete(PasswordReset).where(col(PasswordReset.expires_at) < cutoff))
    return int(sessions.rowcount or 0) + int(resets.rowcount or 0)  # type: ignore[attr-defined]
