"""Staff JSON API of receipts, mounted by giving.app: list a supporter's documents, download a PDF, send a copy.

Any staff member may (fundraisers answer supporters who ask for a copy). Every download is audited. Each handler
checks its caller before it reads its path, query or body (401/403 first, then 400), so it answers so even where
`ApiCredentialsMiddleware` did not answer for it first.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.auth import audit, require_staff
from core.errors import BadRequest
from core.http import JSON, in_thread, runtime_of
from crm.validation import normalise_email
from receipts import service
from receipts.models import Delivery, Document


def _uuid(value: str | None, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        raise BadRequest(f"{value!r} is not a {what} id") from None


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "copy_number": delivery.copy_number,
        "duplicate": delivery.copy_number > 0,
        "channel": str(delivery.channel),
        "status": str(delivery.status),
        "to_email": delivery.to_email,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error or None,
        "sent_at": delivery.sent_at,
        "requested_by": delivery.requested_by,
        "created_at": delivery.created_at,
    }


def document_json(document: Document, deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": document.id,
        "kind": str(document.kind),
        "reference": document.reference,
        "number": document.number,
        "status": str(document.status),
        "supporter_id": document.supporter_id,
        "gift_id": document.gift_id,
        "order_id": document.order_id,
        "refund_id": document.refund_id,
        "declaration_id": document.declaration_id,
        "tax_year": document.tax_year,
        "corrects_id": document.corrects_id,
        "issued_at": document.issued_at,
        "issued_on": document.issued_on,
        "sha256": document.sha256 or None,
        "size_bytes": document.size_bytes,
        "pdf": f"/api/receipts/documents/{document.id}/pdf",
    }
    if deliveries is not None:
        body["deliveries"] = [delivery_json(d) for d in deliveries]
    return body


async def list_documents(request: Request) -> Response:
    """`?supporter_id=` (required): newest first."""
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request)
            supporter_id = _uuid(request.query_params.get("supporter_id"), "supporter")
            return {"items": [document_json(d) for d in service.documents_of(session, supporter_id)]}

    return JSON(await in_thread(work))


async def get_document(request: Request) -> Response:
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request)
            document_id = _uuid(request.path_params["document_id"], "document")
            document = service.get_document(session, document_id)
            return document_json(document, list(service.deliveries_of(session, document.id)))

    return JSON(await in_thread(work))


async def download_pdf(request: Request) -> Response:
    """The PDF as issued (the stored bytes; re-rendered from its content if the file was lost)."""
    runtime = runtime_of(request)

    def work() -> tuple[bytes, str]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request)
            document_id = _uuid(request.path_params["document_id"], "document")
            document = service.get_document(uow.session, document_id)
            pdf = service.document_pdf(runtime.settings, document)
            audit(uow, principal, "download", "document", document.id, {"reference": document.reference})
            return pdf, document.reference

    pdf, reference = await in_thread(work)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{reference}.pdf"', "Cache-Control": "no-store"},
    )


async def resend_document(request: Request) -> Response:
    """A copy marked DUPLICATE, to the supporter's email (or `{"to_email"}`), or the postal batch without one."""
    runtime = runtime_of(request)
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request)
            document_id = _uuid(request.path_params["document_id"], "document")
            to_email = _resend_to(raw)
            email = normalise_email(to_email) if to_email else None
            delivery = service.resend(uow, document_id, requested_by=principal.email, to_email=email)
            audit(uow, principal, "resend", "document", document_id, {"to_email": delivery.to_email})
            return delivery_json(delivery)

    return JSON(await in_thread(work), status_code=202)


def _resend_to(raw: bytes) -> str | None:
    """The `to_email` of a resend's body (an empty body: none)."""
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    to_email = payload.get("to_email")
    if to_email is not None and not isinstance(to_email, str):
        raise BadRequest("to_email must be a string")
    return to_email


routes: list[BaseRoute] = [
    Route("/api/receipts/documents", list_documents, methods=["GET"]),
    Route("/api/receipts/documents/{document_id}", get_document, methods=["GET"]),
    Route("/api/receipts/documents/{document_id}/pdf", download_pdf, methods=["GET"]),
    Route("/api/receipts/documents/{document_id}/resend", resend_document, methods=["POST"]),
]
