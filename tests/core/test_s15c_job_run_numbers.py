"""Whether a failed run of a durable job was its last allowed one is judged by that run's own number, not by the row's
count, which can hold a redelivery counted while the run held the job (still to run it), and, for a run counted
apart, the failure of a first delivery that took the job before it and was counted only afterwards.

A job claimed, worked and marked done in one transaction is not counted on its first delivery: its failure counts it
once that transaction has rolled back. A redelivery (RabbitMQ's flag: its worker may have died) is counted apart
first, waiting for the first delivery's lock; its count commits as that lock goes, before the first delivery records
its failure. Each delivery runs on a thread of its own, with its own connection, on SQLite and PostgreSQL."""

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

from core import jobs, metrics
from core.models import AppSecret, Job, JobStatus
from core.runtime import Runtime, get_runtime

ARRIVED: list[threading.Event] = []  # set as each delivery reaches the job's function
GO: list[threading.Event] = []  # each delivery goes on once its event is set
STARTED: list[int] = []
FAIL: set[int] = set()  # the deliveries whose work fails
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    for events in (ARRIVED, GO):
        events.clear()
        events.extend(threading.Event() for _ in range(3))
    STARTED.clear()
    FAIL.clear()
    yield
    for event in GO:
        event.set()


def _arrive(delivery: int) -> None:
    ARRIVED[delivery].set()
    assert GO[delivery].wait(20), "the test never let this delivery go on"


def _start(delivery: int) -> None:
    with _lock:
        STARTED.append(delivery)
    if delivery in FAIL:
        raise RuntimeError(f"the provider said no to delivery {delivery}")


@jobs.actor("tests.s15c_in_claim", max_retries=1, min_backoff_ms=10, max_backoff_ms=50)
def s15c_in_claim(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The usual durable job: claimed (the row locked), worked and marked done in one transaction."""
    _arrive(delivery)
    _start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s15c_in_claim_once", max_retries=0)
def s15c_in_claim_once(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The same, allowed one run only."""
    _arrive(delivery)
    _start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s15c_claims_itself", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15c_claims_itself(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims."""
    _arrive(delivery)
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    _start(delivery)
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


def _hold(runtime: Runtime, actor_name: str) -> dict[str, Any]:
    """Enqueue the job without sending its message (delivered by the test)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(actor_name, name="raced", delivery=0)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver(
    actor_name: str, kwargs: dict[str, Any], delivery: int, *, retries: int = 0, redelivered: bool = False
) -> None:
    """One delivery on this thread, as a dramatiq worker thread runs it. `redelivered`: RabbitMQ's flag on a message
    it gives again (its consumer went away while running it); `retries`: dramatiq's retry of a run that failed."""
    actor = jobs._dramatiq_actors[actor_name]
    arguments = {**kwargs, "delivery": delivery}
    proxy = MessageProxy(actor.message_with_options(kwargs=arguments, retries=retries))
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


def _in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


@contextlib.contextmanager
def _first_fails_while_a_redelivery_is_counted(runtime: Runtime, actor_name: str) -> Iterator[threading.Thread]:
    """The first delivery takes the job and fails; a redelivery counted meanwhile, as the first's lock goes, waits
    after its count until the test sets GO[1]. Yields the redelivery's thread, once the first has recorded its failure.
    (On SQLite a read waits for the write lock too: the redelivery must not take the job before the test has looked.)"""
    kwargs = _hold(runtime, actor_name)
    FAIL.add(0)
    first_thread: list[threading.Thread] = []
    counted = threading.Event()

    def first_waits_for_the_count(_session: Any) -> None:
        # Its work has rolled back and the row is free: the redelivery's count commits before its failure is recorded.
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
        first = threading.Thread(target=_deliver, args=(actor_name, kwargs, 0), daemon=True)
        first_thread.append(first)
        first.start()
        assert ARRIVED[0].wait(10)  # the first delivery holds the job: its transaction has the row locked
        redelivery = _in_thread(lambda: _deliver(actor_name, kwargs, 1, redelivered=True))
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


def test_a_first_run_that_fails_while_a_redelivery_is_counted_leaves_the_job_its_second_run(runtime: Runtime) -> None:
    """max_retries=1: two runs. The first delivery's failure was judged by the row's count, 2 with the redelivery's,
    and gave the job up after one run; the redelivery then found it failed and never ran it. The first delivery is
    run 1: the job stays pending for the redelivery, which runs it."""
    with _first_fails_while_a_redelivery_is_counted(runtime, "tests.s15c_in_claim") as redelivery:
        row = _row(runtime)
        assert row.status == JobStatus.PENDING, f"given up after one run of two: {row.last_error}"
        assert row.attempts == 2
        assert "delivery 0" in (row.last_error or "")
        GO[1].set()
        redelivery.join(20)
    row = _row(runtime)
    assert STARTED == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_the_redelivery_left_the_job_that_fails_gives_it_up_as_its_last_run(runtime: Runtime) -> None:
    """The redelivery was counted as run 1 (the first delivery's failure was counted after it), but it is run 2, the
    last: its failure gives the job up at once with its own error, not left pending for the sweep to give up later
    as a worker that died."""
    with _first_fails_while_a_redelivery_is_counted(runtime, "tests.s15c_in_claim") as redelivery:
        FAIL.add(1)
        GO[1].set()
        redelivery.join(20)
    row = _row(runtime)
    assert STARTED == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2), "the job's last run failed and it was not given up"
    assert "delivery 1" in (row.last_error or "")


def test_a_job_allowed_one_run_is_given_up_by_its_first_failure_though_a_redelivery_was_counted(
    runtime: Runtime,
) -> None:
    """max_retries=0: the first delivery was the one run allowed. The redelivery counted meanwhile must not run it
    again: the first delivery's own number decides, and it was the last."""
    with _first_fails_while_a_redelivery_is_counted(runtime, "tests.s15c_in_claim_once") as redelivery:
        row = _row(runtime)
        assert row.status == JobStatus.FAILED
        assert "delivery 0" in (row.last_error or "")
        GO[1].set()
        redelivery.join(20)
    assert STARTED == [0]
    assert _row(runtime).status == JobStatus.FAILED


def _job_runs(actor_name: str) -> dict[str, float]:
    """How many runs of the job `job_duration_seconds` has timed, by outcome, as `/metrics` shows them."""
    text, _ = metrics.render([])
    prefix = f'giving_job_duration_seconds_count{{actor="{actor_name}",outcome="'
    runs: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            runs[key.removeprefix(prefix).removesuffix('"}')] = float(value)
    return runs


def test_a_copy_left_to_a_live_run_is_timed_as_skipped_not_failed(runtime: Runtime) -> None:
    """The job's first run fails; dramatiq's retry is counted (run 2 of 2) and about to claim it when a copy arrives.
    Counted, the copy would be a third run: it leaves the job to the retry and does nothing. It was timed as a failed
    run (an alert on failed runs fired for a job that was fine); it is skipped."""
    actor_name = "tests.s15c_claims_itself"
    kwargs = _hold(runtime, actor_name)
    FAIL.add(0)
    GO[0].set()
    _deliver(actor_name, kwargs, 0)
    assert (_row(runtime).status, _row(runtime).attempts) == (JobStatus.PENDING, 1)
    retry = _in_thread(lambda: _deliver(actor_name, kwargs, 1, retries=1))
    assert ARRIVED[1].wait(10)  # counted, not yet claimed
    before = _job_runs(actor_name)
    GO[2].set()
    _deliver(actor_name, kwargs, 2)  # the copy
    after = _job_runs(actor_name)
    assert _row(runtime).status == JobStatus.PENDING  # left to the retry
    assert STARTED == [0]
    assert after.get("failed", 0) - before.get("failed", 0) == 0, "a copy that did nothing was timed as failed"
    assert after.get("skipped", 0) - before.get("skipped", 0) == 1
    GO[1].set()
    retry.join(20)
    assert STARTED == [0, 1]
    assert _row(runtime).status == JobStatus.DONE
