"""What `dramatiq giving.worker_boot` imports in each worker process: settings, broker, jobs, scheduler."""

from __future__ import annotations

from core.jobs import Scheduler
from core.logging import configure_logging
from core.runtime import build_runtime
from core.settings import get_settings
from giving.worker import import_tasks

configure_logging()
import_tasks()
runtime = build_runtime(get_settings())
broker = runtime.broker
scheduler = Scheduler(runtime.unit_of_work)
scheduler.start()
