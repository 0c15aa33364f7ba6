"""Units of work and durable jobs: sent only after commit, never lost, run once."""

from __future__ import annotations

import datetime as dt
import threading

import dramatiq
import pytest
from sqlmodel import select

from core import jobs
from core.models import AppSecret, Job, JobStatus
from core.runtime import InlineWorker, Runtime

RUNS: list[str] = []
_lock = threading.Lock()


@jobs.actor("tests.remember", max_retries=0)
def remember(uow, name: str) -> None:  # type: ignore[no-untyped-def]
    uow.session.add(AppSecret(name=name, value="x"))
    with _lock:
        RUNS.append(name)


@jobs.actor("tests.claims_itself", max_retries=0, with_uow=False, claims_itself=True)
def claims_itself(name: str) -> None:
    """Claims its durable row in its own unit of work and marks it done there (unless told not to, or it fails)."""
    from core.runtime import get_runtime

    with get_runtime().unit_of_work() as uow:
        jobs.claim_in(uow)
        uow.session.add(AppSecret(name=name, value="x"))
        if name.startswith("fail"):
            raise RuntimeError("the job's work failed")
        if not name.startswith("leave"):
            jobs.done_in(uow)
    with _lock:
        RUNS.append(name)


BATCHES: list[list[str]] = []


@jobs.actor("tests.remember_all", max_retries=0, with_uow=False, batch_argument="names", batch_limit=3)
def remember_all(names: list[str], tag: str = "") -> None:
    with _lock:
        BATCHES.append([f"{tag}{name}" for name in names])


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    BATCHES.clear()
    RUNS.clear()


def test_job_is_sent_after_commit_and_marked_done(runtime: Runtime, worker: InlineWorker) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.remember", name="a")
        assert RUNS == []
    worker.join()
    assert RUNS == ["a"]
    with runtime.read_session() as session:
        job = session.exec(select(Job)).one()
        assert job.status == JobStatus.DONE
        assert session.get(AppSecret, "a") is not None


def test_rolled_back_work_sends_nothing(runtime: Runtime, worker: InlineWorker) -> None:
    with pytest.raises(RuntimeError), runtime.unit_of_work() as uow:
        uow.enqueue("tests.remember", name="b")
        raise RuntimeError("boom")
    worker.join()
    assert RUNS == []
    with runtime.read_session() as session:
        assert session.exec(select(Job)).all() == []


def test_lost_message_is_sent_again_by_the_sweep_and_runs_once(runtime: Runtime, worker: InlineWorker) -> None:
    sent = jobs.send_jobs
    try:
        jobs.send_jobs = lambda pending: None  # type: ignore[assignment]  # the broker lost it
        with runtime.unit_of_work() as uow:
            uow.enqueue("tests.remember", name="c")
    finally:
        jobs.send_jobs = sent
    worker.join()
    assert RUNS == []
    with runtime.unit_of_work() as uow:
        assert jobs.resend_pending(uow, older_than=dt.timedelta(0)) == 1
    worker.join()
    with runtime.unit_of_work() as uow:
        # Already done: a second sweep finds nothing, and a duplicate message would be skipped.
        assert jobs.resend_pending(uow, older_than=dt.timedelta(0)) == 0
    assert RUNS == ["c"]


def test_duplicate_message_runs_once(runtime: Runtime, worker: InlineWorker) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.remember", name="d")
        pending = list(uow.jobs)
    jobs.send_jobs(pending)
    jobs.send_jobs(pending)
    worker.join()
    assert RUNS == ["d"]


def _job_row(runtime: Runtime) -> tuple[JobStatus, int, str]:
    """(status, attempts, last error) of the one durable job."""
    with runtime.read_session() as session:
        job = session.exec(select(Job)).one()
        return job.status, job.attempts, job.last_error or ""


def test_a_job_that_claims_itself_runs_once_and_is_done_with_its_work(runtime: Runtime, worker: InlineWorker) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.claims_itself", name="e")
        pending = list(uow.jobs)
    jobs.send_jobs(pending)
    jobs.send_jobs(pending)  # a duplicate message: skipped once the first has committed its work
    worker.join()
    assert RUNS == ["e"]
    assert _job_row(runtime)[0] == JobStatus.DONE
    with runtime.read_session() as session:
        assert session.get(AppSecret, "e") is not None


def test_a_job_that_claims_itself_but_never_says_done_is_marked_done_after_it(
    runtime: Runtime, worker: InlineWorker
) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.claims_itself", name="leave-f")
    worker.join()
    assert RUNS == ["leave-f"]
    assert _job_row(runtime)[0] == JobStatus.DONE


def test_a_job_that_claims_itself_and_fails_is_marked_failed_not_done(runtime: Runtime, worker: InlineWorker) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.claims_itself", name="fail-g")
    worker.join()
    assert RUNS == []
    status, attempts, error = _job_row(runtime)
    assert status == JobStatus.FAILED  # max_retries=0: its one attempt failed, nothing was marked done
    assert attempts == 1 and "the job's work failed" in error
    with runtime.read_session() as session:
        assert session.get(AppSecret, "fail-g") is None


def test_claims_itself_is_only_for_jobs_with_their_own_units_of_work() -> None:
    with pytest.raises(ValueError, match="with_uow=False"):
        jobs.actor("tests.wrong", claims_itself=True)


def test_a_period_is_claimed_once(runtime: Runtime) -> None:
    start = jobs.period_start(dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC), dt.timedelta(minutes=1))
    assert start == dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    results = []
    for _ in range(3):
        with runtime.unit_of_work() as uow:
            results.append(jobs.claim_period(uow, "tests.period", start))
    assert results == [True, False, False]


def test_sends_from_the_event_loop_reach_a_network_broker_from_their_own_thread(
    runtime: Runtime, redis_url: str
) -> None:
    """`send_jobs_soon` hands a network broker's sends to a thread (the loop must not block on its client);
    `flush_background_sends` (the web app's shutdown) delivers every one before it returns."""
    import uuid

    import redis

    from core.db import PendingJob

    broker = jobs.make_broker(redis_url)
    namespace = f"giving-test-sender-{uuid.uuid4().hex[:8]}"
    broker.namespace = namespace  # type: ignore[attr-defined]
    client = redis.Redis.from_url(redis_url)
    try:
        jobs.install_broker(broker)
        caller = threading.get_ident()
        senders: list[int] = []
        broker.add_middleware(_SeeSender(senders))
        for n in range(20):
            jobs.send_jobs_soon([PendingJob("tests.remember", {"name": f"soon-{n}"})])
        jobs.flush_background_sends()
        assert client.hlen(f"{namespace}:default.msgs") == 20
        assert senders and caller not in senders
    finally:
        jobs.install_broker(runtime.broker)
        broker.close()
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)


def test_jobs_of_a_batched_actor_sent_together_travel_together(runtime: Runtime, worker: InlineWorker) -> None:
    """Seven items of one actor, sent in one go, are three messages of at most three items, in order; a delayed job,
    one with other arguments, a durable one and another actor's stay messages of their own."""
    with runtime.unit_of_work() as uow:
        for name in "abcdefg":
            uow.enqueue("tests.remember_all", durable=False, names=[name])
        uow.enqueue("tests.remember_all", durable=False, names=["x"], tag="other-")
        uow.enqueue("tests.remember_all", durable=False, names=["late"], delay_ms=1)
        uow.enqueue("tests.remember_all", names=["durable"])
        uow.enqueue("tests.remember", name="single")
    worker.join()
    assert sorted(BATCHES) == sorted([["a", "b", "c"], ["d", "e", "f"], ["g"], ["other-x"], ["late"], ["durable"]])
    assert RUNS == ["single"]
    with runtime.read_session() as session:
        assert {job.status for job in session.exec(select(Job)).all()} == {JobStatus.DONE}


def test_coalescing_keeps_order_and_splits_a_long_list() -> None:
    from core.db import PendingJob

    messages = jobs.coalesce(
        [
            PendingJob("tests.remember", {"name": "first"}),
            PendingJob("tests.remember_all", {"names": ["1", "2", "3", "4"]}),
            PendingJob("tests.remember_all", {"names": ["5"]}),
            # A durable job's row is claimed once, for one message: never split, never merged; an empty list stays.
            PendingJob("tests.remember_all", {"names": ["6", "7", "8", "9"], "job_id": "J"}),
            PendingJob("tests.remember_all", {"names": []}),
        ]
    )
    assert [(job.actor_name, job.kwargs) for job in messages] == [
        ("tests.remember", {"name": "first"}),
        ("tests.remember_all", {"names": ["1", "2", "3"]}),
        ("tests.remember_all", {"names": ["4", "5"]}),
        ("tests.remember_all", {"names": ["6", "7", "8", "9"], "job_id": "J"}),
        ("tests.remember_all", {"names": []}),
    ]


def test_background_sends_queued_meanwhile_are_coalesced(runtime: Runtime, redis_url: str) -> None:
    """While the sender's thread is busy, what the loop hands it queues up; it then goes as few messages."""
    import uuid

    import redis

    from core.db import PendingJob

    broker = jobs.make_broker(redis_url)
    namespace = f"giving-test-coalesce-{uuid.uuid4().hex[:8]}"
    broker.namespace = namespace  # type: ignore[attr-defined]
    client = redis.Redis.from_url(redis_url)
    sender = jobs._BackgroundSender()
    try:
        jobs.install_broker(broker)
        release = threading.Event()
        busy = _HoldFirstSend(release)
        broker.add_middleware(busy)
        sender.put([PendingJob("tests.remember_all", {"names": ["held"]})])
        assert busy.entered.wait(10)  # the thread is inside its first send: the next puts queue up
        for n in range(6):
            sender.put([PendingJob("tests.remember_all", {"names": [str(n)]})])
        release.set()
        sender.flush()
        encoded = client.hvals(f"{namespace}:default.msgs")
        batches = sorted(dramatiq.Message.decode(raw).kwargs["names"] for raw in encoded)
        assert batches == [["0", "1", "2"], ["3", "4", "5"], ["held"]]
    finally:
        jobs.install_broker(runtime.broker)
        broker.close()
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)


class _HoldFirstSend(dramatiq.Middleware):
    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.entered = threading.Event()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int) -> None:  # type: ignore[type-arg]
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)


def test_a_failed_background_send_does_not_stop_the_sends_after_it(runtime: Runtime, worker: InlineWorker) -> None:
    from core.db import PendingJob

    sender = jobs._BackgroundSender()
    sender.put([PendingJob("tests.no_such_job", {})])  # raises in the sender's thread
    sender.put([PendingJob("tests.remember", {"name": "after"})])
    sender.flush()
    worker.join()
    assert RUNS == ["after"]


class _SeeSender(dramatiq.Middleware):
    def __init__(self, senders: list[int]) -> None:
        self.senders = senders

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int) -> None:  # type: ignore[type-arg]
        self.senders.append(threading.get_ident())
