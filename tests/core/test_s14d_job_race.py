"""A delivery counted past a job's last run, racing a run counted just before it: it must not give up the job that run
is about to take. The counted run names itself in the row, and is due until its time limit (`last_sent_at`); the
late delivery gives the job up only once that run has certainly ended (its time is up, or it was a run of a process of
this machine that is gone or no longer running it)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import jobs
from core.models import AppSecret, JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, in_thread, only_job

GATES = Gates(deliveries=4)


class Killed(BaseException):
    """The process dies here: nothing after it runs, and nothing records a failure."""


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s14d_claims_itself", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s14d_claims_itself(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims."""
    claims_itself_then_works(GATES, name, delivery)


@jobs.actor("tests.s14d_in_claim", max_retries=1, min_backoff_ms=10, max_backoff_ms=50)
def s14d_in_claim(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The usual durable job: claimed, worked and marked done in one transaction."""
    GATES.start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s14d_dies", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s14d_dies(name: str, delivery: int) -> None:
    """Its worker dies between its count and its claim (its first run fails)."""
    if delivery in GATES.fail:
        GATES.start(delivery)
    raise Killed()


def _first_run_fails(runtime: Runtime, actor_name: str) -> dict[str, Any]:
    """The job's first run fails: one run left (max_retries=1)."""
    kwargs = hold(runtime, actor_name, name="raced", delivery=0)
    GATES.fail.add(0)
    GATES.go[0].set()
    deliver(actor_name, kwargs, 0)
    row = only_job(runtime)
    assert (row.status, row.attempts, GATES.started) == (JobStatus.PENDING, 1, [0])
    return kwargs


def test_a_copy_counted_past_the_last_run_leaves_the_job_to_the_run_counted_before_it(runtime: Runtime) -> None:
    """dramatiq's retry is counted (run 2 of 2) and is about to claim the job when a copy arrives: counted, the copy
    is a third run, one too many, and it gave the job up; the retry then found it failed and never ran. The copy now
    sees the retry's run is alive and does nothing; the retry runs the job."""
    kwargs = _first_run_fails(runtime, "tests.s14d_claims_itself")
    retry = in_thread(lambda: deliver("tests.s14d_claims_itself", kwargs, 1, retries=1))
    assert GATES.arrived[1].wait(10)  # counted, not yet claimed
    assert only_job(runtime).attempts == 2
    GATES.go[2].set()
    deliver("tests.s14d_claims_itself", kwargs, 2)  # the copy, on another thread (its own connection)
    assert only_job(runtime).status == JobStatus.PENDING, "the copy gave up the job its last run was about to do"
    GATES.go[1].set()
    retry.join(10)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_copy_counted_past_the_last_run_of_a_job_working_in_its_claim_leaves_it_to_that_run(
    runtime: Runtime,
) -> None:
    """The same race for a job claimed, worked and marked done in one transaction: its retry is counted in a
    transaction of its own, and the copy comes between that commit and the retry's claim. The retry is held there by
    the test when its count commits (SQLAlchemy's session event, on the retry's thread only)."""
    kwargs = _first_run_fails(runtime, "tests.s14d_in_claim")
    retry_thread: list[threading.Thread] = []
    counted = threading.Event()
    go_on = threading.Event()

    def hold_after_count(_session: Any) -> None:
        if retry_thread and threading.current_thread() is retry_thread[0] and not counted.is_set():
            counted.set()
            assert go_on.wait(20)

    sa.event.listen(runtime.sessions, "after_commit", hold_after_count)
    try:
        retry = threading.Thread(
            target=deliver, args=("tests.s14d_in_claim", kwargs, 1), kwargs={"retries": 1}, daemon=True
        )
        retry_thread.append(retry)
        retry.start()
        assert counted.wait(10)  # its count has committed; its claim has not started
        assert only_job(runtime).attempts == 2
        deliver("tests.s14d_in_claim", kwargs, 2)  # the copy
        assert only_job(runtime).status == JobStatus.PENDING, "the copy gave up the job its last run was about to do"
        go_on.set()
        retry_thread[0].join(10)
    finally:
        go_on.set()
        sa.event.remove(runtime.sessions, "after_commit", hold_after_count)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_run_counted_last_that_fails_still_gives_the_job_up_once(runtime: Runtime) -> None:
    """The run the copy left the job to fails: it was the last, so the job is failed, by that run, once."""
    kwargs = _first_run_fails(runtime, "tests.s14d_claims_itself")
    retry = in_thread(lambda: deliver("tests.s14d_claims_itself", kwargs, 1, retries=1))
    assert GATES.arrived[1].wait(10)
    GATES.go[2].set()
    deliver("tests.s14d_claims_itself", kwargs, 2)
    GATES.fail.add(1)
    GATES.go[1].set()
    retry.join(10)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2)
    assert "the provider said no" in (row.last_error or "")


def test_a_copy_counted_past_the_last_run_gives_up_once_that_run_has_died(runtime: Runtime) -> None:
    """A run of this process that is no longer running (its worker died between its count and its claim) holds
    nothing: the next delivery gives the job up at once, as before, without waiting for its time limit."""
    kwargs = _first_run_fails(runtime, "tests.s14d_dies")
    with contextlib.suppress(Killed):
        deliver("tests.s14d_dies", kwargs, 1, retries=1)  # counted as run 2, then dies
    row = only_job(runtime)
    assert (row.status, row.attempts) == (JobStatus.PENDING, 2)
    deliver("tests.s14d_dies", kwargs, 2, retries=1)
    row = only_job(runtime)
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2)
    assert "the worker died" in (row.last_error or "")
