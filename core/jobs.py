"""Background jobs on dramatiq, with the database as the record of what must happen.

- `@actor(...)` registers a job function; it becomes a dramatiq actor when `install_broker` binds it, so the broker
  (Redis, RabbitMQ, or the in-process stub) is chosen by the composition root, not at import time.
- Durable jobs have a row in `jobs` (written in the caller's transaction by `UnitOfWork.enqueue`). The actor marks it
  done in the same transaction as its work, skips it if it is already done, and the sweep re-sends rows left pending.
  A row's `last_sent_at` is when its current message is due to run (sent, delayed until, retried by, or running
  until its time limit), and the sweep sends again only rows whose message is `RESEND_AFTER` overdue; on PostgreSQL
  these times are written and judged on the database's clock.
- A job whose claim commits apart from its work is held by one run at a time (`run_id` until `running_until`), and
  `attempts` counts runs started, per job, where a crash cannot undo it: a job whose worker dies each time is given
  up after its retries like one that raises (docs/operations.md §2a). A run counted apart names itself in the row
  until it claims, so a delivery counted past the job's last run gives it up only once that run is certainly over
  (`_give_up`). A run's number among the job's runs is fixed when it takes the job, from the row's count less the
  runs counted that have not taken it and may still (`_take_counted`), so deliveries counted at once run the job
  `max_retries + 1` times whichever takes it first. On PostgreSQL a claim's time limit is set and compared on the
  database's clock, which every worker shares; the claim also names its process (`run_host`, `run_process`), so a
  broker-less process starting up ends at once only the claims of processes that have exited.
- `@periodic(...)` jobs run once per period however many workers are up: the first to insert the
  `scheduled_runs(name, period_start)` row enqueues it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import dramatiq
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Interrupt
from sqlmodel import Session, col, select

from core import metrics
from core.clock import utc_now
from core.db import PendingJob, UnitOfWork, conflict_insert, is_postgres
from core.logging import stored_error
from core.models import Job, JobStatus, ScheduledRun

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger("giving.jobs")

# How long a durable job may stay pending after its message was due before the sweep sends it again.
RESEND_AFTER = dt.timedelta(minutes=2)


@dataclass
class JobSpec:
    name: str
    fn: Callable[..., Any]
    queue: str
    time_limit_ms: int
    max_retries: int
    min_backoff_ms: int
    max_backoff_ms: int
    with_uow: bool
    claims_itself: bool = False
    # The name of a list argument: jobs sent together are sent as one message holding up to `batch_limit` items.
    batch_argument: str | None = None
    batch_limit: int = 0
    # Errors no retry can mend (a provider switched off, a refusal): the job fails at once, shown as failed.
    gives_up_on: tuple[type[BaseException], ...] = ()
    # Called once, in the transaction that marks the job failed for good: `on_give_up(uow, arguments, error)`.
    on_give_up: Callable[[UnitOfWork, dict[str, Any], str], None] | None = None


@dataclass
class PeriodicSpec:
    name: str
    actor_name: str
    every: dt.timedelta
    # A run does everything due when it runs (prune, sweep, poll), so a later success makes an earlier failure moot.
    # False for a job whose run covers only a window of time (the nightly catch-up looks back a few days): a failure
    # outside the next run's window stays failed for a person to look at.
    later_run_supersedes: bool = True


REGISTRY: dict[str, JobSpec] = {}
PERIODIC: dict[str, PeriodicSpec] = {}
_dramatiq_actors: dict[str, dramatiq.Actor[Any, Any]] = {}


def actor(
    name: str,
    *,
    queue: str = "default",
    time_limit_ms: int = 60_000,
    max_retries: int = 5,
    min_backoff_ms: int = 1_000,
    max_backoff_ms: int = 300_000,
    with_uow: bool = True,
    claims_itself: bool = False,
    batch_argument: str | None = None,
    batch_limit: int = 20,
    gives_up_on: tuple[type[BaseException], ...] = (),
    on_give_up: Callable[[UnitOfWork, dict[str, Any], str], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a job. With `with_uow` the function is called as `fn(uow, **kwargs)` inside one unit of work
    that also marks its durable job row done; otherwise as `fn(**kwargs)` and it opens its own.

    Without `with_uow` the durable row is claimed and marked done in two transactions of their own, around the
    job's. With `claims_itself` the job does both in its own units of work instead: `claim_in(uow)` in its first
    (a duplicate of a finished job, or a copy of one another run holds, stops there) and `done_in(uow)` in its last;
    if it never calls `done_in`, the row is marked done after it returns, as without. Either way the claim holds the
    row for this run until its time limit.

    With `batch_argument` (the name of a list argument) jobs sent together are coalesced: one message carries the
    items of many, up to `batch_limit` (`coalesce`). The job must then take any number of items.

    `gives_up_on`: errors that no retry can mend; the job then fails at once (its row `failed`, for a person).
    `on_give_up(uow, arguments, error)`: what the job's records must say once it has failed for good (a request
    shown as in hand that will not be done), in the transaction that marks it failed; durable jobs only."""
    if claims_itself and with_uow:
        raise ValueError("claims_itself is for jobs that open their own units of work (with_uow=False)")
    if batch_argument is not None and batch_limit < 1:
        raise ValueError("a batched job needs a batch_limit of at least 1")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise RuntimeError(f"two jobs are named {name}")
        REGISTRY[name] = JobSpec(
            name,
            fn,
            queue,
            time_limit_ms,
            max_retries,
            min_backoff_ms,
            max_backoff_ms,
            with_uow,
            claims_itself,
            batch_argument,
            batch_limit,
            gives_up_on,
            on_give_up,
        )
        return fn

    return register


def periodic(
    name: str, *, every: dt.timedelta, actor_name: str | None = None, later_run_supersedes: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        PERIODIC[name] = PeriodicSpec(name, actor_name or name, every, later_run_supersedes)
        return fn

    return register


_JOBS = Job.__table__  # type: ignore[attr-defined]
_INSERT_JOB = sa.insert(_JOBS)
# On PostgreSQL the message is due by the database's clock, the one the sweep judges it by (`resend_pending`).
_DUE_ON_THE_DATABASE_CLOCK = sa.func.statement_timestamp(type_=sa.DateTime(timezone=True)) + sa.bindparam(
    "job_delay", type_=sa.Interval()
)
_INSERT_JOB_DUE_ON_THE_DATABASE_CLOCK = sa.insert(_JOBS).values(
    available_at=_DUE_ON_THE_DATABASE_CLOCK, last_sent_at=_DUE_ON_THE_DATABASE_CLOCK
)


def record_job(session: Session, actor_name: str, kwargs: dict[str, Any], delay_ms: int | None) -> uuid.UUID:
    """Write a durable job's row in the session's transaction. One Core INSERT, at once: an ORM object would cost
    its construction and a flush of the session at commit, for every job enqueued."""
    now = utc_now()
    delay = dt.timedelta(milliseconds=delay_ms or 0)
    job_id = uuid.uuid4()
    values: dict[str, Any] = {
        "id": job_id,
        "actor_name": actor_name,
        "arguments": kwargs,
        "status": JobStatus.PENDING.value,
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "done_at": None,
    }
    # A delayed message is due when its delay ends: the sweep must not send a copy the moment it is available.
    if is_postgres(session):
        session.execute(_INSERT_JOB_DUE_ON_THE_DATABASE_CLOCK, {**values, "job_delay": delay})
    else:
        session.execute(_INSERT_JOB, {**values, "available_at": now + delay, "last_sent_at": now + delay})
    return job_id


# How long RabbitMQ may keep a send waiting before it counts as down. Sends run after the commit in a request's
# thread: with pika's defaults a broker that accepts connections and never answers (hung, or a half-open firewall)
# held each for 30 s (a 15 s handshake, which dramatiq tries twice), and one that blocks publishers (a memory or disk
# alarm) held them without limit. Far above a working broker's answer. (redis-py times out after 5 s by itself.)
BROKER_TIMEOUT_SECONDS = 3


_UNFLAGGED_REDELIVERY_ATTRIBUTE = "giving_redelivers_unflagged_after_ms"


def make_broker(url: str) -> dramatiq.Broker:
    if not url:
        return StubBroker(fail_fast_default=False)
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace="giving")
        # Redis gives a dead worker's messages back once its heartbeat is this old, and flags nothing (`_runner`).
        setattr(broker, _UNFLAGGED_REDELIVERY_ATTRIBUTE, broker.heartbeat_timeout)
        return broker
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    # Publisher confirms: a send returns only once RabbitMQ has the message.
    return RabbitmqBroker(url=_with_query_defaults(url, _RABBITMQ_TIMEOUTS), confirm_delivery=True)


# pika's URL parameters: the TCP connect, the AMQP handshake, and how long a connection RabbitMQ blocks may stay
# blocked. A value in the configured URL's query wins.
_RABBITMQ_TIMEOUTS = {
    "socket_timeout": str(BROKER_TIMEOUT_SECONDS),
    "stack_timeout": str(BROKER_TIMEOUT_SECONDS),
    "blocked_connection_timeout": "10",
}


def _with_query_defaults(url: str, defaults: dict[str, str]) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name, value in defaults.items():
        query.setdefault(name, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def install_broker(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make `broker` the global one and bind every registered job to it as a dramatiq actor."""
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)
    _dramatiq_actors.clear()
    for spec in REGISTRY.values():
        existing = broker.actors.get(spec.name)
        if existing is not None:  # bound to this broker already (import_tasks runs again in the app's lifespan)
            _dramatiq_actors[spec.name] = existing
            continue
        _dramatiq_actors[spec.name] = dramatiq.Actor(
            _runner(spec, getattr(broker, _UNFLAGGED_REDELIVERY_ATTRIBUTE, None)),
            broker=broker,
            actor_name=spec.name,
            queue_name=spec.queue,
            priority=0,
            options={
                "time_limit": spec.time_limit_ms,
                "max_retries": spec.max_retries,
                "min_backoff": spec.min_backoff_ms,
                "max_backoff": spec.max_backoff_ms,
                "throws": spec.gives_up_on,
            },
        )
    return broker


def queue_names() -> set[str]:
    return {spec.queue for spec in REGISTRY.values()}


# After a failed send, sends are not attempted for this long: a broker that hangs instead of refusing would
# otherwise hold every request that enqueues for the whole of its connection timeouts.
BROKER_COOLDOWN_SECONDS = 5.0
_COOLDOWN_ATTRIBUTE = "giving_down_until"  # kept on the broker object: a new broker (a test's) starts afresh


def coalesce(pending: list[PendingJob]) -> list[PendingJob]:
    """The messages to send for `pending`: jobs of a batched actor (`batch_argument`), not durable, with no delay
    and otherwise the same arguments become one job whose list holds all their items, `batch_limit` at most; the
    rest as they are.
    A burst of webhook deliveries is then a few messages instead of one each: for the web process a send costs more
    than storing the event (bench/webhooks), and for the worker each message has its own overhead."""
    messages: list[PendingJob] = []
    filling: dict[tuple[str, str], PendingJob] = {}
    for job in pending:
        spec = REGISTRY.get(job.actor_name)
        argument = spec.batch_argument if spec is not None else None
        items = job.kwargs.get(argument) if argument is not None else None
        # Sent as it is: not batched, delayed, durable (its row is claimed and marked done once, for one message), or
        # without a list of items.
        durable = "job_id" in job.kwargs
        if spec is None or argument is None or job.delay_ms or durable or not isinstance(items, list) or not items:
            messages.append(job)
            continue
        rest = {name: value for name, value in job.kwargs.items() if name != argument}
        key = (job.actor_name, json.dumps(rest, sort_keys=True, default=str))
        for item in items:
            batch = filling.get(key)
            if batch is None or len(batch.kwargs[argument]) >= spec.batch_limit:
                batch = filling[key] = PendingJob(job.actor_name, {**rest, argument: []})
                messages.append(batch)
            batch.kwargs[argument].append(item)
    return messages


def require_known(actor_name: str) -> None:
    """Refuse, before the commit, a job no process can run (a typo, a job renamed): the unit of work then changes
    nothing, where committing would leave work done whose job never runs."""
    if actor_name not in REGISTRY:
        raise RuntimeError(f"no job is named {actor_name}")


def send_jobs(jobs: list[PendingJob]) -> None:
    """Hand committed jobs to the broker, batched ones coalesced. This runs after the commit, so a failure is
    logged, never raised (it would turn work that is done into an error answer): a durable job is sent again by the
    sweep, and whoever enqueues a non-durable one keeps its own record to recover from (webhooks: the stored event
    and its sweep). A job this process cannot send is logged too, and the others still go."""
    known = []
    for job in jobs:
        if job.actor_name in _dramatiq_actors:
            known.append(job)
        else:
            metrics.count("jobs_send_failed", actor=job.actor_name)
            log.error("no job is named %s: not sent", job.actor_name)
    for job in coalesce(known):
        dramatiq_actor = _dramatiq_actors[job.actor_name]
        broker = dramatiq_actor.broker
        if time.monotonic() < getattr(broker, _COOLDOWN_ATTRIBUTE, 0.0):
            metrics.count("jobs_send_failed", actor=job.actor_name)
            continue
        try:
            dramatiq_actor.send_with_options(kwargs=job.kwargs, delay=job.delay_ms)
            metrics.count("jobs_sent", actor=job.actor_name)
        except Exception:
            setattr(broker, _COOLDOWN_ATTRIBUTE, time.monotonic() + BROKER_COOLDOWN_SECONDS)
            metrics.count("jobs_send_failed", actor=job.actor_name)
            durable = "job_id" in job.kwargs
            log.log(
                logging.WARNING if durable else logging.ERROR,
                "broker send failed for %s (%s); not sending for %.0f s",
                job.actor_name,
                "the jobs sweep sends it again" if durable else "not durable: its owner's sweep must recover it",
                BROKER_COOLDOWN_SECONDS,
                exc_info=True,
            )


# How long the sender thread waits after a first job for others to send with it: sends (and the thread's turns at the
# GIL) then come at most every 2 ms, whatever the load, for 2 ms more before a job reaches the broker.
COALESCE_WAIT_SECONDS = 0.002


class _BackgroundSender:
    """Sends committed jobs from a thread of its own, for code on an event loop, which must not wait on a broker
    client (RabbitMQ waits for its publisher confirm). Only for jobs whose owner keeps its own record and sweep (a
    stored webhook event): the request has committed that record, and a send lost with the process is sent again."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[PendingJob] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, pending: list[PendingJob]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="giving-job-sender", daemon=True)
                self._thread.start()
        self._queue.put(pending)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = self._queue.get()
            if batch is None:
                return
            # A moment for more to come, then everything queued goes together, coalesced (`send_jobs`).
            time.sleep(COALESCE_WAIT_SECONDS)
            pending: list[PendingJob] = []
            while batch is not None:
                pending.extend(batch)  # an unknown job among them is logged by `send_jobs`; the others still go
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
                stopping = batch is None
            try:
                send_jobs(pending)
            except Exception:
                log.exception("background send failed")

    def flush(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop the thread (the next `put` starts another)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)


_background = _BackgroundSender()


def send_jobs_soon(pending: list[PendingJob]) -> None:
    """`send_jobs` without waiting, for the event loop. The in-process broker never blocks: it is sent to at once."""
    actor = _dramatiq_actors.get(pending[0].actor_name) if pending else None
    if actor is None or isinstance(actor.broker, StubBroker):
        send_jobs(pending)
    else:
        _background.put(pending)


def flush_background_sends() -> None:
    _background.flush()


@dataclass
class _DurableRun:
    """One run of a durable job: its row, and what the database knows of the run."""

    spec: JobSpec
    job_id: uuid.UUID
    # The run's id: written in the row by its count (counted apart) and by its claim (`run_id`).
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    # A run whose claim commits apart from its work: its id, once written in the row by its claim.
    token: uuid.UUID | None = None
    # The row counts this run among its `attempts` (its claim, or its count, has committed).
    counted: bool = False
    # This run's number among the job's runs, fixed when it takes the job: for a run counted apart, the row's count
    # then less the runs counted that have not taken it and may still (`_take_counted`); for a run that took the
    # job uncounted (its failure counts it), the count its claim would have written (1: it took a job the row showed
    # no run of). 0 while it has not taken the job. Judges whether its failure ends the job (`_was_last_run`).
    attempt: int = 0
    # The row's count when this run took the job (claimed apart from its work): a failure recorded while it holds the
    # job is that of a run that took it uncounted before this one, and raises this run's number (`_was_last_run`).
    count_when_taken: int = 0
    # The run the row named when this run's count renamed it, if that run was counted and could still take the job
    # (`_count_start`): it is not in the row any more, and until it takes the job its count is not a run.
    overtook: Any = None
    # The row names this run (its claim has committed): only then can another run have taken the job over from it.
    claimed: bool = False
    done: bool = False


_durable_run: contextvars.ContextVar[_DurableRun | None] = contextvars.ContextVar("giving_durable_run", default=None)

# The durable runs this process is running (their ids), from before their count until they end, however they end: a
# run of this process that the row names and that is not here is over (`_may_still_run`).
_live_runs: set[uuid.UUID] = set()
# The runs of this process counted apart that have not taken the job yet (`_may_still_take`).
_waiting_runs: set[uuid.UUID] = set()


def claim_in(uow: UnitOfWork) -> None:
    """In a `claims_itself` job's first unit of work: claim its durable row for this run, until its time limit, and
    stop if it is no longer pending (a duplicate of a finished job) or another run holds it (a copy sent while it
    runs). Does nothing when the job was not run for a durable message (a direct call, a test).

    Call it before the job does anything: a row showing an earlier run makes it raise, so that the run is counted in
    a transaction of its own, and the job is then called again from the start (`_CountFirst`)."""
    run = _durable_run.get()
    if run is not None:
        _claim_apart(uow, run, alone=False)


def done_in(uow: UnitOfWork) -> None:
    """In a `claims_itself` job's last unit of work: mark its durable row done with that work (it counts once the
    unit of work commits)."""
    run = _durable_run.get()
    if run is None or run.done:
        return
    _mark_done(uow.session, run)

    def committed() -> None:
        run.done = True

    uow.on_commit(committed)


def _runner(spec: JobSpec, unflagged_redelivery_after_ms: int | None = None) -> Callable[..., Any]:
    def in_claim(runtime: Runtime, run: _DurableRun | None, kwargs: dict[str, Any]) -> Any:
        """Claim (lock), work and mark done in one transaction: the fast path of every `with_uow` job."""
        with runtime.unit_of_work() as uow:
            if run is not None:
                _claim_locked(uow, run)
            result = spec.fn(uow, **kwargs)
            if run is not None:
                _mark_done(uow.session, run)
        return result

    def run(**kwargs: Any) -> Any:
        from core.runtime import get_runtime

        runtime = get_runtime()
        job_id = kwargs.pop("job_id", None)
        durable = _DurableRun(spec, uuid.UUID(job_id)) if job_id is not None else None
        if durable is None:
            return attempt(runtime, None, kwargs)
        _live_runs.add(durable.id)
        try:
            return attempt(runtime, durable, kwargs)
        finally:
            _live_runs.discard(durable.id)
            _waiting_runs.discard(durable.id)

    def attempt(runtime: Runtime, durable: _DurableRun | None, kwargs: dict[str, Any]) -> Any:
        try:
            if spec.with_uow:
                if durable is None:
                    return in_claim(runtime, None, kwargs)
                if _may_follow_a_run(unflagged_redelivery_after_ms):
                    _count_start(durable)
                try:
                    return in_claim(runtime, durable, kwargs)
                except _CountFirst:
                    _count_start(durable)
                    return in_claim(runtime, durable, kwargs)
            if durable is not None and spec.claims_itself:
                # Its claim may commit with its work (giftaid's delete at HMRC), where a death rolls the count back:
                # a run that may follow one that died is counted apart first, as a `with_uow` job's is.
                if _may_follow_a_run(unflagged_redelivery_after_ms):
                    _count_start(durable)
                token = _durable_run.set(durable)
                try:
                    try:
                        result = spec.fn(**kwargs)
                    except _CountFirst:  # raised by `claim_in`, before the job has done anything
                        _count_start(durable)
                        result = spec.fn(**kwargs)
                finally:
                    _durable_run.reset(token)
                if not durable.done:
                    with runtime.unit_of_work() as uow:
                        _mark_done(uow.session, durable)
                return result
            if durable is not None:
                with runtime.unit_of_work() as uow:  # commits before the work: it counts the run
                    _claim_apart(uow, durable, alone=True)
            result = spec.fn(**kwargs)
            if durable is not None:
                with runtime.unit_of_work() as uow:
                    _mark_done(uow.session, durable)
            return result
        except _AlreadyDone:
            # A copy of a job another run holds (a `with_uow` job's copy stops only once the job is finished).
            if durable is not None and durable.counted and not durable.claimed and not spec.with_uow:
                _uncount(durable)
            raise
        except _GiveUp:
            if durable is not None and _give_up(durable, kwargs):
                raise _AlreadyDone from None  # left to the run that holds the job or may still take it: skipped
            raise
        except (Exception, Interrupt) as exc:  # Interrupt: dramatiq's TimeLimitExceeded is not an Exception
            if durable is not None:
                _record_failure(durable, exc, kwargs)
            raise

    def timed_run(**kwargs: Any) -> None:
        # Returns nothing: the job's result is for direct callers; dramatiq warns about actor return values.
        started = time.perf_counter()
        outcome = "failed"
        try:
            run(**kwargs)
            outcome = "done"
            return None
        except _AlreadyDone:
            outcome = "skipped"
            return None
        except _GiveUp:  # marked failed, for a person: dramatiq must not retry it
            return None
        finally:
            metrics.observe("job_duration_seconds", time.perf_counter() - started, actor=spec.name, outcome=outcome)

    timed_run.__name__ = spec.name.replace(".", "_")
    return timed_run


class _AlreadyDone(Exception):
    """A duplicate message for a durable job another run has finished, or holds (or, counted, may still take):
    nothing to do."""


class _CountFirst(Exception):
    """The row shows an earlier run, and this one's claim commits with its work (a `with_uow` job, or a
    `claims_itself` one): it must be counted in a transaction of its own first."""


class _GiveUp(Exception):
    """The job has started `max_retries + 1` times and never finished: the worker running it died each time."""


def _may_follow_a_run(unflagged_redelivery_after_ms: int | None) -> bool:
    """Whether the message being run may be one whose earlier run died, as far as the message tells: a dramatiq
    retry, a message RabbitMQ redelivers (it flags them), or, on a broker that flags nothing (Redis gives a dead
    worker's messages back after its heartbeat timeout), one older than that timeout."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return False
    if message.options.get("retries"):
        return True
    redelivered = getattr(message, "redelivered", None)
    if redelivered is not None:
        return bool(redelivered)
    if unflagged_redelivery_after_ms is None:
        return False
    sent_ms = max(message.message_timestamp, int(message.options.get("eta") or 0))
    return time.time() * 1000 - sent_ms >= unflagged_redelivery_after_ms


def _continue_count(attempt: int) -> int:
    """Bring the current message's retry count up to the job's (`attempt` is this run's number, from 1), so that
    dramatiq's backoff and its last retry follow the job, not the message (a sweep's copy starts at 0). Returns the
    message's count."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return max(attempt - 1, 0)
    retries = max(int(message.options.get("retries", 0)), attempt - 1)
    message.options["retries"] = retries
    return retries


# Whether the row shows an earlier run: counted (or failed), or sent again by the sweep (a run may have died).
_EARLIER = sa.or_(
    _JOBS.c.attempts > 0, sa.and_(_JOBS.c.last_sent_at.is_not(None), _JOBS.c.last_sent_at != _JOBS.c.available_at)
)
_EARLIER_RUN = _EARLIER.label("earlier")
_LOCK_JOB = sa.select(_JOBS.c.status, _EARLIER_RUN).where(_JOBS.c.id == sa.bindparam("job_id"))
_LOCK_JOB_FOR_UPDATE = _LOCK_JOB.with_for_update()


def _claim_locked(uow: UnitOfWork, run: _DurableRun) -> None:
    """For a job that works in the transaction that claims it: lock the row (PostgreSQL; SQLite's write lock is the
    whole database) so a duplicate message waits, and run only if it is still pending. A run the row may not count
    yet (an earlier run started and may have died) is counted first, in a transaction of its own (`_CountFirst`)."""
    query = _LOCK_JOB_FOR_UPDATE if is_postgres(uow.session) else _LOCK_JOB
    # A Core select (no ORM entity): this runs before every durable job.
    row = uow.session.execute(query, {"job_id": run.job_id}).first()
    if row is None or row.status != JobStatus.PENDING:
        raise _AlreadyDone
    if row.earlier and not run.counted:
        raise _CountFirst
    if not run.counted:
        run.attempt = 1  # the row shows no run before this one
        return
    _take_counted(run, _locked_row(uow, run.job_id))


def _count_start(run: _DurableRun) -> None:
    """Count this run in the row and commit it before the work, where a death cannot roll it back; give up instead
    when the job has already started `max_retries + 1` times (unless a run counted before may still take it:
    `_give_up`). A job claimed apart from its work is not counted while another run holds it: this copy does nothing
    (`_AlreadyDone`).

    The count names the run (`run_id`, its process) and makes its message due until its time limit (`last_sent_at`),
    in the same statement: until it claims the job, that is how a delivery counted after it, past the job's last run,
    tells that this run may still do the job from a run that died here. A count that renames another run counted
    and still to take the job remembers that run (`overtook`): both counts are in the row, and the first of the two
    to take the job is numbered without the other's (`_take_counted`)."""
    _waiting_runs.add(run.id)  # before its count can be seen: a run of this process reading the row asks here
    try:
        overtook = _count(run)
    except BaseException:
        _waiting_runs.discard(run.id)
        raise
    run.overtook = overtook


def _count(run: _DurableRun) -> Any:
    """`_count_start`'s transaction. Returns the run the count renamed, if it was counted and may still take the job
    (a retry and the sweep's copy counted one after the other, neither having taken the job yet)."""
    from core.runtime import get_runtime

    with get_runtime().unit_of_work() as uow:
        before = _locked_row(uow, run.job_id)
        overtook = None
        if before is not None and _may_still_take(before, run):
            overtook = SimpleNamespace(
                run_id=before.run_id,
                run_host=before.run_host,
                run_process=before.run_process,
                last_sent_at=before.last_sent_at,
                held=False,
            )
        now = _claims_now(uow.session)
        host, process = this_process()
        query = sa.update(_JOBS).where(_JOBS.c.id == run.job_id, _JOBS.c.status == JobStatus.PENDING.value)
        if not run.spec.with_uow:  # a copy of a job another run holds does nothing, and is not counted
            query = query.where(_unheld(now))
        values = {
            "attempts": _JOBS.c.attempts + 1,
            "run_id": run.id,
            "running_until": None,  # named, not holding: a claim whose time was up (counted only where unheld)
            "run_host": host,
            "run_process": process,
            "last_sent_at": now + dt.timedelta(milliseconds=run.spec.time_limit_ms),
        }
        attempt = uow.session.execute(query.values(values).returning(_JOBS.c.attempts)).scalar()
        if attempt is None:
            raise _AlreadyDone
        if attempt > run.spec.max_retries + 1:
            raise _GiveUp
        _continue_count(attempt)
    run.counted = True
    run.attempt = attempt
    return overtook


def _uncount(run: _DurableRun) -> None:
    """Take back the count of a run counted apart that then did nothing, because another run holds the job: it
    started nothing, and its count would use up one of the job's retries (the run holding the job, failing, would
    be its last too early). If this is lost (a death here), the job is only given up one run early, as before."""
    from core.runtime import get_runtime

    try:
        with get_runtime().unit_of_work() as uow:
            uow.session.execute(
                sa.update(_JOBS)
                .where(_JOBS.c.id == run.job_id, _JOBS.c.status == JobStatus.PENDING.value, _JOBS.c.attempts > 0)
                .values(attempts=_JOBS.c.attempts - 1)
            )
    except Exception:
        log.exception("could not take back the count of job %s", run.job_id)
    run.counted = False


def _claim_apart(uow: UnitOfWork, run: _DurableRun, *, alone: bool) -> None:
    """Claim the row for this run, with the job's work committed apart from the claim (after it): the row names the
    run and holds it until the run's time limit. A duplicate message meanwhile does nothing, and the sweep sends a
    copy only once that has passed (the run died). The claim counts the run (unless it was counted apart already);
    a job that has started `max_retries + 1` times already is given up instead (`_GiveUp`: the claim is rolled back).
    A run counted apart is numbered by the row as it was before the claim renames it (`_take_counted`), and judged
    by that number.

    `alone`: the claim commits before any work (the wrapper's own unit of work). A `claims_itself` job's claim may
    commit with its work instead (giftaid's delete at HMRC works in it), so a death there rolls the count back: there
    a row showing an earlier run is counted apart first (`_CountFirst`), and only a fresh row is counted in the
    claim (a first delivery keeps its one transaction)."""
    now = _claims_now(uow.session)
    until = now + dt.timedelta(milliseconds=run.spec.time_limit_ms)
    token = run.id
    host, process = this_process()
    query = sa.update(_JOBS).where(_JOBS.c.id == run.job_id, _JOBS.c.status == JobStatus.PENDING.value, _unheld(now))
    values: dict[str, Any] = {
        "run_id": token,
        "running_until": until,
        "last_sent_at": until,
        "run_host": host,
        "run_process": process,
    }
    if not run.counted:
        values["attempts"] = _JOBS.c.attempts + 1
        if not alone:
            query = query.where(sa.not_(_EARLIER))
    claim = query.values(values).returning(_JOBS.c.attempts)
    # A run counted apart numbers itself from the row as it was before its claim renames it (`_take_counted`).
    before = _locked_row(uow, run.job_id) if run.counted else None
    attempt = uow.session.execute(claim).scalar()
    if attempt is None:
        if not run.counted and not alone:
            # Why not: finished or held (nothing to do), or an earlier run shows (counted apart, then claimed).
            row = uow.session.execute(
                sa.select(_JOBS.c.status, _EARLIER_RUN, _unheld(now).label("unheld")).where(_JOBS.c.id == run.job_id)
            ).first()
            if row is not None and row.status == JobStatus.PENDING and row.earlier and row.unheld:
                raise _CountFirst
        raise _AlreadyDone
    if run.counted:
        _take_counted(run, before)
    elif attempt > run.spec.max_retries + 1:
        raise _GiveUp
    else:
        run.attempt = attempt  # also if the claim rolls back with the job's work: its failure counts it then
        _continue_count(attempt)
    run.token = token
    run.count_when_taken = attempt

    def committed() -> None:
        run.counted = True
        run.claimed = True

    uow.on_commit(committed)


def _take_counted(run: _DurableRun, row: Any) -> None:
    """A run counted apart takes the job (its lock, or its claim): its number is the row's count then, less the runs
    counted that have not taken the job and may still (each either takes it later, as a later run, or steps aside
    and takes its count back). The row names the last run counted; a run whose count renamed another that could
    still take the job remembers it (`overtook`). So a redelivery counted before the failure of a first delivery that
    held the job uncounted is numbered after it, and a run counted after another that has not run yet, before it.

    A number past the job's last run (`max_retries + 1`) means its runs are used up: this run does not run it
    (`_GiveUp`: the job is given up, or left to a run the row names that may still take it, `_give_up`)."""
    number = row.attempts
    if _may_still_take(row, run):
        number -= 1
    if run.overtook is not None and run.overtook.run_id != row.run_id and _overtaken_may_take(row, run):
        number -= 1
    _waiting_runs.discard(run.id)
    if number > run.spec.max_retries + 1:
        raise _GiveUp
    run.attempt = max(number, 1)
    _continue_count(run.attempt)


def _may_still_take(named: Any, run: _DurableRun) -> bool:
    """Whether the run the row names (`named`: its `run_id`, `run_host`, `run_process`, `last_sent_at`, `held` and
    the time `now`), another than `run`, was counted apart and has not taken the job yet but may still: its message
    is due until its time limit and it does not hold the job. A run of this process: it is still waiting
    (`_waiting_runs`). Whether one of another process has taken the job cannot be seen: it may still, unless its
    process has exited. (If it has, the run asking numbers itself one lower than it is: its failure, the job's last,
    leaves the job to the next delivery, whose count, past the last run, gives it up: a retry late, never a run too
    many.)"""
    if named.run_id is None or named.run_id == run.id or named.held:
        return False
    if named.last_sent_at is None or named.last_sent_at <= named.now:
        return False
    if (named.run_host, named.run_process) == this_process():
        return named.run_id in _waiting_runs
    return not process_exited(named.run_host, named.run_process)


def _overtaken_may_take(row: Any, run: _DurableRun) -> bool:
    """Whether the run this run's count renamed (`overtook`) may still take the job, by the row's clock."""
    if run.overtook is None:
        return False
    return _may_still_take(SimpleNamespace(**{**vars(run.overtook), "now": row.now}), run)


def _claims_now(session: Session) -> Any:
    """The time by which claims are held (`running_until`). On PostgreSQL the database's clock (when the statement
    started), the one clock every worker shares: with each host's own, a worker whose clock ran minutes ahead took a
    live run's job, and one running behind wrote a claim that held a dead run's job minutes too long. SQLite serves one
    machine: its clock (SQLite's own could not add the time limit to it)."""
    if is_postgres(session):
        return sa.func.statement_timestamp(type_=sa.DateTime(timezone=True))
    return utc_now()


def _unheld(now: Any) -> Any:
    return sa.or_(_JOBS.c.running_until.is_(None), _JOBS.c.running_until <= now)


def _held(session: Session) -> Any:
    """Whether a run holds the row now (its claim's time limit has not passed), as a column to select."""
    return sa.not_(_unheld(_claims_now(session))).label("held")


def _mark_done(session: Session, run: _DurableRun) -> bool:
    """Mark the row done. A run that claimed it apart from its work marks it only while it still holds it: once its
    time limit has passed and another run has taken the job over, that run marks it done (or records its failure for
    its retry), whatever the late one did (its work is idempotent, as every job's must be)."""
    now = utc_now()
    query = sa.update(_JOBS).where(_JOBS.c.id == run.job_id)
    if run.token is not None:
        query = query.where(_JOBS.c.run_id == run.token)
    elif not run.spec.with_uow:  # a `claims_itself` job that never claimed: done unless another run holds it
        query = query.where(_JOBS.c.status == JobStatus.PENDING.value, _unheld(_claims_now(session)))
    values: dict[str, Any] = {"status": JobStatus.DONE.value, "done_at": now}
    if not run.spec.with_uow or run.counted:  # a counted run named itself in the row (`_count_start`)
        values.update(_NO_CLAIM)
    done = session.execute(query.values(values).returning(_JOBS.c.actor_name, _JOBS.c.created_at)).first()
    if done is None:
        if run.token is not None:
            log.warning(
                "job %s (%s): its run's time ran out and another run holds it; not marked done here",
                run.job_id,
                run.spec.name,
            )
        return False
    if done.actor_name in {s.actor_name for s in PERIODIC.values() if s.later_run_supersedes}:
        # A periodic job that gave up is not worth running again once a later run has done the work: it stops
        # counting as failed (the alert clears by itself) and is pruned with the jobs done.
        session.execute(
            sa.update(_JOBS)
            .where(
                _JOBS.c.actor_name == done.actor_name,
                _JOBS.c.status == JobStatus.FAILED.value,
                _JOBS.c.created_at < done.created_at,
            )
            .values(status=JobStatus.SUPERSEDED.value, done_at=now)
        )
    return True


def current_retries() -> int:
    """How many times the job being run has been tried before (0 on its first run, or outside a worker): dramatiq's
    count for the message, which a durable job's claim brings up to the job's own (a sweep's copy, a redelivery)."""
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def retry_due_within(spec: JobSpec, retries: int) -> dt.timedelta:
    """The longest dramatiq waits before retrying a message that failed on its delivery number `retries` (0 the
    first): `min_backoff * 2**retries`, jittered up to twice that, at most `max_backoff` (dramatiq's backoff)."""
    backoff_ms = min(2 * spec.min_backoff_ms * 2 ** min(retries, 32), spec.max_backoff_ms)
    return dt.timedelta(milliseconds=backoff_ms)


_NO_CLAIM: dict[str, Any] = {"run_id": None, "running_until": None, "run_host": None, "run_process": None}


def _locked_row(uow: UnitOfWork, job_id: uuid.UUID) -> Any:
    """The row, locked (PostgreSQL), and the time by the clock its claims are timed on (`now`)."""
    postgres = is_postgres(uow.session)
    query = sa.select(
        _JOBS.c.status,
        _JOBS.c.attempts,
        _JOBS.c.run_id,
        _JOBS.c.run_host,
        _JOBS.c.run_process,
        _held(uow.session),
        _JOBS.c.last_error,
        _JOBS.c.last_sent_at,
        (_claims_now(uow.session) if postgres else sa.null()).label("now"),
    ).where(_JOBS.c.id == job_id)
    if postgres:
        query = query.with_for_update()
    row = uow.session.execute(query).first()
    if row is None:
        return None
    return SimpleNamespace(**{**row._asdict(), "now": row.now or utc_now()})


def _may_still_run(row: Any, run: _DurableRun) -> bool:
    """Whether another run the row names, counted (or claimed) before this one, may still be running or about to
    claim the job: its message is due until its time limit (`last_sent_at`) and it is not certainly over. A run of
    this process is over once it has left the job's wrapper (`_live_runs`); one of another process of this machine,
    once that process has exited; one of another machine only once its time is up."""
    if row.run_id is None or row.run_id == run.id or row.last_sent_at is None or row.last_sent_at <= row.now:
        return False
    if (row.run_host, row.run_process) == this_process():
        return row.run_id in _live_runs
    return not process_exited(row.run_host, row.run_process)


def _give_up_in(uow: UnitOfWork, spec: JobSpec, job_id: uuid.UUID, arguments: dict[str, Any], error: str) -> None:
    """Mark the job failed for good, and let it put its records right (once: only the run that does this)."""
    uow.session.execute(
        sa.update(_JOBS)
        .where(_JOBS.c.id == job_id)
        .values(status=JobStatus.FAILED.value, last_error=error, last_sent_at=utc_now(), **_NO_CLAIM)
    )
    if spec.on_give_up is not None:
        try:
            with uow.session.begin_nested():
                spec.on_give_up(uow, arguments, error)
        except Exception:
            # The job is still marked failed, for a person to look at.
            log.exception("job %s failed for good and could not record it (%s)", job_id, spec.name)


def _record_failure(run: _DurableRun, exc: BaseException, arguments: dict[str, Any]) -> None:
    """A run that raised: release its claim (dramatiq's retry claims the job again) and count it, or mark the job
    failed after `max_retries + 1` runs (counted per job, whatever message each came with) or on an error no retry
    can mend. Nothing, if another run holds the job or it is no longer pending."""
    from core.runtime import get_runtime

    spec = run.spec
    metrics.count("job_attempts_failed", actor=spec.name)
    error = stored_error(exc)
    final = False
    try:
        with get_runtime().unit_of_work() as uow:
            row = _locked_row(uow, run.job_id)
            if row is None or row.status != JobStatus.PENDING:
                return
            now = row.now
            if run.claimed and row.run_id != run.token:
                return  # its time ran out and another run holds the job: that run's outcome decides
            if not run.claimed and row.held:
                # Never claimed it (failed before its claim committed), and another run holds it: that run decides.
                # If it took the job uncounted (its claim rolled back with its work), it ran before that run: counted
                # now, it raises that run's number (`_was_last_run`).
                if not run.counted and run.attempt > 0:
                    uow.session.execute(
                        sa.update(_JOBS).where(_JOBS.c.id == run.job_id).values(attempts=_JOBS.c.attempts + 1)
                    )
                return
            attempts = row.attempts if run.counted else row.attempts + 1
            final = _was_last_run(row, run, attempts) or isinstance(exc, spec.gives_up_on)
            retries = _continue_count(attempts)
            if final:
                uow.session.execute(sa.update(_JOBS).where(_JOBS.c.id == run.job_id).values(attempts=attempts))
                _give_up_in(uow, spec, run.job_id, arguments, error)
            else:
                # dramatiq's retry is due within its backoff: the sweep sends a copy only when that is overdue.
                values: dict[str, Any] = {"last_sent_at": now + retry_due_within(spec, retries), **_NO_CLAIM}
                if _may_still_run(row, run):
                    # Another run counted since may be about to take the job: its name and time stay in the row,
                    # or a delivery counted past the job's last run would take it for dead (`_give_up`).
                    values = {"last_sent_at": max(row.last_sent_at, values["last_sent_at"])}
                elif _overtaken_may_take(row, run):
                    # The run this one's count renamed has still to take the job: the row names it again, for the
                    # same reason.
                    waiting = run.overtook
                    values = {
                        **_NO_CLAIM,
                        "run_id": waiting.run_id,
                        "run_host": waiting.run_host,
                        "run_process": waiting.run_process,
                        "last_sent_at": max(waiting.last_sent_at, values["last_sent_at"]),
                    }
                uow.session.execute(
                    sa.update(_JOBS)
                    .where(_JOBS.c.id == run.job_id)
                    .values(attempts=attempts, last_error=error, **values)
                )
    except Exception:
        log.exception("could not record the failure of job %s", run.job_id)
        return
    if final:
        metrics.count("jobs_given_up", actor=spec.name)


def _was_last_run(row: Any, run: _DurableRun, attempts: int) -> bool:
    """Whether this run, failing, was the job's last allowed one (`max_retries + 1` runs), judged by its own number
    (`_DurableRun.attempt`, fixed when it took the job: `_take_counted`) rather than by the row's count (`attempts`,
    this run's failure included), which can hold copies counted that have not run and may still.

    For a run holding the job (claimed apart from its work) the row's count moves for two reasons only, and its
    number with it: copies that found it holding the job took their counts back, never having run (lower: the lower
    of the two is its number); and a run that took the job uncounted before it, its failure recorded only while this
    one held the job, is counted (higher: `_record_failure`).

    A run that took the job unclaimed may have done so before the failure of a first delivery that took it uncounted
    was recorded (that delivery ran first, and this run's number misses it). So a lower number still ends the job once
    the row counts its last run and no run still to take the job may take it: the one the row names, or the one this
    run's count renamed (`overtook`)."""
    limit = run.spec.max_retries + 1
    number = run.attempt
    if run.claimed and attempts > run.count_when_taken:
        number += attempts - run.count_when_taken
    if min(number, attempts) >= limit:
        return True
    return attempts >= limit and not run.claimed and not _may_still_run(row, run) and not _overtaken_may_take(row, run)


def _give_up(run: _DurableRun, arguments: dict[str, Any]) -> bool:
    """The job has started `max_retries + 1` times and never finished, recording no failure: each run died (killed,
    out of memory). Marked failed for a person to look at, unless another run holds it or it is done.

    Nor while the run counted last may still take the job (`_may_still_run`): a delivery counted just before this
    one leaves the same row as one whose worker died there, but the row names it until its time limit. Left to it,
    the job is done, or failed by that run's own failure; if it died after all (on another machine, where its
    process cannot be seen), the sweep's copy once its time is up gives the job up.

    Returns whether this delivery left the job as it was (finished already, or left to another run): it did nothing,
    and is timed as skipped, not failed."""
    from core.runtime import get_runtime

    try:
        with get_runtime().unit_of_work() as uow:
            row = _locked_row(uow, run.job_id)
            if row is None or row.status != JobStatus.PENDING:
                return True
            if row.held:
                return True
            if _may_still_run(row, run):
                log.info("job %s (%s): its last run may still be starting; left to it", run.job_id, run.spec.name)
                return True
            error = (
                f"the worker died running this job: it started at least {row.attempts} times and never finished "
                "(killed, or out of memory?); given up"
            )
            if row.last_error:
                error += f". Its last error: {row.last_error}"
            _give_up_in(uow, run.spec, run.job_id, arguments, error[:2000])
    except Exception:
        log.exception("could not give up job %s", run.job_id)
        return False
    metrics.count("jobs_given_up", actor=run.spec.name)
    log.error("job %s (%s) given up: its worker died each time it ran", run.job_id, run.spec.name)
    return False


def resend_pending(uow: UnitOfWork, *, older_than: dt.timedelta = RESEND_AFTER, limit: int = 1000) -> int:
    """Send again every durable job still pending `older_than` after its message was due (`last_sent_at`).

    `older_than=0` sends every pending job that is available, even one whose message is believed running or waiting
    for dramatiq's retry: for an in-process worker starting (again), whose queue holds nothing. A claim whose process
    has exited (on this machine) is ended, so its copy runs at once; a job that a live process holds, or has counted
    and is about to claim, or one of another machine (whose processes cannot be seen from here), is left to that run
    and its time limit (a broker-less `giving serve` may be working on the same database).

    On PostgreSQL what is due and overdue is judged on the database's clock, the one the rows' times are written on
    (enqueued, counted, claimed, failed): a host whose clock is minutes out neither sends copies of messages just sent
    nor holds back those long overdue. SQLite serves one machine: its clock."""
    now = _claims_now(uow.session)
    # A run counted apart, named in the row until it claims, and due until its time limit (`_count_start`).
    named_run = sa.and_(col(Job.running_until).is_(None), col(Job.run_id).is_not(None), col(Job.last_sent_at) > now)
    due = [Job.status == JobStatus.PENDING, col(Job.available_at) <= now]
    if older_than > dt.timedelta(0):
        due.append(col(Job.last_sent_at) < now - older_than)
    # Only jobs this release knows: a row of another stays pending and untouched, so it stays among the oldest for
    # good; selected with the rest, a thousand such rows (a job renamed) filled every batch, and no lost message of
    # any other job was ever sent again.
    known = sorted(REGISTRY)
    _report_unknown(uow, due, known)
    query = select(Job, _held(uow.session), named_run.label("named")).where(*due, col(Job.actor_name).in_(known))
    query = query.order_by(col(Job.created_at)).limit(limit)
    if is_postgres(uow.session):
        # A row locked is a job running in the transaction that claimed it: nothing to send, and waiting for it (up
        # to its time limit) would hold this sweep, its worker thread and the rows it has already taken.
        query = query.with_for_update(skip_locked=True)
    sent: list[uuid.UUID] = []
    for job, held, named in uow.session.exec(query).all():
        if older_than <= dt.timedelta(0) and (job.running_until is not None or named):
            if (held or named) and not process_exited(job.run_host, job.run_process):
                # Its run may be alive: the copy would do nothing, and ending its claim would run it twice. One
                # counted and about to claim is left too: marked sent now, a copy counted past it would give it up.
                continue
            # A claim or count left by a process that exited (or whose time is up) must not keep its copy waiting.
            for name, value in _NO_CLAIM.items():
                setattr(job, name, value)
        uow.jobs.append(PendingJob(job.actor_name, {**job.arguments, "job_id": str(job.id)}))
        sent.append(job.id)
    for start in range(0, len(sent), _MARK_SENT_AT_ONCE):
        # Sent now, by the clock it is judged on.
        ids = sent[start : start + _MARK_SENT_AT_ONCE]
        uow.session.execute(sa.update(_JOBS).where(_JOBS.c.id.in_(ids)).values(last_sent_at=now))
    return len(sent)


def _report_unknown(uow: UnitOfWork, due: list[Any], known: list[str]) -> None:
    """Count and log, by name, the rows due that no job of this release can run: a newer release's, during a rolling
    deploy (its own workers send them), or one since renamed or removed. They are left pending, untouched, for a
    process that knows them; an old pending row shows on giving_jobs{status="pending"} for a person to look at."""
    unknown = (
        select(Job.actor_name, sa.func.count())
        .where(*due, col(Job.actor_name).not_in(known))
        .group_by(col(Job.actor_name))
    )
    for actor_name, rows in uow.session.exec(unknown).all():
        metrics.count("jobs_send_failed", rows, actor=actor_name)
        log.warning("%d durable jobs named %s: no job has that name in this release; left pending", rows, actor_name)


# Rows marked sent per statement: far below the databases' limits on a statement's parameters.
_MARK_SENT_AT_ONCE = 1000


# Linux's id of this boot of the machine, random at each boot (the same in every container of the host).
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def _machine(boot_id_file: str = BOOT_ID_FILE) -> str:
    """This machine, as far as its processes can be seen: the host name, the PID namespace (containers sharing a
    host name may each have their own pids) and the boot (`boot_id_file`, where there is one): outside containers
    the namespace is the same constant on every Linux host, so two hosts given the same name were one machine, and a
    process starting on one took the other's live runs for dead (`process_exited`). The boot id is last: a claim
    written by this machine before a reboot names another machine, left to its time limit."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    try:
        with open(boot_id_file) as file:
            boot = file.read(64).strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()} {namespace} {boot}".strip()[:255]


def _process_started(pid: int) -> str | None:
    """When the process started (Linux: clock ticks since boot, `/proc/<pid>/stat` field 22), telling a reused pid
    apart; "exited" for a zombie; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return "exited" if fields[0] in {"Z", "X"} else fields[19]


_this_machine: str | None = None
_this_process: tuple[int, str] | None = None


def this_process() -> tuple[str, str]:
    """(machine, "pid:start") naming this process in the claims it writes. Worked out again after a fork (dramatiq's
    worker processes)."""
    global _this_machine, _this_process
    pid = os.getpid()
    if _this_machine is None:
        _this_machine = _machine()
    if _this_process is None or _this_process[0] != pid:
        _this_process = (pid, f"{pid}:{_process_started(pid) or ''}")
    return _this_machine, _this_process[1]


def process_exited(machine: str | None, process: str | None) -> bool:
    """Whether the process a claim names has certainly exited: it ran on this machine and its pid is gone, or is now
    another process's (its start time differs). Unknown (another machine, a claim naming no process, no /proc to
    read): False, so its claim is left to its time limit."""
    if machine is None or process is None or machine != this_process()[0]:
        return False
    pid_text, _, started = process.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user's process
    except OSError:
        return False
    now_started = _process_started(pid)
    if now_started is None or not started:
        return False
    return now_started != started


def prune_finished(session: Session, *, now: dt.datetime, keep: dt.timedelta) -> int:
    """Delete durable jobs done more than `keep` ago, and the periodic runs' rows of periods that ended more than
    `keep` ago (never one a scheduler could still claim: `keep` is at least twice the longest period). Failed jobs stay
    for staff to look at, except a periodic job's failed run that a later run superseded. Returns how many rows went."""
    longest = max((spec.every for spec in PERIODIC.values()), default=dt.timedelta(0))
    keep = max(keep, 2 * longest)
    runs = ScheduledRun.__table__  # type: ignore[attr-defined]
    finished = (JobStatus.DONE.value, JobStatus.SUPERSEDED.value)
    done = session.execute(sa.delete(_JOBS).where(_JOBS.c.status.in_(finished), _JOBS.c.done_at < now - keep))
    periods = session.execute(sa.delete(runs).where(runs.c.period_start < now - keep))
    return int(done.rowcount or 0) + int(periods.rowcount or 0)  # type: ignore[attr-defined]


def pending_count(session: Session) -> int:
    return int(session.exec(select(sa.func.count()).select_from(Job).where(Job.status == JobStatus.PENDING)).one())


def period_start(now: dt.datetime, every: dt.timedelta) -> dt.datetime:
    seconds = int(every.total_seconds())
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def claim_period(uow: UnitOfWork, name: str, start: dt.datetime) -> bool:
    """Insert the run row; True only for the one process that inserted it."""
    table = ScheduledRun.__table__  # type: ignore[attr-defined]
    dialect = uow.session.get_bind().dialect.name
    values = {"name": name, "period_start": start, "started_at": utc_now()}
    stmt = conflict_insert(dialect)(table).values(**values).on_conflict_do_nothing().returning(table.c.name)
    return uow.session.execute(stmt).first() is not None


class Scheduler(threading.Thread):
    """Runs in every worker process; the `scheduled_runs` table makes each period run once in all. Each period is
    asked for once per process (remembered once its insert commits, whoever took it), not on every tick."""

    def __init__(self, unit_of_work: Callable[[], Any], tick_seconds: float = 1.0):
        super().__init__(name="giving-scheduler", daemon=True)
        self._unit_of_work = unit_of_work
        self._tick = tick_seconds
        # Not `_stop`: that is a method of `threading.Thread`, which `join()` and `is_alive()` call once it has ended.
        self._stopping = threading.Event()
        self._database_down = False
        # The period of each job last taken, by this process or (its row there already) another: until the next
        # begins, a tick has nothing to ask the database (ten transactions a second per process, idle, without it).
        self._taken: dict[str, dt.datetime] = {}

    def stop(self) -> None:
        self._stopping.set()

    def run_once(self) -> list[str]:
        started = []
        now = utc_now()
        for spec in PERIODIC.values():
            start = period_start(now, spec.every)
            if self._taken.get(spec.name) == start:
                continue
            try:
                with self._unit_of_work() as uow:
                    if claim_period(uow, spec.name, start):
                        uow.enqueue(spec.actor_name)
                        started.append(spec.name)
                # Committed: taken here, or by another process (its insert found the row). Not after a failure.
                self._taken[spec.name] = start
            except (sa.exc.OperationalError, sa.exc.TimeoutError):
                # The database is down (or its pool exhausted): every period, whose statements are the same two, would
                # fail alike, each with a traceback, every tick in every process. Said once, until a pass gets through;
                # the next tick tries again.
                if not self._database_down:
                    log.exception("scheduler: the database is unavailable; periodic jobs wait until it is back")
                self._database_down = True
                return started
            except Exception:
                log.exception("scheduler could not start %s", spec.name)
        if self._database_down:
            log.info("scheduler: the database is back; periodic jobs start again")
            self._database_down = False
        return started

    def run(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self._stopping.wait(self._tick)
