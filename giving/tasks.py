"""Jobs that span packages (the composition root's own), and the sweep that re-sends lost jobs."""

from __future__ import annotations

import datetime as dt

from core import jobs, ratelimit
from core.clock import utc_now
from core.db import UnitOfWork


@jobs.periodic("core.resend_pending_jobs", every=dt.timedelta(minutes=1))
@jobs.actor("core.resend_pending_jobs", queue="default", time_limit_ms=60_000, max_retries=0)
def resend_pending_jobs(uow: UnitOfWork) -> int:
    return jobs.resend_pending(uow)


@jobs.periodic("core.prune_rate_limits", every=dt.timedelta(hours=1))
@jobs.actor("core.prune_rate_limits", queue="default", time_limit_ms=60_000, max_retries=0)
def prune_rate_limits(uow: UnitOfWork) -> int:
    """Rate-limit windows older than a day are of no use (the longest window is an hour)."""
    return ratelimit.prune(uow.session, before=utc_now() - dt.timedelta(days=1))
