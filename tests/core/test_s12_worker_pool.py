"""`giving worker --threads N` against the database pool: a process whose threads outnumber its connections would
have jobs wait for a connection and fail under load, so it refuses to start, saying what to change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

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
