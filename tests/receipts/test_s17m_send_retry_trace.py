"""A refused email is retried for about two hours (`receipts.send_document`). Each try that failed is kept on the
delivery while the next waits: the staff API shows it pending with its attempts and the mail server's answer, not
`pending`, 0 attempts and no error (what the try set used to be rolled back with the job's unit of work)."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core import auth, jobs
from core.models import Job, JobStatus, StaffRole, StaffUser
from core.runtime import Runtime
from receipts import tasks
from receipts.delivery import MailError
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents


def _headers(runtime: Runtime) -> dict[str, str]:
    email = f"fundraiser-{uuid.uuid4().hex[:6]}@example.org"
    with runtime.unit_of_work() as uow:
        uow.session.add(StaffUser(email=email, role=StaffRole.FUNDRAISER, password_hash="x"))
    with runtime.unit_of_work() as uow:
        token = auth.create_api_token(uow, email)
    return {"Authorization": f"Bearer {token}"}


def _send_job() -> dict[str, str]:
    from core.runtime import get_runtime

    with get_runtime().read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one()
        return {**job.arguments, "job_id": str(job.id)}


def test_a_refused_email_waiting_for_its_retry_shows_its_attempt_and_error(
    runtime: Runtime, client: TestClient, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    tasks.issue_for_gift(gift_id=str(gift))  # no worker: the send job waits in the queue
    [document] = documents(runtime)
    mailbox.refuse = True
    send = jobs._dramatiq_actors["receipts.send_document"]
    with pytest.raises(MailError):
        send(**_send_job())  # its message, delivered; dramatiq would retry it

    [delivery] = deliveries(runtime)
    assert delivery.status == "pending" and delivery.attempts == 1 and "451" in delivery.last_error
    detail = client.get(f"/api/receipts/documents/{document.id}", headers=_headers(runtime)).json()
    [shown] = detail["deliveries"]
    assert shown["status"] == "pending" and shown["attempts"] == 1 and "451" in shown["last_error"], shown
    with runtime.read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one()
        assert job.status == JobStatus.PENDING and job.attempts == 1 and "451" in job.last_error

    mailbox.refuse = False
    send(**_send_job())  # the retry goes
    [sent] = deliveries(runtime)
    assert sent.status == "sent" and sent.last_error == "" and len(mailbox.messages) == 1
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one().status == (
            JobStatus.DONE
        )
