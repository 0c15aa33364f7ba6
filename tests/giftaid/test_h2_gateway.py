"""The GovTalk conversation at edges found in a second review: HMRC's copy of a decided submission is deleted only
once the verdict is ours (committed), in a job recorded with the verdict and retried when the gateway fails; an
acknowledgement without a CorrelationID; a claim whose every poll answers with an error; a gateway claim decided
by hand; and the keys of a `list` request."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
import time_machine
from sqlmodel import select

from core.models import Job, JobStatus
from core.runtime import Runtime
from giftaid import service, tasks
from giftaid.errors import InvalidTransition, SubmissionFailed
from giftaid.models import ClaimStatus
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings
from tests.giftaid.hmrc_files import envelope_errors

__all__ = ["gateway", "settings"]  # fixtures, shared with the other gateway tests

DELETE_JOB = "giftaid.delete_at_hmrc"


def built_claim(runtime: Runtime) -> uuid.UUID:
    ada = donor(runtime)
    for n in range(2):
        make_gift(runtime, ada, amount=10_000 + n, received_on=dt.date(2025, 6, 1 + n))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.claim_id is not None
    return result.claim_id


def submitted_claim(runtime: Runtime) -> tuple[uuid.UUID, str]:
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f")
        assert claim.status == ClaimStatus.SUBMITTED and claim.correlation_id
        return claim_id, claim.correlation_id


def deletes(gateway: FakeGateway) -> int:
    return sum(b"<Function>delete</Function>" in r for r in gateway.requests)


def delete_jobs(runtime: Runtime, claim_id: uuid.UUID) -> list[Job]:
    with runtime.read_session() as session:
        rows = session.exec(select(Job).where(Job.actor_name == DELETE_JOB)).all()
    return [row for row in rows if row.arguments.get("claim_id") == str(claim_id)]


def kept(runtime: Runtime, claim_id: uuid.UUID, function: str) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        return [(m.direction, m.qualifier) for m in service.claim_messages(session, claim_id) if m.function == function]


# --- 1. the verdict first, then the delete ----------------------------------------------------------------------------


def test_hmrcs_copy_is_not_deleted_before_the_verdict_is_committed(runtime: Runtime, gateway: FakeGateway) -> None:
    """The poll had HMRC's verdict and sent the delete at once, inside the unit of work: when that unit of work then
    failed (the commit, or anything after the poll in the same job), the verdict was rolled back while HMRC's answer
    was already gone, and every later poll got "unknown CorrelationID". The delete is sent only after the commit."""
    claim_id, correlation_id = submitted_claim(runtime)
    with pytest.raises(RuntimeError, match="the commit failed"), runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED
        raise RuntimeError("the commit failed")
    assert deletes(gateway) == 0 and correlation_id in gateway.submissions, "HMRC's answer was deleted, ours lost"
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED
    assert gateway.deleted == [correlation_id]
    assert kept(runtime, claim_id, "delete") == [("sent", "response"), ("received", "response")]


def test_a_failed_delete_is_a_job_recorded_with_the_verdict_and_retried(runtime: Runtime, gateway: FakeGateway) -> None:
    """The delete is a durable job written in the verdict's transaction (a crash or a lost message loses nothing),
    tried at once after the commit; when the gateway fails it the verdict stands and the job asks again (an error,
    so the worker retries it) until HMRC has deleted its copy. Deleting twice is harmless: a job that finds the
    delete answered sends nothing. (The sweep's poll job sends no delete itself: the job does, test_s17b.)"""
    claim_id, correlation_id = submitted_claim(runtime)
    gateway.down_for = {"delete"}
    with runtime.unit_of_work() as uow:
        assert tasks.poll_claim(uow, str(claim_id)) == "accepted"
    assert deletes(gateway) == 0 and correlation_id in gateway.submissions
    with runtime.read_session() as session:
        assert service.get_claim(session, claim_id).status == ClaimStatus.ACCEPTED
    (job,) = delete_jobs(runtime, claim_id)
    assert job.status == JobStatus.PENDING

    for _ in range(2):
        with pytest.raises(SubmissionFailed):
            tasks.delete_at_hmrc(claim_id=str(claim_id))
    assert correlation_id in gateway.submissions

    gateway.down_for = set()
    tasks.delete_at_hmrc(claim_id=str(claim_id))
    assert gateway.deleted == [correlation_id]
    # The two failed attempts are kept too (what was sent, the 503 page that came back), before HMRC's answer.
    assert kept(runtime, claim_id, "delete") == [("sent", ""), ("received", "")] * 2 + [
        ("sent", "response"),
        ("received", "response"),
    ]
    asked = len(gateway.requests)
    tasks.delete_at_hmrc(claim_id=str(claim_id))
    assert len(gateway.requests) == asked
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.status, claim.errors) == (ClaimStatus.ACCEPTED, [])


def test_a_delete_of_a_copy_hmrc_no_longer_holds_is_done(runtime: Runtime, gateway: FakeGateway) -> None:
    """A first delete that HMRC did but whose answer was lost: the next one is answered "unknown CorrelationID".
    That is the end of it (kept, nothing to retry), not a failure, and the claim's verdict and errors stay."""
    gateway.outcome = "business_error"
    claim_id, correlation_id = submitted_claim(runtime)
    gateway.down_for = {"delete"}
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.REJECTED
    gateway.down_for = set()
    gateway.submissions.pop(correlation_id)
    tasks.delete_at_hmrc(claim_id=str(claim_id))
    assert kept(runtime, claim_id, "delete") == [
        ("sent", ""),
        ("received", ""),
        ("sent", "error"),
        ("received", "error"),
    ]
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert claim.status == ClaimStatus.REJECTED
        assert [e["number"] for e in claim.errors] == [3001, 7040]


# --- 2. an acknowledgement without a CorrelationID --------------------------------------------------------------------


def test_an_acknowledgement_without_a_correlation_id_keeps_the_claim_built(
    runtime: Runtime, gateway: FakeGateway
) -> None:
    """HMRC acknowledged the claim but gave nothing to poll with: the claim became `submitted` with no correlation id,
    which the sweep never polls (and no one could). It stays `built` with an `unknown` error telling finance to find
    it in the gateway's list; it is not sent again unless asked (`again`)."""
    gateway.hook = lambda raw, reply: re.sub(rb"<CorrelationID>[^<]*</CorrelationID>", b"<CorrelationID/>", reply)
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f")
        assert (claim.status, claim.correlation_id) == (ClaimStatus.BUILT, None)
        assert [e["type"] for e in claim.errors] == ["unknown"]
        assert "gateway-list" in claim.errors[0]["text"]
    assert kept(runtime, claim_id, "submit") == [("sent", ""), ("received", "acknowledgement")]
    gateway.hook = None
    with runtime.unit_of_work() as uow, pytest.raises(InvalidTransition, match="may have reached HMRC"):
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    with runtime.unit_of_work() as uow:
        assert service.submit_claim(uow, runtime.settings, claim_id, actor="f", again=True).correlation_id


# --- 3. polls that never get an answer --------------------------------------------------------------------------------


def test_a_claim_whose_polls_keep_failing_stops_being_polled_and_says_so(
    runtime: Runtime, gateway: FakeGateway
) -> None:
    """A recoverable error on every poll left the claim `submitted` and polled every 15 minutes for ever, with
    nothing asking finance to act. After a day of nothing but errors the sweep stops polling it, the claim's errors
    and history say so, and a poll by hand (once HMRC answers) puts it back."""
    gateway.outcome = "recoverable_error"
    start = dt.datetime.now(dt.UTC)
    with time_machine.travel(start, tick=False):
        claim_id, _ = submitted_claim(runtime)

    def poll_at(hours: float) -> list[str]:
        with time_machine.travel(start + dt.timedelta(hours=hours), tick=False), runtime.unit_of_work() as uow:
            claim = service.poll_claim(uow, runtime.settings, claim_id, actor="system:poll")
            assert claim.status == ClaimStatus.SUBMITTED
            return [e["type"] for e in claim.errors]

    def swept() -> int:
        with runtime.unit_of_work() as uow:
            return int(tasks.poll_submitted(uow))

    for hours in (0.25, 6, 12, 23.9):
        assert poll_at(hours) == ["recoverable"]
        assert swept() == 1
    assert poll_at(24.5) == ["recoverable", service.POLLING_STOPPED]
    assert swept() == 0, "still polled every 15 minutes"
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert "giftaid poll" in claim.errors[-1]["text"]
        events = service.claim_json(session, claim, detail=True)["events"]
    assert [e["detail"].get("polling_stopped") is not None for e in events] == [False, False, True]

    gateway.outcome, gateway.pending_polls = "success", 10**6
    with time_machine.travel(start + dt.timedelta(hours=30), tick=False), runtime.unit_of_work() as uow:
        claim = service.poll_claim(uow, runtime.settings, claim_id, actor="finance@example.org")
        assert (claim.status, claim.errors) == (ClaimStatus.SUBMITTED, [])
    assert swept() == 1


def test_a_pending_answer_starts_the_day_of_errors_again(runtime: Runtime, gateway: FakeGateway) -> None:
    """Only a day of nothing but errors stops the polling: an error now and then between HMRC's "still working"
    answers does not."""
    gateway.outcome = "recoverable_error"
    start = dt.datetime.now(dt.UTC)
    with time_machine.travel(start, tick=False):
        claim_id, correlation_id = submitted_claim(runtime)
    for hours, outcome in ((1, "recoverable_error"), (20, "success"), (26, "recoverable_error")):
        gateway.outcome = outcome
        gateway.pending_polls = gateway.submissions[correlation_id].polls + 1 if outcome == "success" else 0
        with time_machine.travel(start + dt.timedelta(hours=hours), tick=False), runtime.unit_of_work() as uow:
            claim = service.poll_claim(uow, runtime.settings, claim_id, actor="system:poll")
            assert claim.status == ClaimStatus.SUBMITTED
    assert [e["type"] for e in claim.errors] == ["recoverable"]


# --- 4. a gateway claim decided by hand -------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", [ClaimStatus.REJECTED, ClaimStatus.ACCEPTED])
def test_a_gateway_claim_decided_by_hand_has_hmrcs_copy_deleted(
    runtime: Runtime, gateway: FakeGateway, decision: ClaimStatus
) -> None:
    """Finance marks a claim sent through the gateway rejected (or accepted) from HMRC's word elsewhere: the copy at
    HMRC was left undeleted. The delete job is recorded with the decision, as after a poll."""
    gateway.pending_polls = 10**6
    claim_id, correlation_id = submitted_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, claim_id, decision, actor="finance@example.org", reason="HMRC phoned")
    (job,) = delete_jobs(runtime, claim_id)
    assert job.status == JobStatus.PENDING
    tasks.delete_at_hmrc(claim_id=str(claim_id))
    assert gateway.deleted == [correlation_id]


def test_a_claim_not_sent_through_the_gateway_has_nothing_to_delete(runtime: Runtime, gateway: FakeGateway) -> None:
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.change_status(uow, claim_id, ClaimStatus.SUBMITTED, actor="f", reason="uploaded by hand")
    with runtime.unit_of_work() as uow:
        service.change_status(uow, claim_id, ClaimStatus.REJECTED, actor="f", reason="HMRC wrote")
    assert delete_jobs(runtime, claim_id) == []
    assert gateway.requests == []


# --- list -------------------------------------------------------------------------------------------------------------


def test_list_asks_for_the_charitys_submissions_by_its_charid(runtime: Runtime, gateway: FakeGateway) -> None:
    """A `list` (data request) names the submissions it is about by the keys they were sent with (giftaid.md §3.1;
    HMRC-CHAR-CLM: the CHARID). Ours sent none, which HMRC's gateway refuses."""
    _, correlation_id = submitted_claim(runtime)
    with runtime.unit_of_work() as uow:
        reply = service.gateway_status(uow, runtime.settings)
    assert reply.errors == []
    assert [r.correlation_id for r in reply.status_records] == [correlation_id]
    sent = gateway.requests[-1]
    charid = runtime.settings.charity.hmrc_reference
    assert f'<Keys><Key Type="CHARID">{charid}</Key></Keys>'.encode() in sent
    assert b"<TargetDetails><Organisation>IR</Organisation></TargetDetails>" in sent
    assert envelope_errors(sent) == []
