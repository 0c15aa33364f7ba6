"""Use cases of receipts. Never commits: the caller's unit of work does.

Issuing a document is two steps, so the number lock is held for milliseconds, not for a render:

1. `allocate_*` (one short transaction): take the kind's next number (locking its counter row), re-check under that
   lock that the subject has no document, and store the document with everything it will say (`Document.content`,
   status allocated).
2. `record_rendered` (after the PDF is rendered and stored outside any transaction): mark it issued with its
   SHA-256 and plan its delivery (email job, or the postal batch).

A job that dies between the two finds the allocated document next time and renders the same content again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from core import metrics
from core.clock import UK, uk_date, uk_today, utc_now
from core.db import UnitOfWork
from core.errors import AppError
from core.mailer import send_email
from core.money import format_pence, gift_aid_on, percent_of
from core.settings import Settings
from crm import service as crm_service
from crm.models import Declaration, DeclarationMethod, DeclarationScope, StatementPreference, Supporter
from giftaid import eligibility as giftaid_rules
from payments.models import Gift, GiftStatus, Order, OrderStatus, Refund, RefundStatus
from receipts import delivery as mail
from receipts import documents as docs
from receipts import render, repository
from receipts.errors import DocumentErased, DocumentNotFound, DocumentNotIssued, NothingToResend, TaxYearNotOver
from receipts.models import (
    NUMBER_PREFIX,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    Document,
    DocumentKind,
    DocumentStatus,
    PostalBatch,
)
from receipts.storage import DocumentStore, sha256

log = logging.getLogger("giving.receipts")

PAID_ORDER_STATUSES = (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)
GIFT_DESCRIPTIONS = {"once": "One-off gift", "regular": "Regular gift (monthly instalment)", "basket": "Donation"}


def store_for(settings: Settings) -> DocumentStore:
    return DocumentStore(settings.receipts.storage_dir)


def storage_key(document: Document) -> str:
    return f"{document.kind}/{document.reference}.pdf"


# --- numbering -----------------------------------------------------------------------------------------------------


def _allocate(
    uow: UnitOfWork,
    kind: DocumentKind,
    subject_key: str,
    build: Callable[[str, dt.date], docs.AnyDocument],
    *,
    supporter_id: uuid.UUID,
    gift_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
    declaration_id: uuid.UUID | None = None,
    tax_year: str | None = None,
    corrects_id: uuid.UUID | None = None,
) -> Document:
    """The subject's document of this kind: the existing one, or a new one with the next number of the kind.

    The number is taken first (which locks the kind's counter row), then the document is inserted unless the
    subject has one (`INSERT ... ON CONFLICT DO NOTHING` on `uq_documents_kind_subject_key`): a job racing us has
    either committed its document (we give the number back and return it) or waits for our commit. The number is
    taken in the same transaction as the document row, so a rollback gives it back too and the sequence has no
    gaps. The document returned for a new row is not in the session (it was written with one Core statement)."""
    session = uow.session
    number = repository.take_number(session, kind)
    reference = f"{NUMBER_PREFIX[kind]}-{number:06d}"
    issued_on = uk_today()
    document = Document(
        kind=kind,
        number=number,
        reference=reference,
        subject_key=subject_key,
        supporter_id=supporter_id,
        gift_id=gift_id,
        order_id=order_id,
        refund_id=refund_id,
        declaration_id=declaration_id,
        tax_year=tax_year,
        corrects_id=corrects_id,
        content=docs.dump(build(reference, issued_on)),
        issued_on=issued_on,
        issued_at=utc_now(),
    )
    # The insert does nothing if the subject has a document already (a job that raced us committed it before we
    # took the number): give the number back, still under the lock, and return that one.
    if not repository.insert_document(session, document):
        repository.give_back_number(session, kind)
        existing = repository.document_by_subject(session, kind, subject_key)
        assert existing is not None
        return existing
    log.info("allocated %s for %s", reference, subject_key)
    uow.on_commit(lambda: metrics.count("receipts_issued", kind=str(kind)))
    return document


# --- Gift Aid on a gift --------------------------------------------------------------------------------------------

# What a receipt says, from the Gift Aid rules' reason code (giftaid.eligibility, the one place they are decided).
# A declaration covers the gift: the receipt says what we will claim, even if the claim still waits for something
# we must do (an oral declaration's letter, a house or postcode to correct) or it is claimed already.
CLAIM_CODES = {
    None,
    giftaid_rules.Code.ALREADY_CLAIMED.value,
    giftaid_rules.Code.ORAL_UNCONFIRMED.value,
    giftaid_rules.Code.MISSING_HOUSE.value,
    giftaid_rules.Code.INVALID_POSTCODE.value,
    giftaid_rules.Code.MISSING_NAME.value,
}
# No declaration covers it, but one could: the receipt invites one. Every other code (not a donation, a benefit,
# not sterling, refunded, out of time, ...) means Gift Aid is not possible: the receipt says nothing about it.
INVITE_CODES = {giftaid_rules.Code.NO_DECLARATION.value, giftaid_rules.Code.DECLARATION_CANCELLED.value}


def gift_aid_notes(
    session: Session, settings: Settings, supporter_ids: list[uuid.UUID], gift_ids: list[uuid.UUID] | None = None
) -> dict[uuid.UUID, docs.GiftAidNote]:
    """Each gift's Gift Aid wording, decided by the Gift Aid rules (`giftaid.eligibility`) on today's date."""
    rows = repository.gift_aid_rows(session, giftaid_rules.rules_from(settings), supporter_ids, gift_ids)
    wanted = {row.declaration_id for row in rows if row.code in CLAIM_CODES and row.declaration_id is not None}
    declarations = repository.declaration_summaries(session, wanted)
    claimed = [row.gift_id for row in rows if row.code == giftaid_rules.Code.ALREADY_CLAIMED.value]
    # Claimed under a declaration since made void: treated as never made, its Gift Aid taken back by an adjustment.
    taken_back = repository.gifts_with_voided_claims(session, claimed) if claimed else set()
    notes: dict[uuid.UUID, docs.GiftAidNote] = {}
    for row in rows:
        declaration = declarations.get(row.declaration_id) if row.declaration_id is not None else None
        if row.code in CLAIM_CODES and declaration is not None and row.gift_id not in taken_back:
            notes[row.gift_id] = docs.GiftAidNote(
                status="claim",
                claim_amount=gift_aid_on(max(int(row.claim_amount), 0)),
                declaration=docs.declaration_summary(declaration),
            )
        elif row.code in INVITE_CODES:
            notes[row.gift_id] = docs.GiftAidNote(status="invite")
        else:
            notes[row.gift_id] = docs.GiftAidNote(status="none")
    return notes


@dataclass(frozen=True)
class _Person:
    """What a document needs of its supporter (a row read with the subject, or a `Supporter`)."""

    id: uuid.UUID
    email: str | None
    title: str | None
    first_name: str
    last_name: str
    statement_preference: str
    erased_at: dt.datetime | None


def _person(session: Session, supporter_id: uuid.UUID, row: Any) -> _Person:
    """The supporter of a subject from its row (`repository.SUPPORTER_COLUMNS`), following a merge with crm."""
    if row.merged_into_id is None:
        return _Person(
            supporter_id, row.email, row.title, row.first_name, row.last_name, row.statement_preference, row.erased_at
        )
    return _person_of(crm_service.resolve_supporter(session, supporter_id))


def _person_of(supporter: Supporter) -> _Person:
    return _Person(
        supporter.id,
        supporter.email,
        supporter.title,
        supporter.first_name,
        supporter.last_name,
        str(supporter.statement_preference),
        supporter.erased_at,
    )


def _donor_of_gift(session: Session, gift: Any, supporter: _Person) -> docs.Donor:
    if gift.donor:
        return docs.donor_from(gift.donor, email=supporter.email)
    return _current_donor(session, supporter, gift.received_at or utc_now())


def _current_donor(session: Session, supporter: _Person | Supporter, moment: dt.datetime) -> docs.Donor:
    address = crm_service.address_on(session, supporter.id, moment)
    details = {"title": supporter.title, "first_name": supporter.first_name, "last_name": supporter.last_name}
    if address is not None:
        details.update(
            address_line1=address.line1,
            address_line2=address.line2,
            town=address.town,
            postcode=address.postcode,
            country=address.country,
        )
    return docs.donor_from(details, email=supporter.email)


def _receivable(supporter: _Person | Supporter) -> bool:
    return supporter.erased_at is None


def allocate_gift_receipt(uow: UnitOfWork, settings: Settings, gift_id: uuid.UUID) -> Document | None:
    """The receipt of a paid gift, unless its supporter chose a yearly statement instead. A receipt still to be
    rendered also asks for the correction of each refund already recorded on the gift (`receipts.issue_correction`:
    a refund recorded before the receipt still gets its corrected receipt)."""
    session = uow.session
    subject = f"gift:{gift_id}"
    # One read: the gift, its supporter, the receipt it may have already and whether refunds are recorded.
    gift = repository.gift_for_receipt(session, gift_id, subject)
    if gift is None:
        raise DocumentNotFound(f"no gift {gift_id}")
    if gift.existing_document_id is not None:
        existing = repository.get_document(session, gift.existing_document_id)
        assert existing is not None
        document: Document | None = existing
    else:
        document = _new_gift_receipt(uow, settings, gift)
    if document is not None and document.status == DocumentStatus.ALLOCATED and gift.has_refunds:
        content = docs.load(document.content)
        shown = content.refunds_shown if isinstance(content, docs.GiftReceipt) else []
        for refund_id in refunds_to_correct(session, gift_id=gift_id):
            if str(refund_id) not in shown:
                uow.enqueue("receipts.issue_correction", refund_id=str(refund_id))
    return document


def _new_gift_receipt(uow: UnitOfWork, settings: Settings, gift: Any) -> Document | None:
    session = uow.session
    if gift.status != GiftStatus.PAID or gift.received_on is None:
        log.info("gift %s is %s: no receipt", gift.id, gift.status)
        return None
    supporter = _person(session, gift.supporter_id, gift)
    if supporter.statement_preference == StatementPreference.ANNUAL or not _receivable(supporter):
        return None
    # Money already returned shows on the receipt itself, its Gift Aid on what was kept (the rules' claim amount):
    # one document that is right when made; only refunds after it get a correction.
    note = gift_aid_notes(session, settings, [gift.supporter_id], [gift.id]).get(gift.id)
    shown_refunds = repository.succeeded_refunds(session, gift_id=gift.id) if gift.has_refunds else []
    shown = [str(r.id) for r in shown_refunds]
    shown_parts = {str(r.id): _refund_parts(r)[0] for r in shown_refunds}
    returned = min(max(int(gift.returned_amount), 0), gift.amount)
    if gift.order_id is not None:
        description = "Donation given with your shop order"
    elif gift.regular_gift_id is not None:
        description = GIFT_DESCRIPTIONS["regular"]
    else:
        description = GIFT_DESCRIPTIONS["once"]
    benefit = docs.NO_BENEFIT
    if gift.benefit_amount:
        benefit = f"In return you received {gift.benefit_description or 'a benefit'}, worth about "
        benefit += f"{format_pence(gift.benefit_amount, gift.currency)}."
    charity = docs.charity_from(settings.charity)
    donor = _donor_of_gift(session, gift, supporter)
    received_on = gift.received_on

    def build(reference: str, issued_on: dt.date) -> docs.AnyDocument:
        return docs.GiftReceipt(
            reference=reference,
            issued_on=issued_on,
            charity=charity,
            donor=donor,
            gift_id=str(gift.id),
            amount=gift.amount,
            currency=gift.currency,
            received_on=received_on,
            method=docs.method_label(gift.method),
            appeal=docs.appeal_label(gift.appeal),
            description=description,
            benefit=benefit,
            gift_aid=note or docs.GiftAidNote(status="none"),
            returned=returned,
            refunds_shown=shown,
            refund_parts_shown=shown_parts,
        )

    return _allocate(
        uow, DocumentKind.GIFT_RECEIPT, f"gift:{gift.id}", build, supporter_id=supporter.id, gift_id=gift.id
    )


def allocate_sale_receipt(uow: UnitOfWork, settings: Settings, order_id: uuid.UUID) -> Document | None:
    """The sale receipt of a paid shop order: its lines, VAT when charged, and its donation shown apart. A receipt
    still to be rendered also asks, as `allocate_gift_receipt` does, for its donation line's own receipt and the
    correction of each refund already recorded on the order."""
    document = _sale_receipt(uow, settings, order_id)
    if document is not None and document.status == DocumentStatus.ALLOCATED:
        gift_id = donation_gift_of_order(uow.session, order_id)
        if gift_id is not None:
            uow.enqueue("receipts.issue_for_gift", gift_id=str(gift_id))
        for refund_id in refunds_to_correct(uow.session, order_id=order_id):
            uow.enqueue("receipts.issue_correction", refund_id=str(refund_id))
    return document


def _sale_receipt(uow: UnitOfWork, settings: Settings, order_id: uuid.UUID) -> Document | None:
    session = uow.session
    subject = f"order:{order_id}"
    existing = repository.document_by_subject(session, DocumentKind.SALE_RECEIPT, subject)
    if existing is not None:
        return existing
    order = session.get(Order, order_id)
    if order is None:
        raise DocumentNotFound(f"no order {order_id}")
    if order.status not in PAID_ORDER_STATUSES or order.paid_at is None:
        log.info("order %s is %s: no sale receipt", order_id, order.status)
        return None
    supporter = crm_service.resolve_supporter(session, order.supporter_id)
    if not _receivable(supporter):
        return None
    lines = [
        docs.SaleLine(
            description=f"{line.product_name} ({line.size})" if line.size else line.product_name,
            quantity=line.quantity,
            unit_price=line.unit_price,
            total=line.unit_price * line.quantity,
            vat=line.vat_amount,
        )
        for line in repository.order_lines(session, order.id)
    ]
    # `goods_amount` is net of VAT and `vat_amount` the VAT in the prices (payments.checkout): the gross is both.
    goods_total = order.goods_amount + order.vat_amount or sum(line.total for line in lines)
    checkout = repository.checkout_of_order(session, order.id)
    if checkout is not None and checkout.donor:
        donor = docs.donor_from(checkout.donor, email=supporter.email)
    else:
        donor = _current_donor(session, supporter, order.paid_at)
    charity = docs.charity_from(settings.charity)
    # The rate the order was charged at; an order recorded before rates were kept: today's, if it carried VAT.
    vat_rate = order.vat_rate_bp
    if vat_rate is None:
        vat_rate = settings.shop.vat_rate_bp if order.vat_amount else 0
    paid_on = uk_date(order.paid_at)

    def build(reference: str, issued_on: dt.date) -> docs.AnyDocument:
        return docs.SaleReceipt(
            reference=reference,
            issued_on=issued_on,
            charity=charity,
            donor=donor,
            order_id=str(order.id),
            paid_on=paid_on,
            method="Card",
            currency=order.currency,
            lines=lines,
            goods_total=goods_total,
            vat_rate_bp=vat_rate,
            vat_amount=order.vat_amount,
            donation=order.donation_amount,
            donation_on_statement=supporter.statement_preference == StatementPreference.ANNUAL,
            total_paid=goods_total + order.donation_amount,
        )

    return _allocate(uow, DocumentKind.SALE_RECEIPT, subject, build, supporter_id=supporter.id, order_id=order.id)


def donation_gift_of_order(session: Session, order_id: uuid.UUID) -> uuid.UUID | None:
    gift = repository.donation_gift_of_order(session, order_id)
    return gift.id if gift is not None else None


def _refund_parts(refund: Refund) -> tuple[int, int]:
    """(gift part, order part) of a refund; a refund naming only one of them is all that one."""
    if refund.gift_amount or refund.order_amount:
        return refund.gift_amount, refund.order_amount
    if refund.gift_id is not None and refund.order_id is None:
        return refund.amount, 0
    if refund.order_id is not None and refund.gift_id is None:
        return 0, refund.amount
    return 0, 0


def refund_time(refund: Refund) -> dt.datetime:
    """When a refund returned the money: the provider's time, or when we recorded it when the provider gave none.
    The one rule for every document (a correction's date and order, a statement's refunds of the year)."""
    return refund.refunded_at or refund.created_at


def allocate_corrections(uow: UnitOfWork, settings: Settings, refund_id: uuid.UUID) -> list[Document]:
    """A corrected receipt for each receipted thing a succeeded refund returned money on (its gift, its order).
    Nothing was receipted (a supporter on yearly statements, a gift not receipted yet): nothing to correct.

    A refund that changed after a document showed it gets a further correction of that part, never an edit of the
    document: re-allocated between a basket's goods and its donation line (payments asks again for the refunds it
    re-allocates), or moved by the provider from succeeded to failed (the money came back to us). It replaces the
    figures of the last correction of that refund and part (or of the receipt, when the receipt showed the refund)
    with those that stand now. Run again with nothing changed, it issues nothing."""
    session = uow.session
    # The corrections' counter first: a job for the same refund numbering a further correction commits it before
    # this one reads the refund and its corrections. Read before the wait, they would miss that document, and this
    # job (which sees a newer state of the refund) would find its subject taken and stop at the other's figures.
    repository.lock_counter(session, DocumentKind.CORRECTION)
    refund = session.get(Refund, refund_id)
    if refund is None:
        raise DocumentNotFound(f"no refund {refund_id}")
    # Erased supporters get nothing (and the erasure blanked their documents' content): checked before any is read.
    if not _receivable(crm_service.resolve_supporter(session, refund.supporter_id)):
        log.info("refund %s: its supporter was erased, no correction", refund_id)
        return []
    succeeded = refund.status == RefundStatus.SUCCEEDED
    earlier = repository.corrections_of_refund(session, refund.id)
    if not succeeded and not earlier and refund.gift_id is None:
        log.info("refund %s is %s: no correction", refund_id, refund.status)
        return []
    # What the refund returned of each part now: nothing once it failed (payments keeps its last split then).
    gift_part, order_part = _refund_parts(refund) if succeeded else (0, 0)
    refunded_on = uk_date(refund_time(refund))
    issued: list[Document] = []
    charity = docs.charity_from(settings.charity)
    targets: list[tuple[str, DocumentKind, str, int]] = []
    if refund.gift_id is not None:
        targets.append(("gift", DocumentKind.GIFT_RECEIPT, f"gift:{refund.gift_id}", gift_part))
    if refund.order_id is not None:
        targets.append(("order", DocumentKind.SALE_RECEIPT, f"order:{refund.order_id}", order_part))
    for part, original_kind, original_subject, amount in targets:
        chain = [d for d in earlier if d.subject_key.split(":")[2] == part]
        if not chain and amount <= 0 and part == "order":
            continue  # nothing returned on the goods, and nothing said about it yet
        original = repository.document_by_subject(session, original_kind, original_subject)
        if original is None or not original.content:  # not receipted, or its words erased
            continue
        original_content = docs.load(original.content)
        shown = isinstance(original_content, docs.GiftReceipt) and str(refund.id) in original_content.refunds_shown
        if chain:
            latest = chain[-1]
            latest_content = docs.load(latest.content)
            assert isinstance(latest_content, docs.Correction)
            if latest.status == DocumentStatus.ALLOCATED:
                issued.append(latest)  # numbered by a job that died before rendering it: finish it
            if latest_content.refunded_amount == amount:
                continue
            replaces: Document | None = latest
            replaced_content: docs.AnyDocument | None = latest_content
            replaced_amount: int | None = latest_content.refunded_amount
            subject = f"refund:{refund.id}:{part}:{len(chain) + 1}"
        elif shown:
            assert isinstance(original_content, docs.GiftReceipt)
            # What the receipt counted of this refund on the gift (None: a receipt made before that was kept, taken
            # to have counted what the refund returns now unless that is nothing).
            counted = original_content.refund_parts_shown.get(str(refund.id))
            if amount == counted or (counted is None and amount > 0):
                continue  # the receipt was made after this refund and shows what it returns of the gift
            # The receipt counted this refund otherwise than it stands: failed, or re-allocated onto or off the gift.
            replaces, replaced_content, replaced_amount = original, original_content, None
            subject = f"refund:{refund.id}:{part}"
        elif amount > 0:
            replaces, replaced_content, replaced_amount = None, None, None
            subject = f"refund:{refund.id}:{part}"
        else:
            continue  # nothing returned on the gift, and nothing said about it yet
        is_sale = isinstance(original_content, docs.SaleReceipt)
        if replaces is not None:
            # A further correction states what stands now, from payments' own totals.
            total_returned, original_amount = _returned_now(session, refund, original_content)
        elif isinstance(original_content, docs.SaleReceipt):
            original_amount = original_content.goods_total
            earlier_refunds = repository.succeeded_refunds(session, order_id=refund.order_id)
            total_returned = sum(_refund_parts(r)[1] for r in earlier_refunds if _not_after(r, refund))
        else:
            assert isinstance(original_content, docs.GiftReceipt) and refund.gift_id is not None
            original_amount = original_content.amount
            earlier_refunds = repository.succeeded_refunds(session, gift_id=refund.gift_id)
            total_returned = sum(_refund_parts(r)[0] for r in earlier_refunds if _not_after(r, refund))
            # Money a lost dispute returned before this refund was returned too (the Gift Aid rules count it).
            refunded_at = refund_time(refund)
            total_returned += sum(
                d.amount
                for d in repository.lost_disputes(session, refund.gift_id)
                if (d.closed_at or d.opened_at or d.created_at) <= refunded_at
            )
        floor = amount if replaces is None else 0
        total_returned = min(max(total_returned, floor), original_amount)
        corrected = original_amount - total_returned
        # What the donor was last told of the gift's Gift Aid: its receipt, or the correction this one replaces.
        told = replaced_content if replaced_content is not None else original_content
        told_gift_aid = told.gift_aid if isinstance(told, docs.GiftReceipt | docs.Correction) else None
        gift_aid = _correction_gift_aid(session, settings, refund, original_content, corrected, told=told_gift_aid)

        def build(
            reference: str,
            issued_on: dt.date,
            *,
            original: Document = original,
            original_content: docs.AnyDocument = original_content,
            amount: int = amount,
            original_amount: int = original_amount,
            total_returned: int = total_returned,
            corrected: int = corrected,
            gift_aid: docs.GiftAidNote | None = gift_aid,
            is_sale: bool = is_sale,
            replaces: Document | None = replaces,
            replaced_amount: int | None = replaced_amount,
        ) -> docs.AnyDocument:
            revision: dict[str, Any] = {}
            if replaces is not None:
                revision = {
                    "replaces_reference": replaces.reference,
                    "replaces_kind": str(replaces.kind),
                    "replaces_issued_on": replaces.issued_on,
                    "replaced_refunded_amount": replaced_amount,
                    "refund_amount": refund.amount,
                    "refund_failed": not succeeded,
                }
            return docs.Correction(
                reference=reference,
                issued_on=issued_on,
                charity=charity,
                donor=original_content.donor,
                corrects_reference=original.reference,
                corrects_kind=str(original.kind),
                corrects_issued_on=original.issued_on,
                currency=refund.currency,
                original_amount=original_amount,
                refunded_amount=amount,
                total_returned=total_returned,
                corrected_amount=corrected,
                refunded_on=refunded_on,
                reason=refund.reason,
                gift_aid=gift_aid,
                is_sale=is_sale,
                **revision,
            )

        issued.append(
            _allocate(
                uow,
                DocumentKind.CORRECTION,
                subject,
                build,
                supporter_id=original.supporter_id,
                gift_id=refund.gift_id if part == "gift" else None,
                order_id=refund.order_id if part == "order" else None,
                refund_id=refund.id,
                corrects_id=(replaces or original).id,
            )
        )
    return issued


def _returned_now(session: Session, refund: Refund, original: docs.AnyDocument) -> tuple[int, int]:
    """(returned now, amount receipted) of the gift or the goods a receipt shows: payments' totals, which count
    every succeeded refund's part and every lost dispute (a reversed gift: all of it)."""
    if isinstance(original, docs.SaleReceipt):
        order = session.get(Order, refund.order_id)
        assert order is not None
        return order.refunded_amount, original.goods_total
    assert isinstance(original, docs.GiftReceipt)
    gift = session.get(Gift, refund.gift_id)
    assert gift is not None
    return (gift.amount if gift.status == GiftStatus.REVERSED else gift.returned_amount), original.amount


def _correction_gift_aid(
    session: Session,
    settings: Settings,
    refund: Refund,
    original: docs.AnyDocument,
    corrected: int,
    *,
    told: docs.GiftAidNote | None,
) -> docs.GiftAidNote | None:
    """The Gift Aid on a corrected gift, as the Gift Aid rules decide it now (`gift_aid_notes`), not as its receipt
    said: a declaration made since the receipt, or a gift made whole again, brings the wording; a declaration
    cancelled within its 30 days (treated as never made) takes it away. When a declaration covers the gift: the Gift
    Aid on the corrected amount. `told`: what the receipt (or the correction this one replaces) said of it. If it
    said we would claim and the rules now say we cannot, the correction says we claim none (`withdrawn`); a gift
    all returned after it said so gets "no Gift Aid" with the reminder, as before. Otherwise nothing about Gift Aid
    (sale corrections never carry any)."""
    if not isinstance(original, docs.GiftReceipt) or refund.gift_id is None:
        return None
    said_claim = told is not None and told.status == "claim"
    if corrected <= 0:
        if not said_claim:
            return None
        assert told is not None
        return docs.GiftAidNote(status="claim", claim_amount=0, declaration=told.declaration)
    gift = session.get(Gift, refund.gift_id)
    assert gift is not None
    note = gift_aid_notes(session, settings, [gift.supporter_id], [gift.id]).get(gift.id)
    if note is not None and note.status == "claim":
        return docs.GiftAidNote(status="claim", claim_amount=gift_aid_on(corrected), declaration=note.declaration)
    promised = said_claim and told is not None and told.claim_amount > 0
    return docs.GiftAidNote(status="withdrawn") if promised else None


def _not_after(other: Refund, refund: Refund) -> bool:
    """Refunds up to and including this one (so a correction says what was returned by then)."""
    key = (refund_time(other), other.created_at, str(other.id))
    return key <= (refund_time(refund), refund.created_at, str(refund.id))


def refunds_to_correct(
    session: Session, gift_id: uuid.UUID | None = None, order_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Succeeded refunds on a gift or order (a receipt issued after its refund is corrected too)."""
    return [r.id for r in repository.succeeded_refunds(session, gift_id=gift_id, order_id=order_id)]


def allocate_oral_confirmation(uow: UnitOfWork, settings: Settings, declaration_id: uuid.UUID) -> Document | None:
    """The written confirmation of an oral declaration (not of one cancelled, or confirmed by other means)."""
    session = uow.session
    subject = f"declaration:{declaration_id}"
    existing = repository.document_by_subject(session, DocumentKind.ORAL_CONFIRMATION, subject)
    if existing is not None:
        return existing
    declaration = session.get(Declaration, declaration_id)
    if declaration is None:
        raise DocumentNotFound(f"no declaration {declaration_id}")
    if declaration.method != DeclarationMethod.ORAL or declaration.voided or declaration.cancelled_at is not None:
        return None
    if declaration.confirmation_sent_on is not None:
        log.info("declaration %s was confirmed on %s already", declaration_id, declaration.confirmation_sent_on)
        return None
    supporter = crm_service.resolve_supporter(session, declaration.supporter_id)
    if not _receivable(supporter):
        return None
    donor = docs.donor_from(
        {
            "title": declaration.title,
            "first_name": declaration.first_name,
            "last_name": declaration.last_name,
            "address_line1": declaration.address_line1,
            "address_line2": declaration.address_line2,
            "town": declaration.town,
            "postcode": declaration.postcode,
            "country": declaration.country,
        },
        email=supporter.email,
    )
    charity = docs.charity_from(settings.charity)
    summary = docs.declaration_summary(declaration)
    # "This gift only" says nothing in a letter that names no gift: the details given include which gift it was.
    gift = None
    if declaration.scope == DeclarationScope.THIS_GIFT:
        gift = repository.gift_of_declaration(session, declaration.id, declaration.gift_id)

    def build(reference: str, issued_on: dt.date) -> docs.AnyDocument:
        return docs.OralConfirmation(
            reference=reference,
            issued_on=issued_on,
            charity=charity,
            donor=donor,
            declaration_id=str(declaration.id),
            declaration=summary,
            # By post the letter is sent when a postal batch prints it, a day not known yet: no date is promised.
            cancel_by=issued_on + docs.ORAL_CANCELLATION_DAYS if supporter.email else None,
            gift_amount=gift.amount if gift is not None else None,
            gift_currency=gift.currency if gift is not None else "GBP",
            gift_received_on=gift.received_on if gift is not None else None,
            covers=summary.letter_scope_text(),
        )

    return _allocate(
        uow,
        DocumentKind.ORAL_CONFIRMATION,
        subject,
        build,
        supporter_id=supporter.id,
        declaration_id=declaration.id,
    )


# A statement's totals are sterling: Gift Aid is claimed on sterling gifts only; other currencies get totals of
# their own and are never added to the pounds.
STATEMENT_CURRENCY = "GBP"


def _covers_year(declaration: Any, start: dt.date, end: dt.date, gifts: Sequence[Any]) -> bool:
    """Whether a declaration (a row of `repository.declarations_of`) covers gifts of the tax year (rows of
    `repository.statement_gifts`), whenever it was made: one made after the year can reach back four years; one for
    a single gift covers that gift only. A gift covered by name, as the Gift Aid rules see it (the declaration names
    the gift, or the gift was given with the declaration and names it), is covered unless the declaration was
    cancelled from the gift's date or before."""
    if declaration.voided:
        return False
    cancelled_from = declaration.cancellation_effective_on
    for gift in gifts:
        named = gift.declaration_id == declaration.id or (
            declaration.scope == DeclarationScope.THIS_GIFT and declaration.gift_id == gift.id
        )
        if named and (cancelled_from is None or gift.received_on < cancelled_from):
            return True
    if declaration.scope == DeclarationScope.THIS_GIFT:
        return False
    first = declaration.start or declaration.made_on
    last = declaration.end if declaration.scope == DeclarationScope.PERIOD else None
    if declaration.cancellation_effective_on is not None:
        cancelled = declaration.cancellation_effective_on - dt.timedelta(days=1)
        last = cancelled if last is None else min(last, cancelled)
    return first <= end and (last is None or last >= start)


def ensure_tax_year_over(tax_year: str, *, today: dt.date | None = None) -> None:
    """Refuse statements for a tax year that has not ended (TaxYearNotOver)."""
    _, end = docs.parse_tax_year(tax_year)
    if end >= (today or uk_today()):
        raise TaxYearNotOver(
            f"the {tax_year} tax year ends on {end:%d/%m/%Y}: its statements are issued once, after it ends "
            "(a year-to-date statement would stand as the year's)"
        )


def allocate_annual_statement(
    uow: UnitOfWork, settings: Settings, supporter_id: uuid.UUID, tax_year: str, *, year_to_date: bool = False
) -> Document | None:
    """A supporter's statement for a tax year (6 April to 5 April): None when they gave nothing in it. A year not
    yet over is refused unless `year_to_date` (a demo, or a supporter who asks before the year ends: that
    statement then stands as the year's)."""
    session = uow.session
    start, end = docs.parse_tax_year(tax_year)
    if not year_to_date:
        ensure_tax_year_over(tax_year)
    subject = repository.statement_subject(supporter_id, tax_year)
    # One read: the supporter, the statement it may have already, whether records were merged into it and
    # whether it has refunds.
    row = repository.supporter_for_statement(session, supporter_id, subject)
    if row is None:
        raise DocumentNotFound(f"no supporter {supporter_id}")
    if row.existing_document_id is not None:
        return repository.get_document(session, row.existing_document_id)
    if row.merged_into_id is not None or row.erased_at is not None:
        return None
    supporter = _person(session, supporter_id, row)
    ids = repository.merged_supporter_ids(session, supporter.id) if row.has_merged else [supporter.id]
    gifts = repository.statement_gifts(session, ids, start, end)
    if not gifts:
        return None
    declarations = repository.declarations_of(session, ids)
    notes = gift_aid_notes(session, settings, ids)
    refunds, refunds_after, refunded = (
        _statement_refunds(session, ids, gifts, start, end) if row.has_refunds or len(ids) > 1 else ([], [], {})
    )
    lines: list[docs.StatementGift] = []
    total = aided = gift_aid = could_claim = 0
    other_currencies: dict[str, int] = {}
    for gift in gifts:
        assert gift.received_on is not None
        net = max(gift.amount - gift.returned_amount, 0)
        note = notes.get(gift.id)
        sterling = gift.currency == STATEMENT_CURRENCY
        is_aided = sterling and net > 0 and note is not None and note.status == "claim"
        lines.append(
            docs.StatementGift(
                received_on=gift.received_on,
                amount=gift.amount,
                currency=gift.currency,
                returned=gift.amount - net,
                refunded=min(refunded.get(gift.id, 0), gift.amount - net),
                method=docs.method_label(gift.method),
                appeal=docs.appeal_label(gift.appeal),
                gift_aided=is_aided,
            )
        )
        if not sterling:
            other_currencies[gift.currency] = other_currencies.get(gift.currency, 0) + net
            continue
        total += net
        if is_aided:
            aided += net
            gift_aid += gift_aid_on(net)
        elif net > 0 and note is not None and note.status == "invite":
            could_claim += gift_aid_on(net)
    summaries = [docs.declaration_summary(d) for d in declarations if _covers_year(d, start, end, gifts)]
    charity = docs.charity_from(settings.charity)
    donor = _current_donor(session, supporter, utc_now())

    def build(reference: str, issued_on: dt.date) -> docs.AnyDocument:
        return docs.AnnualStatement(
            reference=reference,
            issued_on=issued_on,
            charity=charity,
            donor=donor,
            tax_year=tax_year,
            period_start=start,
            period_end=end,
            currency=STATEMENT_CURRENCY,
            declarations=summaries,
            gifts=lines,
            refunds=refunds,
            refunds_after=refunds_after,
            total_donated=total,
            total_gift_aided=aided,
            gift_aid=gift_aid,
            # What the statement says it is: the total Gift Aided times 1.25, rounded once (not the Gift Aid line, a
            # sum of each gift's rounded Gift Aid, added to it).
            grossed_up=percent_of(aided, 125, 100),
            donated_in_other_currencies=dict(sorted(other_currencies.items())),
            could_claim=could_claim,
        )

    return _allocate(
        uow,
        DocumentKind.ANNUAL_STATEMENT,
        subject,
        build,
        supporter_id=supporter.id,
        tax_year=tax_year,
    )


def _statement_refunds(
    session: Session, ids: list[uuid.UUID], gifts: Sequence[Any], start: dt.date, end: dt.date
) -> tuple[list[docs.StatementRefund], list[docs.StatementRefund], dict[uuid.UUID, int]]:
    """A statement's refunds: those made in the tax year (dated by `refund_time`, as corrections are), those of the
    year's gifts made after it ended (up to now: the Returned column counts them, so they are listed apart, not as
    the year's), and what refunds returned of each of the year's gifts (the rest of its Returned is money taken back
    otherwise: a chargeback, a lost card dispute, a reversal)."""
    period_start = dt.datetime.combine(start, dt.time(), UK).astimezone(dt.UTC)
    period_end = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), UK).astimezone(dt.UTC)
    year_gifts = {gift.id for gift in gifts}
    in_year: list[docs.StatementRefund] = []
    after: list[docs.StatementRefund] = []
    refunded: dict[uuid.UUID, int] = {}
    rows = sorted(repository.refunds_from(session, ids, period_start), key=lambda r: (refund_time(r[0]), str(r[0].id)))
    for refund, gift in rows:
        part, at = _refund_parts(refund)[0], refund_time(refund)
        of_year = gift is not None and gift.id in year_gifts
        if part <= 0 or at < period_start or (at >= period_end and not of_year):
            continue
        line = docs.StatementRefund(
            refunded_on=uk_date(at),
            amount=part,
            currency=refund.currency,
            gift_received_on=gift.received_on if gift is not None else None,
            reason=refund.reason,
        )
        (in_year if at < period_end else after).append(line)
        if gift is not None and of_year:
            refunded[gift.id] = refunded.get(gift.id, 0) + part
    return in_year, after, refunded


def statement_candidates(session: Session, tax_year: str, *, everyone: bool) -> list[uuid.UUID]:
    start, end = docs.parse_tax_year(tax_year)
    return repository.statement_candidates(session, start, end, tax_year, everyone=everyone)


def statement_progress(session: Session, tax_year: str) -> dict[str, int]:
    return repository.statement_progress(session, tax_year)


def allocated_document_ids(
    session: Session, *, kind: DocumentKind | None = None, tax_year: str | None = None
) -> list[uuid.UUID]:
    return repository.allocated_documents(session, kind=kind, tax_year=tax_year)


# --- render, store, deliver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderJob:
    document_id: uuid.UUID
    storage_key: str
    content: docs.AnyDocument


def render_job(session: Session, document_id: uuid.UUID) -> RenderJob | None:
    """What to render for a document still to be issued (None once it is issued)."""
    document = session.get(Document, document_id)
    if document is None:
        raise DocumentNotFound(f"no document {document_id}")
    return render_job_of(document)


def render_job_of(document: Document) -> RenderJob | None:
    if document.status != DocumentStatus.ALLOCATED:  # issued, or withdrawn (its supporter erased)
        return None
    return RenderJob(document.id, storage_key(document), docs.load(document.content))


def render_and_store(settings: Settings, job: RenderJob) -> tuple[str, int]:
    """Render the PDF and store it (no transaction is open meanwhile); returns (SHA-256, size)."""
    pdf = render.render_pdf(job.content, logo=render.logo_markup(settings.charity.logo_path))
    return store_for(settings).put(job.storage_key, pdf), len(pdf)


def record_rendered(
    uow: UnitOfWork, document_id: uuid.UUID, *, storage_key: str, digest: str, size: int
) -> Delivery | None:
    """Mark the document issued and plan its delivery; a second finisher (a duplicate job) changes nothing."""
    session = uow.session
    issued = repository.mark_issued(
        session, document_id, storage_key=storage_key, digest=digest, size=size, at=utc_now()
    )
    if issued is None:
        if session.get(Document, document_id) is None:
            raise DocumentNotFound(f"no document {document_id}")
        return None
    merged = issued.merged_into_id is not None  # the record was merged since: the survivor gets it
    if issued.has_refunds and (merged or issued.erased_at is None):
        _correct_refunds_not_shown(uow, document_id)
    if merged:
        return _plan_delivery(uow, document_id, issued.supporter_id, copy_number=0, requested_by="system")
    if issued.erased_at is not None:
        return None
    # The supporter's email came back with the UPDATE (read in this transaction): no second read.
    return _new_delivery(uow, document_id, issued.supporter_id, issued.email, copy_number=0, requested_by="system")


def _correct_refunds_not_shown(uow: UnitOfWork, document_id: uuid.UUID) -> None:
    """Ask for the correction of each succeeded refund on a receipt's gift or order that the receipt does not show.
    A refund that committed while the receipt was being numbered had its correction job find no receipt (not
    committed yet) and issue nothing, and the numbering did not see it either: asked for here, after the numbering
    committed, no refund is missed. The job issues nothing for a refund already corrected."""
    session = uow.session
    document = repository.get_document(session, document_id)
    assert document is not None
    content = docs.load(document.content)
    shown = set(content.refunds_shown) if isinstance(content, docs.GiftReceipt) else set()
    if document.kind == DocumentKind.GIFT_RECEIPT:
        refunds = refunds_to_correct(session, gift_id=document.gift_id)
    else:
        refunds = refunds_to_correct(session, order_id=document.order_id)
    for refund_id in refunds:
        if str(refund_id) not in shown:
            uow.enqueue("receipts.issue_correction", refund_id=str(refund_id))


def withdrawn(session: Session, document_id: uuid.UUID) -> bool:
    """Whether the document was withdrawn (its supporter erased) before it was issued."""
    document = session.get(Document, document_id)
    return document is not None and document.status == DocumentStatus.WITHDRAWN


def _plan_delivery(
    uow: UnitOfWork,
    document_id: uuid.UUID,
    supporter_id: uuid.UUID,
    *,
    copy_number: int,
    requested_by: str,
    to_email: str | None = None,
) -> Delivery | None:
    supporter = crm_service.resolve_supporter(uow.session, supporter_id)
    if not _receivable(supporter):
        return None
    email = to_email or supporter.email
    return _new_delivery(uow, document_id, supporter.id, email, copy_number=copy_number, requested_by=requested_by)


def _new_delivery(
    uow: UnitOfWork,
    document_id: uuid.UUID,
    supporter_id: uuid.UUID,
    email: str | None,
    *,
    copy_number: int,
    requested_by: str,
) -> Delivery:
    """A delivery by email when there is an address, else by post; an email is sent by a job after the commit."""
    delivery = Delivery(
        document_id=document_id,
        supporter_id=supporter_id,
        copy_number=copy_number,
        channel=DeliveryChannel.EMAIL if email else DeliveryChannel.POST,
        to_email=email,
        requested_by=requested_by,
    )
    repository.insert_delivery(uow.session, delivery)
    if delivery.channel == DeliveryChannel.EMAIL:
        uow.enqueue("receipts.send_document", delivery_id=str(delivery.id))
    return delivery


def document_pdf(settings: Settings, document: Document) -> bytes:
    """The stored PDF; if the file is gone, rendered again from the document's content (the same bytes)."""
    if document.status != DocumentStatus.ISSUED:
        raise DocumentNotIssued(f"{document.reference} is not issued yet")
    if not document.content:  # erased: nothing to serve or render again from
        raise DocumentErased(f"{document.reference}: its supporter's details were erased, and its PDF with them")
    store = store_for(settings)
    pdf = store.get(document.storage_key)
    if pdf is not None and sha256(pdf) == document.sha256:
        return pdf
    log.warning("%s: stored PDF missing or changed; rendering it again from its content", document.reference)
    pdf = render.render_pdf(docs.load(document.content), logo=render.logo_markup(settings.charity.logo_path))
    if sha256(pdf) != document.sha256:
        log.warning("%s renders differently now (templates or fonts changed)", document.reference)
    else:
        store.put(document.storage_key, pdf)
    return pdf


def delivery_pdf(
    settings: Settings, document: Document, delivery: Delivery, content: docs.AnyDocument | None = None
) -> bytes:
    """The original as issued, or a copy (marked DUPLICATE) rendered from `content` (`_delivered_content`)."""
    if delivery.copy_number == 0:
        return document_pdf(settings, document)
    return render.render_pdf(
        content if content is not None else docs.load(document.content),
        logo=render.logo_markup(settings.charity.logo_path),
        duplicate=render.DuplicateMark(copied_on=uk_date(delivery.created_at)),
    )


def _delivered_content(
    session: Session, document: Document, delivery: Delivery, going_out_on: dt.date
) -> docs.AnyDocument:
    """What a delivery of a document says as it goes out on `going_out_on`: the stored content, except for an oral
    declaration's confirmation not gone yet. Its date, the day it says it was sent, and the end of the 30 days to
    cancel are the day the first delivery of this letter went out (the original, or a copy: `_first_went_on`), else
    this one's, which `_after_sent` then records in crm. The written record must say when it was sent (giftaid.md
    §1C rule 13): an original emailed after midnight or days late (retries, workers down) or printed in a postal
    batch days after it was numbered, or a copy sent after the original failed. Not crm's `confirmation_sent_on`:
    staff may have recorded a confirmation of their own there while this letter waited, a day it did not go. An
    original that went says what its stored content says (dated as it went, `_keep_as_sent`); a copy is derived
    from stored rows only (its deliveries, the postal batch's day). Either way a postal batch made again prints
    the same page."""
    content = docs.load(document.content)
    if not isinstance(content, docs.OralConfirmation) or document.declaration_id is None:
        return content
    if delivery.copy_number == 0 and delivery.status != DeliveryStatus.PENDING:
        return content
    return content.as_sent_on(_first_went_on(session, document.id) or going_out_on)


def _first_went_on(session: Session, document_id: uuid.UUID) -> dt.date | None:
    """The UK day the first delivery of a document that went out went: an email's acceptance, a postal batch's day."""
    days = [
        batch_day if batch_day is not None else uk_date(sent_at)
        for sent_at, batch_day in repository.went_out(session, document_id)
        if batch_day is not None or sent_at is not None
    ]
    return min(days, default=None)


def _redated_original(
    settings: Settings, document: Document, delivery: Delivery, content: docs.AnyDocument
) -> bytes | None:
    """The original's PDF as it goes, when it goes dated otherwise than stored (`_delivered_content`); else None
    (the stored PDF goes: the usual case, an email sent the day it was numbered)."""
    if delivery.copy_number != 0 or not isinstance(content, docs.OralConfirmation):
        return None
    if content == docs.load(document.content):
        return None
    return render.render_pdf(content, logo=render.logo_markup(settings.charity.logo_path))


def _keep_as_sent(
    session: Session, settings: Settings, document: Document, content: docs.AnyDocument, pdf: bytes
) -> None:
    """What is stored of a document (its content, PDF, SHA-256 and size) becomes the version that went, in the
    transaction recording that it went. The file is written before the commit, so an erasure (which deletes files
    after its own commit, waiting for this one's row locks) never finds it come back; a rollback leaves a file whose
    hash no longer matches, which `document_pdf` renders again from the content as it stands."""
    document.content = docs.dump(content)
    document.sha256 = store_for(settings).put(document.storage_key, pdf)
    document.size_bytes = len(pdf)
    document.rendered_at = utc_now()
    session.add(document)


def send_delivery(
    uow: UnitOfWork, settings: Settings, delivery_id: uuid.UUID, *, attempt: int, final: bool
) -> DeliveryStatus:
    """Email a delivery's PDF. A MailError propagates (the job is retried) unless this was the last attempt, or the
    recipient's server said the address does not exist (`MailError.permanent`), which marks it failed. The outcome
    goes on the supporter's history."""
    session = uow.session
    delivery = repository.lock_delivery(session, delivery_id)
    if delivery is None:
        raise DocumentNotFound(f"no delivery {delivery_id}")
    if delivery.status != DeliveryStatus.PENDING or delivery.channel != DeliveryChannel.EMAIL:
        return delivery.status
    document = session.get(Document, delivery.document_id)
    assert document is not None and delivery.to_email
    if _declaration_gone(session, document):
        return _withdraw(uow, document, delivery)
    # The day it goes: what an oral declaration's letter states, and the day recorded once it went.
    going_out_on = uk_today()
    content = _delivered_content(session, document, delivery, going_out_on)
    redated = _redated_original(settings, document, delivery, content)
    pdf = redated if redated is not None else delivery_pdf(settings, document, delivery, content)
    email = mail.build_email(settings, document, content, delivery, pdf)
    delivery.attempts = attempt
    try:
        delivery.message_id = send_email(email, settings.email)[:250]
    except mail.MailError as exc:
        metrics.count("receipts_failed", kind=str(document.kind))  # each refused try, retried or not
        if not final and not exc.permanent:
            raise
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = str(exc)[:2000]
        session.add(delivery)
        _history(uow, document, delivery, f"could not be emailed to {delivery.to_email}: {exc}", "failed")
        return delivery.status
    delivery.status = DeliveryStatus.SENT
    delivery.sent_at = utc_now()
    delivery.last_error = ""
    session.add(delivery)
    if redated is not None:
        _keep_as_sent(session, settings, document, content, redated)
    _history(uow, document, delivery, f"emailed to {delivery.to_email}", "sent")
    _after_sent(uow, document, _stated_sent_on(content, going_out_on))
    kind = str(document.kind)
    uow.on_commit(lambda: metrics.count("receipts_sent", kind=kind))
    return delivery.status


def send_attempt_failed(uow: UnitOfWork, delivery_id: uuid.UUID, *, attempt: int, error: str) -> None:
    """A try at emailing a delivery was refused and will be retried (`send_delivery` raised, rolling back what it
    set): the delivery, still pending, shows how many tries it has had and the last answer. Nothing for a delivery no
    longer pending (another run sent it meanwhile) or one whose record shows a later try."""
    delivery = repository.lock_delivery(uow.session, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.PENDING or delivery.attempts > attempt:
        return
    delivery.attempts = attempt
    delivery.last_error = error[:2000]
    uow.session.add(delivery)


def delivery_given_up(uow: UnitOfWork, delivery_id: uuid.UUID, error: str) -> None:
    """The send job gave up without the last SMTP answer that marks its delivery failed (its worker died each time
    it ran, or another error on its last try): the delivery is failed too, with why, on the history, rather than
    `pending` for ever. Nothing for a delivery no longer pending."""
    session = uow.session
    delivery = repository.lock_delivery(session, delivery_id)
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return
    document = session.get(Document, delivery.document_id)
    assert document is not None
    delivery.status = DeliveryStatus.FAILED
    delivery.last_error = error[:2000]
    session.add(delivery)
    _history(uow, document, delivery, f"could not be emailed to {delivery.to_email}: {error}", "failed")


def _declaration_gone(session: Session, document: Document) -> bool:
    """Whether this is the letter of an oral declaration cancelled (or voided) before any letter of it went. It gets
    no letter, as at numbering: one would confirm in writing what the donor has cancelled. Once a letter went, a copy
    is of that written record and still goes. Which letters went is read from this letter's deliveries, not crm's
    `confirmation_sent_on`: staff may have recorded there a confirmation of their own while ours waited."""
    if document.kind != DocumentKind.ORAL_CONFIRMATION or document.declaration_id is None:
        return False
    declaration = session.get(Declaration, document.declaration_id)
    if declaration is None or not (declaration.voided or declaration.cancelled_at is not None):
        return False
    return _first_went_on(session, document.id) is None


def _withdraw(uow: UnitOfWork, document: Document, delivery: Delivery) -> DeliveryStatus:
    delivery.status = DeliveryStatus.WITHDRAWN
    uow.session.add(delivery)
    _history(uow, document, delivery, "not sent: the declaration was cancelled", "withdrawn")
    return delivery.status


def _stated_sent_on(content: docs.AnyDocument, going_out_on: dt.date) -> dt.date:
    """The day an oral declaration's letter says it was sent (`_delivered_content`): a copy repeats the day the
    first of its deliveries went; else the day it goes."""
    if isinstance(content, docs.OralConfirmation):
        return content.sent_on or content.issued_on
    return going_out_on


def _after_sent(uow: UnitOfWork, document: Document, sent_on: dt.date) -> None:
    """An oral declaration takes effect when its written confirmation is first sent: the original, or a copy staff
    sent again after the original could not be delivered. `sent_on` is the day the letter says it was sent, from
    which it gives the donor 30 days to cancel: the donor's window runs from the latest written confirmation sent,
    so a confirmation staff recorded meanwhile on an earlier day (a letter of their own) is moved to it, and crm's
    cancellation window and the claims' wait agree with what the letter says. A later one staff recorded stays."""
    if document.kind == DocumentKind.ORAL_CONFIRMATION and document.declaration_id is not None:
        declaration = uow.session.get(Declaration, document.declaration_id)
        if declaration is None:
            return
        if declaration.confirmation_sent_on is not None and declaration.confirmation_sent_on >= sent_on:
            return
        try:
            crm_service.confirm_oral_declaration(
                uow, document.declaration_id, confirmation_sent_on=sent_on, by=f"receipts:{document.reference}"
            )
        except AppError as exc:
            log.warning("%s sent, but the declaration was not confirmed: %s", document.reference, exc.detail)


def _history(uow: UnitOfWork, document: Document, delivery: Delivery, outcome: str, status: str) -> None:
    label = mail.KIND_LABELS[document.kind]
    copy = " (duplicate copy)" if delivery.copy_number else ""
    data: dict[str, object] = {
        "document_id": str(document.id),
        "reference": document.reference,
        "kind": str(document.kind),
        "delivery_id": str(delivery.id),
        "channel": str(delivery.channel),
        "status": status,
        "duplicate": delivery.copy_number > 0,
    }
    for name in ("gift_id", "order_id", "refund_id", "declaration_id"):
        value = getattr(document, name)
        if value is not None:
            data[name] = str(value)
    if document.tax_year:
        data["tax_year"] = document.tax_year
    crm_service.record_history(
        uow,
        delivery.supporter_id,
        type="receipt",
        summary=f"{label} {document.reference}{copy} {outcome}",
        data=data,
        dedupe_key=f"receipt:{delivery.id}:{status}",
    )


def resend(uow: UnitOfWork, document_id: uuid.UUID, *, requested_by: str, to_email: str | None = None) -> Delivery:
    """Send a copy of an issued document again, marked DUPLICATE (by email, or post without an address)."""
    session = uow.session
    document = repository.lock_document(session, document_id)
    if document is None:
        raise DocumentNotFound(f"no document {document_id}")
    if document.status != DocumentStatus.ISSUED:
        raise DocumentNotIssued(f"{document.reference} is not issued yet; it is sent when it is")
    if _declaration_gone(session, document):
        raise NothingToResend(f"{document.reference}: the declaration was cancelled before any letter of it went")
    delivery = _plan_delivery(
        uow,
        document.id,
        document.supporter_id,
        copy_number=repository.next_copy_number(session, document.id),
        requested_by=requested_by,
        to_email=to_email,
    )
    if delivery is None:
        raise NothingToResend(f"{document.reference}: the supporter's details were erased")
    return delivery


@dataclass(frozen=True)
class PostalPage:
    """One page of a postal batch as it prints: what it says, and its DUPLICATE mark for a copy."""

    delivery_id: uuid.UUID
    document_id: uuid.UUID
    content: docs.AnyDocument
    mark: render.DuplicateMark | None
    # An original oral declaration's letter printed dated otherwise than stored: stored as printed once it goes.
    redated: bool = False


@dataclass(frozen=True)
class PostalPlan:
    """What a postal batch made on `day` prints (`pages`, in order) and withdraws (the letters of declarations
    cancelled before any of them went). Read in one transaction, rendered with none open (`render_postal_plan`),
    then recorded in a short one that finds the same plan again (`record_postal_batch`)."""

    day: dt.date
    pages: tuple[PostalPage, ...]
    withdrawn: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class RenderedPostal:
    pdf: bytes
    originals: dict[uuid.UUID, bytes]  # document id: the PDF of a redated original, as printed


class PostalBatchChanged(Exception):
    """What a postal batch was rendered from changed before it was recorded (a supporter erased, a declaration
    cancelled, a copy sent meanwhile): it is read and rendered again. Never leaves the job or command."""


def plan_postal_batch(session: Session, *, limit: int = 500, today: dt.date | None = None) -> PostalPlan | None:
    """The documents waiting for the post (oldest first, at most `limit`), read without a lock: None when none waits."""
    deliveries = repository.pending_postal(session, limit, lock=False)
    if not deliveries:
        return None
    return _postal_plan(session, deliveries, today or uk_today())


def _postal_plan(session: Session, deliveries: Sequence[Delivery], day: dt.date) -> PostalPlan:
    pages: list[PostalPage] = []
    withdrawn: list[uuid.UUID] = []
    for delivery in deliveries:
        document = session.get(Document, delivery.document_id)
        assert document is not None
        if _declaration_gone(session, document):
            withdrawn.append(delivery.id)
            continue
        content = _delivered_content(session, document, delivery, day)
        redated = (
            delivery.copy_number == 0
            and isinstance(content, docs.OralConfirmation)
            and content != docs.load(document.content)
        )
        mark = render.DuplicateMark(copied_on=uk_date(delivery.created_at)) if delivery.copy_number else None
        pages.append(PostalPage(delivery.id, document.id, content, mark, redated))
    return PostalPlan(day, tuple(pages), tuple(withdrawn))


def render_postal_plan(settings: Settings, plan: PostalPlan) -> RenderedPostal:
    """The batch's PDF and the redated originals' PDFs: no database, so no transaction need be open meanwhile."""
    logo = render.logo_markup(settings.charity.logo_path)
    pdf = render.render_batch([(page.content, page.mark) for page in plan.pages], logo=logo) if plan.pages else b""
    originals = {page.document_id: render.render_pdf(page.content, logo=logo) for page in plan.pages if page.redated}
    return RenderedPostal(pdf, originals)


def record_postal_batch(
    uow: UnitOfWork, settings: Settings, plan: PostalPlan, rendered: RenderedPostal
) -> PostalBatch | None:
    """Store the batch rendered from `plan`: its deliveries, locked now, must still be pending and print the same
    pages (else `PostalBatchChanged`). Each is marked posted, an oral declaration's confirmation counts as sent on
    the batch day and says so (an original is stored as printed), and the letters of declarations cancelled are
    withdrawn. None when it printed nothing."""
    session = uow.session
    ids = [page.delivery_id for page in plan.pages] + list(plan.withdrawn)
    locked = {d.id: d for d in repository.lock_deliveries(session, ids)}
    deliveries = [locked.get(delivery_id) for delivery_id in ids]
    if any(d is None or d.status != DeliveryStatus.PENDING or d.channel != DeliveryChannel.POST for d in deliveries):
        raise PostalBatchChanged("a delivery of the batch is no longer waiting for the post")
    now_plan = _postal_plan(session, [d for d in deliveries if d is not None], plan.day)
    if (sorted(now_plan.withdrawn), now_plan.pages) != (sorted(plan.withdrawn), plan.pages):
        raise PostalBatchChanged("what the batch prints changed while it rendered")
    for delivery_id in plan.withdrawn:
        delivery = locked[delivery_id]
        document = session.get(Document, delivery.document_id)
        assert document is not None
        _withdraw(uow, document, delivery)
    if not plan.pages:
        return None
    for page in plan.pages:
        if page.redated:
            document = session.get(Document, page.document_id)
            assert document is not None
            _keep_as_sent(session, settings, document, page.content, rendered.originals[page.document_id])
    today = plan.day
    batch = PostalBatch(storage_key="", sha256="", documents=len(plan.pages), created_on=today)
    batch.storage_key = f"postal/{today.isoformat()}-{batch.id}.pdf"
    batch.sha256 = store_for(settings).put(batch.storage_key, rendered.pdf)
    session.add(batch)
    session.flush()
    now = utc_now()
    for page in plan.pages:
        delivery = locked[page.delivery_id]
        document = session.get(Document, page.document_id)
        assert document is not None
        delivery.status = DeliveryStatus.POSTED
        delivery.postal_batch_id = batch.id
        delivery.sent_at = now
        session.add(delivery)
        _history(uow, document, delivery, "printed for the post", "posted")
        _after_sent(uow, document, _stated_sent_on(page.content, today))
    return batch


def build_postal_batch(uow: UnitOfWork, settings: Settings, *, limit: int = 500) -> PostalBatch | None:
    """One PDF of every document waiting for the post (oldest first), stored, all in this unit of work, which holds
    the deliveries' locks (and on SQLite the database's write lock) while it renders: the job and the command use
    `plan_postal_batch`, `render_postal_plan` and `record_postal_batch` instead, rendering with no transaction
    open, and this only when what they read changed each time. None when nothing waits."""
    deliveries = repository.pending_postal(uow.session, limit)
    if not deliveries:
        return None
    plan = _postal_plan(uow.session, deliveries, uk_today())
    return record_postal_batch(uow, settings, plan, render_postal_plan(settings, plan))


REBUILD_POSTAL_BATCH = "receipts.rebuild_postal_batch"


def postal_batches_of(session: Session, supporter_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The postal batches holding a page for one of these supporters."""
    return repository.postal_batches_of(session, supporter_ids)


@dataclass(frozen=True)
class RebuildPlan:
    """A postal batch's pages that stay (of supporters not erased since it was made), as they print."""

    batch_id: uuid.UUID
    documents: int  # how many pages the batch has now
    pages: tuple[PostalPage, ...]


def plan_rebuild(session: Session, batch_id: uuid.UUID) -> RebuildPlan | None:
    """What `rebuild_postal_batch` would print, read without a lock: None when the batch lost no page (or is gone)."""
    batch = session.get(PostalBatch, batch_id)
    return None if batch is None else _rebuild_plan(session, batch)


def _rebuild_plan(session: Session, batch: PostalBatch) -> RebuildPlan | None:
    pages = tuple(
        PostalPage(
            delivery.id,
            document.id,
            _delivered_content(session, document, delivery, batch.created_on),
            render.DuplicateMark(copied_on=uk_date(delivery.created_at)) if delivery.copy_number else None,
        )
        for document, delivery in repository.batch_pages(session, batch.id)
        if document.content
    )
    if batch.documents - len(pages) <= 0:
        return None
    return RebuildPlan(batch.id, batch.documents, pages)


def render_rebuild(settings: Settings, plan: RebuildPlan) -> bytes:
    """The batch's PDF with the pages that stay (b"" when none does): no database."""
    if not plan.pages:
        return b""
    logo = render.logo_markup(settings.charity.logo_path)
    return render.render_batch([(page.content, page.mark) for page in plan.pages], logo=logo)


def record_rebuild(uow: UnitOfWork, settings: Settings, plan: RebuildPlan, pdf: bytes) -> int:
    """Store the batch's PDF rendered from `plan`, which must be what the batch, locked now, would print (else
    `PostalBatchChanged`; nothing when it lost no page since). Returns how many pages it lost; a batch left with
    none has its file deleted."""
    batch = repository.lock_postal_batch(uow.session, plan.batch_id)
    if batch is None:
        return 0
    now_plan = _rebuild_plan(uow.session, batch)
    if now_plan is None:
        return 0
    if now_plan != plan:
        raise PostalBatchChanged("what the batch prints changed while it rendered")
    store = store_for(settings)
    if plan.pages:
        batch.sha256 = store.put(batch.storage_key, pdf)
    else:
        batch.sha256 = ""
        uow.on_commit(lambda: store.path(batch.storage_key).unlink(missing_ok=True))
    removed = batch.documents - len(plan.pages)
    batch.documents = len(plan.pages)
    uow.session.add(batch)
    return removed


def rebuild_postal_batch(uow: UnitOfWork, settings: Settings, batch_id: uuid.UUID) -> int:
    """The batch's PDF again, without the pages of supporters erased since it was made (their documents' words are
    gone, and the printed copies went in the post long ago): the stored file no longer names them. Returns how many
    pages it lost; a batch left with none has its file deleted. All in this unit of work, rendering while it holds
    the batch's lock: the job renders with no transaction open (`plan_rebuild`, `render_rebuild`, `record_rebuild`)
    and uses this only when what it read changed each time."""
    batch = repository.lock_postal_batch(uow.session, batch_id)
    if batch is None:
        return 0
    plan = _rebuild_plan(uow.session, batch)
    if plan is None:
        return 0
    return record_rebuild(uow, settings, plan, render_rebuild(settings, plan))


def postal_batch_path(settings: Settings, batch: PostalBatch) -> str:
    return str(store_for(settings).path(batch.storage_key))


# --- reading -------------------------------------------------------------------------------------------------------


def get_document(session: Session, document_id: uuid.UUID) -> Document:
    document = session.get(Document, document_id)
    if document is None:
        raise DocumentNotFound(f"no document {document_id}")
    return document


def documents_of(session: Session, supporter_id: uuid.UUID) -> Sequence[Document]:
    return repository.documents_of(session, crm_service.resolve_supporter(session, supporter_id).id)


def deliveries_of(session: Session, document_id: uuid.UUID) -> Sequence[Delivery]:
    return repository.deliveries_of(session, document_id)


def document_path(settings: Settings, document: Document) -> str:
    return str(store_for(settings).path(document.storage_key))


def issued_paths(
    session: Session, settings: Settings, *, kind: DocumentKind | None = None, limit: int = 50
) -> list[tuple[str, str]]:
    """(reference, PDF path) of the newest issued documents (`giving receipts list`, the demo)."""
    store = store_for(settings)
    return [
        (d.reference, str(store.path(d.storage_key)))
        for d in repository.issued_documents(session, kind=kind, limit=limit)
    ]


# --- merges --------------------------------------------------------------------------------------------------------


def reassign_supporter(uow: UnitOfWork, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """Move every document (and its deliveries) of `from_id` to `to_id`. What a document says is not changed: it
    was true when it was issued. A statement already issued for the old record stays; the survivor's own
    statement for that year, if any is issued later, lists both records' gifts."""
    return {"documents": repository.reassign(uow.session, from_id, to_id)}
