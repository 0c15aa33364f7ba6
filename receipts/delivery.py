"""The email that carries a document: subject, words, the PDF attached. Sending is `core.mailer`'s."""

from __future__ import annotations

from core.mailer import Attachment, Email, MailError
from core.money import format_pence
from core.settings import Settings
from receipts import documents as docs
from receipts.models import Delivery, Document, DocumentKind

__all__ = ["KIND_LABELS", "MailError", "build_email"]

KIND_LABELS = {
    DocumentKind.GIFT_RECEIPT: "Receipt",
    DocumentKind.SALE_RECEIPT: "Sale receipt",
    DocumentKind.ANNUAL_STATEMENT: "Annual statement",
    DocumentKind.ORAL_CONFIRMATION: "Gift Aid declaration confirmation",
    DocumentKind.CORRECTION: "Corrected receipt",
}


def _subject_and_body(content: docs.AnyDocument) -> tuple[str, str]:
    charity = content.charity.name
    if isinstance(content, docs.GiftReceipt):
        amount = format_pence(content.amount, content.currency)
        return (
            f"Your receipt {content.reference} from {charity}",
            f"Thank you for your gift of {amount}, received on {content.received_on:%d/%m/%Y}. "
            "Your receipt is attached.",
        )
    if isinstance(content, docs.SaleReceipt):
        return (
            f"Your sale receipt {content.reference} from {charity}",
            f"Thank you for your order of {content.paid_on:%d/%m/%Y}. Your sale receipt is attached.",
        )
    if isinstance(content, docs.AnnualStatement):
        return (
            f"Your {content.tax_year} statement of gifts from {charity}",
            f"Thank you for your support in the {content.tax_year} tax year. Your statement of gifts is attached.",
        )
    if isinstance(content, docs.OralConfirmation):
        until = f"until {content.cancel_by:%d/%m/%Y}" if content.cancel_by else "within 30 days of when it was sent"
        return (
            f"Confirmation of your Gift Aid declaration ({content.reference})",
            f"Thank you for your Gift Aid declaration of {content.declaration.made_on:%d/%m/%Y}. Our written "
            f"confirmation is attached; you may cancel it {until}.",
        )
    if content.replaces_reference is not None:
        # A further correction: an earlier document showed money returned that was not (or not from this part).
        refund = format_pence(content.refund_amount, content.currency)
        what = (
            f"a refund of {refund} that did not reach you: it failed, so that money is still your gift"
            if content.refund_failed
            else f"a refund of {refund} split between your purchase and your donation in a way that has since changed"
        )
        return (
            f"Corrected receipt {content.reference} from {charity}",
            f"Our {content.replaces_reference} showed {what}. The attached corrected receipt replaces it.",
        )
    return (
        f"Corrected receipt {content.reference} from {charity}",
        f"We returned {format_pence(content.refunded_amount, content.currency)} to you. The attached corrected "
        f"receipt replaces {content.corrects_reference}.",
    )


def build_email(
    settings: Settings, document: Document, content: docs.AnyDocument, delivery: Delivery, pdf: bytes
) -> Email:
    assert delivery.to_email
    subject, body = _subject_and_body(content)
    if delivery.copy_number:
        subject = f"Copy of: {subject}"
        body = f"As you asked, here is a copy (marked DUPLICATE) of {document.reference}.\n\n" + body
    greeting = f"Dear {content.donor.first_name}," if content.donor.first_name else "Hello,"
    text = (
        f"{greeting}\n\n{body}\n\n"
        f"{content.charity.name}\n{content.charity.registration}\n"
        f"{content.charity.address}, {content.charity.postcode}\n{content.charity.email}\n"
    )
    return Email(
        to=delivery.to_email,
        subject=subject,
        text=text,
        from_email=settings.receipts.from_email,
        attachments=[Attachment(f"{document.reference}{'-copy' if delivery.copy_number else ''}.pdf", pdf)],
        headers={"X-Giving-Document": document.reference, "X-Giving-Delivery": str(delivery.id)},
        kind="receipt",
    )
