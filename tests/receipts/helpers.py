"""Running receipts jobs the way production does (enqueued, then drained by the in-process worker) and reading
what they left."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import col, select

from core.runtime import InlineWorker, Runtime
from crm.models import HistoryEntry
from receipts import service
from receipts.models import Delivery, Document, DocumentKind


def run_job(runtime: Runtime, worker: InlineWorker, name: str, **kwargs: Any) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue(name, **{k: str(v) for k, v in kwargs.items()})
    worker.join()


def documents(runtime: Runtime, kind: DocumentKind | None = None) -> list[Document]:
    with runtime.read_session() as session:
        query = select(Document).order_by(col(Document.kind), col(Document.number))
        if kind is not None:
            query = query.where(Document.kind == kind)
        rows = list(session.exec(query).all())
        session.expunge_all()
        return rows


def deliveries(runtime: Runtime, document_id: uuid.UUID | None = None) -> list[Delivery]:
    with runtime.read_session() as session:
        query = select(Delivery).order_by(col(Delivery.created_at), col(Delivery.copy_number))
        if document_id is not None:
            query = query.where(Delivery.document_id == document_id)
        rows = list(session.exec(query).all())
        session.expunge_all()
        return rows


def stored_pdf(runtime: Runtime, document: Document) -> bytes:
    with runtime.read_session() as session:
        return service.document_pdf(runtime.settings, service.get_document(session, document.id))


def history(runtime: Runtime, supporter_id: uuid.UUID, type_: str = "receipt") -> list[HistoryEntry]:
    with runtime.read_session() as session:
        rows = list(
            session.exec(
                select(HistoryEntry)
                .where(HistoryEntry.supporter_id == supporter_id, HistoryEntry.type == type_)
                .order_by(col(HistoryEntry.at))
            ).all()
        )
        session.expunge_all()
        return rows
