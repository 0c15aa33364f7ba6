"""The sweep takes the oldest pending rows first, a thousand at a time. Rows of a job this release does not know (one
renamed or removed, whose rows stay pending for good; a newer release's during a rolling deploy) are left pending
and untouched, so they stay the oldest: a thousand of them filled every sweep's batch, and no lost message of any
other job was ever sent again."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import InlineWorker, Runtime
from tests.core.job_time import time_passes

RUNS: list[str] = []


@jobs.actor("tests.s17i_remember", max_retries=0)
def s17i_remember(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    uow.session.add(AppSecret(name=name, value="x"))
    RUNS.append(name)


def test_rows_of_a_job_since_removed_do_not_starve_the_sweep_of_the_jobs_it_knows(
    runtime: Runtime, worker: InlineWorker
) -> None:
    RUNS.clear()
    with runtime.unit_of_work() as uow:  # written by an old release, whose job the new one renamed
        for number in range(1000):
            jobs.record_job(uow.session, "tests.s17i_renamed_in_a_release", {"number": number}, None)
    time_passes(runtime, dt.timedelta(hours=1))
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17i_remember", name="lost")
        uow.jobs.clear()  # its message was lost (a broker restart)
    time_passes(runtime, dt.timedelta(minutes=5), actor_name="tests.s17i_remember")

    with runtime.unit_of_work() as uow:  # the scheduler's minute: the periodic sweep, through the worker
        uow.enqueue("core.resend_pending_jobs")
    worker.join()

    assert RUNS == ["lost"], "the sweep never sent the lost job again"
    with runtime.read_session() as session:
        statuses = {job.actor_name: job.status for job in session.exec(select(Job)).all()}
    assert statuses["tests.s17i_remember"] == JobStatus.DONE
    assert statuses["tests.s17i_renamed_in_a_release"] == JobStatus.PENDING
