"""The jobs sweep decides when a copy is due on the database's clock (PostgreSQL), the clock the claims are timed on:
a host whose own clock is minutes out neither sends copies of messages just sent nor holds back those long overdue.
The test cannot move PostgreSQL's clock; it moves the rows' times back instead (the time passes for the database),
and moves this process's clock (a host whose clock is wrong)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from sqlmodel import select

from core import jobs
from core.models import Job
from core.runtime import Runtime

SKEW = dt.timedelta(minutes=10)


@jobs.actor("tests.s14d_swept", max_retries=2)
def s14d_swept(uow: Any, name: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _postgres_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serves one machine: the sweep reads that machine's clock")


def _lost(runtime: Runtime, *, delay_ms: int | None = None) -> None:
    """Enqueue a durable job whose message is lost (never sent)."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s14d_swept", name="lost", delay_ms=delay_ms)
        uow.jobs.clear()


def _time_passes(runtime: Runtime, passed: dt.timedelta) -> None:
    """`passed` passes on the database's clock: the row's times are moved back by as much."""
    table = Job.__table__  # type: ignore[attr-defined]
    by = sa.literal(passed, sa.Interval())
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(table).values(
                available_at=table.c.available_at - by,
                last_sent_at=table.c.last_sent_at - by,
                created_at=table.c.created_at - by,
            )
        )


def _sweep(runtime: Runtime) -> int:
    with runtime.unit_of_work() as uow:
        sent = jobs.resend_pending(uow)
        uow.jobs.clear()  # what it would send: not delivered here
    return sent


def _row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


def test_a_sweep_on_a_host_whose_clock_runs_ahead_sends_no_copy_of_a_message_just_sent(runtime: Runtime) -> None:
    """By its own clock, 10 minutes ahead, the message sent a moment ago was 10 minutes overdue: it sent a copy of
    every job just enqueued, each run twice over (a claimed job's copy does nothing, at the cost of a delivery)."""
    _lost(runtime)
    with time_machine.travel(jobs.utc_now() + SKEW, tick=False):
        assert _sweep(runtime) == 0, "the sweep judged the message overdue by its own clock"
    _time_passes(runtime, jobs.RESEND_AFTER + dt.timedelta(seconds=5))
    with time_machine.travel(jobs.utc_now() + SKEW, tick=False):
        assert _sweep(runtime) == 1


def test_a_sweep_on_a_host_whose_clock_runs_behind_sends_a_lost_message_once_it_is_overdue(runtime: Runtime) -> None:
    """By its own clock, 10 minutes behind, a message lost 3 minutes ago was not due for another 7: every lost job
    waited that much longer. And the copy it sent was marked sent 10 minutes early, so a sweep on a right clock sent
    another at once."""
    _lost(runtime)
    _time_passes(runtime, dt.timedelta(minutes=3))
    with time_machine.travel(jobs.utc_now() - SKEW, tick=False):
        assert _sweep(runtime) == 1, "the sweep held back a copy overdue on the database's clock"
    sent_at = _row(runtime).last_sent_at
    assert sent_at is not None and abs(sent_at - jobs.utc_now()) < dt.timedelta(minutes=1)
    assert _sweep(runtime) == 0, "the copy just sent was taken for overdue"


def test_a_job_enqueued_on_a_host_whose_clock_is_wrong_is_due_by_the_database_clock(runtime: Runtime) -> None:
    """The enqueuing host's clock set when the message was due: a web host 10 minutes behind made every job it
    enqueued look 10 minutes overdue to the sweep; one 10 minutes ahead held back the copy of a lost message."""
    with time_machine.travel(jobs.utc_now() - SKEW, tick=False):
        _lost(runtime)
    assert _sweep(runtime) == 0, "a job just enqueued was taken for overdue"
    row = _row(runtime)
    assert abs(row.available_at - jobs.utc_now()) < dt.timedelta(minutes=1)
    _time_passes(runtime, jobs.RESEND_AFTER + dt.timedelta(seconds=5))
    assert _sweep(runtime) == 1


def test_a_delayed_job_is_due_when_its_delay_ends_on_the_database_clock(runtime: Runtime) -> None:
    with time_machine.travel(jobs.utc_now() + SKEW, tick=False):
        _lost(runtime, delay_ms=5 * 60_000)
    row = _row(runtime)
    assert abs(row.available_at - (jobs.utc_now() + dt.timedelta(minutes=5))) < dt.timedelta(minutes=1)
    _time_passes(runtime, dt.timedelta(minutes=6))
    assert _sweep(runtime) == 0  # its delayed message is due a minute ago: not yet overdue
    _time_passes(runtime, dt.timedelta(minutes=2))
    assert _sweep(runtime) == 1
