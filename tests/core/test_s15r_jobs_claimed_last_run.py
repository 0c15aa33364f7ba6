"""A job that claims itself with its work in the claim's transaction (giftaid's delete at HMRC, the receipts'
numbering): a first delivery whose work fails rolls its claim back with it, and its failure counts it only once
recorded. A redelivery (RabbitMQ's flag) is counted apart meanwhile, as that delivery's lock goes, and is numbered 1
though it is run 2. Its failure must end the job as the job's last run, as it does for a job claimed, worked and marked
done in one transaction (test_s15c_job_run_numbers): not leave it pending, with no retry to come, for the sweep to give
up minutes later as a worker that died. Each delivery runs on a thread of its own, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import Runtime, get_runtime

ARRIVED: list[threading.Event] = []  # set as each delivery has claimed the job, in its claim's transaction
GO: list[threading.Event] = []  # each delivery goes on once its event is set
STARTED: list[int] = []
FAIL_IN_CLAIM: set[int] = set()  # the deliveries whose work fails in the claim's transaction (rolled back with it)
FAIL_AFTER: set[int] = set()  # the deliveries whose work fails after their claim has committed
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    for events in (ARRIVED, GO):
        events.clear()
        events.extend(threading.Event() for _ in range(3))
    STARTED.clear()
    FAIL_IN_CLAIM.clear()
    FAIL_AFTER.clear()
    yield
    for event in GO:
        event.set()


@jobs.actor("tests.s15r_claims_with_its_work", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15r_claims_with_its_work(name: str, delivery: int) -> None:
    """Claims itself and starts its work in the same transaction (a failure there rolls the claim back with it), then
    finishes in another, as the receipts number a document with their claim and then render and send it."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
        ARRIVED[delivery].set()
        assert GO[delivery].wait(20), "the test never let this delivery go on"
        with _lock:
            STARTED.append(delivery)
        if delivery in FAIL_IN_CLAIM:
            raise RuntimeError(f"the provider said no to delivery {delivery}")
        uow.session.merge(AppSecret(name=f"{name}-numbered", value="x"))
    if delivery in FAIL_AFTER:
        raise RuntimeError(f"the provider said no to delivery {delivery}")
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


ACTOR = "tests.s15r_claims_with_its_work"


def _hold(runtime: Runtime) -> dict[str, Any]:
    """Enqueue the job without sending its message (delivered by the test)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(ACTOR, name="raced", delivery=0)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver(kwargs: dict[str, Any], delivery: int, *, redelivered: bool = False) -> None:
    """One delivery on this thread, as a dramatiq worker thread runs it. `redelivered`: RabbitMQ's flag on a message
    it gives again (its consumer went away while running it)."""
    actor = jobs._dramatiq_actors[ACTOR]
    arguments = {**kwargs, "delivery": delivery}
    proxy = MessageProxy(actor.message_with_options(kwargs=arguments))
    if redelivered:
        proxy.redelivered = True  # type: ignore[attr-defined]
    current = CurrentMessage()
    current.before_process_message(actor.broker, proxy)
    try:
        actor(**arguments)
    except RuntimeError:
        pass  # recorded by the job's wrapper; dramatiq would retry it
    finally:
        current.after_process_message(actor.broker, proxy)


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


@contextlib.contextmanager
def _first_fails_while_a_redelivery_is_counted(runtime: Runtime) -> Iterator[threading.Thread]:
    """The first delivery claims the job and fails in its claim's transaction; a redelivery counted meanwhile, as the
    first's lock goes, waits after its count until the test sets GO[1]. Yields the redelivery's thread, once the first
    has recorded its failure."""
    kwargs = _hold(runtime)
    FAIL_IN_CLAIM.add(0)
    first_thread: list[threading.Thread] = []
    counted = threading.Event()

    def first_waits_for_the_count(_session: Any) -> None:
        # Its claim and work have rolled back: the redelivery's count commits before its failure is recorded.
        if first_thread and threading.current_thread() is first_thread[0] and STARTED:
            assert counted.wait(20), "the redelivery was never counted"

    def redelivery_counted(_session: Any) -> None:
        if first_thread and threading.current_thread() is not first_thread[0] and not counted.is_set():
            counted.set()
            assert GO[1].wait(20), "the test never let the redelivery go on"

    sa.event.listen(runtime.sessions, "after_rollback", first_waits_for_the_count)
    sa.event.listen(runtime.sessions, "after_commit", redelivery_counted)
    redelivery: threading.Thread | None = None
    try:
        first = threading.Thread(target=_deliver, args=(kwargs, 0), daemon=True)
        first_thread.append(first)
        first.start()
        assert ARRIVED[0].wait(10)  # the first delivery's claim holds the row (its transaction has not ended)
        redelivery = threading.Thread(target=_deliver, args=(kwargs, 1), kwargs={"redelivered": True}, daemon=True)
        redelivery.start()
        GO[0].set()
        first.join(20)
        assert not first.is_alive()
        assert STARTED == [0]
        yield redelivery
    finally:
        counted.set()
        GO[1].set()
        if redelivery is not None:
            redelivery.join(20)  # out of the hooks before they go
        sa.event.remove(runtime.sessions, "after_rollback", first_waits_for_the_count)
        sa.event.remove(runtime.sessions, "after_commit", redelivery_counted)


def test_a_first_run_rolled_back_with_its_claim_leaves_the_job_to_the_redelivery_counted_meanwhile(
    runtime: Runtime,
) -> None:
    """max_retries=1: two runs. The first delivery is run 1; the redelivery runs the job as run 2."""
    with _first_fails_while_a_redelivery_is_counted(runtime) as redelivery:
        row = _row(runtime)
        assert row.status == JobStatus.PENDING, f"given up after one run of two: {row.last_error}"
        assert row.attempts == 2
        GO[1].set()
        redelivery.join(20)
    row = _row(runtime)
    assert STARTED == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_the_redelivery_that_claimed_the_job_and_fails_gives_it_up_as_its_last_run(runtime: Runtime) -> None:
    """The redelivery was counted as run 1 (the first delivery's failure was counted after it) and claimed the job as
    the row's run 2, the last: its failure gives the job up at once with its own error. It was left pending, its
    retries used up (dramatiq retries neither message), until the sweep's copy gave it up minutes later as a job whose
    worker died."""
    with _first_fails_while_a_redelivery_is_counted(runtime) as redelivery:
        FAIL_AFTER.add(1)
        GO[1].set()
        redelivery.join(20)
    row = _row(runtime)
    assert STARTED == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2), "the job's last run failed and it was not given up"
    assert "delivery 1" in (row.last_error or "")
    assert "the worker died" not in (row.last_error or "")
