"""Two deliveries of a job that claims itself counted at once after its first run failed (dramatiq's retry and the
sweep's copy, both counted apart), the one counted second claiming first: the other finds the job held, steps aside
and takes back its count. The run that claimed is then run 2 of the job, not the number its count gave it (3): its
failure must leave the job its third run. Each delivery runs on a thread of its own, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from core import jobs
from core.models import JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, in_thread, only_job

GATES = Gates(deliveries=5)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s15r_stepped_aside", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15r_stepped_aside(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims and before
    it works, so the test orders the deliveries as two workers may."""
    claims_itself_then_works(GATES, name, delivery, waits_after_claim=True)


ACTOR = "tests.s15r_stepped_aside"


def _deliver(kwargs: dict[str, Any], delivery: int, *, retries: int = 0) -> threading.Thread:
    """A delivery on a thread of its own. `retries`: dramatiq's retry of a run that failed; 0: a first delivery, or a
    copy (the sweep's), counted apart before the job runs once the row shows an earlier run."""
    return in_thread(lambda: deliver(ACTOR, kwargs, delivery, retries=retries))


def test_a_run_counted_last_that_claimed_first_is_not_the_last_once_the_other_stepped_aside(runtime: Runtime) -> None:
    """Three runs allowed (max_retries=2). The first run fails (the row counts 1). dramatiq's retry and the sweep's
    copy are counted (2 and 3); the copy claims, the retry finds the job held and takes its count back (the row counts
    2). The copy fails: judged by its count's number (3) it was the last, and the job failed after two runs of three.
    It is run 2: the job stays pending, and the next delivery (the sweep's next copy) runs it."""
    kwargs = hold(runtime, ACTOR, name="twice", delivery=0)
    GATES.fail.add(0)
    for event in (GATES.go[0], GATES.finish[0]):
        event.set()
    _deliver(kwargs, 0).join(10)
    assert (only_job(runtime).status, only_job(runtime).attempts) == (JobStatus.PENDING, 1)
    retry = _deliver(kwargs, 1, retries=1)
    assert GATES.arrived[1].wait(10)
    copy = _deliver(kwargs, 2)
    assert GATES.arrived[2].wait(10)
    GATES.go[2].set()  # counted (the row shows an earlier run), then claims
    assert GATES.claimed[2].wait(10)
    assert only_job(runtime).attempts == 3
    GATES.go[1].set()  # finds the job held by the copy, and does nothing
    retry.join(10)
    assert not retry.is_alive() and not GATES.claimed[1].is_set()
    assert only_job(runtime).attempts == 2
    GATES.fail.add(2)
    GATES.finish[2].set()
    copy.join(10)
    row = only_job(runtime)
    assert GATES.started == [0, 2]
    assert row.status == JobStatus.PENDING, f"given up after two runs of three: {row.last_error}"
    assert row.attempts == 2
    for event in (GATES.go[3], GATES.finish[3]):
        event.set()
    _deliver(kwargs, 3).join(10)  # the sweep's next copy
    row = only_job(runtime)
    assert GATES.started == [0, 2, 3]
    assert (row.status, row.attempts) == (JobStatus.DONE, 3)
