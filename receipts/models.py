"""Receipts and statements: numbered documents, their number counters, deliveries and postal batches.

A `Document` is issued once per subject and kind (`uq_documents_kind_subject_key`), numbered from a gapless counter
per kind (`DocumentCounter`, locked while a number is taken), and keeps the data it shows (`content`) so the PDF can
be rendered again byte for byte. Each way a document leaves us is a `Delivery`: the original (`copy_number` 0) and any
later copy, which is printed "DUPLICATE".
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import created_at_field, id_field, json_field, utc_field


class DocumentKind(StrEnum):
    GIFT_RECEIPT = "gift_receipt"
    SALE_RECEIPT = "sale_receipt"
    ANNUAL_STATEMENT = "annual_statement"
    ORAL_CONFIRMATION = "oral_confirmation"
    CORRECTION = "correction"


# The printed number is the prefix and the counter, e.g. "GR-000042".
NUMBER_PREFIX: dict[DocumentKind, str] = {
    DocumentKind.GIFT_RECEIPT: "GR",
    DocumentKind.SALE_RECEIPT: "SR",
    DocumentKind.ANNUAL_STATEMENT: "AS",
    DocumentKind.ORAL_CONFIRMATION: "DC",
    DocumentKind.CORRECTION: "CR",
}


class DocumentStatus(StrEnum):
    # Numbered, content fixed, PDF not stored yet (the render runs outside the numbering transaction).
    ALLOCATED = "allocated"
    ISSUED = "issued"
    # Numbered, but its supporter was erased before it was rendered: never rendered or sent (the number stays used).
    WITHDRAWN = "withdrawn"


class DocumentCounter(SQLModel, table=True):
    """The last number given per kind; its row is locked (SELECT ... FOR UPDATE) while a number is taken."""

    __tablename__ = "document_counters"

    kind: str = Field(primary_key=True, max_length=32)
    last_number: int = Field(default=0, sa_type=sa.BigInteger)


class Document(SQLModel, table=True):
    __tablename__ = "documents"
    __table_args__ = (
        # Exactly one document per subject and kind, however often or concurrently the job runs.
        sa.UniqueConstraint("kind", "subject_key", name="uq_documents_kind_subject_key"),
        sa.UniqueConstraint("kind", "number", name="uq_documents_kind_number"),
        sa.Index("ix_documents_supporter_id_issued_at", "supporter_id", "issued_at"),
        sa.Index("ix_documents_tax_year_kind", "tax_year", "kind"),
    )

    id: uuid.UUID = id_field()
    kind: DocumentKind = Field(sa_type=sa.String(32))
    number: int = Field(sa_type=sa.BigInteger)
    reference: str = Field(max_length=16, unique=True)
    # gift:<id>, order:<id>, refund:<id>, declaration:<id>, statement:<supporter id>:<tax year>
    subject_key: str = Field(max_length=120)
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id")
    gift_id: uuid.UUID | None = Field(default=None, foreign_key="gifts.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    refund_id: uuid.UUID | None = Field(default=None, foreign_key="refunds.id", index=True)
    declaration_id: uuid.UUID | None = Field(default=None, foreign_key="declarations.id", index=True)
    tax_year: str | None = Field(default=None, max_length=7)
    # A correction names the document it corrects.
    corrects_id: uuid.UUID | None = Field(default=None, foreign_key="documents.id", index=True)
    status: DocumentStatus = Field(default=DocumentStatus.ALLOCATED, sa_type=sa.String(16))
    # What the document says (receipts.documents, as JSON): the PDF is rendered from this alone.
    content: dict[str, Any] = json_field()
    issued_at: dt.datetime = created_at_field()
    issued_on: dt.date
    storage_key: str = Field(default="", max_length=200)
    sha256: str = Field(default="", max_length=64)
    size_bytes: int = 0
    rendered_at: dt.datetime | None = utc_field()
    created_at: dt.datetime = created_at_field()


class DeliveryChannel(StrEnum):
    EMAIL = "email"
    POST = "post"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"  # accepted by the SMTP server
    POSTED = "posted"  # put in a postal batch to print
    FAILED = "failed"  # every email attempt failed; staff can send it again
    WITHDRAWN = "withdrawn"  # its supporter was erased before it went


class Delivery(SQLModel, table=True):
    __tablename__ = "document_deliveries"
    __table_args__ = (
        # One original (copy 0) per document: a second would be a second send.
        sa.UniqueConstraint("document_id", "copy_number", name="uq_document_deliveries_document_id_copy_number"),
        sa.Index("ix_document_deliveries_channel_status", "channel", "status"),
    )

    id: uuid.UUID = id_field()
    document_id: uuid.UUID = Field(foreign_key="documents.id", index=True)
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    # 0 is the original; a later copy is printed "DUPLICATE".
    copy_number: int = 0
    channel: DeliveryChannel = Field(sa_type=sa.String(16))
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=sa.String(16))
    to_email: str | None = Field(default=None, max_length=254)
    attempts: int = 0
    last_error: str = Field(default="", max_length=2000)
    message_id: str = Field(default="", max_length=250)
    sent_at: dt.datetime | None = utc_field()
    postal_batch_id: uuid.UUID | None = Field(default=None, foreign_key="postal_batches.id", index=True)
    requested_by: str = Field(default="system", max_length=254)
    created_at: dt.datetime = created_at_field()


class PostalBatch(SQLModel, table=True):
    """One PDF of every document waiting to be posted, to print and post in one go."""

    __tablename__ = "postal_batches"

    id: uuid.UUID = id_field()
    storage_key: str = Field(max_length=200)
    sha256: str = Field(max_length=64)
    documents: int = 0
    created_on: dt.date
    created_at: dt.datetime = created_at_field()
