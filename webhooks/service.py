"""Storing and processing inbound provider events.

A delivery is verified (webhooks.verify), stored once per (provider, event id) with its raw body, and handed to the
workers after the commit; that is all the request does. The worker runs `process_event` for each id of a
`webhooks.process_events` message (events sent together travel together: core.jobs.coalesce), which dispatches on the
type to payments.service and moves the row along the ladder pending → processed | ignored | waiting | failed.
The event row is the durable record: the sweep sends again whatever is left pending, so no job row is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import jobs, metrics
from core.clock import from_unix, utc_now
from core.db import PendingJob, UnitOfWork
from core.logging import stored_error
from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments
from payments.schemas import Effect
from webhooks import repository
from webhooks.errors import EventNotFound
from webhooks.handlers import Context, find_handler
from webhooks.models import EventStatus, InboundEvent
from webhooks.repository import LockedEvent
from webhooks.verify import VerifiedEvent, parse_gocardless_time

if TYPE_CHECKING:
    from core.db import AsyncDatabase

log = logging.getLogger("giving.webhooks")

PROCESS_EVENTS = "webhooks.process_events"
# A message's events run one after another on one worker thread: enough to spare the per-message costs of a burst,
# few enough that a backlog still spreads over every thread.
EVENTS_PER_MESSAGE = 10
# Past this, the message's remaining events go back to the broker as a message of their own, for any free thread:
# a slow provider call then holds up at most the event that made it, not the ten behind it (contract: 10 s).
MESSAGE_TIME_BUDGET_SECONDS = 1.0
# Quick retries after a handler error (then the sweep's slower ones): 2 s, 4 s, 8 s.
QUICK_RETRIES = 3
SWEEP_PENDING_AFTER = dt.timedelta(minutes=1)
# After its quick retries, the sweep runs a failed event again 1, 2, 4, 8, 16 and 32 minutes after its last failure,
# then hourly, until about three days of failures (as long as Stripe retries an undelivered event in live mode). Its
# delivery was answered 2xx, so the provider will not send it again: a provider outage or throttling longer than
# the quick retries must not leave the events processed meanwhile failed for good (their gifts never recorded),
# and spacing the runs keeps an event that keeps failing at a call an hour, not one a minute.
# Index: the event's failures so far; the last spacing holds for every count past it.
FAILED_RETRY_SPACING = (
    [SWEEP_PENDING_AFTER] * (QUICK_RETRIES + 2)  # a quick retry lost: the sweep's minute, as for a pending event
    + [dt.timedelta(minutes=minutes) for minutes in (2, 4, 8, 16, 32)]
    + [dt.timedelta(hours=1)]
)
# The first run and its quick retries, six sweeps at doubling spacings (63 minutes), then 70 hourly: about 3 days.
MAX_SWEPT_FAILURES = 1 + QUICK_RETRIES + 6 + 70
# An event whose object seems recorded but whose handler still waits is not re-run for ever.
MAX_RERUNS = 20
SWEEP_WAITING_AFTER = dt.timedelta(hours=1)
# An event still waiting this long after it was stored is about something that is not ours (an invoice of a
# subscription made outside Giving, say): ignored, with what it waited for, so `pending_events` does not grow for
# ever. Our own objects follow their events within minutes (the nightly catch-up fills any gap); `giving events
# replay` runs one again.
WAITING_GIVE_UP_AFTER = dt.timedelta(days=7)


def pending_event_count(session: Session) -> int:
    query = (
        select(sa.func.count())
        .select_from(InboundEvent)
        .where(col(InboundEvent.status).in_([EventStatus.PENDING, EventStatus.WAITING]))
    )
    return int(session.exec(query).one())


# --- storing ---------------------------------------------------------------------------------------------------------


def _row(provider: str, event: VerifiedEvent, now: dt.datetime, source: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "provider": provider,
        "external_id": event.external_id,
        "event_type": event.event_type[:100],
        "occurred_at": event.occurred_at,
        "body": event.body,
        "livemode": event.livemode,
        "status": EventStatus.PENDING,
        "waiting_for": None,
        "attempts": 0,
        "failures": 0,
        "last_error": None,
        "received_at": now,
        "processed_at": None,
        "source": source,
        "touched_at": None,
    }


def store_events(
    uow: UnitOfWork, provider: str, events: list[VerifiedEvent], *, source: str = "delivery"
) -> list[uuid.UUID]:
    """Insert each event unless it is already stored; processing of the new ones is sent after the commit."""
    now = utc_now()
    new: list[uuid.UUID] = []
    for event in events:
        stored = repository.insert_event(uow.session, _row(provider, event, now, source))
        if stored is not None:
            new.append(stored)
            uow.enqueue(PROCESS_EVENTS, durable=False, event_ids=[str(stored)])
    return new


def store_delivery(runtime: Runtime, provider: str, events: list[VerifiedEvent]) -> int:
    """The request's one transaction: a GoCardless batch is stored entirely or not at all; the new events are sent
    to the workers only after the commit (and if that send is lost, the sweep sends them).

    This is `store_events` without the ORM session: it is the hot path of every delivery, one INSERT per event, and
    a plain connection costs a fifth less CPU (bench/webhooks). It keeps the unit of work's rule: commit, then send.
    """
    now = utc_now()
    pending: list[PendingJob] = []
    with runtime.engine.begin() as connection:
        for event in events:
            stored = repository.insert_event(connection, _row(provider, event, now, "delivery"))
            if stored is not None:
                pending.append(PendingJob(PROCESS_EVENTS, {"event_ids": [str(stored)]}))
    if pending:
        jobs.send_jobs(pending)
    return len(pending)


async def store_delivery_async(database: AsyncDatabase, provider: str, events: list[VerifiedEvent]) -> int:
    """`store_delivery` on the event loop (PostgreSQL): one autocommitted INSERT of the whole delivery, so a
    GoCardless batch is still stored entirely or not at all. The sends follow the commit from a thread of their own
    (broker clients block, and the loop has every other delivery to serve); a send lost with the process is sent
    again by the sweep, as the stored event is the record."""
    now = utc_now()
    rows = [_row(provider, event, now, "delivery") for event in events]
    async with database.connection() as connection:
        stored = await repository.insert_events_async(connection, rows)
    if stored:
        jobs.send_jobs_soon([PendingJob(PROCESS_EVENTS, {"event_ids": [str(event_id) for event_id in stored]})])
    return len(stored)


# --- processing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processed:
    status: EventStatus
    waiting_for: str | None = None
    note: str = ""
    recorded: tuple[str, ...] = ()


def process_event(
    uow: UnitOfWork, settings: Settings, event_id: uuid.UUID, *, force: bool = False, skip_failed: bool = False
) -> Processed:
    """Run the event's handler once. Already processed or ignored events are skipped unless `force` (replay); with
    `skip_failed` (a redelivered message, `run_events`) so are failed ones, which have a delayed retry of their own.
    Both are decided on the locked row, so a copy of the message running meanwhile cannot slip between."""
    event = repository.lock_event_row(uow.session, event_id)
    if event is None:
        raise EventNotFound(f"no stored event {event_id}")
    if not force and event.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        return Processed(event.status, note="already done")
    if not force and skip_failed and event.status == EventStatus.FAILED:
        return Processed(event.status, note="failed: left to its own retry")
    if event.body is None and event.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        # A replay of an event done with long ago, its body pruned since: nothing to run again, and its row keeps
        # the record of what it did (rewritten as "ignored" now, it would say it never acted).
        return Processed(event.status, note="its body was pruned: nothing to run again")
    effect = _run_handler(uow, settings, event)
    now = utc_now()
    provider = event.provider
    status = {
        "processed": EventStatus.PROCESSED,
        "ignored": EventStatus.IGNORED,
        "waiting": EventStatus.WAITING,
    }[effect.outcome]
    waiting_for = effect.waiting_for
    if status == EventStatus.WAITING and waiting_for:
        # No lost wake-up: the recorder of this object takes the same key lock before it wakes waiting events, so
        # either it committed first (and we see the object now) or it will see this row as waiting.
        payments.hold_keys(uow.session, [waiting_for])
        if event.attempts < MAX_RERUNS and payments.key_recorded(uow.session, waiting_for):
            status, waiting_for = EventStatus.PENDING, None
            uow.enqueue(PROCESS_EVENTS, durable=False, event_ids=[str(event.id)])
    done = status in (EventStatus.PROCESSED, EventStatus.IGNORED)
    repository.update_event(
        uow.session,
        event.id,
        {
            "status": status,
            "waiting_for": waiting_for,
            "attempts": event.attempts + 1,
            "touched_at": now,
            "last_error": effect.note or None if status != EventStatus.PROCESSED else None,
            **({"processed_at": now} if done else {}),
        },
    )
    if effect.recorded:
        payments.hold_keys(uow.session, effect.recorded)
        wake(uow, effect.recorded)
    # Counted once committed: a run rolled back is counted as failed by `run_event`. Run again at once (woken
    # meanwhile) counts as waiting: it did wait for an object.
    outcome = "waiting" if status == EventStatus.PENDING else str(status.value)
    uow.on_commit(lambda: metrics.count("events_processed", provider=provider, outcome=outcome))
    return Processed(status, waiting_for, effect.note, tuple(effect.recorded))


def _run_handler(uow: UnitOfWork, settings: Settings, event: LockedEvent) -> Effect:
    handler = find_handler(event.provider, event.event_type)
    if handler is None:
        return Effect.ignored(f"{event.event_type} is not an event we act on")
    if event.body is None:
        return Effect.ignored("the body was pruned")
    payload: dict[str, Any] = json.loads(event.body)
    if event.provider == "stripe" and payload.get("account"):
        # Connect: an event about a connected account's balance and objects, not the charity's own.
        return Effect.ignored(f"an event of another Stripe account ({payload['account']})")
    if event.provider == "stripe" and bool(payload.get("livemode")) != settings.stripe.livemode:
        # Stored (the contract answers 2xx for what we do not act on) but kept out of the ledger: a test-mode event
        # never records a gift on a live installation, nor the other way round.
        mode = "a live-mode" if payload.get("livemode") else "a test-mode"
        return Effect.ignored(f"{mode} event on an installation with [stripe] livemode = {settings.stripe.livemode}")
    context = Context(uow=uow, settings=settings, event_type=event.event_type, occurred_at=event.occurred_at)
    return handler(context, payload)


def wake(uow: UnitOfWork, keys: list[str]) -> int:
    """Events waiting for objects just recorded (in this unit of work) run again as soon as it commits."""
    woken = repository.wake_waiting(uow.session, keys, utc_now())
    for event_id in woken:
        uow.enqueue(PROCESS_EVENTS, durable=False, event_ids=[str(event_id)])
    return len(woken)


def run_event(runtime: Runtime, event_id: uuid.UUID, *, force: bool = False, skip_failed: bool = False) -> Processed:
    """What the worker (and `giving events replay`) calls: process in one unit of work; on an error, roll back,
    record it on the event in another, and try again soon. `skip_failed`: as `process_event`."""
    try:
        with runtime.unit_of_work() as uow:
            result = process_event(uow, runtime.settings, event_id, force=force, skip_failed=skip_failed)
    except EventNotFound:
        raise
    except Exception as exc:
        log.warning("event %s failed", event_id, exc_info=True)
        # If even this fails (the database is down) the error propagates and the broker retries the message.
        with runtime.unit_of_work() as uow:
            failures = _record_failure(uow, event_id, exc)
            if failures <= QUICK_RETRIES:
                uow.enqueue(PROCESS_EVENTS, durable=False, delay_ms=1000 * 2**failures, event_ids=[str(event_id)])
        return Processed(EventStatus.FAILED, note=str(exc))
    return result


def run_events(runtime: Runtime, event_ids: list[uuid.UUID], *, redelivered: bool = False) -> None:
    """A message's events, each in a unit of work of its own, so one event's failure undoes none of the others
    (`run_event` records it on the event and retries it alone). Once the message has taken its time budget, the
    events left are sent as a new message. An error `run_event` cannot record, the database gone, stops the message
    and is raised, so the broker retries it; events not stored (yet) are raised after the rest have run.
    When the message comes again (`redelivered`: the broker's retry of it), processed and ignored events are skipped,
    and so are failed ones: their failure sent a delayed retry of their own (past the quick retries, the sweep sends
    them), and running them again at once would skip its back-off and count an attempt more. Pending and waiting
    ones run again. A first delivery runs failed events, so their own delayed retry (a new message) does run them."""
    not_found: EventNotFound | None = None
    started = time.monotonic()
    for done, event_id in enumerate(event_ids):
        if done and time.monotonic() - started > MESSAGE_TIME_BUDGET_SECONDS:
            rest = [str(remaining) for remaining in event_ids[done:]]
            # The rest of a redelivered message is still a redelivery: its failed events wait for their own retry.
            handed_on = {"event_ids": rest, **({"redelivered": True} if redelivered else {})}
            jobs.send_jobs([PendingJob(PROCESS_EVENTS, handed_on)])
            break
        try:
            run_event(runtime, event_id, skip_failed=redelivered)
        except EventNotFound as exc:
            not_found = not_found or exc
    if not_found is not None:
        raise not_found


def _record_failure(uow: UnitOfWork, event_id: uuid.UUID, exc: Exception) -> int:
    """Record a failed run on the event; returns how many of its runs have failed."""
    event = repository.lock_event_row(uow.session, event_id)
    if event is None:
        return QUICK_RETRIES + 1
    error = stored_error(exc, 4000)  # a database error as its type and SQLSTATE: its DETAIL repeats row values
    failures = event.failures + 1
    values = {
        "status": EventStatus.FAILED,
        "attempts": event.attempts + 1,
        "failures": failures,
        "touched_at": utc_now(),
        "last_error": error,
    }
    repository.update_event(uow.session, event.id, values)
    provider = event.provider
    uow.on_commit(lambda: metrics.count("events_processed", provider=provider, outcome="failed"))
    return failures


# --- no silent loss ----------------------------------------------------------------------------------------------


def sweep(uow: UnitOfWork, *, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Send again events stored but not processed: pending for a minute (a lost message, a crash after the commit),
    failed ones at growing intervals for about three days (`FAILED_RETRY_SPACING`), and waiting ones once an hour
    (in case their object came another way), or, after `WAITING_GIVE_UP_AFTER`, marked ignored."""
    now = now or utc_now()
    due = repository.due_for_sweep(
        uow.session,
        now,
        pending_after=SWEEP_PENDING_AFTER,
        waiting_after=SWEEP_WAITING_AFTER,
        failed_after=FAILED_RETRY_SPACING,
        max_failures=MAX_SWEPT_FAILURES,
        limit=limit,
    )
    sent = 0
    for event in due:
        event.touched_at = now
        uow.session.add(event)
        if event.status == EventStatus.WAITING and event.received_at < now - WAITING_GIVE_UP_AFTER:
            log.info(
                "event %s waited for %s since %s: ignored as not ours", event.id, event.waiting_for, event.received_at
            )
            event.last_error = f"not ours: nothing recorded {event.waiting_for} in {WAITING_GIVE_UP_AFTER.days} days"
            event.status, event.waiting_for = EventStatus.IGNORED, None
            continue
        if event.status == EventStatus.WAITING:
            event.status = EventStatus.PENDING
        uow.enqueue(PROCESS_EVENTS, durable=False, event_ids=[str(event.id)])
        sent += 1
    if sent:
        log.info("sweep sent %d events again", sent)
    return sent


def find_event(session: Session, reference: str) -> InboundEvent:
    event = repository.event_by_reference(session, reference)
    if event is None:
        raise EventNotFound(f"no stored event {reference}")
    return event


def status_counts(session: Session) -> dict[str, int]:
    return repository.count_by_status(session)


@dataclass
class Drift:
    provider: str
    listed: int
    missing: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "listed": self.listed, "missing": len(self.missing), "ids": self.missing}


def catch_up(runtime: Runtime, *, since: dt.timedelta = dt.timedelta(days=3)) -> list[Drift]:
    """List the providers' recent events and store any we never received (source "catch_up"); report the drift."""
    settings = runtime.settings
    started = utc_now() - since
    report: list[Drift] = []
    if settings.stripe.enabled:
        from payments.providers.stripe import stripe_gateway

        listed = [
            _stripe_listed(event)
            for event in stripe_gateway(settings.stripe).iter_events(created_since=started)
            if event.get("livemode", False) == settings.stripe.livemode
        ]
        report.append(_store_missing(runtime, "stripe", listed))
    if settings.gocardless.enabled:
        from payments.providers.gocardless import gocardless_gateway

        listed = [
            _gocardless_listed(event)
            for event in gocardless_gateway(settings.gocardless).iter_events(created_since=started)
        ]
        report.append(_store_missing(runtime, "gocardless", listed))
    for drift in report:
        if drift.missing:
            log.warning(
                "catch-up: %d %s events were never delivered: %s", len(drift.missing), drift.provider, drift.missing
            )
    return report


def _stripe_listed(event: dict[str, Any]) -> VerifiedEvent:
    created = event.get("created")
    return VerifiedEvent(
        external_id=str(event["id"]),
        event_type=str(event.get("type")),
        occurred_at=from_unix(created) if isinstance(created, int) else None,
        livemode=bool(event.get("livemode")),
        # The SDK turns Stripe's decimal strings into Decimal: write them back as the strings they were.
        body=json.dumps(event, separators=(",", ":"), default=str),
    )


def _gocardless_listed(event: dict[str, Any]) -> VerifiedEvent:
    return VerifiedEvent(
        external_id=str(event["id"]),
        event_type=f"{event.get('resource_type')}.{event.get('action')}",
        occurred_at=parse_gocardless_time(event.get("created_at")),
        livemode=False,
        body=json.dumps(event, separators=(",", ":"), sort_keys=True, default=str),
    )


def _store_missing(runtime: Runtime, provider: str, listed: list[VerifiedEvent]) -> Drift:
    # Only the types we act on: the providers list every event of the account (`customer.created`, ...), and one
    # the endpoint is not subscribed to was never delivered by design, not lost.
    listed = [event for event in listed if find_handler(provider, event.event_type) is not None]
    with runtime.unit_of_work() as uow:
        known = repository.known_external_ids(uow.session, provider, [event.external_id for event in listed])
        missing = [event for event in listed if event.external_id not in known]
        store_events(uow, provider, missing, source="catch_up")
    return Drift(provider, len(listed), [event.external_id for event in missing])
