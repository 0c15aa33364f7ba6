"""Gift receipts: issued once per paid gift, numbered, stored with their hash, emailed with the PDF attached."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from core.runtime import InlineWorker, Runtime
from crm.models import StatementPreference
from payments.models import DonorType, GiftStatus, Method
from receipts.models import DeliveryStatus, DocumentKind, DocumentStatus
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, history, run_job, stored_pdf
from tests.receipts.pdf import page_png, pdf_text


def test_gift_aided_gift_gets_a_receipt_by_email(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter, made_on=dt.date(2025, 4, 1))
    gift = factories.gift(runtime, supporter, amount=123450, received_on=dt.date(2025, 10, 5))

    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)

    [document] = documents(runtime)
    assert (document.kind, document.number, document.reference) == (DocumentKind.GIFT_RECEIPT, 1, "GR-000001")
    assert document.status == DocumentStatus.ISSUED
    pdf = stored_pdf(runtime, document)
    assert hashlib.sha256(pdf).hexdigest() == document.sha256
    text = pdf_text(pdf)
    for expected in (
        "Calais Refugee Aid",
        "Registered charity number 1234567",
        "GR-000001",
        "£1,234.50",
        "05/10/2025",
        "Card",
        "Winter appeal",
        "Ms Ada Lovelace",
        "12 Acacia Avenue",
        "CT16 1AA",
        "No goods or services were provided in return",
        "we will claim £308.63 Gift Aid on this gift (25p for every £1 you give)",
        "declaration made on 01/04/2025",
        "you must pay at least as much Income Tax and/or Capital Gains Tax",
        "To cancel or change your declaration",
    ):
        assert expected in text, expected
    assert "Are you a UK taxpayer" not in text

    [message] = mailbox.to("ada@example.org")
    assert message["Subject"] == "Your receipt GR-000001 from Calais Refugee Aid"
    assert message["From"] == "receipts@calais-aid.example"
    assert "£1,234.50" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "GR-000001.pdf"
    assert attachment.get_content() == pdf

    [delivery] = deliveries(runtime)
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1 and delivery.to_email == "ada@example.org"
    [item] = history(runtime, supporter)
    assert item.summary == "Receipt GR-000001 emailed to ada@example.org"
    assert item.data["gift_id"] == str(gift) and item.data["document_id"] == str(document.id)

    png = page_png(pdf, "gift_receipt")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000


def test_running_the_job_again_issues_and_sends_nothing_new(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    for _ in range(3):
        run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    assert [d.reference for d in documents(runtime)] == ["GR-000001"]
    assert len(deliveries(runtime)) == 1
    assert len(mailbox.messages) == 1


def test_gift_without_declaration_invites_one(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter, amount=2000, method=Method.DIRECT_DEBIT, regular=True, appeal=None)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    text = pdf_text(stored_pdf(runtime, documents(runtime)[0]))
    assert "£20.00" in text and "Direct Debit" in text and "General fund" in text
    assert "Regular gift (monthly instalment)" in text
    assert "Are you a UK taxpayer?" in text and "we could claim £5.00 more on this gift" in text
    assert "we will claim" not in text


def test_declaration_that_does_not_cover_the_gift_gives_the_invitation(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    # Cancelled from 1 October: a gift of 5 October is not covered.
    factories.declaration(runtime, supporter, cancellation_effective_on=dt.date(2025, 10, 1))
    gift = factories.gift(runtime, supporter, received_on=dt.date(2025, 10, 5))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    text = pdf_text(stored_pdf(runtime, documents(runtime)[0]))
    assert "Are you a UK taxpayer?" in text and "we will claim" not in text


def test_ineligible_gift_has_no_gift_aid_wording(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, donor_type=DonorType.COMPANY)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    text = pdf_text(stored_pdf(runtime, documents(runtime)[0]))
    assert "£25.00" in text
    assert "Gift Aid" not in text and "taxpayer" not in text


def test_supporter_on_yearly_statements_and_unpaid_gifts_get_no_receipt(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    annual = factories.supporter(runtime, email="yearly@example.org", preference=StatementPreference.ANNUAL)
    per_gift = factories.supporter(runtime, email="pending@example.org")
    yearly_gift = factories.gift(runtime, annual)
    pending_gift = factories.gift(runtime, per_gift, status=GiftStatus.PENDING)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=yearly_gift)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=pending_gift)
    assert documents(runtime) == []
    assert mailbox.messages == []


def test_pdf_is_reproducible_from_the_stored_content(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    [document] = documents(runtime)
    from receipts import service

    path = service.document_path(runtime.settings, document)
    original = Path(path).read_bytes()
    # The file is lost: the PDF is rendered again from what the document says, to the same bytes.
    Path(path).unlink()
    again = stored_pdf(runtime, document)
    assert again == original
    assert hashlib.sha256(again).hexdigest() == document.sha256


def test_a_benefit_in_return_is_stated_with_its_value(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    from sqlmodel import select

    from payments.models import Gift

    supporter = factories.supporter(runtime)
    gift_id = factories.gift(runtime, supporter, amount=250000)
    with runtime.unit_of_work() as uow:
        gift = uow.session.exec(select(Gift).where(Gift.id == gift_id)).one()
        gift.benefit_amount, gift.benefit_description = 123450, "a gala dinner for two"
        uow.session.add(gift)

    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift_id)

    [document] = documents(runtime)
    text = " ".join(pdf_text(stored_pdf(runtime, document)).split())
    assert "In return you received a gala dinner for two, worth about £1,234.50." in text
    assert "No goods or services were provided in return" not in text
