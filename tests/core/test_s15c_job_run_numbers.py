"""Whether a failed run of a durable job was its last allowed one is judged by that run's own number, not by the row's
count, which can hold a redelivery counted while the run held the job (still to run it), and, for a run counted
apart, the failure of a first delivery that took the job before it and was counted only afterwards.

A job claimed, worked and marked done in one transaction is not counted on its first delivery: its failure counts it
once that transaction has rolled back. A redelivery (RabbitMQ's flag: its worker may have died) is counted apart
first, waiting for the first delivery's lock; its count commits as that lock goes, before the first delivery records
its failure. Each delivery runs on a thread of its own, with its own connection, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import jobs, metrics
from core.models import AppSecret, JobStatus
from core.runtime import Runtime
from tests.core.job_deliveries import (
    Gates,
    claims_itself_then_works,
    deliver,
    first_fails_while_a_redelivery_is_counted,
    hold,
    in_thread,
    only_job,
)

GATES = Gates(deliveries=3)


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    yield
    GATES.release()


@jobs.actor("tests.s15c_in_claim", max_retries=1, min_backoff_ms=10, max_backoff_ms=50)
def s15c_in_claim(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The usual durable job: claimed (the row locked), worked and marked done in one transaction."""
    GATES.arrive(delivery)
    GATES.start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s15c_in_claim_once", max_retries=0)
def s15c_in_claim_once(uow, name: str, delivery: int) -> None:  # type: ignore[no-untyped-def]
    """The same, allowed one run only."""
    GATES.arrive(delivery)
    GATES.start(delivery)
    uow.session.merge(AppSecret(name=name, value="x"))


@jobs.actor("tests.s15c_claims_itself", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15c_claims_itself(name: str, delivery: int) -> None:
    """Claims itself, as the receipts' issuing jobs do; each delivery waits for the test before it claims."""
    claims_itself_then_works(GATES, name, delivery)


def test_a_first_run_that_fails_while_a_redelivery_is_counted_leaves_the_job_its_second_run(runtime: Runtime) -> None:
    """max_retries=1: two runs. The first delivery's failure was judged by the row's count, 2 with the redelivery's,
    and gave the job up after one run; the redelivery then found it failed and never ran it. The first delivery is
    run 1: the job stays pending for the redelivery, which runs it."""
    with first_fails_while_a_redelivery_is_counted(runtime, GATES, "tests.s15c_in_claim") as redelivery:
        row = only_job(runtime)
        assert row.status == JobStatus.PENDING, f"given up after one run of two: {row.last_error}"
        assert row.attempts == 2
        assert "delivery 0" in (row.last_error or "")
        GATES.go[1].set()
        redelivery.join(20)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_the_redelivery_left_the_job_that_fails_gives_it_up_as_its_last_run(runtime: Runtime) -> None:
    """The redelivery was counted as run 1 (the first delivery's failure was counted after it), but it is run 2, the
    last: its failure gives the job up at once with its own error, not left pending for the sweep to give up later
    as a worker that died."""
    with first_fails_while_a_redelivery_is_counted(runtime, GATES, "tests.s15c_in_claim") as redelivery:
        GATES.fail.add(1)
        GATES.go[1].set()
        redelivery.join(20)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2), "the job's last run failed and it was not given up"
    assert "delivery 1" in (row.last_error or "")


def test_a_job_allowed_one_run_is_given_up_by_its_first_failure_though_a_redelivery_was_counted(
    runtime: Runtime,
) -> None:
    """max_retries=0: the first delivery was the one run allowed. The redelivery counted meanwhile must not run it
    again: the first delivery's own number decides, and it was the last."""
    with first_fails_while_a_redelivery_is_counted(runtime, GATES, "tests.s15c_in_claim_once") as redelivery:
        row = only_job(runtime)
        assert row.status == JobStatus.FAILED
        assert "delivery 0" in (row.last_error or "")
        GATES.go[1].set()
        redelivery.join(20)
    assert GATES.started == [0]
    assert only_job(runtime).status == JobStatus.FAILED


def _job_runs(actor_name: str) -> dict[str, float]:
    """How many runs of the job `job_duration_seconds` has timed, by outcome, as `/metrics` shows them."""
    text, _ = metrics.render([])
    prefix = f'giving_job_duration_seconds_count{{actor="{actor_name}",outcome="'
    runs: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            runs[key.removeprefix(prefix).removesuffix('"}')] = float(value)
    return runs


def test_a_copy_left_to_a_live_run_is_timed_as_skipped_not_failed(runtime: Runtime) -> None:
    """The job's first run fails; dramatiq's retry is counted (run 2 of 2) and about to claim it when a copy arrives.
    Counted, the copy would be a third run: it leaves the job to the retry and does nothing. It was timed as a failed
    run (an alert on failed runs fired for a job that was fine); it is skipped."""
    actor_name = "tests.s15c_claims_itself"
    kwargs = hold(runtime, actor_name, name="raced", delivery=0)
    GATES.fail.add(0)
    GATES.go[0].set()
    deliver(actor_name, kwargs, 0)
    assert (only_job(runtime).status, only_job(runtime).attempts) == (JobStatus.PENDING, 1)
    retry = in_thread(lambda: deliver(actor_name, kwargs, 1, retries=1))
    assert GATES.arrived[1].wait(10)  # counted, not yet claimed
    before = _job_runs(actor_name)
    GATES.go[2].set()
    deliver(actor_name, kwargs, 2)  # the copy
    after = _job_runs(actor_name)
    assert only_job(runtime).status == JobStatus.PENDING  # left to the retry
    assert GATES.started == [0]
    assert after.get("failed", 0) - before.get("failed", 0) == 0, "a copy that did nothing was timed as failed"
    assert after.get("skipped", 0) - before.get("skipped", 0) == 1
    GATES.go[1].set()
    retry.join(20)
    assert GATES.started == [0, 1]
    assert only_job(runtime).status == JobStatus.DONE
