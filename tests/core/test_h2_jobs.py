"""Durable jobs and the sweep: a job no process knows, and a job running in its claim's transaction."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import InlineWorker, Runtime
from tests.core.job_time import time_passes

RUNS: list[str] = []
HOLDING = threading.Event()
RELEASE = threading.Event()


@jobs.actor("tests.h2_remember", max_retries=0)
def h2_remember(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    uow.session.add(AppSecret(name=name, value="x"))
    RUNS.append(name)


@jobs.actor("tests.h2_holds_its_row", max_retries=0, time_limit_ms=600_000)
def h2_holds_its_row(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    """Runs in the transaction that claimed (and on PostgreSQL locked) its row, for as long as the test likes."""
    HOLDING.set()
    RELEASE.wait(20)
    RUNS.append(name)


@pytest.fixture(autouse=True)
def _clear() -> None:
    RUNS.clear()
    HOLDING.clear()
    RELEASE.clear()


def _rows(runtime: Runtime) -> dict[str, Job]:
    with runtime.read_session() as session:
        return {job.actor_name: job for job in session.exec(select(Job)).all()}


def test_enqueueing_a_job_nobody_can_run_is_refused_before_the_commit(runtime: Runtime) -> None:
    """A job name no process knows (a typo, a job renamed) is a programming error: the unit of work must fail and
    change nothing, not commit its work and a row that no worker will ever run, and then raise (an error answer for
    work that was done)."""
    with pytest.raises(RuntimeError, match=r"tests\.no_such_job"), runtime.unit_of_work() as uow:
        uow.session.add(AppSecret(name="work", value="x"))
        uow.enqueue("tests.no_such_job", name="x")
    with runtime.read_session() as session:
        assert session.get(AppSecret, "work") is None
        assert session.exec(select(Job)).all() == []


def test_a_row_of_a_job_since_removed_does_not_stop_the_sweep_sending_the_others(
    runtime: Runtime, worker: InlineWorker
) -> None:
    """A pending row whose job no longer exists (renamed or removed in a release) must not stop the sweep: it used to
    raise before sending anything, after committing, so every lost message stayed lost for good. The row is left
    pending and untouched (it may be a newer release's job, during a rolling deploy, which that release's workers
    send); the others are sent."""
    with runtime.unit_of_work() as uow:
        jobs.record_job(uow.session, "tests.renamed_in_a_release", {"name": "old"}, None)  # written by an old release
        uow.enqueue("tests.h2_remember", name="lost")
        uow.jobs.clear()  # its message was lost
    with runtime.unit_of_work() as uow:
        jobs.resend_pending(uow, older_than=dt.timedelta(0))
    worker.join()
    assert RUNS == ["lost"]
    rows = _rows(runtime)
    assert rows["tests.h2_remember"].status == JobStatus.DONE
    orphan = rows["tests.renamed_in_a_release"]
    assert (orphan.status, orphan.attempts, orphan.last_error or "") == (JobStatus.PENDING, 0, "")


def test_sending_committed_jobs_never_raises_and_sends_the_known_ones(runtime: Runtime, worker: InlineWorker) -> None:
    """`send_jobs` runs after the commit: an unknown job beside others is logged, and the others still go."""
    from core.db import PendingJob

    jobs.send_jobs([PendingJob("tests.no_such_job", {}), PendingJob("tests.h2_remember", {"name": "known"})])
    worker.join()
    assert RUNS == ["known"]


def test_the_sweep_is_not_held_up_by_a_job_running_in_the_transaction_that_claimed_it(
    runtime: Runtime, worker: InlineWorker
) -> None:
    """A job whose work runs in its claim's transaction holds its row's lock until it commits (PostgreSQL). The sweep
    must pass over that row (it is running), not wait on it: waiting, the sweep sent nothing else and held a worker
    thread and its other rows' locks until the job ended (the postal batch may run for 10 minutes), and the next
    minute's sweep queued behind it."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks: a write transaction holds the whole database")
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.h2_remember", name="lost")
        uow.jobs.clear()  # its message was lost
    time_passes(runtime, dt.timedelta(minutes=3), actor_name="tests.h2_remember")  # lost 3 minutes ago
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.h2_holds_its_row", name="long")
    try:
        assert HOLDING.wait(10)
        counts: list[int] = []

        def sweep() -> None:
            with runtime.unit_of_work() as uow:
                counts.append(jobs.resend_pending(uow))

        sweeper = threading.Thread(target=sweep, daemon=True)
        sweeper.start()
        sweeper.join(5)
        assert not sweeper.is_alive(), "the sweep waited on the running job's row"
        assert counts == [1]  # the lost job; not the one running
    finally:
        RELEASE.set()
    worker.join()
    assert sorted(RUNS) == ["long", "lost"]
    assert {job.status for job in _rows(runtime).values()} == {JobStatus.DONE}
