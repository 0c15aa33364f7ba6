"""The process's engine, sessionmaker, broker and settings, built once by a composition root.

Web handlers, actors and commands all open units of work through `Runtime.unit_of_work()`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dramatiq
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from core import jobs
from core.db import UnitOfWork, make_engine, make_sessionmaker, unit_of_work
from core.settings import Settings

log = logging.getLogger("giving.runtime")

# How many pending jobs the in-process worker's start sweep sends at most (`InlineWorker.send_pending`), as `giving
# receipts annual` does: the sweep's batch of 1000 would leave the rest to wait until they are 2 minutes overdue.
START_SWEEP_LIMIT = 1_000_000


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    broker: dramatiq.Broker
    services: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        with unit_of_work(self.sessions, jobs.send_jobs) as uow:
            yield uow

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, in a read-only transaction: PostgreSQL refuses a write in it (SQLite has no
        such mode, so there it rests on the callers, as the tests run them on both). It ends with a commit, which
        changes nothing in a read-only transaction, because psycopg answers a ROLLBACK by dropping every statement
        the connection has prepared (one more round trip, and the statements planned again). After an error it
        rolls back."""
        session = self.sessions(bind=self.read_only_engine)
        try:
            yield session
            session.commit()
        finally:
            session.close()

    @cached_property
    def read_only_engine(self) -> Engine:
        """The engine's pool, with every transaction begun READ ONLY on PostgreSQL (ignored by SQLite)."""
        return self.engine.execution_options(postgresql_readonly=True)

    @property
    def inline(self) -> bool:
        return not self.settings.broker.url


_current: Runtime | None = None


def build_runtime(settings: Settings, *, broker: dramatiq.Broker | None = None) -> Runtime:
    """Engine, sessionmaker and broker for this process; binds every registered job to the broker."""
    engine = make_engine(settings.database)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        broker=jobs.install_broker(broker or jobs.make_broker(settings.broker.url)),
    )
    set_runtime(runtime)
    return runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def get_runtime() -> Runtime:
    if _current is None:
        raise RuntimeError("no runtime: a composition root (giving.app, giving.worker, giving.cli) builds it first")
    return _current


class InlineWorker:
    """The in-process worker used when no broker is configured: the same actors, run on threads here."""

    def __init__(self, runtime: Runtime, threads: int):
        self.runtime = runtime
        self.threads = threads
        self.worker: dramatiq.Worker | None = None
        self.scheduler: jobs.Scheduler | None = None

    def start(self, *, scheduler: bool = True) -> None:
        problem = self.pool_shortfall(scheduler=scheduler)
        if problem is not None:
            log.critical("the in-process worker cannot start: %s", problem)
            raise RuntimeError(problem)
        broker = self.runtime.broker
        broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=self.threads)
        self.worker.start()
        if scheduler:
            self.scheduler = jobs.Scheduler(self.runtime.unit_of_work)
            self.scheduler.start()

    def send_pending(self) -> int:
        """The start sweep, before this worker starts: every pending job again, at once (`resend_pending` with
        `older_than=0`). The in-process queue is empty: whatever an earlier broker-less process had in its own was lost
        with it, and each such message would otherwise wait for the sweep to find it 2 minutes overdue, and each job
        held by a run of that process for its time limit (up to 10 minutes) and 2 more. Jobs a live process holds, or
        has counted and is about to claim, are left to it (a `giving receipts annual` beside `giving serve`), as are
        another machine's. A database unavailable now is logged and left to the sweep. Returns how many were sent."""
        try:
            with self.runtime.unit_of_work() as uow:
                return jobs.resend_pending(uow, older_than=dt.timedelta(0), limit=START_SWEEP_LIMIT)
        except Exception:
            log.warning(
                "the in-process worker could not send the pending jobs as it started; the sweep will", exc_info=True
            )
            return 0

    def pool_shortfall(self, *, scheduler: bool) -> str | None:
        """Why these threads would starve the process's database pool, or None. They share it with the web requests
        (`giving serve`) or the command's own work (`giving receipts annual`): each job thread holds one connection,
        the scheduler one, and at least one must stay for the rest, or a burst of jobs leaves the web none (each
        request waits `pool_timeout`, then 503). As `giving worker` does, PostgreSQL's pool is the operator's budget,
        not grown to fit (docs/operations.md); SQLite is not checked (one writer at a time)."""
        database = self.runtime.settings.database
        if self.runtime.engine.dialect.name != "postgresql":
            return None
        connections = database.pool_size + database.max_overflow
        needed = self.threads + (1 if scheduler else 0) + 1
        if connections >= needed:
            return None
        fewer = connections - needed + self.threads
        return (
            f"[broker] inline_threads {self.threads} needs {needed} database connections (one per thread, "
            f"{'one for the scheduler, ' if scheduler else ''}one at least for the web requests or the command), "
            f"and the pool has {connections} ([database] pool_size {database.pool_size} + max_overflow "
            f"{database.max_overflow}): "
            + (f"set GIVING_BROKER__INLINE_THREADS to {fewer} or fewer, or " if fewer >= 1 else "")
            + f"raise GIVING_DATABASE__MAX_OVERFLOW to {needed - database.pool_size} (docs/operations.md)"
        )

    def join(self, timeout_ms: int = 60_000) -> None:
        """Wait until every queue is empty (tests and the demo). A job may send another to a queue already waited
        on (a document rendered, then its email): passes are made until one finds every queue empty at once."""
        broker = self.runtime.broker
        while True:
            for queue in list(broker.get_declared_queues()):
                broker.join(queue, timeout=timeout_ms)  # type: ignore[attr-defined]
            if self.worker is not None:
                self.worker.join()
            queues = getattr(broker, "queues", {})  # the in-process (stub) broker's; others are joined once
            if not any(getattr(queue, "unfinished_tasks", 0) for queue in queues.values()):
                return

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.worker is not None:
            self.worker.stop()
