"""Jobs that span packages (the composition root's own), and the sweep that re-sends lost jobs."""

from __future__ import annotations

import datetime as dt

from core import jobs
from core.db import UnitOfWork


@jobs.periodic("core.resend_pending_jobs", every=dt.timedelta(minutes=1))
@jobs.actor("core.resend_pending_jobs", queue="default", time_limit_ms=60_000, max_retries=0)
def resend_pending_jobs(uow: UnitOfWork) -> int:
    return jobs.resend_pending(uow)
