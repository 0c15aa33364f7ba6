"""The periodic scheduler runs in every worker process (and in `giving serve`'s in-process worker) and looks at every
periodic job each second. It inserted each job's `scheduled_runs` row again every second, a transaction per periodic
job: some ten a second per process, for periods taken long before. A period it has taken, or seen taken by another
process, is remembered: an idle second costs no transaction. Each period still runs once across processes (and one
not taken because the database failed is tried again: tests/core/test_s17i_scheduler_database_down.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from core import jobs
from core.models import Job, ScheduledRun
from core.runtime import Runtime


@pytest.fixture
def transactions(runtime: Runtime) -> Iterator[list[object]]:
    """Every transaction begun on the runtime's database, as it begins."""
    begun: list[object] = []

    def began(connection: object) -> None:
        begun.append(connection)

    sa.event.listen(runtime.engine, "begin", began)
    try:
        yield begun
    finally:
        sa.event.remove(runtime.engine, "begin", began)


def _not_at_a_minute_boundary() -> None:
    """The shortest period is a minute: the test's passes must fall in one."""
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.5)


def test_an_idle_second_costs_the_scheduler_no_transaction(runtime: Runtime, transactions: list[object]) -> None:
    _not_at_a_minute_boundary()
    one, other = jobs.Scheduler(runtime.unit_of_work), jobs.Scheduler(runtime.unit_of_work)  # two processes'
    first = one.run_once()
    assert sorted(first) == sorted(jobs.PERIODIC)
    assert other.run_once() == []  # taken by the first: each period runs once across processes
    transactions.clear()

    for _ in range(5):  # five idle seconds in each process
        assert one.run_once() == []
        assert other.run_once() == []
    assert len(transactions) == 0, f"{len(transactions)} transactions for ten idle ticks"

    with runtime.read_session() as session:
        periods = session.exec(select(ScheduledRun)).all()
        enqueued = session.exec(select(Job.actor_name).where(col(Job.actor_name).in_(jobs.PERIODIC))).all()
    assert sorted(run.name for run in periods) == sorted(jobs.PERIODIC)
    assert sorted(enqueued) == sorted(spec.actor_name for spec in jobs.PERIODIC.values())
