"""Two deliveries of a durable job counted apart (a dramatiq retry, the sweep's copy, RabbitMQ's redeliveries), each
still to take the job, race one another and, sometimes, a first delivery that took the job uncounted. Whatever the
order in which they take it, a job runs at most `max_retries + 1` times in all, and gets all of those runs when each
fails. A run's number is fixed when it takes the job: the row's count, less the runs counted that have not taken it
and may still (the row names the last counted; a run counted over another remembers it).

Each delivery runs on a thread of its own, with its own connection, on SQLite and PostgreSQL. A delivery counted apart
is held after its count's commit by `CountGate` (SQLAlchemy's session event, on its thread only), so the test decides
which takes the job first."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import jobs
from core.models import AppSecret, JobStatus
from core.runtime import Runtime, get_runtime
from tests.core.job_deliveries import Gates, claims_itself_then_works, deliver, hold, only_job

GATES = Gates(deliveries=4)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s16c_in_claim", max_retries=1, min_backoff_ms=10, max_backoff_ms=50)
def s16c_in_claim(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The usual durable job: claimed (the row locked), worked and marked done in one transaction. Two runs."""
    GATES.arrive(delivery)
    GATES.start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s16c_in_claim_thrice", max_retries=2, min_backoff_ms=10, max_backoff_ms=50)
def s16c_in_claim_thrice(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The same, allowed three runs."""
    GATES.arrive(delivery)
    GATES.start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s16c_claims_with_its_work", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s16c_claims_with_its_work(name: str, delivery: int) -> None:
    """Claims itself. The first delivery claims the job and starts its work in the claim's transaction (a failure
    rolls the claim back with it); each later one, counted apart, waits for the test before it claims and before it
    works, its claim committed apart from its work."""
    if delivery != 0:
        claims_itself_then_works(GATES, name, delivery, waits_after_claim=True)
        return
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
        GATES.arrive(delivery)
        GATES.start(delivery)
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


@jobs.actor("tests.s16c_claims_itself_thrice", max_retries=2, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s16c_claims_itself_thrice(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do, waiting for the test before it claims and before it works."""
    claims_itself_then_works(GATES, name, delivery, waits_after_claim=True)


class CountGate:
    """Holds a delivery's thread after its first commit (its count, counted apart) until the test lets it go on."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.counted: dict[int, threading.Event] = {}
        self.go: dict[int, threading.Event] = {}
        self.threads: dict[threading.Thread, int] = {}

    def __call__(self, _session: Any) -> None:
        delivery = self.threads.get(threading.current_thread())
        if delivery is not None and not self.counted[delivery].is_set():
            self.counted[delivery].set()
            assert self.go[delivery].wait(20), "the test never let this delivery take the job"

    def deliver(self, actor_name: str, kwargs: dict[str, Any], delivery: int, **options: Any) -> threading.Thread:
        """The delivery on a thread of its own, held after its count; returns once it is counted."""
        self.counted[delivery] = threading.Event()
        self.go[delivery] = threading.Event()
        GATES.go[delivery].set()  # the count gate decides when it takes the job
        thread = threading.Thread(target=deliver, args=(actor_name, kwargs, delivery), kwargs=options, daemon=True)
        self.threads[thread] = delivery  # before it starts: the hook tells its thread apart
        thread.start()
        assert self.counted[delivery].wait(10), f"delivery {delivery} was never counted"
        return thread

    def release(self) -> None:
        for event in self.go.values():
            event.set()
        for thread in self.threads:
            thread.join(20)


@contextlib.contextmanager
def count_gate(runtime: Runtime) -> Iterator[CountGate]:
    gate = CountGate(runtime)
    sa.event.listen(runtime.sessions, "after_commit", gate)
    try:
        yield gate
    finally:
        GATES.release()
        gate.release()  # out of the hook before it goes
        sa.event.remove(runtime.sessions, "after_commit", gate)


def _first_run_fails(runtime: Runtime, actor_name: str) -> dict[str, Any]:
    kwargs = hold(runtime, actor_name, name="raced", delivery=0)
    GATES.fail.add(0)
    for event in (GATES.go[0], GATES.finish[0]):
        event.set()
    deliver(actor_name, kwargs, 0)
    row = only_job(runtime)
    assert (row.status, row.attempts, GATES.started) == (JobStatus.PENDING, 1, [0])
    return kwargs


def _run(gate: CountGate, thread: threading.Thread, delivery: int, *, fails: bool) -> None:
    """Let a counted delivery take the job and work, failing or not, to its end."""
    if fails:
        GATES.fail.add(delivery)
    for event in (GATES.go[delivery], GATES.finish[delivery]):
        event.set()
    gate.go[delivery].set()
    thread.join(20)
    assert not thread.is_alive()


# Defect 2: a retry and a copy counted, the one counted later taking the job first.


@pytest.mark.parametrize("actor_name", ["tests.s16c_in_claim_thrice", "tests.s16c_claims_itself_thrice"])
def test_a_run_counted_last_that_takes_the_job_first_is_not_its_last_while_the_other_may_still_run(
    runtime: Runtime, actor_name: str
) -> None:
    """Three runs allowed. The first fails (the row counts 1); dramatiq's retry and the sweep's copy are counted (2
    and 3); the copy takes the job first and fails. Judged by its count (3) it was the last: the job failed after two
    runs, and the retry found it failed. It is run 2: the retry runs the job as run 3, whose failure ends it."""
    kwargs = _first_run_fails(runtime, actor_name)
    with count_gate(runtime) as gate:
        retry = gate.deliver(actor_name, kwargs, 1, retries=1)
        copy = gate.deliver(actor_name, kwargs, 2)
        assert only_job(runtime).attempts == 3
        _run(gate, copy, 2, fails=True)
        row = only_job(runtime)
        assert row.status == JobStatus.PENDING, f"given up after two runs of three: {row.last_error}"
        _run(gate, retry, 1, fails=True)
    row = only_job(runtime)
    assert GATES.started == [0, 2, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)
    assert "delivery 1" in (row.last_error or "")


@pytest.mark.parametrize("actor_name", ["tests.s16c_in_claim_thrice", "tests.s16c_claims_itself_thrice"])
def test_a_run_counted_first_that_takes_the_job_first_leaves_the_other_the_last_run(
    runtime: Runtime, actor_name: str
) -> None:
    """The same, the retry (counted first) taking the job first: it is run 2, and the copy is run 3, the last."""
    kwargs = _first_run_fails(runtime, actor_name)
    with count_gate(runtime) as gate:
        retry = gate.deliver(actor_name, kwargs, 1, retries=1)
        copy = gate.deliver(actor_name, kwargs, 2)
        _run(gate, retry, 1, fails=True)
        row = only_job(runtime)
        assert row.status == JobStatus.PENDING, f"given up after two runs of three: {row.last_error}"
        _run(gate, copy, 2, fails=True)
    row = only_job(runtime)
    assert GATES.started == [0, 1, 2]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 3)
    assert "delivery 2" in (row.last_error or "")


@pytest.mark.parametrize("actor_name", ["tests.s16c_in_claim_thrice", "tests.s16c_claims_itself_thrice"])
def test_a_copy_counted_past_the_last_run_leaves_the_job_to_the_run_the_failed_one_was_counted_over(
    runtime: Runtime, actor_name: str
) -> None:
    """As above: the copy, counted over the retry, takes the job first and fails (run 2 of 3). Another copy then
    comes, before the retry takes the job: counted, it would be a fourth run. The row named the failed copy, not the
    retry, and the new copy took the job for one whose worker died, and gave it up unrun. The failed copy hands the
    row's name back to the retry: the new copy does nothing, and the retry runs the job as run 3."""
    kwargs = _first_run_fails(runtime, actor_name)
    with count_gate(runtime) as gate:
        retry = gate.deliver(actor_name, kwargs, 1, retries=1)
        copy = gate.deliver(actor_name, kwargs, 2)
        _run(gate, copy, 2, fails=True)
        GATES.go[3].set()
        deliver(actor_name, kwargs, 3)  # the sweep's next copy, or a duplicate
        row = only_job(runtime)
        assert row.status == JobStatus.PENDING, f"given up after two runs of three: {row.last_error}"
        _run(gate, retry, 1, fails=False)
    row = only_job(runtime)
    assert GATES.started == [0, 2, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 3)


# Defect 1: two redeliveries counted while an uncounted first delivery holds the job.


@contextlib.contextmanager
def first_fails_after_two_redeliveries_were_counted(
    runtime: Runtime, actor_name: str, *, claimed_before_the_failure_is_recorded: bool = False
) -> Iterator[tuple[CountGate, dict[int, threading.Thread]]]:
    """The first delivery (0) takes the job uncounted (its claim, if it claims, in its work's transaction) and fails;
    redelivery 1 is counted as its lock goes, then redelivery 2, both before its failure is recorded. Yields the
    redeliveries' threads, each held after its count, once the first delivery's failure is recorded (the row counts
    3 runs, of 2 allowed). `claimed_before_the_failure_is_recorded` (a job that claims itself): redelivery 1 claims
    the job before that, and waits before its work."""
    kwargs = hold(runtime, actor_name, name="raced", delivery=0)
    GATES.fail.add(0)
    first_thread: list[threading.Thread] = []
    may_record_failure = threading.Event()

    def first_records_its_failure_after_both_counts(_session: Any) -> None:
        if first_thread and threading.current_thread() is first_thread[0] and GATES.started:
            assert may_record_failure.wait(20), "the test never let the first delivery record its failure"

    sa.event.listen(runtime.sessions, "after_rollback", first_records_its_failure_after_both_counts)
    try:
        with count_gate(runtime) as gate:
            first = threading.Thread(target=deliver, args=(actor_name, kwargs, 0), daemon=True)
            first_thread.append(first)
            first.start()
            assert GATES.arrived[0].wait(10)  # the first delivery holds the job, uncounted
            gate.counted[1] = threading.Event()
            gate.go[1] = threading.Event()
            GATES.go[1].set()
            second = threading.Thread(
                target=deliver, args=(actor_name, kwargs, 1), kwargs={"redelivered": True}, daemon=True
            )
            gate.threads[second] = 1
            second.start()  # its count waits for the first delivery's lock
            GATES.go[0].set()  # the first delivery fails: its work (and claim) rolls back
            assert gate.counted[1].wait(10), "redelivery 1 was never counted"
            third = gate.deliver(actor_name, kwargs, 2, redelivered=True)
            if claimed_before_the_failure_is_recorded:
                gate.go[1].set()
                assert GATES.claimed[1].wait(10), "redelivery 1 did not claim the job"
            may_record_failure.set()
            first.join(20)
            assert not first.is_alive()
            row = only_job(runtime)
            assert (row.status, row.attempts) == (JobStatus.PENDING, 3), row.last_error
            yield gate, {1: second, 2: third}
    finally:
        may_record_failure.set()
        if first_thread:
            first_thread[0].join(20)
        sa.event.remove(runtime.sessions, "after_rollback", first_records_its_failure_after_both_counts)


@pytest.mark.parametrize("actor_name", ["tests.s16c_in_claim", "tests.s16c_claims_with_its_work"])
@pytest.mark.parametrize("first_to_take", [1, 2])
def test_two_redeliveries_counted_while_a_first_run_held_the_job_run_it_once_more_at_most(
    runtime: Runtime, actor_name: str, first_to_take: int
) -> None:
    """Two runs allowed. The first delivery was run 1; whichever redelivery takes the job is run 2, the last, though
    its count numbered it 1 (the first delivery's failure was counted after it) or the row still counts the other
    redelivery, which has not run. Its failure ends the job with its own error; the other must not run it a third
    time."""
    with first_fails_after_two_redeliveries_were_counted(runtime, actor_name) as (gate, redeliveries):
        other = 3 - first_to_take
        _run(gate, redeliveries[first_to_take], first_to_take, fails=True)
        row = only_job(runtime)
        assert row.status == JobStatus.FAILED, f"left pending after its last run: {row.last_error}"
        _run(gate, redeliveries[other], other, fails=True)
    row = only_job(runtime)
    assert GATES.started == [0, first_to_take], f"the job ran {len(GATES.started)} times, of 2 allowed"
    assert row.status == JobStatus.FAILED
    assert f"delivery {first_to_take}" in (row.last_error or "")
    assert "the worker died" not in (row.last_error or "")


@pytest.mark.parametrize("actor_name", ["tests.s16c_in_claim", "tests.s16c_claims_with_its_work"])
def test_two_redeliveries_counted_while_a_first_run_held_the_job_one_runs_it_and_succeeds(
    runtime: Runtime, actor_name: str
) -> None:
    """The redelivery counted first takes the job and succeeds: the job is done, in two runs."""
    with first_fails_after_two_redeliveries_were_counted(runtime, actor_name) as (gate, redeliveries):
        _run(gate, redeliveries[1], 1, fails=False)
        _run(gate, redeliveries[2], 2, fails=False)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert row.status == JobStatus.DONE
    with runtime.read_session() as session:
        assert session.get(AppSecret, "raced") is not None


@pytest.mark.parametrize("actor_name", ["tests.s16c_claims_with_its_work"])
def test_a_first_run_whose_failure_is_recorded_while_a_redelivery_holds_the_job_counts_before_it(
    runtime: Runtime, actor_name: str
) -> None:
    """Two runs allowed. The first delivery takes the job uncounted (its claim in its work's transaction) and fails;
    two redeliveries are counted, and the first of them claims the job before that failure is recorded. The failure
    was dropped (another run held the job): the claiming redelivery, numbered 1, failed as not the last, and the
    other redelivery ran the job a third time. Recorded, it counts the first run, before the run holding the job."""
    with first_fails_after_two_redeliveries_were_counted(
        runtime, actor_name, claimed_before_the_failure_is_recorded=True
    ) as (gate, redeliveries):
        _run(gate, redeliveries[1], 1, fails=True)
        row = only_job(runtime)
        assert row.status == JobStatus.FAILED, f"left pending after its last run: {row.last_error}"
        _run(gate, redeliveries[2], 2, fails=True)
    row = only_job(runtime)
    assert GATES.started == [0, 1], f"the job ran {len(GATES.started)} times, of 2 allowed"
    assert "delivery 1" in (row.last_error or "")
