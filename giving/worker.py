"""The worker composition root: the broker, every package's jobs, and the periodic scheduler."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Iterator

from core.runtime import Runtime

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
