"""Review of the durable job machinery (one run at a time, counted per job): the cases its first tests left out."""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqMessage
from dramatiq.middleware import CurrentMessage
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import Runtime, get_runtime


class Killed(BaseException):
    """The process dies here (SIGKILL, out of memory): nothing after it runs, its open transaction is lost."""


STARTED: list[str] = []
PLAN: list[str] = []  # what each run does once started, in order: "die", "fail"; else it ends
_lock = threading.Lock()


def _started(name: str) -> None:
    with _lock:
        STARTED.append(name)
        plan = PLAN.pop(0) if PLAN else "end"
    if plan == "die":
        raise Killed()
    if plan == "fail":
        raise RuntimeError("the gateway said no")


@jobs.actor("tests.s12h_works_in_its_claim", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s12h_works_in_its_claim(name: str) -> None:
    """Like giftaid's `delete_at_hmrc`: claims, works and says done in one unit of work of its own."""
    with get_runtime().unit_of_work() as uow:
        jobs.claim_in(uow)
        _started(name)
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    STARTED.clear()
    PLAN.clear()
    yield
    PLAN.clear()


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


def _hold(runtime: Runtime, actor_name: str, name: str) -> dict[str, Any]:
    """Enqueue the job without sending its message (delivered by the test)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(actor_name, name=name)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return kwargs


def _deliver(actor_name: str, kwargs: dict[str, Any], *, redelivered: bool | None = None) -> None:
    """One delivery of the job's message on this thread, as a dramatiq worker thread runs it (the broker's message is
    the current message). `redelivered`: a RabbitMQ message with that flag (None: Redis or the in-process broker)."""
    actor = jobs._dramatiq_actors[actor_name]
    message = actor.message_with_options(kwargs=kwargs)
    proxy = MessageProxy(message) if redelivered is None else _RabbitmqMessage(redelivered, 1, message)
    current = CurrentMessage()
    current.before_process_message(actor.broker, proxy)
    try:
        actor(**kwargs)
    finally:
        current.after_process_message(actor.broker, proxy)


def _commits(runtime: Runtime) -> list[int]:
    counted: list[int] = []
    sa.event.listen(runtime.engine, "commit", lambda _connection: counted.append(1))
    return counted


# 1. A job that claims itself in the transaction that does its work: a death rolls its claim back with the work.


def test_a_job_dying_in_its_claims_transaction_is_given_up_after_its_retries(runtime: Runtime) -> None:
    """The claim counted the run, but in the transaction of the work (giftaid's delete at HMRC): a worker killed
    there took the count with it, so each redelivery started afresh, for ever. A redelivery (RabbitMQ flags it) is
    counted in a transaction of its own first, as a job working in its claim's transaction is."""
    PLAN[:] = ["die"] * 10
    kwargs = _hold(runtime, "tests.s12h_works_in_its_claim", "oom")
    for delivery in range(8):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with contextlib.suppress(Killed):
            _deliver("tests.s12h_works_in_its_claim", kwargs, redelivered=delivery > 0)
    row = _row(runtime)
    assert STARTED == ["oom"] * 4, "max_retries + 1 counted runs, plus the first, which nothing counted"
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)
    assert "the worker died" in (row.last_error or "")


def test_a_sweep_copy_of_a_job_dying_in_its_claims_transaction_is_counted(runtime: Runtime) -> None:
    """With no redelivery flag (Redis, the in-process broker) what shows an earlier run is the row, sent again by
    the sweep: the copy is counted apart before it claims."""
    PLAN[:] = ["die"] * 10
    kwargs = _hold(runtime, "tests.s12h_works_in_its_claim", "lost")
    start = jobs.utc_now()
    for delivery in range(8):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with time_machine.travel(start + delivery * dt.timedelta(minutes=5), tick=False):
            if delivery:  # the run died with its message: the sweep sends the job again
                with runtime.unit_of_work() as uow:
                    assert jobs.resend_pending(uow) == 1
                    uow.jobs.clear()  # delivered below
            with contextlib.suppress(Killed):
                _deliver("tests.s12h_works_in_its_claim", kwargs)
    row = _row(runtime)
    assert STARTED == ["lost"] * 4
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)


def test_a_first_delivery_of_a_job_working_in_its_claim_is_still_one_transaction(runtime: Runtime) -> None:
    first = _hold(runtime, "tests.s12h_works_in_its_claim", "first")
    again = _hold(runtime, "tests.s12h_works_in_its_claim", "again")
    commits = _commits(runtime)
    _deliver("tests.s12h_works_in_its_claim", first, redelivered=False)
    assert len(commits) == 1
    commits.clear()
    _deliver("tests.s12h_works_in_its_claim", again, redelivered=True)
    assert len(commits) == 2
    with runtime.read_session() as session:
        rows = {job.arguments["name"]: job for job in session.exec(select(Job)).all()}
        assert session.get(AppSecret, "first") is not None and session.get(AppSecret, "again") is not None
    assert {name: (row.status, row.attempts) for name, row in rows.items()} == {
        "first": (JobStatus.DONE, 1),
        "again": (JobStatus.DONE, 1),
    }


def test_a_failure_in_the_claims_transaction_of_a_counted_redelivery_is_recorded(runtime: Runtime) -> None:
    """A redelivery counted apart whose claim then rolls back with the failure (raised in the claim's unit of work):
    its failure is still recorded (last_error, and the job given up after its retries), not taken for a run that
    lost its claim to another."""
    PLAN[:] = ["fail"] * 10
    kwargs = _hold(runtime, "tests.s12h_works_in_its_claim", "refused")
    for delivery in range(6):
        if _row(runtime).status != JobStatus.PENDING:
            break
        with pytest.raises(RuntimeError, match="the gateway said no"):
            _deliver("tests.s12h_works_in_its_claim", kwargs, redelivered=delivery > 0)
        assert "the gateway said no" in (_row(runtime).last_error or "")
    row = _row(runtime)
    assert (len(STARTED), row.status, row.attempts) == (3, JobStatus.FAILED, 3)


# 2. The in-process worker (`giving serve` with no broker) shares its process's pool with the web requests.


def _inline_runtime(postgres_url: str, tmp_path: Path, **database: Any) -> Runtime:
    from dramatiq.brokers.stub import StubBroker

    from core.runtime import build_runtime
    from giving.worker import import_tasks
    from tests.fixtures.app import make_settings

    import_tasks()
    settings = make_settings(postgres_url, tmp_path, database=database)
    return build_runtime(settings, broker=StubBroker(fail_fast_default=False))


def test_an_in_process_worker_with_more_threads_than_its_pool_can_spare_does_not_start(
    postgres_url: str, tmp_path: Path
) -> None:
    """`giving serve` on PostgreSQL with no broker runs `[broker] inline_threads` job threads and the scheduler on
    the web process's own pool: with as many threads as connections, a burst of jobs left the web requests none (each
    waited `pool_timeout` and answered 503) and the jobs queued on each other. Like `giving worker`, it refuses to
    start, saying what to change; the defaults (4 threads, a pool of 5 + 5) start."""
    from core.runtime import InlineWorker, set_runtime

    runtime = _inline_runtime(postgres_url, tmp_path, pool_size=3, max_overflow=1)
    try:
        with pytest.raises(RuntimeError, match=r"inline_threads 3 needs 5 database connections"):
            InlineWorker(runtime, threads=3).start()
        fits = InlineWorker(runtime, threads=2)
        fits.start()
        fits.stop()
        without_scheduler = InlineWorker(runtime, threads=3)  # `giving receipts annual`: no scheduler thread
        without_scheduler.start(scheduler=False)
        without_scheduler.stop()
    finally:
        runtime.broker.close()
        runtime.engine.dispose()
        set_runtime(None)
    defaults = _inline_runtime(postgres_url, tmp_path)
    try:
        worker = InlineWorker(defaults, threads=defaults.settings.broker.inline_threads)
        worker.start()
        worker.stop()
    finally:
        defaults.broker.close()
        defaults.engine.dispose()
        set_runtime(None)


def test_giving_workers_dramatiq_command_starts_with_its_default_threads(postgres_url: str) -> None:
    """What `giving worker` execs with its default `--threads 4`: the pool check (4 threads and the scheduler in a
    pool of 5 + 5) lets the worker process boot; SIGTERM then stops it cleanly."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("GIVING_")},
        "GIVING_ENV": "test",
        "GIVING_DATABASE__URL": postgres_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "giving.worker_boot", "--processes", "1", "--threads", "4"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read() -> None:
        for line in process.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
                if "Worker process is ready for action" in seen[-1]:
                    break
        assert any("Worker process is ready for action" in line for line in seen), "".join(seen)[-3000:]
        assert not any("cannot start" in line for line in seen)
        # To the supervisor alone, which passes it on (a second SIGTERM reaching the worker process kills it at once).
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(60)
        reader.join(5)
        while not lines.empty():
            seen.append(lines.get())
        assert code == 0, "".join(seen)[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(5)
