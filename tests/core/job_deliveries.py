"""Deliveries of a durable job ordered by a test, as concurrent dramatiq workers may run them. The test holds the job's
message back (`hold`) and delivers it itself (`deliver`), each delivery on a thread of its own where they race
(`in_thread`: its own connection), and the job's function waits at its gates (`Gates`) for the test to let it go on."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job
from core.runtime import Runtime, get_runtime


class Gates:
    """Where each delivery of a test's job (numbered from 0, passed to the job as `delivery`) waits for the test, and
    what it did. One module-level instance per test module, used by its jobs: `reset` before each test, `release`
    after it (no delivery is left waiting)."""

    def __init__(self, deliveries: int) -> None:
        self.deliveries = deliveries  # how many deliveries a test may order
        self.arrived: list[threading.Event] = []  # set as each delivery reaches its first gate (`arrive`)
        self.go: list[threading.Event] = []  # each delivery goes on past `arrive` once its event is set
        self.claimed: list[threading.Event] = []  # set once a delivery's claim has committed (`after_claim`)
        self.finish: list[threading.Event] = []  # a delivery that claimed works once its event is set
        self.started: list[int] = []  # the deliveries that started the job's work, in order
        self.fail: set[int] = set()  # the deliveries whose work fails as it starts
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        for events in (self.arrived, self.go, self.claimed, self.finish):
            events.clear()
            events.extend(threading.Event() for _ in range(self.deliveries))
        self.started.clear()
        self.fail.clear()

    def release(self) -> None:
        for events in (self.go, self.finish):
            for event in events:
                event.set()

    def arrive(self, delivery: int) -> None:
        """The delivery has reached the job: it goes on once the test sets `go[delivery]`."""
        self.arrived[delivery].set()
        assert self.go[delivery].wait(20), "the test never let this delivery go on"

    def after_claim(self, delivery: int) -> None:
        """The delivery's claim has committed: it works once the test sets `finish[delivery]`."""
        self.claimed[delivery].set()
        assert self.finish[delivery].wait(20), "the test never let this delivery work"

    def start(self, delivery: int) -> None:
        """The delivery starts the job's work, and fails there if the test put it in `fail`."""
        with self._lock:
            self.started.append(delivery)
        if delivery in self.fail:
            raise RuntimeError(f"the provider said no to delivery {delivery}")


def claims_itself_then_works(gates: Gates, name: str, delivery: int, *, waits_after_claim: bool = False) -> None:
    """The body of a job that claims itself, as the receipts' issuing jobs do: each delivery waits for the test before
    it claims (`gates.arrive`) and, `waits_after_claim`, before it works (`gates.after_claim`), so the test orders the
    deliveries as two workers may; it works outside its claim's transaction and is marked done with its last."""
    gates.arrive(delivery)
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
    if waits_after_claim:
        gates.after_claim(delivery)
    gates.start(delivery)
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


def hold(runtime: Runtime, actor_name: str, **kwargs: Any) -> dict[str, Any]:
    """Enqueue the job without sending its message (delivered by the test). Returns its kwargs."""
    with runtime.unit_of_work() as uow:
        uow.enqueue(actor_name, **kwargs)
        held = dict(uow.jobs[0].kwargs)
        uow.jobs.clear()
    return held


def deliver(
    actor_name: str,
    kwargs: dict[str, Any],
    delivery: int | None = None,
    *,
    retries: int = 0,
    redelivered: bool = False,
) -> None:
    """One delivery of the job's message on this thread, as a dramatiq worker thread runs it: a failure (RuntimeError)
    is recorded by the job's wrapper, and dramatiq would retry it. `delivery`: its number, passed to the job (None: the
    kwargs as they are). `retries`: dramatiq's retry of a run that failed (counted apart before the job runs); 0: a
    first delivery, or a copy (the sweep's, or a duplicate send). `redelivered`: RabbitMQ's flag on a message it gives
    again (its consumer went away while running it)."""
    actor = jobs._dramatiq_actors[actor_name]
    arguments = dict(kwargs) if delivery is None else {**kwargs, "delivery": delivery}
    proxy = MessageProxy(actor.message_with_options(kwargs=arguments, retries=retries))
    if redelivered:
        proxy.redelivered = True  # type: ignore[attr-defined]
    current = CurrentMessage()
    current.before_process_message(actor.broker, proxy)
    try:
        actor(**arguments)
    except RuntimeError:
        pass  # recorded by the job's wrapper; dramatiq would retry it
    finally:
        current.after_process_message(actor.broker, proxy)


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    """`fn` on a thread of its own (a worker's, with its own connection), started."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def only_job(runtime: Runtime) -> Job:
    """The test's job: its only row."""
    with runtime.read_session() as session:
        return session.exec(select(Job)).one()


@contextlib.contextmanager
def first_fails_while_a_redelivery_is_counted(
    runtime: Runtime, gates: Gates, actor_name: str
) -> Iterator[threading.Thread]:
    """The first delivery takes the job and fails while its transaction holds the row (its job calls `gates.arrive`
    there, then `gates.start`); a redelivery counted meanwhile, as the first's lock goes, waits after its count until
    the test sets `gates.go[1]`. Yields the redelivery's thread, once the first has recorded its failure. (On SQLite a
    read waits for the write lock too: the redelivery must not take the job before the test has looked.)"""
    kwargs = hold(runtime, actor_name, name="raced", delivery=0)
    gates.fail.add(0)
    first_thread: list[threading.Thread] = []
    counted = threading.Event()

    def first_waits_for_the_count(_session: Any) -> None:
        # Its work (with its claim) has rolled back and the row is free: the redelivery's count commits before its
        # failure is recorded.
        if first_thread and threading.current_thread() is first_thread[0] and gates.started:
            assert counted.wait(20), "the redelivery was never counted"

    def redelivery_counted(_session: Any) -> None:
        if first_thread and threading.current_thread() is not first_thread[0] and not counted.is_set():
            counted.set()
            assert gates.go[1].wait(20), "the test never let the redelivery go on"

    sa.event.listen(runtime.sessions, "after_rollback", first_waits_for_the_count)
    sa.event.listen(runtime.sessions, "after_commit", redelivery_counted)
    redelivery: threading.Thread | None = None
    try:
        first = threading.Thread(target=deliver, args=(actor_name, kwargs, 0), daemon=True)
        first_thread.append(first)  # before it starts: the hooks tell its thread apart
        first.start()
        assert gates.arrived[0].wait(10)  # the first delivery holds the job: its transaction has the row locked
        redelivery = in_thread(lambda: deliver(actor_name, kwargs, 1, redelivered=True))
        gates.go[0].set()
        first.join(20)
        assert not first.is_alive()
        assert gates.started == [0]
        yield redelivery
    finally:
        counted.set()
        gates.go[1].set()
        if redelivery is not None:
            redelivery.join(20)  # out of the hooks before they go
        sa.event.remove(runtime.sessions, "after_rollback", first_waits_for_the_count)
        sa.event.remove(runtime.sessions, "after_commit", redelivery_counted)
