"""Two deliveries of one job counted at once (a dramatiq retry and the sweep's copy, both counted apart as possible
redeliveries): a count taken by a delivery that then does not run must not use up one of the job's retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from core import jobs
from core.models import JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, in_thread, only_job

GATES = Gates(deliveries=4)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s13a_counted", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s13a_counted(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims and before
    it works, so the test orders the deliveries as two workers may."""
    claims_itself_then_works(GATES, name, delivery, waits_after_claim=True)


ACTOR = "tests.s13a_counted"


def _deliver_retry(kwargs: dict[str, Any], delivery: int) -> threading.Thread:
    """A delivery that may follow a run that died (a dramatiq retry), on a thread of its own: it is counted apart
    before the job runs."""
    return in_thread(lambda: deliver(ACTOR, kwargs, delivery, retries=1))


def test_a_failure_is_final_by_its_own_runs_count_not_a_copy_counted_since(runtime: Runtime) -> None:
    """Two runs allowed (max_retries=1). Two deliveries are counted (1 and 2) before either claims; the first claims
    and fails. Judged by the row's count (2), its failure was the job's last: the job failed after one run, and the
    second delivery found it failed. Judged by its own number (1), it is not: the second runs, and the job is done."""
    kwargs = hold(runtime, ACTOR, name="twice", delivery=0)
    first = _deliver_retry(kwargs, 1)
    assert GATES.arrived[1].wait(10)
    second = _deliver_retry(kwargs, 2)
    assert GATES.arrived[2].wait(10)
    assert only_job(runtime).attempts == 2
    GATES.fail.add(1)
    GATES.go[1].set()
    GATES.finish[1].set()
    first.join(10)
    assert only_job(runtime).status == JobStatus.PENDING, "the first run's failure ended the job: its second never ran"
    GATES.go[2].set()
    GATES.finish[2].set()
    second.join(10)
    row = only_job(runtime)
    assert GATES.started == [1, 2]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_copy_that_finds_the_job_held_takes_back_its_count(runtime: Runtime) -> None:
    """Counted before it found another run holding the job, a copy that did nothing kept its count: the run holding
    the job, failing, then had a retry fewer (its retry found the job's runs used up and gave it up unrun)."""
    kwargs = hold(runtime, ACTOR, name="twice", delivery=0)
    first = _deliver_retry(kwargs, 1)
    assert GATES.arrived[1].wait(10)
    copy = _deliver_retry(kwargs, 2)
    assert GATES.arrived[2].wait(10)
    GATES.go[1].set()
    assert GATES.claimed[1].wait(10)
    GATES.go[2].set()  # the copy finds the job held by the first run, and does nothing
    copy.join(10)
    assert not copy.is_alive() and not GATES.claimed[2].is_set()
    assert only_job(runtime).attempts == 1, "the copy that did nothing is still counted"
    GATES.fail.add(1)
    GATES.finish[1].set()
    first.join(10)
    assert only_job(runtime).status == JobStatus.PENDING
    retry = _deliver_retry(kwargs, 3)  # dramatiq's retry of the first run
    GATES.go[3].set()
    GATES.finish[3].set()
    retry.join(10)
    row = only_job(runtime)
    assert GATES.started == [1, 3], "the job was given up with a retry left"
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)
