"""Privacy jobs (added to giving/worker.py TASK_MODULES). Periodic: raw webhook bodies kept only
`[web] keep_webhook_bodies_days`, and what was kept of erased supporters for HMRC purged when its time is over.
Asked for by an erasure: its supporter's emails deleted from the outbox directory (`[email] outbox_dir`), and their
stored receipt PDFs (also deleted right after the erasure's commit: the job covers a crash in between)."""

from __future__ import annotations

import datetime as dt

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from giving import privacy


@jobs.periodic("privacy.prune_webhook_bodies", every=dt.timedelta(hours=6))
@jobs.actor("privacy.prune_webhook_bodies", queue="default", time_limit_ms=300_000, max_retries=3)
def prune_webhook_bodies(uow: UnitOfWork) -> int:
    return privacy.prune_webhook_bodies(uow, keep_days=get_runtime().settings.web.keep_webhook_bodies_days)


@jobs.periodic("privacy.purge_erased", every=dt.timedelta(days=1))
@jobs.actor("privacy.purge_erased", queue="default", time_limit_ms=300_000, max_retries=3)
def purge_erased(uow: UnitOfWork) -> int:
    return privacy.purge_due(uow, get_runtime().settings)


@jobs.actor(privacy.OUTBOX_JOB, queue="default", time_limit_ms=300_000, max_retries=5)
def delete_outbox_mail(uow: UnitOfWork, digests: list[str]) -> int:
    return privacy.delete_outbox_mail(uow.session, get_runtime().settings, digests)


@jobs.actor(privacy.FILES_JOB, queue="default", time_limit_ms=300_000, max_retries=5)
def delete_receipt_files(uow: UnitOfWork, storage_keys: list[str]) -> int:
    return privacy.delete_receipt_files(get_runtime().settings, storage_keys)
