"""Two deliveries of a job that claims itself counted at once after its first run failed (dramatiq's retry and the
sweep's copy, both counted apart), the one counted second claiming first: the other finds the job held, steps aside
and takes back its count. The run that claimed is then run 2 of the job, not the number its count gave it (3): its
failure must leave the job its third run. Each delivery runs on a thread of its own, on SQLite and PostgreSQL."""

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
        events.extend(threading.Event() for _ in range(5))
    STARTED.clear()
    FAIL.clear()
    yield
    for events in (GO, FINISH):
        for event in events:
            event.set()


@jobs.actor("tests.s15r_stepped_aside", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15r_stepped_aside(name: str, delivery: int) -> None:
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
        raise RuntimeError(f"the provider said no to delivery {delivery}")
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


ACTOR = "tests.s15r_stepped_aside"


def _hold(runtime: Runtime) -> dict[str, Any]:
    with runtime.unit_of_work() as uow:
        uow.enqueue(ACTOR, name="twice", delivery=0)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver(kwargs: dict[str, Any], delivery: int, *, retries: int = 0) -> threading.Thread:
    """A delivery on a thread of its own. `retries`: dramatiq's retry of a run that failed; 0: a first delivery, or a
    copy (the sweep's), counted apart before the job runs once the row shows an earlier run."""

    def deliver() -> None:
        actor = jobs._dramatiq_actors[ACTOR]
        arguments = {**kwargs, "delivery": delivery}
        proxy = MessageProxy(actor.message_with_options(kwargs=arguments, retries=retries))
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


def test_a_run_counted_last_that_claimed_first_is_not_the_last_once_the_other_stepped_aside(runtime: Runtime) -> None:
    """Three runs allowed (max_retries=2). The first run fails (the row counts 1). dramatiq's retry and the sweep's
    copy are counted (2 and 3); the copy claims, the retry finds the job held and takes its count back (the row counts
    2). The copy fails: judged by its count's number (3) it was the last, and the job failed after two runs of three.
    It is run 2: the job stays pending, and the next delivery (the sweep's next copy) runs it."""
    kwargs = _hold(runtime)
    FAIL.add(0)
    for event in (GO[0], FINISH[0]):
        event.set()
    _deliver(kwargs, 0).join(10)
    assert (_row(runtime).status, _row(runtime).attempts) == (JobStatus.PENDING, 1)
    retry = _deliver(kwargs, 1, retries=1)
    assert ARRIVED[1].wait(10)
    copy = _deliver(kwargs, 2)
    assert ARRIVED[2].wait(10)
    GO[2].set()  # counted (the row shows an earlier run), then claims
    assert CLAIMED[2].wait(10)
    assert _row(runtime).attempts == 3
    GO[1].set()  # finds the job held by the copy, and does nothing
    retry.join(10)
    assert not retry.is_alive() and not CLAIMED[1].is_set()
    assert _row(runtime).attempts == 2
    FAIL.add(2)
    FINISH[2].set()
    copy.join(10)
    row = _row(runtime)
    assert STARTED == [0, 2]
    assert row.status == JobStatus.PENDING, f"given up after two runs of three: {row.last_error}"
    assert row.attempts == 2
    for event in (GO[3], FINISH[3]):
        event.set()
    _deliver(kwargs, 3).join(10)  # the sweep's next copy
    row = _row(runtime)
    assert STARTED == [0, 2, 3]
    assert (row.status, row.attempts) == (JobStatus.DONE, 3)
