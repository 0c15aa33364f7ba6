"""A real worker process on Redis for the kill test: `python -m tests.receipts.redis_worker`.

Settings come from GIVING_* variables; the Redis namespace from RECEIPTS_TEST_NAMESPACE (one per test, so parallel
runs never take each other's messages). On start it runs the durable-job sweep at once (a restarted worker's first
sweep), then works until SIGTERM (or until it is killed).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from core import jobs
from core.runtime import build_runtime
from core.settings import load_settings
from giving.worker import import_tasks


def main() -> None:
    settings = load_settings()
    import_tasks()
    broker = RedisBroker(url=settings.broker.url, namespace=os.environ["RECEIPTS_TEST_NAMESPACE"])
    runtime = build_runtime(settings, broker=broker)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    with runtime.unit_of_work() as uow:
        jobs.resend_pending(uow, older_than=dt.timedelta(0))
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    worker.stop()
    broker.close()


if __name__ == "__main__":
    main()
