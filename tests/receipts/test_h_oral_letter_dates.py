"""The date an oral declaration's written confirmation states is the day it was sent, which is the day crm records
(`Declaration.confirmation_sent_on`): also for the original, when its email goes on a later UK day than it was
numbered (SMTP retries past midnight, workers down for days), or when it goes in a postal batch printed days later.
The stored PDF and its hash are then the version that went (giftaid.md §1C rule 13, §6)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import time_machine

from core.runtime import InlineWorker, Runtime
from crm.models import Declaration, DeclarationMethod
from receipts import service
from receipts.delivery import MailError
from receipts.models import DeliveryStatus, Document, DocumentKind
from receipts.storage import sha256
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text


def _attachment(message: object) -> bytes:
    return bytes(next(iter(message.iter_attachments())).get_content())  # type: ignore[attr-defined]


def _sent_on(runtime: Runtime, declaration: object) -> dt.date | None:
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None
        return row.confirmation_sent_on


def _rendered_again(runtime: Runtime, letter: Document) -> bytes:
    """The stored file deleted: `document_pdf` renders it again from the stored content alone."""
    with runtime.read_session() as session:
        document = service.get_document(session, letter.id)
        Path(service.document_path(runtime.settings, document)).unlink()
        return service.document_pdf(runtime.settings, document)


def _issue_without_sending(runtime: Runtime, worker: InlineWorker, *, email: str | None = "ada@example.org") -> tuple:
    from receipts import tasks

    worker.stop()
    supporter = factories.supporter(runtime, email=email)
    declaration = factories.declaration(runtime, supporter, made_on=dt.date(2025, 11, 2), method=DeclarationMethod.ORAL)
    tasks.issue_oral_confirmation(declaration_id=str(declaration))
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    [delivery] = deliveries(runtime, letter.id)
    return declaration, letter, delivery


def test_an_original_whose_email_is_retried_past_midnight_states_the_day_it_went(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Numbered at 23:50 on 3 November, the server refuses it; the retry at 00:10 is accepted. crm records 4
    November, so the letter the donor gets says it was sent on 4 November and may be cancelled until 4 December,
    in the PDF (its date too) and in the email; what is stored (file and hash) is that letter, and it renders
    again from the stored content alone."""
    numbered = dt.datetime(2025, 11, 3, 23, 50, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _issue_without_sending(runtime, worker)
        mailbox.refuse = True
        with pytest.raises(MailError), runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
        mailbox.refuse = False
    assert letter.issued_on == dt.date(2025, 11, 3)
    with time_machine.travel(numbered + dt.timedelta(minutes=20), tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=2, final=False) == DeliveryStatus.SENT

    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 4)
    [message] = mailbox.messages
    sent = _attachment(message)
    text = pdf_text(sent)
    assert "Date 04/11/2025" in text and "Date this letter was sent 04/11/2025" in text, text
    assert "that is by 04/12/2025" in text and "03/11/2025" not in text and "03/12/2025" not in text, text
    body = message.get_body(("plain",))
    assert body is not None and "until 04/12/2025" in body.get_content()
    [stored] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    assert stored.reference == letter.reference and stored.status == "issued"
    assert stored_pdf(runtime, stored) == sent and stored.sha256 == sha256(sent) and stored.size_bytes == len(sent)
    assert _rendered_again(runtime, stored) == sent


def test_an_original_emailed_days_after_it_was_numbered_states_that_day_and_so_do_its_copies(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The workers were down for a week: the letter numbered on 3 November goes on 10 November. It says 10
    November and 10 December, as crm records; a copy asked for later repeats those days (its DUPLICATE line too):
    the day it was numbered is on neither."""
    numbered = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _issue_without_sending(runtime, worker)
    with time_machine.travel(numbered + dt.timedelta(days=7), tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False) == DeliveryStatus.SENT
    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 10)
    [message] = mailbox.messages
    text = pdf_text(_attachment(message))
    assert "Date this letter was sent 10/11/2025" in text and "that is by 10/12/2025" in text, text
    assert "03/12/2025" not in text, text
    assert stored_pdf(runtime, letter) == _attachment(message)

    with time_machine.travel(numbered + dt.timedelta(days=12), tick=False):
        with runtime.unit_of_work() as uow:
            copy_id = service.resend(uow, letter.id, requested_by="staff@example.org").id
        with runtime.unit_of_work() as uow:
            assert service.send_delivery(uow, runtime.settings, copy_id, attempt=1, final=False) == "sent"
    copy = pdf_text(_attachment(mailbox.messages[1]))
    assert "DUPLICATE" in copy and "Date this letter was sent 10/11/2025" in copy, copy
    assert "that is by 10/12/2025" in copy and "a copy of DC-000001 issued on 10/11/2025" in copy, copy
    assert "03/11/2025" not in copy and "03/12/2025" not in copy, copy
    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 10)


def test_an_original_emailed_the_day_it_was_numbered_is_kept_as_rendered(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The usual case: it goes the day it was numbered, so the stored PDF is the one the issuing job rendered."""
    day = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(day, tick=False):
        supporter = factories.supporter(runtime)
        declaration = factories.declaration(
            runtime, supporter, made_on=dt.date(2025, 11, 2), method=DeclarationMethod.ORAL
        )
        run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)
    [letter] = documents(runtime)
    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 3)
    [message] = mailbox.messages
    assert _attachment(message) == stored_pdf(runtime, letter)
    [after] = documents(runtime)
    assert (after.sha256, after.rendered_at, after.content) == (letter.sha256, letter.rendered_at, letter.content)
    assert "Date this letter was sent 03/11/2025" in pdf_text(_attachment(message))


def test_a_copy_that_went_first_fixes_the_day_the_late_original_states(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The original's email is still being retried when staff send a copy, which goes on 3 November; the original
    finally goes on 4 November. The written record was sent on 3 November (crm keeps that day), and the original
    says so too rather than promising a later cancel-by date than the donor has."""
    numbered = dt.datetime(2025, 11, 3, 20, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _issue_without_sending(runtime, worker)
        with runtime.unit_of_work() as uow:
            copy_id = service.resend(uow, letter.id, requested_by="staff@example.org").id
        with runtime.unit_of_work() as uow:
            assert service.send_delivery(uow, runtime.settings, copy_id, attempt=1, final=False) == "sent"
    with time_machine.travel(numbered + dt.timedelta(hours=5), tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=3, final=False) == "sent"
    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 3)
    original = pdf_text(_attachment(mailbox.messages[1]))
    assert "DUPLICATE" not in original and "Date this letter was sent 03/11/2025" in original, original
    assert "that is by 03/12/2025" in original and "04/12/2025" not in original, original


def test_a_posted_original_states_the_day_its_batch_was_made_as_crm_records(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """No email: the letter numbered on 12 January is printed in the postal batch of 19 January, the day it is sent
    and the day crm records. The page says it was sent that day and may be cancelled until 18 February (30 days
    after); the stored PDF is that letter (its hash too), and a batch made again later prints the same page."""
    from giving.privacy import erase_supporter

    numbered = dt.datetime(2026, 1, 12, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        supporter = factories.supporter(runtime, email=None)
        declaration = factories.declaration(
            runtime, supporter, made_on=dt.date(2026, 1, 10), method=DeclarationMethod.ORAL
        )
        run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)
        other = factories.supporter(runtime, email=None, first_name="Bob", last_name="Pagewright")
        other_gift = factories.gift(
            runtime, other, donor_details=factories.donor(first_name="Bob", last_name="Pagewright", email=None)
        )
        run_job(runtime, worker, "receipts.issue_for_gift", gift_id=other_gift)
    with time_machine.travel(numbered + dt.timedelta(days=7), tick=False), runtime.unit_of_work() as uow:
        batch = service.build_postal_batch(uow, runtime.settings)
        assert batch is not None and batch.documents == 2
    assert _sent_on(runtime, declaration) == dt.date(2026, 1, 19)
    path = Path(service.postal_batch_path(runtime.settings, batch))
    printed = pdf_text(path.read_bytes())
    for expected in ("Date 19/01/2026", "Date this letter was sent 19/01/2026", "that is by 18/02/2026"):
        assert expected in printed, (expected, printed)
    assert "Date of this letter" not in printed and "the date it was posted to you" not in printed, printed

    [stored] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    pdf = stored_pdf(runtime, stored)
    assert stored.sha256 == sha256(pdf) and stored.size_bytes == len(pdf)
    text = pdf_text(pdf)
    assert "Date this letter was sent 19/01/2026" in text and "that is by 18/02/2026" in text, text
    assert "12/01/2026" not in text, text
    assert _rendered_again(runtime, stored) == pdf

    worker.stop()  # the rebuild the erasure asks for is run here
    with time_machine.travel(numbered + dt.timedelta(days=9), tick=False):
        with runtime.unit_of_work() as uow:
            erase_supporter(uow, runtime.settings, other)
        with runtime.unit_of_work() as uow:
            assert service.rebuild_postal_batch(uow, runtime.settings, batch.id) == 1
    rebuilt = pdf_text(path.read_bytes())
    assert "Pagewright" not in rebuilt, rebuilt
    assert "Date this letter was sent 19/01/2026" in rebuilt and "that is by 18/02/2026" in rebuilt, rebuilt
    assert "21/01/2026" not in rebuilt, rebuilt
