"""A broker-less process starting up (`giving receipts annual`) sends every pending job again
(`resend_pending(older_than=0)`). A job whose last run a live process has counted and is about to claim must be left
to that run, as a job it holds is: marking the row sent now cut short the time the count names that run for, and the
start's copy, counted past the job's last run, then took the live run for dead and gave the job up."""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from core import jobs
from core.models import Job, JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, in_thread, only_job

GATES = Gates(deliveries=3)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s14r_claims_itself", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s14r_claims_itself(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims."""
    claims_itself_then_works(GATES, name, delivery)


ACTOR = "tests.s14r_claims_itself"


def test_a_broker_less_start_leaves_a_job_to_its_last_run_counted_and_about_to_claim_it(runtime: Runtime) -> None:
    kwargs = hold(runtime, ACTOR, name="raced", delivery=0)
    GATES.fail.add(0)
    GATES.go[0].set()
    deliver(ACTOR, kwargs, 0)  # the first run fails: one run left
    retry = in_thread(lambda: deliver(ACTOR, kwargs, 1, retries=1))
    assert GATES.arrived[1].wait(10)  # dramatiq's retry: counted as the job's last run, not yet claimed
    assert only_job(runtime).attempts == 2

    with runtime.unit_of_work() as uow:  # a broker-less process starts up meanwhile
        sent = jobs.resend_pending(uow, older_than=dt.timedelta(0))
        uow.jobs.clear()
    GATES.go[2].set()
    deliver(ACTOR, kwargs, 2)  # a copy (the start's, had it sent one), counted past the last run
    assert only_job(runtime).status == JobStatus.PENDING, (
        "the start's copy gave up the job its last run was about to do"
    )
    assert sent == 0, "the start sent a copy of a job a live run is about to claim"

    GATES.go[1].set()
    retry.join(10)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_broker_less_start_sends_at_once_a_job_counted_by_a_process_that_has_exited(runtime: Runtime) -> None:
    """The run a count names died with its process (of this machine): the start sends the job again at once, its name
    ended, without waiting for that run's time limit."""
    hold(runtime, ACTOR, name="orphan", delivery=0)
    gone = subprocess.Popen(["true"])
    gone.wait()
    table = Job.__table__  # type: ignore[attr-defined]
    with runtime.unit_of_work() as uow:  # counted by that process, due until its time limit, an hour from now
        uow.session.execute(
            sa.update(table).values(
                attempts=1,
                run_id=uuid.uuid4(),
                running_until=None,
                run_host=jobs.this_process()[0],
                run_process=f"{gone.pid}:1",
                last_sent_at=jobs.utc_now() + dt.timedelta(hours=1),
            )
        )
    with runtime.unit_of_work() as uow:
        assert jobs.resend_pending(uow, older_than=dt.timedelta(0)) == 1
        uow.jobs.clear()
    row = only_job(runtime)
    assert (row.run_id, row.run_process) == (None, None)
    assert row.last_sent_at is not None and row.last_sent_at < jobs.utc_now() + dt.timedelta(minutes=1)
