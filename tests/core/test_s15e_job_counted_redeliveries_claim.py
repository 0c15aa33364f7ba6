"""A job that claims itself, whose first delivery claims it with its work in one transaction (a failure there rolls the
claim back: the delivery is uncounted until its failure is recorded). Two redeliveries (RabbitMQ's flag) are counted
apart while it holds the job, each checking the job's limit with its own number (1 and 2 of 2). The first delivery's
failure then leaves the row counting 3 runs, pending: the redelivery counted last may still run.

The redelivery counted first then claimed the job, read the row's count (3) and gave the job up unrun after one real
run, as a worker that died "3 times". A run counted apart has checked the limit with its own number already: its claim
must run the job (run 2 of 2), and the other redelivery step aside. Each delivery runs on a thread of its own, with its
own connection, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import jobs
from core.models import AppSecret, JobStatus
from core.runtime import Runtime, get_runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, in_thread, only_job

GATES = Gates(deliveries=3)
MAX_RETRIES = 1
ACTOR = "tests.s15e_claims_with_its_work"


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor(ACTOR, max_retries=MAX_RETRIES, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15e_claims_with_its_work(name: str, delivery: int) -> None:
    """The first delivery claims the job and starts its work in the claim's transaction (it holds the row there until
    the test lets it go on); each redelivery, counted apart, waits for the test before it claims and again before it
    works, its claim committed apart from its work."""
    if delivery != 0:
        claims_itself_then_works(GATES, name, delivery, waits_after_claim=True)
        return
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
        GATES.arrive(delivery)
        GATES.start(delivery)
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


def _redelivery(kwargs: dict[str, Any], delivery: int) -> threading.Thread:
    return in_thread(lambda: deliver(ACTOR, kwargs, delivery, redelivered=True))


@contextlib.contextmanager
def first_fails_after_two_redeliveries_were_counted(runtime: Runtime) -> Iterator[dict[int, threading.Thread]]:
    """The first delivery (0) takes the job uncounted and fails; redelivery B (1) is counted as its lock goes, then C
    (2), both before its failure is recorded. Yields the redeliveries' threads, each waiting before its claim, once the
    first delivery's failure is recorded."""
    kwargs = hold(runtime, ACTOR, name="raced", delivery=0)
    GATES.fail.add(0)
    first_thread: list[threading.Thread] = []
    may_record_failure = threading.Event()

    def first_records_its_failure_after_both_counts(_session: Any) -> None:
        # Its claim has rolled back with its work, and the row is free: both redeliveries are counted before its
        # failure is recorded.
        if first_thread and threading.current_thread() is first_thread[0] and GATES.started:
            assert may_record_failure.wait(20), "the test never let the first delivery record its failure"

    sa.event.listen(runtime.sessions, "after_rollback", first_records_its_failure_after_both_counts)
    redeliveries: dict[int, threading.Thread] = {}
    try:
        first = threading.Thread(target=deliver, args=(ACTOR, kwargs, 0), daemon=True)
        first_thread.append(first)  # before it starts: the hook tells its thread apart
        first.start()
        assert GATES.arrived[0].wait(10)  # the first delivery holds the job, uncounted: its transaction has the row
        redeliveries[1] = _redelivery(kwargs, 1)  # B: its count waits for the first delivery's lock
        GATES.go[0].set()  # the first delivery fails: its claim rolls back with its work
        assert GATES.arrived[1].wait(10), "the redelivery B was never counted"
        redeliveries[2] = _redelivery(kwargs, 2)  # C: counted after B
        assert GATES.arrived[2].wait(10), "the redelivery C was never counted"
        may_record_failure.set()
        first.join(20)
        assert not first.is_alive()
        yield redeliveries
    finally:
        may_record_failure.set()
        GATES.release()
        for thread in (*first_thread, *redeliveries.values()):
            thread.join(20)  # out of the hook before it goes
        sa.event.remove(runtime.sessions, "after_rollback", first_records_its_failure_after_both_counts)


def test_a_redelivery_counted_apart_runs_the_job_after_the_first_delivery_fails_though_the_row_counts_past_the_limit(
    runtime: Runtime,
) -> None:
    """max_retries=1: two runs. B claims the job as run 2 and works; C steps aside; B's success finishes the job."""
    with first_fails_after_two_redeliveries_were_counted(runtime) as redeliveries:
        row = only_job(runtime)
        # Right: C (counted last, as run 2 of 2) may still run, so the job is not given up.
        assert (row.status, row.attempts) == (JobStatus.PENDING, MAX_RETRIES + 2), row.last_error
        assert "delivery 0" in (row.last_error or "")

        GATES.go[1].set()  # B claims
        assert GATES.claimed[1].wait(10), f"B did not claim the job: {only_job(runtime).last_error}"
        assert only_job(runtime).status == JobStatus.PENDING

        GATES.go[2].set()  # C finds B holding the job: it steps aside, and takes its count back (it never ran)
        redeliveries[2].join(20)
        assert not redeliveries[2].is_alive()
        row = only_job(runtime)
        assert (row.status, row.attempts) == (JobStatus.PENDING, MAX_RETRIES + 1)
        assert row.running_until is not None  # B holds it

        GATES.finish[1].set()  # B works, and succeeds
        redeliveries[1].join(20)
        assert not redeliveries[1].is_alive()
    row = only_job(runtime)
    assert GATES.started == [0, 1], "B must run the job as its run 2, and C must not run it"
    assert (row.status, row.attempts) == (JobStatus.DONE, MAX_RETRIES + 1)
    with runtime.read_session() as session:
        assert session.get(AppSecret, "raced") is not None


def test_counted_redeliveries_that_each_fail_run_the_job_at_most_max_retries_plus_one_times(runtime: Runtime) -> None:
    """The worst order: B claims and fails before C tries to claim. B takes the job as run 2 of 2 (its number is
    fixed when it takes the job: the row's count less C's, which has not taken it), so its failure ends the job with
    its own error and C, finding it ended, does nothing: no third run, and no "worker died" give-up of a job whose
    runs all failed."""
    with first_fails_after_two_redeliveries_were_counted(runtime) as redeliveries:
        GATES.fail.add(1)
        GATES.fail.add(2)
        GATES.go[1].set()
        GATES.finish[1].set()
        redeliveries[1].join(20)
        assert not redeliveries[1].is_alive()
        GATES.go[2].set()
        GATES.finish[2].set()
        redeliveries[2].join(20)
        assert not redeliveries[2].is_alive()
    row = only_job(runtime)
    assert len(GATES.started) == MAX_RETRIES + 1, f"the job ran {len(GATES.started)} times"
    assert row.status == JobStatus.FAILED, row.last_error
    assert "the worker died" not in (row.last_error or "")
