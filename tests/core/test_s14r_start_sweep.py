"""A broker-less process starting up (`giving receipts annual`) sends every pending job again
(`resend_pending(older_than=0)`). A job whose last run a live process has counted and is about to claim must be left
to that run, as a job it holds is: marking the row sent now cut short the time the count names that run for, and the
start's copy, counted past the job's last run, then took the live run for dead and gave the job up."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import uuid
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

ARRIVED: list[threading.Event] = []  # set as each delivery reaches the job, before its claim
GO: list[threading.Event] = []  # each delivery claims once its event is set
STARTED: list[int] = []
FAIL: set[int] = set()
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


@jobs.actor("tests.s14r_claims_itself", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s14r_claims_itself(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims."""
    ARRIVED[delivery].set()
    assert GO[delivery].wait(20)
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    with _lock:
        STARTED.append(delivery)
    if delivery in FAIL:
        raise RuntimeError("the provider said no")
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


def _deliver(kwargs: dict[str, Any], delivery: int, *, retries: int = 0) -> None:
    """One delivery on this thread, as a dramatiq worker thread runs it (`retries`: dramatiq's retry)."""
    actor = jobs._dramatiq_actors["tests.s14r_claims_itself"]
    arguments = {**kwargs, "delivery": delivery}
    proxy = MessageProxy(actor.message_with_options(kwargs=arguments, retries=retries))
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


def test_a_broker_less_start_leaves_a_job_to_its_last_run_counted_and_about_to_claim_it(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s14r_claims_itself", name="raced", delivery=0)
        kwargs = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    FAIL.add(0)
    GO[0].set()
    _deliver(kwargs, 0)  # the first run fails: one run left
    retry = threading.Thread(target=_deliver, args=(kwargs, 1), kwargs={"retries": 1}, daemon=True)
    retry.start()
    assert ARRIVED[1].wait(10)  # dramatiq's retry: counted as the job's last run, not yet claimed
    assert _row(runtime).attempts == 2

    with runtime.unit_of_work() as uow:  # a broker-less process starts up meanwhile
        sent = jobs.resend_pending(uow, older_than=dt.timedelta(0))
        uow.jobs.clear()
    GO[2].set()
    _deliver(kwargs, 2)  # a copy (the start's, had it sent one), counted past the last run
    assert _row(runtime).status == JobStatus.PENDING, "the start's copy gave up the job its last run was about to do"
    assert sent == 0, "the start sent a copy of a job a live run is about to claim"

    GO[1].set()
    retry.join(10)
    row = _row(runtime)
    assert STARTED == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_a_broker_less_start_sends_at_once_a_job_counted_by_a_process_that_has_exited(runtime: Runtime) -> None:
    """The run a count names died with its process (of this machine): the start sends the job again at once, its name
    ended, without waiting for that run's time limit."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s14r_claims_itself", name="orphan", delivery=0)
        uow.jobs.clear()
    gone = subprocess.Popen(["true"])
    gone.wait()
    table = Job.__table__  # type: ignore[attr-defined]
    with runtime.unit_of_work() as uow:  # counted by that process, due until its time limit, an hour from now
        uow.session.execute(
            sa.update(table).values(
                attempts=1,
                run_id=uuid.uuid4(),
                running_until=None,
                run_host=jobs.this_process()[0],
                run_process=f"{gone.pid}:1",
                last_sent_at=jobs.utc_now() + dt.timedelta(hours=1),
            )
        )
    with runtime.unit_of_work() as uow:
        assert jobs.resend_pending(uow, older_than=dt.timedelta(0)) == 1
        uow.jobs.clear()
    row = _row(runtime)
    assert (row.run_id, row.run_process) == (None, None)
    assert row.last_sent_at is not None and row.last_sent_at < jobs.utc_now() + dt.timedelta(minutes=1)
