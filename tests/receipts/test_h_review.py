"""What a review of receipts against giftaid.md §6 and the contract found, each proven by a test that failed first."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from starlette.testclient import TestClient

from core.runtime import InlineWorker, Runtime
from crm import service as crm_service
from crm.models import Declaration, DeclarationMethod
from receipts import service
from receipts.errors import NothingToResend
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, history, run_job
from tests.receipts.test_delivery_and_races import _staff_headers

DAY = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)


def _letter_numbered_then_cancelled(runtime: Runtime, worker: InlineWorker, *, email: str | None) -> tuple:
    """An oral declaration's letter numbered and rendered, not gone yet; the donor then rings to cancel."""
    from receipts import tasks

    worker.stop()
    supporter = factories.supporter(runtime, email=email)
    declaration = factories.declaration(runtime, supporter, made_on=dt.date(2025, 11, 2), method=DeclarationMethod.ORAL)
    tasks.issue_oral_confirmation(declaration_id=str(declaration))
    [delivery] = deliveries(runtime)
    with runtime.unit_of_work() as uow:
        crm_service.cancel_declaration(uow, declaration, effective_on=dt.date(2025, 11, 3), reason="changed mind")
    return supporter, declaration, delivery


def _declaration(runtime: Runtime, declaration: object) -> Declaration:
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None
        session.expunge(row)
        return row


def test_a_letter_not_emailed_before_its_oral_declaration_was_cancelled_is_not_sent(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A declaration cancelled or voided gets no letter (giftaid.md §6, docs/receipts.md): also when it was cancelled
    after its letter was numbered but before the email went (retries, workers down). Otherwise the donor gets a
    letter "confirming" a declaration they cancelled. The delivery is withdrawn, and says so on the history."""
    with time_machine.travel(DAY, tick=False):
        supporter, declaration, delivery = _letter_numbered_then_cancelled(runtime, worker, email="ada@example.org")
        with runtime.unit_of_work() as uow:
            status = service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
    assert status == DeliveryStatus.WITHDRAWN
    assert mailbox.messages == []
    assert [d.status for d in deliveries(runtime)] == [DeliveryStatus.WITHDRAWN]
    row = _declaration(runtime, declaration)
    assert row.confirmation_sent_on is None and row.voided
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    assert [h.summary for h in history(runtime, supporter)] == [
        f"Gift Aid declaration confirmation {letter.reference} not sent: the declaration was cancelled"
    ]


def test_a_letter_waiting_for_the_post_when_its_oral_declaration_was_cancelled_is_not_printed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The same for a letter waiting for the postal batch: it is not printed (nothing else waits, so no batch)."""
    with time_machine.travel(DAY, tick=False):
        _supporter, declaration, delivery = _letter_numbered_then_cancelled(runtime, worker, email=None)
        assert delivery.channel == "post"
        with runtime.unit_of_work() as uow:
            assert service.build_postal_batch(uow, runtime.settings) is None
    assert [d.status for d in deliveries(runtime)] == [DeliveryStatus.WITHDRAWN]
    assert _declaration(runtime, declaration).confirmation_sent_on is None
    with runtime.unit_of_work() as uow:
        assert service.build_postal_batch(uow, runtime.settings) is None


def test_the_pdf_of_an_erased_supporters_document_is_gone_not_a_server_error(
    runtime: Runtime, worker: InlineWorker, client: TestClient, mailbox: Mailbox
) -> None:
    """Erasure blanks a document's words and deletes its file; the number stays in the ledger. Asking for its PDF
    answers 410 with the contract's error body (the words are gone for good), rather than failing to render empty
    content (a 500)."""
    from giving.privacy import erase_supporter

    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter, amount=4200)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    [document] = documents(runtime)
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter)
    worker.join()
    headers = _staff_headers(runtime)

    answer = client.get(f"/api/receipts/documents/{document.id}/pdf", headers=headers)
    assert answer.status_code == 410, answer.text
    assert answer.json()["error"] == "DocumentErased"
    assert client.get(f"/api/receipts/documents/{document.id}", headers=headers).status_code == 200


def test_staff_cannot_send_a_copy_of_a_letter_whose_declaration_was_cancelled_before_any_went(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The original was withdrawn (the declaration cancelled before it went): a copy would be the first written
    confirmation of a cancelled declaration, so asking for one is refused (409) rather than queued to be withdrawn."""
    with time_machine.travel(DAY, tick=False):
        _supporter, _declaration_id, delivery = _letter_numbered_then_cancelled(
            runtime, worker, email="ada@example.org"
        )
        with runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
        with pytest.raises(NothingToResend), runtime.unit_of_work() as uow:
            service.resend(uow, delivery.document_id, requested_by="staff@example.org")
    assert len(deliveries(runtime)) == 1 and mailbox.messages == []
