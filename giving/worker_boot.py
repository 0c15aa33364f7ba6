"""What `dramatiq giving.worker_boot` imports in each worker process: settings, broker, jobs, scheduler."""

from __future__ import annotations

import gc
import logging

from core.jobs import Scheduler
from core.logging import configure_logging
from core.runtime import build_runtime
from core.settings import feature_warnings, get_settings
from giving.worker import PoolFitsThreads, import_tasks
from receipts.render import startup_warnings as render_warnings

configure_logging()
for warning in [*feature_warnings(get_settings()), *render_warnings()]:
    logging.getLogger("giving.worker").warning(warning)
import_tasks()
runtime = build_runtime(get_settings())
broker = runtime.broker
# Refuses, before any job runs, more threads (`giving worker --threads`) than the database pool has connections.
broker.add_middleware(PoolFitsThreads(runtime.settings.database))
scheduler = Scheduler(runtime.unit_of_work)
scheduler.start()
# Everything loaded so far (modules, settings, compiled templates) lives as long as the process: moved out of the
# collector's way, collections scan only what jobs allocate (PDF rendering allocates a great deal).
gc.collect()
gc.freeze()
