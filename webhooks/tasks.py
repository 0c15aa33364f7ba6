"""Jobs of webhooks: process stored events, the sweep, the nightly catch-up."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from webhooks import service

log = logging.getLogger("giving.webhooks")


# The time limit of one event's processing, as before batching: a message hands its remaining events on after its
# time budget (service.MESSAGE_TIME_BUDGET_SECONDS), so it runs little longer than its slowest event.
@jobs.actor(
    service.PROCESS_EVENTS,
    queue="webhooks",
    time_limit_ms=120_000,
    max_retries=10,
    with_uow=False,
    batch_argument="event_ids",
    batch_limit=service.EVENTS_PER_MESSAGE,
)
def process_events(event_ids: list[str], redelivered: bool = False) -> None:
    """`redelivered`: the events handed on by a redelivered message past its time budget (`service.run_events`)."""
    ids = [uuid.UUID(event_id) for event_id in event_ids]
    service.run_events(get_runtime(), ids, redelivered=redelivered or jobs.current_retries() > 0)


@jobs.actor("webhooks.process_event", queue="webhooks", time_limit_ms=120_000, max_retries=10, with_uow=False)
def process_event(event_id: str) -> None:
    """Messages of one event each, as releases before `process_events` sent them, still in a queue at an upgrade."""
    service.run_event(get_runtime(), uuid.UUID(event_id))


@jobs.periodic("webhooks.sweep_events", every=dt.timedelta(minutes=1))
@jobs.actor("webhooks.sweep_events", queue="webhooks", time_limit_ms=60_000, max_retries=0)
def sweep_events(uow: UnitOfWork) -> None:
    service.sweep(uow)


# Each run lists only the last few days' events: tonight's success does not redo a failed run of a week ago.
@jobs.periodic("webhooks.catch_up", every=dt.timedelta(days=1), later_run_supersedes=False)
@jobs.actor("webhooks.catch_up", queue="webhooks", time_limit_ms=600_000, max_retries=3, with_uow=False)
def catch_up() -> None:
    service.catch_up(get_runtime())
