"""Claims of durable jobs held apart from their work: timed on the database's clock (PostgreSQL), and ended at once by
a broker-less process starting up only when the process holding them has exited."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine

from core import jobs
from core.models import AppSecret, JobStatus
from core.runtime import Runtime, get_runtime
from tests.core.job_deliveries import deliver, hold, in_thread, only_job
from tests.core.job_time import time_passes


class Killed(BaseException):
    """The process dies here (SIGKILL, out of memory): nothing after it runs, and nothing records a failure."""


STARTED: list[str] = []
PLAN: list[str] = []  # what each run does once started, in order: "wait" (for its gate), "die"; else it ends
GATES: list[threading.Event] = []
RUNNING: queue.SimpleQueue[int] = queue.SimpleQueue()
_lock = threading.Lock()


def _started(name: str) -> None:
    with _lock:
        STARTED.append(name)
        plan = PLAN.pop(0) if PLAN else "end"
        gate = threading.Event()
        GATES.append(gate)
        RUNNING.put(len(STARTED) - 1)
    if plan == "wait":
        assert gate.wait(20), "the test never released this run"
    elif plan == "die":
        raise Killed()


def _claims_then_works(name: str) -> None:
    """Like the receipts' issuing jobs: claims in its first unit of work, works outside it, done with its last."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    _started(name)
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


@jobs.actor("tests.s13a_claims", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s13a_claims(name: str) -> None:
    _claims_then_works(name)


SHORT_LIMIT_MS = 1_000


@jobs.actor(
    "tests.s13a_claims_briefly", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=SHORT_LIMIT_MS
)
def s13a_claims_briefly(name: str) -> None:
    _claims_then_works(name)


@jobs.actor("tests.s13a_process_exits", max_retries=2, with_uow=False, time_limit_ms=600_000)
def s13a_process_exits(name: str) -> None:
    """Claimed by the wrapper in a transaction of its own; with `exit`, the process ends while its run holds it."""
    if name == "exit":
        os._exit(0)
    _started(name)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    STARTED.clear()
    PLAN.clear()
    GATES.clear()
    while not RUNNING.empty():
        RUNNING.get()
    yield
    _release_all()


def _release_all() -> None:
    with _lock:
        PLAN.clear()
        for gate in GATES:
            gate.set()


def _postgres_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serves one machine: its claims are timed on that machine's clock")


# 1. A claim's time limit is set and compared on the database's clock.


def test_a_worker_whose_clock_runs_ahead_does_not_take_over_a_live_runs_job(runtime: Runtime) -> None:
    """Its copy of the job compared the claim's end with its own clock, minutes ahead: it took the job from the run
    still working on it, and both ran. The database's clock says the claim holds: the copy does nothing."""
    _postgres_only(runtime)
    PLAN[:] = ["wait"]
    kwargs = hold(runtime, "tests.s13a_claims", name="live")
    first = in_thread(lambda: deliver("tests.s13a_claims", kwargs))
    try:
        assert RUNNING.get(timeout=10) == 0
        with time_machine.travel(jobs.utc_now() + dt.timedelta(minutes=5), tick=False):
            deliver("tests.s13a_claims", kwargs)  # a worker whose clock is 5 minutes ahead
        assert STARTED == ["live"], "a worker whose clock ran ahead took over the job of a live run"
    finally:
        _release_all()
    first.join(10)
    row = only_job(runtime)
    assert (row.status, row.attempts, STARTED) == (JobStatus.DONE, 1, ["live"])


def test_a_claim_written_by_a_worker_whose_clock_runs_behind_holds_for_its_time_limit(runtime: Runtime) -> None:
    """A worker whose clock was 10 minutes behind wrote a claim that had ended before it was written: any copy took
    the job from the live run. The claim's end is the database's time plus the time limit."""
    _postgres_only(runtime)
    PLAN[:] = ["wait"]
    kwargs = hold(runtime, "tests.s13a_claims", name="behind")
    with time_machine.travel(jobs.utc_now() - dt.timedelta(minutes=10), tick=True):
        first = in_thread(lambda: deliver("tests.s13a_claims", kwargs))
        running = RUNNING.get(timeout=10)
    try:
        assert running == 0
        held_until = only_job(runtime).running_until
        assert held_until is not None
        assert held_until - jobs.utc_now() > dt.timedelta(seconds=50), "the claim ended by the skewed worker's clock"
        deliver("tests.s13a_claims", kwargs)  # a copy, on a worker whose clock is right
        assert STARTED == ["behind"], "a copy took over the job of a live run whose worker's clock runs behind"
    finally:
        _release_all()
    first.join(10)
    row = only_job(runtime)
    assert (row.status, row.attempts) == (JobStatus.DONE, 1)


def test_a_dead_runs_job_is_free_once_its_time_limit_passes_on_the_database_clock(runtime: Runtime) -> None:
    """A run on a worker whose clock was 10 minutes ahead died: its claim held the job, and the sweep held back its
    copy, 10 minutes past its time limit. Timed on the database's clock, the sweep (on a right clock) sends the copy
    2 minutes after the limit, and the copy takes the job over at once."""
    _postgres_only(runtime)
    PLAN[:] = ["die"]
    kwargs = hold(runtime, "tests.s13a_claims_briefly", name="dead")
    with time_machine.travel(jobs.utc_now() + dt.timedelta(minutes=10), tick=True), contextlib.suppress(Killed):
        deliver("tests.s13a_claims_briefly", kwargs)
    assert STARTED == ["dead"]
    time.sleep(SHORT_LIMIT_MS / 1000 + 0.2)  # its time limit passes
    time_passes(runtime, jobs.RESEND_AFTER + dt.timedelta(seconds=5))  # on the database's clock, as the sweep reads
    with runtime.unit_of_work() as uow:
        assert jobs.resend_pending(uow) == 1, "the sweep held back the copy of a dead run's job"
        uow.jobs.clear()  # delivered below
    deliver("tests.s13a_claims_briefly", kwargs)
    row = only_job(runtime)
    assert STARTED == ["dead", "dead"]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


# 2. A broker-less process starting up ends only the claims of processes that have exited.


def test_a_broker_less_start_leaves_the_jobs_a_live_process_is_running(runtime: Runtime) -> None:
    """`giving receipts annual` without a broker, beside a broker-less `giving serve` on the same database, sent every
    pending job again and ended their claims: the serve process's runs lost them, and the copies ran beside them."""
    PLAN[:] = ["wait"]
    kwargs = hold(runtime, "tests.s13a_claims", name="serving")
    first = in_thread(lambda: deliver("tests.s13a_claims", kwargs))
    try:
        assert RUNNING.get(timeout=10) == 0
        claimed = only_job(runtime)
        with runtime.unit_of_work() as uow:
            jobs.resend_pending(uow, older_than=dt.timedelta(0))
            copies = list(uow.jobs)
            uow.jobs.clear()  # delivered below
        after = only_job(runtime)
        assert (after.run_id, after.running_until) == (claimed.run_id, claimed.running_until), "its claim was ended"
        for copy in copies:
            deliver(copy.actor_name, copy.kwargs)
        assert STARTED == ["serving"], "a copy ran beside the live run"
    finally:
        _release_all()
    first.join(10)
    row = only_job(runtime)
    assert (row.status, row.attempts, STARTED) == (JobStatus.DONE, 1, ["serving"])


def _claim_in_a_process_that_exits(runtime: Runtime, kwargs: dict[str, Any]) -> None:
    """Another process (a stopped `giving serve` or annual run) claims the job and exits while its run holds it."""
    script = (
        "import json, sys, pathlib, tempfile\n"
        "from dramatiq.brokers.stub import StubBroker\n"
        "from core import jobs\n"
        "from core.runtime import build_runtime\n"
        "from giving.worker import import_tasks\n"
        "from tests.fixtures.app import make_settings\n"
        "import tests.core.test_s13a_job_claims\n"
        "import_tasks()\n"
        "build_runtime(make_settings(sys.argv[1], pathlib.Path(tempfile.mkdtemp())), broker=StubBroker())\n"
        "jobs._dramatiq_actors['tests.s13a_process_exits'](**json.loads(sys.argv[2]))\n"
        "sys.exit(3)\n"  # not reached: the job ends the process
    )
    url = runtime.engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", script, url, json.dumps({**kwargs, "name": "exit"})],
        cwd=os.getcwd(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_a_broker_less_start_ends_at_once_the_claims_of_a_process_that_exited(runtime: Runtime) -> None:
    """The point of sending everything again at start: a job a stopped run left holding restarts at once, not after
    its time limit (10 minutes here)."""
    kwargs = hold(runtime, "tests.s13a_process_exits", name="left")
    _claim_in_a_process_that_exits(runtime, kwargs)
    held = only_job(runtime)
    assert held.running_until is not None and held.running_until > jobs.utc_now() + dt.timedelta(minutes=5)
    assert held.run_host == jobs.this_process()[0] and held.run_process != jobs.this_process()[1]
    with runtime.unit_of_work() as uow:
        assert jobs.resend_pending(uow, older_than=dt.timedelta(0)) == 1
        copies = list(uow.jobs)
        uow.jobs.clear()  # delivered below
    assert (only_job(runtime).run_id, only_job(runtime).running_until) == (None, None)
    deliver(copies[0].actor_name, {**copies[0].kwargs, "name": "left"})
    row = only_job(runtime)
    assert STARTED == ["left"]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_which_claims_a_starting_process_may_end() -> None:
    """Only a process of this machine that is certainly gone: its pid free, or taken by another process (a different
    start time). This process, another machine's, and a claim naming none are left to their time limit."""
    machine, me = jobs.this_process()
    pid = int(me.split(":")[0])
    assert not jobs.process_exited(machine, me)
    assert not jobs.process_exited("another-host pid:[1]", me)
    assert not jobs.process_exited(None, None)
    if jobs._process_started(pid) is not None:  # Linux: the start time tells a reused pid apart
        assert jobs.process_exited(machine, f"{pid}:1")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    assert jobs.process_exited(machine, f"{exited.pid}:")
