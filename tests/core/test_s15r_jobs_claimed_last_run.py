"""A job that claims itself with its work in the claim's transaction (giftaid's delete at HMRC, the receipts'
numbering): a first delivery whose work fails rolls its claim back with it, and its failure counts it only once
recorded. A redelivery (RabbitMQ's flag) is counted apart meanwhile, as that delivery's lock goes, and is numbered 1
though it is run 2. Its failure must end the job as the job's last run, as it does for a job claimed, worked and marked
done in one transaction (test_s15c_job_run_numbers): not leave it pending, with no retry to come, for the sweep to give
up minutes later as a worker that died. Each delivery runs on a thread of its own, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import jobs
from core.models import AppSecret, JobStatus
from core.runtime import Runtime, get_runtime
from tests.core.job_deliveries import Gates, first_fails_while_a_redelivery_is_counted, only_job

GATES = Gates(deliveries=3)  # GATES.fail: the deliveries whose work fails in the claim's transaction (rolled back)
FAIL_AFTER: set[int] = set()  # the deliveries whose work fails after their claim has committed


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    GATES.reset()
    FAIL_AFTER.clear()
    yield
    GATES.release()


@jobs.actor("tests.s15r_claims_with_its_work", max_retries=1, with_uow=False, claims_itself=True, time_limit_ms=60_000)
def s15r_claims_with_its_work(name: str, delivery: int) -> None:
    """Claims itself and starts its work in the same transaction (a failure there rolls the claim back with it), then
    finishes in another, as the receipts number a document with their claim and then render and send it."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
        GATES.arrive(delivery)  # its claim's transaction holds the row
        GATES.start(delivery)
        uow.session.merge(AppSecret(name=f"{name}-numbered", value="x"))
    if delivery in FAIL_AFTER:
        raise RuntimeError(f"the provider said no to delivery {delivery}")
    with runtime.unit_of_work() as uow:
        uow.session.merge(AppSecret(name=name, value="x"))
        jobs.done_in(uow)


ACTOR = "tests.s15r_claims_with_its_work"


def test_a_first_run_rolled_back_with_its_claim_leaves_the_job_to_the_redelivery_counted_meanwhile(
    runtime: Runtime,
) -> None:
    """max_retries=1: two runs. The first delivery is run 1; the redelivery runs the job as run 2."""
    with first_fails_while_a_redelivery_is_counted(runtime, GATES, ACTOR) as redelivery:
        row = only_job(runtime)
        assert row.status == JobStatus.PENDING, f"given up after one run of two: {row.last_error}"
        assert row.attempts == 2
        GATES.go[1].set()
        redelivery.join(20)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.DONE, 2)


def test_the_redelivery_that_claimed_the_job_and_fails_gives_it_up_as_its_last_run(runtime: Runtime) -> None:
    """The redelivery was counted as run 1 (the first delivery's failure was counted after it) and claimed the job as
    the row's run 2, the last: its failure gives the job up at once with its own error. It was left pending, its
    retries used up (dramatiq retries neither message), until the sweep's copy gave it up minutes later as a job whose
    worker died."""
    with first_fails_while_a_redelivery_is_counted(runtime, GATES, ACTOR) as redelivery:
        FAIL_AFTER.add(1)
        GATES.go[1].set()
        redelivery.join(20)
    row = only_job(runtime)
    assert GATES.started == [0, 1]
    assert (row.status, row.attempts) == (JobStatus.FAILED, 2), "the job's last run failed and it was not given up"
    assert "delivery 1" in (row.last_error or "")
    assert "the worker died" not in (row.last_error or "")
