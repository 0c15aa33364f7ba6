"""Two deliveries of one job counted at once (a dramatiq retry and the sweep's copy, both counted apart as possible
redeliveries): a count taken by a delivery that then does not run must not use up one of the job's retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import Runtime, get_runtime

ARRIVED: list[threading.Event] = []  # set as each delivery reaches the job, before its claim
GO: list[threading.Event] = []  # each delivery claims once its event is set
CLAIMED: list[threading.Event] = []  # set once a delivery's claim has committed
FINISH: list[threading.Event] = []  # a delivery that claimed works once its event is set
STARTED: list[int] = []
FAIL: set[int] = set()  # the deliveries whose work fails
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    for events in (ARRIVED, GO, CLAIMED, FINISH):
        events.clear()
        events.extend(threading.Event() for _ in range(4))
    STARTED.clear()
    FAIL.clear()
    yield
    for events in (GO, FINISH):
        for event in events:
            event.set()


@jobs.actor("tests.s13a_counted", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s13a_counted(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims and before
    it works, so the test orders the deliveries as two workers may."""
    ARRIVED[delivery].set()
    assert GO[delivery].wait(20)
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    CLAIMED[delivery].set()
    assert FINISH[delivery].wait(20)
    with _lock:
        STARTED.append(delivery)
    if delivery in FAIL:
        raise RuntimeError("the provider said no")
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


def _hold(runtime: Runtime) -> dict[str, Any]:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s13a_counted", name="twice", delivery=0)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver_retry(kwargs: dict[str, Any], delivery: int) -> threading.Thread:
    """A delivery that may follow a run that died (a dramatiq retry): it is counted apart before the job runs."""

    def deliver() -> None:
        actor = jobs._dramatiq_actors["tests.s13a_counted"]
        arguments = {**kwargs, "delivery": delivery}
        proxy = MessageProxy(actor.message_with_options(kwargs=arguments, retries=1))
        current = CurrentMessage()
        current.before_process_message(actor.broker, proxy)
        try:
            actor(**arguments)
        except RuntimeError:
            pass  # its failure is recorded by the job's wrapper; dramatiq would retry it
        finally:
            current.after_process_message(actor.broker, proxy)

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    return thread


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


def test_a_failure_is_final_by_its_own_runs_count_not_a_copy_counted_since(runtime: Runtime) -> None:
    """Two runs allowed (max_retries=1). Two deliveries are counted (1 and 2) before either claims; the first claims
    and fails. Judged by the row's count (2), its failure was the job's last: the job failed after one run, and the
    second delivery found it failed. Judged by its own number (1), it is not: the second runs, and the job is done."""
    kwargs = _hold(runtime)
    first = _deliver_retry(kwargs, 1)
    assert ARRIVED[1].wait(10)
    second = _deliver_retry(kwargs, 2)
    assert ARRIVED[2].wait(10)
    assert _row(runtime).attempts == 2
    FAIL.add(1)
    GO[1].set()
    FINISH[1].set()
    first.join(10)
    assert _row(runtime).status == JobStatus.PENDING, "the first run's failure ended the job: its second never ran"
    GO[2].set()
    FINISH[2].set()
    second.join(10)
    row = _row(runtime)
    assert STARTED == [1, 2]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_copy_that_finds_the_job_held_takes_back_its_count(runtime: Runtime) -> None:
    """Counted before it found another run holding the job, a copy that did nothing kept its count: the run holding
    the job, failing, then had a retry fewer (its retry found the job's runs used up and gave it up unrun)."""
    kwargs = _hold(runtime)
    first = _deliver_retry(kwargs, 1)
    assert ARRIVED[1].wait(10)
    copy = _deliver_retry(kwargs, 2)
    assert ARRIVED[2].wait(10)
    GO[1].set()
    assert CLAIMED[1].wait(10)
    GO[2].set()  # the copy finds the job held by the first run, and does nothing
    copy.join(10)
    assert not copy.is_alive() and not CLAIMED[2].is_set()
    assert _row(runtime).attempts == 1, "the copy that did nothing is still counted"
    FAIL.add(1)
    FINISH[1].set()
    first.join(10)
    assert _row(runtime).status == JobStatus.PENDING
    retry = _deliver_retry(kwargs, 3)  # dramatiq's retry of the first run
    GO[3].set()
    FINISH[3].set()
    retry.join(10)
    row = _row(runtime)
    assert STARTED == [1, 3], "the job was given up with a retry left"
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)
