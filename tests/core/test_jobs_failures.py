"""Durable jobs that fail: time limits, retries and backoff, and the sweep that re-sends lost messages."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlmodel import select

from core import jobs
from core.models import Job, JobStatus
from core.runtime import InlineWorker, Runtime
from tests.core.job_time import time_passes

STARTED: list[str] = []


@jobs.actor("tests.too_slow", max_retries=0, time_limit_ms=300)
def too_slow(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    STARTED.append(name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # short sleeps: the time limit's exception lands between them
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _clear() -> None:
    STARTED.clear()
    FAILURES.clear()


def _job(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


def test_a_job_killed_by_its_time_limit_is_recorded_as_failed(runtime: Runtime, worker: InlineWorker) -> None:
    """dramatiq stops a job over its time limit with an exception that is not an `Exception`: it must still count as
    a failed attempt, or the row stays pending and the sweep sends it again for ever, never shown as failed."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.too_slow", name="slow")
    worker.join()
    assert STARTED == ["slow"]
    job = _job(runtime)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 1 and "TimeLimitExceeded" in (job.last_error or "")


FAILURES: list[int] = []


@jobs.actor("tests.always_fails", max_retries=12, min_backoff_ms=1_000, max_backoff_ms=3_600_000)
def always_fails(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    FAILURES.append(jobs.current_retries())
    raise RuntimeError("the mail server is down")


def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _resend_count(runtime: Runtime) -> int:
    """How many durable jobs the sweep would send again now (sending nothing)."""
    with runtime.unit_of_work() as uow:
        count = jobs.resend_pending(uow)
        uow.jobs.clear()
    return count


def test_the_sweep_leaves_a_job_alone_while_dramatiq_backs_off_before_its_retry(
    runtime: Runtime, worker: InlineWorker
) -> None:
    """A job failing for the 9th time is retried by dramatiq 256-512 s later. The sweep must not send it meanwhile
    (each such copy would start a new chain of 12 retries from 1 s, so a job meant to back off for two hours hammers
    the mail server every couple of minutes); it sends it only when the retry is overdue (a lost delayed message)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.always_fails", name="backoff")
        pending = uow.jobs.pop()  # sent below, as dramatiq's 9th delivery
    actor = jobs._dramatiq_actors["tests.always_fails"]
    message = actor.message_with_options(kwargs=pending.kwargs)
    runtime.broker.enqueue(message.copy(options={**message.options, "retries": 8}))
    # Its run is counted before it starts (a retry may follow a run that died): wait for the failure itself.
    _wait_for(lambda: _job(runtime).last_error is not None, "the failure to be recorded")
    assert FAILURES == [8]
    assert (_job(runtime).status, _job(runtime).attempts) == (JobStatus.PENDING, 1)
    passed = dt.timedelta(0)
    for minutes in (3, 5, 8):  # dramatiq's retry is due within 256-512 s
        time_passes(runtime, dt.timedelta(minutes=minutes) - passed)
        passed = dt.timedelta(minutes=minutes)
        assert _resend_count(runtime) == 0, f"sent again {minutes} min after the failure"
    time_passes(runtime, dt.timedelta(minutes=12) - passed)
    assert _resend_count(runtime) == 1  # the retry never came: sent again


RUNNING = threading.Event()
RELEASE = threading.Event()


@jobs.actor("tests.long_run", max_retries=0, with_uow=False, time_limit_ms=600_000)
def long_run(name: str) -> None:
    STARTED.append(name)
    RUNNING.set()
    RELEASE.wait(20)


def test_the_sweep_does_not_send_again_a_job_that_is_still_running(runtime: Runtime, worker: InlineWorker) -> None:
    """A job that opens its own units of work (the nightly catch-up: time limit 10 minutes) and runs for more than the
    sweep's 2 minutes must not be sent again while it runs: the copy would run beside it, doing its work twice. A run
    that died is still sent again once its time limit has passed."""
    RUNNING.clear()
    RELEASE.clear()
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.long_run", name="long")
    try:
        assert RUNNING.wait(10)
        time_passes(runtime, dt.timedelta(minutes=3))
        assert _resend_count(runtime) == 0
        time_passes(runtime, dt.timedelta(minutes=10))
        assert _resend_count(runtime) == 1  # its time limit is long past: the run was lost
    finally:
        RELEASE.set()
    worker.join()
    assert STARTED == ["long"]
    assert _job(runtime).status == JobStatus.DONE


def test_a_delayed_job_is_not_sent_again_the_moment_its_delay_ends(runtime: Runtime) -> None:
    """The broker holds a delayed message until its delay ends; the sweep sends a copy only if that is overdue."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.remember_later", delay_ms=10 * 60_000, name="later")
        uow.jobs.clear()  # the broker's delayed message is not needed here
    time_passes(runtime, dt.timedelta(minutes=10, seconds=30))
    assert _resend_count(runtime) == 0  # the delayed message is due now
    time_passes(runtime, dt.timedelta(minutes=2, seconds=30))
    assert _resend_count(runtime) == 1  # it never came


@jobs.actor("tests.remember_later", max_retries=0)
def remember_later(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    STARTED.append(name)


PERIODIC_OUTCOMES: list[bool] = []  # True: the next run fails


@jobs.actor("tests.flaky_periodic", max_retries=0)
def flaky_periodic(uow) -> None:  # type: ignore[no-untyped-def]
    if PERIODIC_OUTCOMES.pop(0):
        raise RuntimeError("the provider did not answer")


@jobs.actor("tests.broken_one_off", max_retries=0)
def broken_one_off(uow) -> None:  # type: ignore[no-untyped-def]
    raise RuntimeError("a bug")


def _statuses(runtime: Runtime) -> dict[str, list[str]]:
    with runtime.read_session() as session:
        rows = session.exec(select(Job).order_by(Job.created_at)).all()  # type: ignore[arg-type]
        found: dict[str, list[str]] = {}
        for job in rows:
            found.setdefault(job.actor_name, []).append(str(job.status))
        return found


def test_a_failed_periodic_run_stops_alerting_once_a_later_run_succeeds(
    runtime: Runtime, worker: InlineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic job runs again next period anyway: its failed run need not stay failed (and alerting) for ever
    once a later run did the work. A one-off job's failure stays until someone deals with it."""
    monkeypatch.setitem(
        jobs.PERIODIC,
        "tests.flaky_periodic",
        jobs.PeriodicSpec("tests.flaky_periodic", "tests.flaky_periodic", dt.timedelta(minutes=5)),
    )
    PERIODIC_OUTCOMES[:] = [True, True, False]
    for name in ("tests.flaky_periodic", "tests.flaky_periodic", "tests.broken_one_off"):
        with runtime.unit_of_work() as uow:
            uow.enqueue(name)
        worker.join()
    assert _statuses(runtime) == {"tests.flaky_periodic": ["failed", "failed"], "tests.broken_one_off": ["failed"]}

    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.flaky_periodic")
    worker.join()
    assert _statuses(runtime) == {
        "tests.flaky_periodic": ["superseded", "superseded", "done"],
        "tests.broken_one_off": ["failed"],
    }
    # A periodic job whose run covers a window of time only (the nightly catch-up) keeps its failures.
    monkeypatch.setitem(
        jobs.PERIODIC,
        "tests.flaky_periodic",
        jobs.PeriodicSpec("tests.flaky_periodic", "tests.flaky_periodic", dt.timedelta(days=1), False),
    )
    PERIODIC_OUTCOMES[:] = [True, False]
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            uow.enqueue("tests.flaky_periodic")
        worker.join()
    assert _statuses(runtime)["tests.flaky_periodic"] == ["superseded", "superseded", "done", "failed", "done"]
    assert not jobs.PERIODIC["webhooks.catch_up"].later_run_supersedes
    # Pruned with the jobs done; the one-off failure stays.
    with runtime.unit_of_work() as uow:
        jobs.prune_finished(uow.session, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=30), keep=dt.timedelta(days=7))
    assert _statuses(runtime) == {"tests.flaky_periodic": ["failed"], "tests.broken_one_off": ["failed"]}
