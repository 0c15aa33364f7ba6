"""A sweep's poll that gets HMRC's verdict no longer sends HMRC's delete in the same job: the poll job has a 120 s
time limit that its lock wait (30 s), HMRC's PollInterval (15 s) and the poll itself (the client's 60 s timeout)
already fill, and a slow delete after them killed the job (a failure, retried, though the verdict was committed).
The delete is its own job, recorded in the database with the verdict and due at once, retried on its own."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from sqlmodel import select

from core.clock import utc_now
from core.models import Job, JobStatus
from core.runtime import Runtime
from giftaid import service, tasks
from giftaid.models import ClaimStatus
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

DELETE_JOB = "giftaid.delete_at_hmrc"
SLOW_DELETE_SECONDS = 5.0


def _submitted(runtime: Runtime) -> tuple[uuid.UUID, str]:
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=TODAY, actor="t", today=TODAY)
    assert built.claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, built.claim_id, actor="f")
        assert claim.status == ClaimStatus.SUBMITTED and claim.correlation_id
        return built.claim_id, claim.correlation_id


def _deletes(gateway: FakeGateway) -> int:
    return sum(b"<Function>delete</Function>" in r for r in gateway.requests)


def test_the_poll_job_ends_without_the_delete_which_is_a_job_of_its_own(runtime: Runtime, gateway: FakeGateway) -> None:
    claim_id, correlation_id = _submitted(runtime)

    def slow_delete(raw: bytes, answer: bytes) -> bytes:
        if b"<Function>delete</Function>" in raw:
            time.sleep(SLOW_DELETE_SECONDS)
        return answer

    gateway.hook = slow_delete
    started = time.monotonic()
    with runtime.unit_of_work() as uow:  # the job as the worker runs it, in its own unit of work
        assert tasks.poll_claim(uow, str(claim_id)) == "accepted"
    assert time.monotonic() - started < SLOW_DELETE_SECONDS, "the poll job waited for HMRC's delete"
    assert _deletes(gateway) == 0 and correlation_id in gateway.submissions
    with runtime.read_session() as session:
        assert service.get_claim(session, claim_id).status == ClaimStatus.ACCEPTED
        (job,) = [
            row
            for row in session.exec(select(Job).where(Job.actor_name == DELETE_JOB)).all()
            if row.arguments.get("claim_id") == str(claim_id)
        ]
    # Recorded with the verdict, and due now: nothing else tries the delete first.
    assert job.status == JobStatus.PENDING
    assert job.available_at.replace(tzinfo=dt.UTC) <= utc_now() + dt.timedelta(seconds=1)

    assert tasks.delete_at_hmrc(claim_id=str(claim_id)) is True
    assert gateway.deleted == [correlation_id] and _deletes(gateway) == 1


def test_a_poll_by_hand_still_deletes_at_once(runtime: Runtime, gateway: FakeGateway) -> None:
    """`giving giftaid poll` and the API: no time limit, so HMRC's copy goes right after the commit (the job, due
    later, then finds it done)."""
    claim_id, correlation_id = _submitted(runtime)
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED
    assert gateway.deleted == [correlation_id]
    assert tasks.delete_at_hmrc(claim_id=str(claim_id)) is False
