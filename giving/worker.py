"""The worker composition root: the broker, every package's jobs, and the periodic scheduler."""

from __future__ import annotations

import importlib
import logging

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


def broker_reachable(runtime: Runtime) -> bool:
    url = runtime.settings.broker.url
    if not url:
        return True
    try:
        if url.startswith("redis"):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        else:
            import pika

            params = pika.URLParameters(url)
            params.socket_timeout = 1
            params.blocked_connection_timeout = 1
            pika.BlockingConnection(params).close()
        return True
    except Exception:
        return False
