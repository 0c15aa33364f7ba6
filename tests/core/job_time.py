"""Time passing for the durable jobs' sweep in tests. The sweep judges what is due on the database's clock
(PostgreSQL), which a test cannot move: the rows' times are moved back instead, on both databases."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from core.models import Job
from core.runtime import Runtime


def time_passes(runtime: Runtime, passed: dt.timedelta, *, actor_name: str | None = None) -> None:
    """`passed` goes by for the jobs (of `actor_name`, or all): when each is due, was sent and is held until."""
    with runtime.unit_of_work() as uow:
        query = select(Job)
        if actor_name is not None:
            query = query.where(Job.actor_name == actor_name)
        for job in uow.session.exec(query).all():
            job.available_at -= passed
            if job.last_sent_at is not None:
                job.last_sent_at -= passed
            if job.running_until is not None:
                job.running_until -= passed
