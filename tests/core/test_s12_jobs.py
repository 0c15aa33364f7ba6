"""Durable jobs that run apart from their claim, and jobs whose worker dies: one run at a time, counted per job in the
database, given up after their retries even when no failure is ever recorded."""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqMessage
from dramatiq.middleware import CurrentMessage
from sqlmodel import col, select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import InlineWorker, Runtime, get_runtime
from tests.core.job_time import time_passes


class Killed(BaseException):
    """The process dies here (SIGKILL, out of memory): nothing after it runs, and nothing records a failure."""


STARTED: list[str] = []
PLAN: list[str] = []  # what each run does once started, in order: "wait" (for its gate), "die", "fail"; else it ends
GATES: list[threading.Event] = []  # one per run started, in order
RUNNING: queue.SimpleQueue[int] = queue.SimpleQueue()  # the index of each run as it starts
RETRIES_SEEN: list[int] = []
_lock = threading.Lock()


def _started(name: str) -> None:
    with _lock:
        STARTED.append(name)
        RETRIES_SEEN.append(jobs.current_retries())
        plan = PLAN.pop(0) if PLAN else "end"
        gate = threading.Event()
        GATES.append(gate)
        RUNNING.put(len(STARTED) - 1)
    if plan == "wait":
        assert gate.wait(20), "the test never released this run"
    elif plan == "die":
        raise Killed()
    elif plan == "fail":
        raise RuntimeError("the provider said no")


QUICK_RETRY = {"min_backoff_ms": 10, "max_backoff_ms": 50, "time_limit_ms": 60_000}


@jobs.actor("tests.s12_claims_itself", max_retries=2, with_uow=False, claims_itself=True, **QUICK_RETRY)  # type: ignore[arg-type]
def s12_claims_itself(name: str) -> None:
    """Like the receipts' issuing jobs: claims in its first unit of work, works outside it, done with its last."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    _started(name)
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


@jobs.actor("tests.s12_own_units", max_retries=2, with_uow=False, **QUICK_RETRY)  # type: ignore[arg-type]
def s12_own_units(name: str) -> None:
    """Like the nightly catch-up: claimed and marked done by the wrapper, in transactions of their own."""
    _started(name)


@jobs.actor("tests.s12_in_claim", max_retries=2, **QUICK_RETRY)  # type: ignore[arg-type]
def s12_in_claim(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    """The usual durable job: claimed, worked and marked done in one transaction."""
    uow.session.merge(AppSecret(name=name, value="x"))
    _started(name)


@jobs.actor("tests.s12_claim_held_open", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s12_claim_held_open(name: str) -> None:
    """Starts while its claim's transaction is still open (the receipts number in that transaction)."""
    with get_runtime().unit_of_work() as uow:
        jobs.claim_in(uow)
        _started(name)


@jobs.actor("tests.s12_works_in_its_claim", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s12_works_in_its_claim(name: str) -> None:
    """Like giftaid's `delete_at_hmrc`: claims, works and says done in one unit of work of its own."""
    with get_runtime().unit_of_work() as uow:
        jobs.claim_in(uow)
        _started(name)
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


APART = ["tests.s12_claims_itself", "tests.s12_own_units"]
# Jobs whose claim is in the transaction of their work: a death rolls the claim (and any count in it) back.
IN_ONE_TRANSACTION = ["tests.s12_in_claim", "tests.s12_works_in_its_claim"]


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    STARTED.clear()
    PLAN.clear()
    GATES.clear()
    RETRIES_SEEN.clear()
    while not RUNNING.empty():
        RUNNING.get()
    yield
    _release_all()


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


def _enqueue(runtime: Runtime, actor_name: str, name: str) -> dict[str, Any]:
    """Enqueue the durable job; its message goes to the in-process worker (if one runs). Returns its kwargs."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(actor_name, name=name)
        kwargs = dict(uow.jobs[0].kwargs)
    return kwargs


def _hold(runtime: Runtime, actor_name: str, name: str) -> dict[str, Any]:
    """Enqueue the job without sending its message (delivered by the test)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(actor_name, name=name)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver(actor_name: str, kwargs: dict[str, Any], *, redelivered: bool | None = None) -> None:
    """Run one delivery of the job's message on this thread, as a dramatiq worker thread does: the broker's message
    is the current message while the actor runs. `redelivered`: a RabbitMQ message with that flag (None: a broker
    that marks nothing, Redis or the in-process one)."""
    actor = jobs._dramatiq_actors[actor_name]
    message = actor.message_with_options(kwargs=kwargs)
    proxy = MessageProxy(message) if redelivered is None else _RabbitmqMessage(redelivered, 1, message)
    current = CurrentMessage()
    current.before_process_message(actor.broker, proxy)
    try:
        actor(**kwargs)
    finally:
        current.after_process_message(actor.broker, proxy)


def _time_limit_passes(runtime: Runtime) -> None:
    """The time limit of the run holding the job passes. On PostgreSQL claims are timed on the database's clock, which
    a test cannot move (moving this process's clock is what a worker with a wrong clock does): the claim's end is
    moved back instead."""
    with runtime.unit_of_work() as uow:
        for job in uow.session.exec(select(Job).where(col(Job.running_until).is_not(None))).all():
            assert job.running_until is not None
            job.running_until -= dt.timedelta(hours=1)


def _release_all() -> None:
    with _lock:
        PLAN.clear()
        for gate in GATES:
            gate.set()


def _in_thread(fn: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# 1. One run at a time for a job whose claim is committed apart from its work.


@pytest.mark.parametrize("actor_name", APART)
def test_a_duplicate_message_does_nothing_while_the_job_runs(
    runtime: Runtime, worker: InlineWorker, actor_name: str
) -> None:
    """The sweep's copy or a broker's redelivery arriving while the job runs found its row still pending and ran it
    beside the first run. The claim says which run holds the row until its time limit: the copy does nothing."""
    PLAN[:] = ["wait"]
    kwargs = _enqueue(runtime, actor_name, "once")
    assert RUNNING.get(timeout=10) == 0
    try:
        duplicate = _in_thread(lambda: _deliver(actor_name, kwargs, redelivered=True))
        duplicate.join(5)
        assert STARTED == ["once"], "the copy ran beside the run holding the job"
    finally:
        _release_all()
    worker.join()
    duplicate.join(5)
    row = _row(runtime)
    assert (row.status, row.attempts, STARTED) == (JobStatus.DONE, 1, ["once"])


def test_a_copy_waiting_on_a_claim_not_yet_committed_does_nothing_once_it_commits(runtime: Runtime) -> None:
    """Two deliveries at once: the second's claim waits for the first's transaction (PostgreSQL's row lock, SQLite's
    write lock), then finds the job held by the first run and does nothing."""
    PLAN[:] = ["wait"]
    kwargs = _hold(runtime, "tests.s12_claim_held_open", "race")
    first = _in_thread(lambda: _deliver("tests.s12_claim_held_open", kwargs))
    try:
        assert RUNNING.get(timeout=10) == 0
        second = _in_thread(lambda: _deliver("tests.s12_claim_held_open", kwargs, redelivered=True))
        second.join(0.5)
        assert second.is_alive(), "the second claim did not wait for the first"
    finally:
        _release_all()
    first.join(10)
    second.join(10)
    row = _row(runtime)
    assert (STARTED, row.status, row.attempts) == (["race"], JobStatus.DONE, 1)


def test_a_run_whose_time_ran_out_does_not_mark_done_the_job_another_run_took_over(
    runtime: Runtime, worker: InlineWorker
) -> None:
    """Once a run's time limit has passed it is taken for dead, and a copy claims the job. If the first run was in
    fact alive (stuck in C code past its limit) and ends, it must not mark the job done over the claim of the run
    now holding it: that run marks it done when it ends (or records its failure and its retry runs)."""
    actor_name = "tests.s12_claims_itself"
    PLAN[:] = ["wait", "wait"]
    kwargs = _enqueue(runtime, actor_name, "late")
    assert RUNNING.get(timeout=10) == 0
    try:
        _time_limit_passes(runtime)
        with time_machine.travel(jobs.utc_now() + dt.timedelta(minutes=5)):
            second = _in_thread(lambda: _deliver(actor_name, kwargs))
            assert RUNNING.get(timeout=10) == 1, "the copy did not take over a job whose run's time was up"
            GATES[0].set()
            worker.join()  # the first run has ended
            row = _row(runtime)
            assert row.status == JobStatus.PENDING, "the run that lost the job marked it done"
            GATES[1].set()
            second.join(10)
    finally:
        _release_all()
    row = _row(runtime)
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


@pytest.mark.parametrize("actor_name", APART)
def test_a_run_that_fails_lets_dramatiqs_retry_claim_the_job(
    runtime: Runtime, worker: InlineWorker, actor_name: str
) -> None:
    PLAN[:] = ["fail"]
    _enqueue(runtime, actor_name, "retry")
    worker.join()
    row = _row(runtime)
    assert (STARTED, row.status, row.attempts) == (["retry", "retry"], JobStatus.DONE, 2)
    assert "the provider said no" in (row.last_error or "")


# 2. A job whose worker dies running it is counted in the database and given up.


@pytest.mark.parametrize("actor_name", APART)
def test_a_job_that_kills_its_worker_every_time_is_given_up_after_its_retries(
    runtime: Runtime, actor_name: str
) -> None:
    """Out of memory or SIGKILL: no failure is ever recorded, and each delivery (the broker's redelivery, the
    sweep's copy once the run's time is up) used to start afresh, for ever. Runs started are counted in the row: after
    max_retries + 1 (3) of them the next delivery marks the job failed instead of running it."""
    PLAN[:] = ["die"] * 10
    kwargs = _hold(runtime, actor_name, "oom")
    start = jobs.utc_now()
    for delivery in range(6):
        if _row(runtime).status != JobStatus.PENDING:
            break
        # Each run's time limit is over by the next delivery.
        _time_limit_passes(runtime)
        with time_machine.travel(start + delivery * dt.timedelta(minutes=5)), contextlib.suppress(Killed):
            _deliver(actor_name, kwargs, redelivered=delivery > 0)
    row = _row(runtime)
    assert STARTED == ["oom"] * 3
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)
    assert "the worker died" in (row.last_error or "")


@pytest.mark.parametrize("actor_name", IN_ONE_TRANSACTION)
def test_a_job_working_in_its_claims_transaction_that_kills_its_worker_is_given_up(
    runtime: Runtime, actor_name: str
) -> None:
    """A job claimed and worked in one transaction (a `with_uow` job; or one that claims itself there, as giftaid's
    delete at HMRC does) leaves no trace when its worker dies: the transaction rolls back, count and all. A
    redelivered message (RabbitMQ flags it) is counted in a transaction of its own before the work, so the count
    survives the next death: after max_retries + 1 counted runs (plus the first, which nothing counted) it is given
    up."""
    PLAN[:] = ["die"] * 10
    kwargs = _hold(runtime, actor_name, "oom")
    for delivery in range(8):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with contextlib.suppress(Killed):
            _deliver(actor_name, kwargs, redelivered=delivery > 0)
    row = _row(runtime)
    assert STARTED == ["oom"] * 4
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)
    assert "the worker died" in (row.last_error or "")
    with runtime.read_session() as session:
        assert session.get(AppSecret, "oom") is None


@pytest.mark.parametrize("actor_name", IN_ONE_TRANSACTION)
def test_a_sweep_copy_of_a_job_working_in_its_claims_transaction_is_counted(runtime: Runtime, actor_name: str) -> None:
    """Without a broker that flags redeliveries (Redis, the in-process one), what shows an earlier run is the row: the
    sweep's copy finds it sent again, and is counted before it runs."""
    PLAN[:] = ["die"] * 10
    kwargs = _hold(runtime, actor_name, "lost")
    for delivery in range(8):
        if _row(runtime).status != JobStatus.PENDING:
            break
        if delivery:  # the run died with its message: 5 minutes on, the sweep sends the job again
            time_passes(runtime, dt.timedelta(minutes=5))
            with runtime.unit_of_work() as uow:
                assert jobs.resend_pending(uow) == 1
                uow.jobs.clear()  # delivered below
        with contextlib.suppress(Killed):
            _deliver(actor_name, kwargs)
    row = _row(runtime)
    assert STARTED == ["lost"] * 4
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)


def test_retries_are_counted_per_job_so_a_sweep_copy_continues_the_count(runtime: Runtime) -> None:
    """Each sweep copy is a new message (dramatiq's count starts at 0): counted in the message, a job whose retries
    are lost with their messages never gave up. Counted in the row, the copy goes on where the job was."""
    PLAN[:] = ["fail"] * 10
    kwargs = _hold(runtime, "tests.s12_in_claim", "failing")
    for _ in range(5):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with pytest.raises(RuntimeError, match="the provider said no"):
            _deliver("tests.s12_in_claim", kwargs)  # a new message each time, as the sweep sends
    row = _row(runtime)
    assert (len(STARTED), row.status, row.attempts) == (3, JobStatus.FAILED, 3)
    assert RETRIES_SEEN == [0, 1, 2]  # what the job sees as its retries: the job's, not the message's


def _commits(runtime: Runtime) -> list[int]:
    counted: list[int] = []
    sa.event.listen(runtime.engine, "commit", lambda _connection: counted.append(1))
    return counted


@pytest.mark.parametrize(
    ("actor_name", "first_counted"), [("tests.s12_in_claim", 0), ("tests.s12_works_in_its_claim", 1)]
)
def test_a_first_delivery_claims_works_and_is_done_in_one_transaction(
    runtime: Runtime, actor_name: str, first_counted: int
) -> None:
    """The hot path keeps its one transaction: only a delivery that may follow a run that died pays a second. (A job
    that claims itself counts its run in that claim; a `with_uow` job's first run is not counted.)"""
    first = _hold(runtime, actor_name, "first")
    again = _hold(runtime, actor_name, "again")
    commits = _commits(runtime)
    _deliver(actor_name, first, redelivered=False)
    assert len(commits) == 1
    commits.clear()
    _deliver(actor_name, again, redelivered=True)
    assert len(commits) == 2
    with runtime.read_session() as session:
        rows = {job.arguments["name"]: job for job in session.exec(select(Job)).all()}
        assert session.get(AppSecret, "first") is not None and session.get(AppSecret, "again") is not None
    assert {name: (row.status, row.attempts) for name, row in rows.items()} == {
        "first": (JobStatus.DONE, first_counted),
        "again": (JobStatus.DONE, 1),
    }


def test_a_failure_in_the_claims_transaction_of_a_counted_redelivery_is_recorded(runtime: Runtime) -> None:
    """A redelivery counted apart whose claim then rolls back with the failure (raised in the claim's unit of work):
    its failure is still recorded (last_error, and the job given up after its retries), not taken for a run that
    lost its claim to another."""
    PLAN[:] = ["fail"] * 10
    kwargs = _hold(runtime, "tests.s12_works_in_its_claim", "refused")
    for delivery in range(6):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with pytest.raises(RuntimeError, match="the provider said no"):
            _deliver("tests.s12_works_in_its_claim", kwargs, redelivered=delivery > 0)
        assert "the provider said no" in (_row(runtime).last_error or "")
    row = _row(runtime)
    assert (len(STARTED), row.status, row.attempts) == (3, JobStatus.FAILED, 3)


def test_on_redis_an_old_message_is_counted_apart(runtime: Runtime) -> None:
    """Redis flags no redelivery: it gives a dead worker's messages back once its heartbeat is 60 s old. A message
    older than that may follow a run that died, and is counted in a transaction of its own; a fresh one is not."""
    from dramatiq.brokers.redis import RedisBroker

    redis_broker = jobs.make_broker("redis://127.0.0.1:6379/15")  # not connected: nothing is sent here
    try:
        assert isinstance(redis_broker, RedisBroker)
        redelivers_after_ms = getattr(redis_broker, jobs._UNFLAGGED_REDELIVERY_ATTRIBUTE)
        assert redelivers_after_ms == redis_broker.heartbeat_timeout == 60_000
    finally:
        redis_broker.close()
    run = jobs._runner(jobs.REGISTRY["tests.s12_in_claim"], redelivers_after_ms)  # as bound to a Redis broker
    actor = jobs._dramatiq_actors["tests.s12_in_claim"]
    commits = _commits(runtime)
    for name, age_ms in (("fresh", 1_000), ("old", 61_000)):
        kwargs = _hold(runtime, "tests.s12_in_claim", name)
        message = actor.message_with_options(kwargs=kwargs)
        message = message.copy(message_timestamp=message.message_timestamp - age_ms)
        current = CurrentMessage()
        commits.clear()
        current.before_process_message(actor.broker, MessageProxy(message))
        try:
            run(**kwargs)
        finally:
            current.after_process_message(actor.broker, MessageProxy(message))
        assert len(commits) == (2 if name == "old" else 1), name
