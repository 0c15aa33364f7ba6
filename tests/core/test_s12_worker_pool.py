"""`giving worker --threads N`, and `giving serve`'s in-process worker, against the database pool: a process whose
threads outnumber its connections would have jobs wait for a connection and fail under load, so it refuses to
start, saying what to change."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from core.runtime import Runtime
from core.settings import DatabaseSettings
from giving.worker import PoolFitsThreads, pool_shortfall

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgresql://giving@127.0.0.1/giving"


def test_the_readmes_production_worker_fits_the_default_pool() -> None:
    """`giving worker --processes 2 --threads 4`: 4 threads and the scheduler, in a pool of 5 + 5."""
    assert pool_shortfall(DatabaseSettings(url=POSTGRES), 4) is None
    assert pool_shortfall(DatabaseSettings(url=POSTGRES), 9) is None


def test_more_threads_than_connections_are_refused_with_what_to_change() -> None:
    problem = pool_shortfall(DatabaseSettings(url=POSTGRES, pool_size=5, max_overflow=5), 10)
    assert problem is not None
    assert "--threads 10 needs 11 database connections" in problem
    assert "pool has 10" in problem
    assert "--threads 9 or fewer" in problem and "GIVING_DATABASE__MAX_OVERFLOW to 6" in problem


def test_sqlite_is_not_checked() -> None:
    assert pool_shortfall(DatabaseSettings(url="sqlite:///./var/x.sqlite3"), 50) is None


def _worker(database: DatabaseSettings, threads: int) -> dramatiq.Worker:
    broker = StubBroker()
    broker.add_middleware(PoolFitsThreads(database))
    return dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)


def test_a_worker_process_with_more_threads_than_connections_does_not_start() -> None:
    """The check runs as dramatiq boots the worker, before any thread takes a job."""
    small = DatabaseSettings(url=POSTGRES, pool_size=2, max_overflow=1)
    refused = _worker(small, 3)
    with pytest.raises(SystemExit, match=r"--threads 3 needs 4 database connections"):
        refused.start()
    assert refused.workers == []
    fits = _worker(small, 2)
    fits.start()
    try:
        assert len(fits.workers) == 2
    finally:
        fits.stop()


def test_giving_workers_dramatiq_command_exits_when_its_threads_outnumber_the_pool(postgres_url: str) -> None:
    """What `giving worker --threads 12` execs: the dramatiq supervisor with our boot module. Its worker process
    refuses to start, and the supervisor stops with a non-zero code and the reason in its log."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("GIVING_")},
        "GIVING_ENV": "test",
        "GIVING_DATABASE__URL": postgres_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "giving.worker_boot", "--processes", "1", "--threads", "12"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its worker process
        process.communicate()
        pytest.fail("the worker started with more threads than database connections")
    assert process.returncode != 0
    assert "--threads 12 needs 13 database connections" in output, output[-3000:]


def test_giving_worker_refuses_before_starting_dramatiq(tmp_path: Path) -> None:
    """`giving worker` itself says it, exit 1 and one line on stderr, before it becomes dramatiq's supervisor (no
    worker process is started, nothing to read in a log). The database need not be reachable to know it."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("GIVING_")},
        "GIVING_DATABASE__URL": "postgresql://giving@127.0.0.1:1/giving",
        "GIVING_BROKER__URL": "amqp://guest:guest@127.0.0.1:1/%2F",
    }
    giving = str(Path(sys.executable).parent / "giving")
    answer = subprocess.run(
        [giving, "worker", "--threads", "12"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 1, answer.stderr
    assert "--threads 12 needs 13 database connections" in answer.stderr
    assert "Traceback" not in answer.stderr and answer.stdout == ""


# The in-process worker (`giving serve` with no broker) shares its process's pool with the web requests.


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
    root = ROOT
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
