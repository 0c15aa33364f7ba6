"""HMRC's gateway, edges left by earlier reviews: a delete of HMRC's copy that fails and is retried is kept with
the claim (every message sent and received is kept); a correlation id recovered with `gateway-list` can be attached
to a claim whose submission got no answer, and polling then goes on; a successful `submit --again` clears the old
`unknown` error (the history keeps it)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from sqlmodel import select

from core import jobs
from core.models import Job, JobStatus
from core.runtime import Runtime
from giftaid import service
from giftaid.models import ClaimStatus
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]  # fixtures, shared with the other gateway tests

DELETE_JOB = "giftaid.delete_at_hmrc"


def built_claim(runtime: Runtime) -> uuid.UUID:
    ada = donor(runtime)
    make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
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


def delete_job(runtime: Runtime, claim_id: uuid.UUID) -> Job:
    with runtime.read_session() as session:
        rows = session.exec(select(Job).where(Job.actor_name == DELETE_JOB)).all()
    (job,) = [row for row in rows if row.arguments.get("claim_id") == str(claim_id)]
    return job


def run_delete_job(job: Job) -> None:
    """The delete job as the worker runs its message (its own units of work, the failure recorded on its row)."""
    jobs._dramatiq_actors[DELETE_JOB].fn(**job.arguments, job_id=str(job.id))


def kept_deletes(runtime: Runtime, claim_id: uuid.UUID) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        return [(m.direction, m.qualifier) for m in service.claim_messages(session, claim_id) if m.function == "delete"]


# --- 1. a failed delete is kept ---------------------------------------------------------------------------------------


def test_a_delete_that_fails_and_is_retried_is_kept_with_the_claim(runtime: Runtime, gateway: FakeGateway) -> None:
    claim_id, correlation_id = submitted_claim(runtime)
    gateway.down_for = {"delete"}
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED
    # The delete tried at once after the verdict's commit failed: the attempt is kept (what was sent, what came back).
    assert kept_deletes(runtime, claim_id) == [("sent", ""), ("received", "")]
    job = delete_job(runtime, claim_id)
    with pytest.raises(Exception, match="not deleted"):
        run_delete_job(job)  # the worker retries it
    assert kept_deletes(runtime, claim_id) == [("sent", ""), ("received", "")] * 2
    with runtime.read_session() as session:
        messages = [m for m in service.claim_messages(session, claim_id) if m.function == "delete"]
        assert all("503" in m.error for m in messages), [m.error for m in messages]
        assert "503 Service Unavailable" in messages[-1].body  # what came back
        assert correlation_id in messages[-2].body  # what was sent
        assert session.get(Job, job.id).status == JobStatus.PENDING  # type: ignore[union-attr]

    gateway.down_for = set()
    run_delete_job(job)
    assert gateway.deleted == [correlation_id]
    assert kept_deletes(runtime, claim_id)[-2:] == [("sent", "response"), ("received", "response")]
    with runtime.read_session() as session:
        assert session.get(Job, job.id).status == JobStatus.DONE  # type: ignore[union-attr]
    asked = len(gateway.requests)
    with runtime.unit_of_work() as uow:
        assert service.delete_at_hmrc(uow, runtime.settings, claim_id).sent is False  # answered: nothing sent again
    assert len(gateway.requests) == asked


# --- 2. a correlation id recovered with gateway-list is attached ------------------------------------------------------


def _no_correlation_id(raw: bytes, reply: bytes) -> bytes:
    return re.sub(rb"<CorrelationID>[^<]*</CorrelationID>", b"<CorrelationID/>", reply)


def unanswered_claim(runtime: Runtime, gateway: FakeGateway) -> uuid.UUID:
    """A claim HMRC acknowledged without a CorrelationID: built, with an `unknown` error; HMRC holds it."""
    gateway.hook = _no_correlation_id
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f")
        assert (claim.status, [e["type"] for e in claim.errors]) == (ClaimStatus.BUILT, ["unknown"])
    gateway.hook = None
    return claim_id


def recovered_correlation_id(runtime: Runtime) -> str:
    with runtime.unit_of_work() as uow:
        (record,) = service.gateway_status(uow, runtime.settings).status_records
    return record.correlation_id


def test_a_correlation_id_from_the_gateways_list_is_attached_and_the_claim_polled(
    runtime: Runtime, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from tests.giftaid.factories import run_giving

    claim_id = unanswered_claim(runtime, gateway)
    correlation_id = recovered_correlation_id(runtime)
    result = run_giving(
        ["giftaid", "attach", str(claim_id), correlation_id, "--by", "finance@example.org"],
        runtime.settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert correlation_id in result.stdout
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.status, claim.correlation_id, claim.errors) == (ClaimStatus.SUBMITTED, correlation_id, [])
        event = service.claim_json(session, claim, detail=True)["events"][-1]
        assert (event["status"], event["actor"]) == ("submitted", "finance@example.org")
        assert event["detail"]["correlation_id"] == correlation_id
        assert event["detail"]["via"] == "attached"
        assert "CorrelationID" in event["detail"]["earlier_errors"][0]  # the history keeps the unknown error
    # Polling proceeds as after an acknowledgement: the sweep asks about it, and HMRC's verdict is taken.
    with runtime.unit_of_work() as uow:
        assert tasks_poll_submitted(uow) == 1
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED


def tasks_poll_submitted(uow) -> int:  # type: ignore[no-untyped-def]
    from giftaid import tasks

    uow.jobs.clear()
    count = tasks.poll_submitted(uow)
    uow.jobs.clear()
    return int(count)


def test_attaching_is_refused_unless_the_claim_waits_on_an_unanswered_submission(
    runtime: Runtime, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from tests.giftaid.factories import run_giving

    built = built_claim(runtime)  # never sent: nothing to attach to
    result = run_giving(["giftaid", "attach", str(built), "ABCDEF0123456789"], runtime.settings, monkeypatch, tmp_path)
    assert (result.exit_code, result.stdout) == (1, "")
    assert "not waiting on a submission that got no answer" in result.stderr, result.stderr
    with runtime.read_session() as session:
        claim = service.get_claim(session, built)
        assert (claim.status, claim.correlation_id) == (ClaimStatus.BUILT, None)

    submitted, _ = submitted_claim(runtime)
    result = run_giving(
        ["giftaid", "attach", str(submitted), "ABCDEF0123456789"], runtime.settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 1 and "is submitted" in result.stderr, result.stderr

    claim_id = unanswered_claim(runtime, gateway)
    for bad in ("", "not a correlation id!", "A" * 33):
        result = run_giving(["giftaid", "attach", str(claim_id), bad], runtime.settings, monkeypatch, tmp_path)
        assert result.exit_code == 1 and "correlation id" in result.stderr, result.stderr
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert (claim.status, claim.correlation_id) == (ClaimStatus.BUILT, None)
        assert [e["type"] for e in claim.errors] == ["unknown"]


def test_finance_attaches_a_correlation_id_through_the_api(runtime: Runtime, gateway: FakeGateway, client) -> None:  # type: ignore[no-untyped-def]
    from tests.giftaid.factories import staff_headers

    claim_id = unanswered_claim(runtime, gateway)
    correlation_id = recovered_correlation_id(runtime)
    url = f"/api/giftaid/claims/{claim_id}/attach"
    refused = client.post(url, json={"correlation_id": correlation_id}, headers=staff_headers(runtime, "fundraiser"))
    assert refused.status_code == 403
    bad = client.post(url, json={"correlation_id": "<script>"}, headers=staff_headers(runtime, "finance"))
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidClaimRequest"
    answer = client.post(url, json={"correlation_id": correlation_id}, headers=staff_headers(runtime, "finance"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["correlation_id"], body["errors"]) == ("submitted", correlation_id, [])
    again = client.post(url, json={"correlation_id": correlation_id}, headers=staff_headers(runtime, "admin"))
    assert again.status_code == 409 and again.json()["error"] == "InvalidTransition"


# --- 3. a successful submit --again clears the unknown error ----------------------------------------------------------


def test_a_successful_submission_again_clears_the_unknown_error_and_the_history_keeps_it(
    runtime: Runtime, gateway: FakeGateway
) -> None:
    claim_id = unanswered_claim(runtime, gateway)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f", again=True)
        assert claim.status == ClaimStatus.SUBMITTED and claim.correlation_id
    with runtime.read_session() as session:
        claim = service.get_claim(session, claim_id)
        assert claim.errors == []
        event = service.claim_json(session, claim, detail=True)["events"][-1]
        assert event["status"] == "submitted"
        assert "CorrelationID" in event["detail"]["earlier_errors"][0]
