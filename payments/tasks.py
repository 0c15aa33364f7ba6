"""Jobs of payments (dramatiq actors through core.jobs)."""

from __future__ import annotations

import datetime as dt

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from payments import service


@jobs.periodic("payments.check_instalments", every=dt.timedelta(hours=6))
@jobs.actor("payments.check_instalments", queue="default", time_limit_ms=300_000, max_retries=2)
def check_instalments(uow: UnitOfWork) -> int:
    """An alert (a review item on the supporter) for each monthly gift whose instalment is overdue past the grace."""
    grace = get_runtime().settings.donations.regular_grace_days
    return service.raise_missing_instalment_alerts(uow, grace_days=grace)
