"""`giving serve` without a broker runs the jobs in-process: its queue lives in memory, and a restart loses it. As
`giving receipts annual` does, the in-process worker starting sends every pending job again at once
(`resend_pending(older_than=0)`): a job whose message was lost runs at once, not once the sweep finds it 2 minutes
overdue, and a job a process that has exited held runs at once, not once its time limit has passed. A job a live
process holds (a `giving receipts annual` beside it) is left to that process."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from sqlmodel import col, select
from starlette.testclient import TestClient

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import Runtime, build_runtime, set_runtime
from giving.app import create_app
from tests.fixtures.app import make_settings
from tests.fixtures.services import need

RUNS: list[str] = []


@jobs.actor("tests.s17r_remember", max_retries=3)
def s17r_remember(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    uow.session.add(AppSecret(name=name, value="x"))
    RUNS.append(name)


@jobs.actor("tests.s17r_claimed_apart", max_retries=3, with_uow=False, time_limit_ms=600_000)
def s17r_claimed_apart(name: str) -> None:
    """Claimed apart from its work, for up to 10 minutes (as `webhooks.catch_up` is)."""
    RUNS.append(name)


@pytest.fixture(autouse=True)
def _clear() -> None:
    RUNS.clear()


def _served(runtime: Runtime) -> TestClient:
    """`giving serve` starting again with no broker: the app with its in-process worker (and scheduler)."""
    return TestClient(create_app(runtime=runtime))


def only_job(runtime: Runtime) -> Job:
    """The test's job (the scheduler adds the periodic jobs' rows)."""
    with runtime.read_session() as session:
        return session.exec(select(Job).where(col(Job.actor_name).startswith("tests.s17r_"))).one()


def _done_soon(runtime: Runtime, seconds: float = 10) -> Job:
    deadline = time.monotonic() + seconds
    while True:
        row = only_job(runtime)
        if row.status != JobStatus.PENDING or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def _claimed_by(runtime: Runtime, host: str, process: str) -> None:
    """The job's row as a run of that process left it: counted and held for its time limit, 10 minutes from now."""
    until = jobs.utc_now() + dt.timedelta(minutes=10)
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(Job.__table__)  # type: ignore[attr-defined]
            .where(Job.__table__.c.actor_name.startswith("tests.s17r_"))  # type: ignore[attr-defined]
            .values(
                attempts=1,
                run_id=uuid.uuid4(),
                running_until=until,
                run_host=host,
                run_process=process,
                last_sent_at=until,
            )
        )


def test_a_job_whose_message_the_stopped_server_lost_runs_as_the_server_starts_again(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17r_remember", name="lost")
        uow.jobs.clear()  # its message was in the stopped server's memory

    with _served(runtime) as client:
        assert client.get("/healthz").status_code == 200
        row = _done_soon(runtime)
    assert row.status == JobStatus.DONE, "the lost job waited for the sweep (2 minutes)"
    assert RUNS == ["lost"]


def test_a_job_the_stopped_server_held_runs_as_it_starts_again_not_after_its_time_limit(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17r_claimed_apart", name="held by the dead")
        uow.jobs.clear()
    gone = subprocess.Popen(["true"])
    gone.wait()
    _claimed_by(runtime, jobs.this_process()[0], f"{gone.pid}:1")

    with _served(runtime):
        row = _done_soon(runtime)
    assert row.status == JobStatus.DONE, "the job held by the stopped server waited for its time limit"
    assert RUNS == ["held by the dead"]


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_job_a_live_process_holds_is_left_to_it_as_the_server_starts(
    runtime: Runtime, live_process: subprocess.Popen[bytes]
) -> None:
    """A `giving receipts annual` without a broker running beside it holds the job: not sent, not taken over."""
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17r_claimed_apart", name="held by the living")
        uow.jobs.clear()
    started = jobs._process_started(live_process.pid)
    assert started is not None
    _claimed_by(runtime, jobs.this_process()[0], f"{live_process.pid}:{started}")
    before = only_job(runtime)

    with _served(runtime):
        time.sleep(1)
        row = only_job(runtime)
    assert RUNS == []
    assert (row.status, row.run_id, row.last_sent_at) == (JobStatus.PENDING, before.run_id, before.last_sent_at)


def test_a_server_starting_while_its_database_is_down_still_starts(tmp_path: Path) -> None:
    """The start sweep cannot reach the database: logged, and left to the sweep once it is back (`/readyz` says so
    meanwhile), as a database unreachable at start always was."""
    need("PostgreSQL", "127.0.0.1", 5432)  # the driver and the machine's set-up are there
    from giving.worker import import_tasks

    import_tasks()
    settings = make_settings("postgresql+psycopg://giving@127.0.0.1:1/giving", tmp_path)  # nothing listens on port 1
    down = build_runtime(settings, broker=StubBroker(fail_fast_default=False))
    try:
        with TestClient(create_app(runtime=down)) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").json()["database"] == "unavailable"
    finally:
        down.broker.close()
        down.engine.dispose()
        set_runtime(None)
