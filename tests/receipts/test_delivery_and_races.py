"""Sending: retried on SMTP failure, failed after the last try, copies marked DUPLICATE; numbering under races."""

from __future__ import annotations

import threading
import time
import uuid

import sqlalchemy as sa
from sqlmodel import col, select
from starlette.testclient import TestClient

from core import auth, jobs
from core.clock import utc_now
from core.models import Job, JobStatus, StaffRole, StaffUser
from core.runtime import InlineWorker, Runtime
from crm.models import Supporter
from receipts import documents as docs
from receipts import service, tasks
from receipts.models import DeliveryStatus, Document, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, history, run_job, stored_pdf
from tests.receipts.pdf import pdf_text


def _staff_headers(runtime: Runtime, role: StaffRole = StaffRole.FUNDRAISER) -> dict[str, str]:
    email = f"{role.value}-{uuid.uuid4().hex[:6]}@example.org"
    with runtime.unit_of_work() as uow:
        uow.session.add(StaffUser(email=email, role=role, password_hash="x"))
    with runtime.unit_of_work() as uow:
        token = auth.create_api_token(uow, email)
    return {"Authorization": f"Bearer {token}"}


def test_email_refused_then_accepted_is_retried_without_rendering_again(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    mailbox.refuse = True
    with runtime.unit_of_work() as uow:
        uow.enqueue("receipts.issue_for_gift", gift_id=str(gift))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with runtime.read_session() as session:
            job = session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).first()
            if job is not None and job.attempts >= 1:
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the send was never tried")
    [document] = documents(runtime)
    rendered_at = document.rendered_at
    mailbox.refuse = False
    worker.join()

    [message] = mailbox.messages
    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts >= 2
    assert documents(runtime)[0].rendered_at == rendered_at
    assert next(iter(message.iter_attachments())).get_content() == stored_pdf(runtime, document)
    with runtime.read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one()
        assert job.status == JobStatus.DONE and "451" in job.last_error


def test_last_failed_attempt_marks_the_delivery_failed_on_the_history(runtime: Runtime, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    tasks.issue_for_gift(gift_id=str(gift))  # no worker: the send job waits in the queue
    [delivery] = deliveries(runtime)
    mailbox.refuse = True
    with runtime.unit_of_work() as uow:
        status = service.send_delivery(uow, runtime.settings, delivery.id, attempt=13, final=True)
    assert status == DeliveryStatus.FAILED
    [failed] = deliveries(runtime)
    assert failed.status == DeliveryStatus.FAILED and failed.attempts == 13 and "451" in failed.last_error
    [item] = history(runtime, supporter)
    assert item.summary.startswith("Receipt GR-000001 could not be emailed to ada@example.org")
    assert mailbox.messages == []


def test_staff_resend_is_a_duplicate_copy(
    runtime: Runtime, worker: InlineWorker, client: TestClient, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter, amount=4200)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    [document] = documents(runtime)
    headers = _staff_headers(runtime)

    assert client.get(f"/api/receipts/documents/{document.id}/pdf").status_code == 401
    download = client.get(f"/api/receipts/documents/{document.id}/pdf", headers=headers)
    assert download.status_code == 200 and download.headers["content-type"] == "application/pdf"
    assert download.content == stored_pdf(runtime, document)

    answer = client.post(
        f"/api/receipts/documents/{document.id}/resend", json={"to_email": "Other@Example.org"}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["duplicate"] is True and answer.json()["to_email"] == "other@example.org"
    worker.join()

    [copy] = mailbox.to("other@example.org")
    assert copy["Subject"] == "Copy of: Your receipt GR-000001 from Calais Refugee Aid"
    copy_pdf = next(iter(copy.iter_attachments())).get_content()
    text = pdf_text(copy_pdf)
    assert "DUPLICATE" in text and "GR-000001" in text and "£42.00" in text
    assert "DUPLICATE" not in pdf_text(stored_pdf(runtime, document))
    assert len(mailbox.to("ada@example.org")) == 1

    listed = client.get(f"/api/receipts/documents?supporter_id={supporter}", headers=headers).json()["items"]
    assert [d["reference"] for d in listed] == ["GR-000001"]
    detail = client.get(f"/api/receipts/documents/{document.id}", headers=headers).json()
    assert [(d["copy_number"], d["status"]) for d in detail["deliveries"]] == [(0, "sent"), (1, "sent")]
    assert client.post(f"/api/receipts/documents/{uuid.uuid4()}/resend", headers=headers).status_code == 404
    assert client.get("/api/receipts/documents?supporter_id=nope", headers=headers).status_code == 400


def test_the_same_job_run_concurrently_issues_one_number(runtime: Runtime, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    same = factories.gift(runtime, supporter)
    others = [factories.gift(runtime, supporter, amount=100 * (i + 1)) for i in range(5)]
    targets = [same] * 6 + others
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(gift_id: uuid.UUID) -> None:
        try:
            barrier.wait()
            tasks.issue_for_gift(gift_id=str(gift_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(g,)) for g in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    issued = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert sorted(d.number for d in issued) == [1, 2, 3, 4, 5, 6]
    assert len([d for d in issued if d.gift_id == same]) == 1
    # One original delivery per document, however many jobs finished it.
    assert sorted(len(deliveries(runtime, d.id)) for d in issued) == [1] * 6


def test_reassign_moves_documents_to_the_surviving_supporter(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    old = factories.supporter(runtime, email="old@example.org")
    survivor = factories.supporter(runtime, email="new@example.org")
    gift = factories.gift(runtime, old)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    with runtime.unit_of_work() as uow:
        assert service.reassign_supporter(uow, old, survivor) == {"documents": 1}
    with runtime.read_session() as session:
        assert [d.reference for d in service.documents_of(session, survivor)] == ["GR-000001"]
        assert service.documents_of(session, old) == []
        assert session.exec(select(Document.supporter_id)).one() == survivor
        assert session.get(Supporter, old) is not None
    assert [d.supporter_id for d in deliveries(runtime)] == [survivor]


def test_a_number_taken_for_a_subject_that_has_its_document_is_given_back(runtime: Runtime, mailbox: Mailbox) -> None:
    """The path a job that lost the race takes: its insert finds the subject's document (ON CONFLICT DO NOTHING),
    so it gives its number back under the same lock and returns the winner's document."""
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    tasks.issue_for_gift(gift_id=str(gift))
    [winner] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    with runtime.unit_of_work() as uow:
        again = service._allocate(
            uow,
            DocumentKind.GIFT_RECEIPT,
            f"gift:{gift}",
            lambda reference, issued_on: docs.load(winner.content),
            supporter_id=supporter,
            gift_id=gift,
        )
    assert (again.id, again.reference) == (winner.id, "GR-000001")
    tasks.issue_for_gift(gift_id=str(factories.gift(runtime, supporter, amount=700)))
    assert [d.reference for d in documents(runtime, DocumentKind.GIFT_RECEIPT)] == ["GR-000001", "GR-000002"]


def test_recording_follows_a_merge_or_an_erasure_made_after_numbering(runtime: Runtime, mailbox: Mailbox) -> None:
    """The delivery is planned from the supporter as it is when the PDF is recorded, not when it was numbered."""
    old = factories.supporter(runtime, email="old@example.org")
    survivor = factories.supporter(runtime, email="survivor@example.org")
    erased = factories.supporter(runtime, email="gone@example.org")
    merged_gift, erased_gift = factories.gift(runtime, old), factories.gift(runtime, erased)
    with runtime.unit_of_work() as uow:
        jobs = [
            service.render_job_of(d)
            for d in (
                service.allocate_gift_receipt(uow, runtime.settings, merged_gift),
                service.allocate_gift_receipt(uow, runtime.settings, erased_gift),
            )
            if d is not None
        ]
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(Supporter).where(col(Supporter.id) == old).values(merged_into_id=survivor))
        uow.session.execute(
            sa.update(Supporter).where(col(Supporter.id) == erased).values(erased_at=utc_now(), email=None)
        )
    planned = []
    for job in jobs:
        assert job is not None
        digest, size = service.render_and_store(runtime.settings, job)
        with runtime.unit_of_work() as uow:
            planned.append(
                service.record_rendered(uow, job.document_id, storage_key=job.storage_key, digest=digest, size=size)
            )
    to_survivor, to_nobody = planned
    assert to_nobody is None
    assert to_survivor is not None
    assert (to_survivor.supporter_id, to_survivor.to_email) == (survivor, "survivor@example.org")
    assert [(d.supporter_id, d.to_email) for d in deliveries(runtime)] == [(survivor, "survivor@example.org")]
    assert {str(d.status) for d in documents(runtime)} == {"issued"}


def test_a_receipt_for_a_gift_of_a_merged_record_goes_to_the_survivor(runtime: Runtime, mailbox: Mailbox) -> None:
    old = factories.supporter(runtime, email="old@example.org")
    survivor = factories.supporter(runtime, email="survivor@example.org", first_name="Grace")
    gift = factories.gift(runtime, old)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(Supporter).where(col(Supporter.id) == old).values(merged_into_id=survivor))
    tasks.issue_for_gift(gift_id=str(gift))
    [document] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert document.supporter_id == survivor
    assert [(d.supporter_id, d.to_email) for d in deliveries(runtime)] == [(survivor, "survivor@example.org")]


def test_an_email_job_given_up_marks_its_delivery_failed(runtime: Runtime, mailbox: Mailbox) -> None:
    """A send job given up without the SMTP answer that marks its delivery failed (its worker died each time it
    ran, or an error other than the mail server's on its last try) left the delivery `pending` for ever: staff saw
    it waiting and nothing would ever send it. Giving up marks it failed, with the reason, on the history."""
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    tasks.issue_for_gift(gift_id=str(gift))  # no worker: the send job waits in the queue
    [delivery] = deliveries(runtime)
    with runtime.unit_of_work() as uow:
        job = uow.session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one()
        # What thirteen runs that died left behind: each counted, none finished.
        job.attempts = tasks.SEND_MAX_RETRIES + 1
        uow.session.add(job)
        kwargs = {**job.arguments, "job_id": str(job.id)}
    jobs._dramatiq_actors["receipts.send_document"](**kwargs)  # the next delivery of its message

    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == "receipts.send_document")).one().status == (
            JobStatus.FAILED
        )
    [failed] = deliveries(runtime)
    assert failed.id == delivery.id and failed.status == DeliveryStatus.FAILED
    assert "died" in failed.last_error
    [item] = history(runtime, supporter)
    assert item.summary.startswith("Receipt GR-000001 could not be emailed to ada@example.org")
    assert mailbox.messages == []
