"""The worker composition root: the broker, every package's jobs, and the periodic scheduler."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq

from core.runtime import Runtime
from core.settings import DatabaseSettings

log = logging.getLogger("giving.worker")

TASK_MODULES = (
    "crm.tasks",
    "payments.tasks",
    "webhooks.tasks",
    "receipts.tasks",
    "giftaid.tasks",
    "giving.tasks",
    "giving.privacy_tasks",
)


def import_tasks() -> None:
    """Register every job; `core.jobs.install_broker` then binds them (safe to call twice)."""
    from core import jobs

    for name in TASK_MODULES:
        importlib.import_module(name)
    try:
        from core.runtime import get_runtime

        jobs.install_broker(get_runtime().broker)
    except RuntimeError:
        pass


def pool_shortfall(database: DatabaseSettings, threads: int) -> str | None:
    """Why a worker process running `threads` jobs at once would wait for database connections, or None.

    Each job thread holds at most one connection, and the periodic scheduler one more, so the process needs
    `threads + 1` from its pool (`pool_size + max_overflow`). With fewer, a thread waits `pool_timeout` for a
    connection and its job fails (`QueuePool limit ... reached`), again and again under load. The pool is not
    grown to fit: its size is the operator's budget of PostgreSQL connections (docs/operations.md), so the worker
    refuses to start instead, saying what to change. SQLite is not checked (one machine, one writer at a time)."""
    import sqlalchemy as sa

    from core.db import normalise_url

    if sa.make_url(normalise_url(database.url)).get_backend_name() != "postgresql":
        return None
    connections = database.pool_size + database.max_overflow
    needed = threads + 1
    if connections >= needed:
        return None
    return (
        f"--threads {threads} needs {needed} database connections in each worker process (one per thread, one for "
        f"the scheduler), and its pool has {connections} ([database] pool_size {database.pool_size} + "
        f"max_overflow {database.max_overflow}): run with --threads {connections - 1} or fewer, or raise "
        f"GIVING_DATABASE__MAX_OVERFLOW to {needed - database.pool_size} (and check PostgreSQL's max_connections, "
        "docs/operations.md)"
    )


class PoolFitsThreads(dramatiq.Middleware):
    """Stops a worker process before its threads start when its database pool cannot serve them all
    (`pool_shortfall`): dramatiq's supervisor then stops and exits non-zero, with the reason logged."""

    def __init__(self, database: DatabaseSettings):
        self.database = database

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        problem = pool_shortfall(self.database, int(worker.worker_threads))
        if problem is not None:
            log.critical("the worker cannot start: %s", problem)
            raise SystemExit(f"giving worker: {problem}")


class _ProbeQuiet(logging.Filter):
    """Drops pika's records logged by a thread while it probes the broker: a refused probe is the answer `broker:
    unavailable`, not half a dozen ERROR lines with tracebacks per `/readyz` (a load balancer asks every few
    seconds). The broker's own connections, on other threads, still log."""

    probing = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.probing, "active", False)


_probe_quiet = _ProbeQuiet()


@contextlib.contextmanager
def pika_quiet() -> Iterator[None]:
    """pika logs nothing from this thread inside the block (probes of the broker: readiness, queue depths)."""
    import pika  # noqa: F401 (its module loggers exist once it is imported)

    for name in list(logging.root.manager.loggerDict):
        if name == "pika" or name.startswith("pika."):
            logger = logging.getLogger(name)
            if _probe_quiet not in logger.filters:
                logger.addFilter(_probe_quiet)
    _ProbeQuiet.probing.active = True
    try:
        yield
    finally:
        _ProbeQuiet.probing.active = False


def broker_reachable(runtime: Runtime) -> bool:
    url = runtime.settings.broker.url
    if not url:
        return True
    try:
        if url.startswith("redis"):
            import redis

            # A read timeout of its own: with redis-py's 5 s (and retries), a Redis that accepts and never answers
            # would hold a /readyz thread that long per probe.
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=None)
            try:
                client.ping()
            finally:
                client.close()
        else:
            import pika

            params = pika.URLParameters(url)
            params.socket_timeout = 1
            params.stack_timeout = 2  # the AMQP handshake: 15 s by default, for a broker that accepts and says nothing
            params.blocked_connection_timeout = 1
            params.connection_attempts = 1
            with pika_quiet():
                pika.BlockingConnection(params).close()
        return True
    except Exception:
        return False
