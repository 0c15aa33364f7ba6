"""HTTP routes of giftaid, mounted by giving.app: Gift Aid claims for finance (and admin).

Thin endpoints: parse, check the caller (`require_staff`: finance and admin; fundraisers get 403), call one service
function in a unit of work, audit every export and every change.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from core.auth import Principal, audit, require_staff
from core.db import UnitOfWork
from core.http import JSON, in_thread, runtime_of, whole_number
from core.models import StaffRole
from giftaid import schemas, service
from giftaid.errors import ClaimNotFound, GiftNotFound, InvalidClaimRequest
from giftaid.models import ClaimStatus

T = TypeVar("T")

FINANCE = (StaffRole.FINANCE,)  # admin may do everything
READERS = (StaffRole.FINANCE, StaffRole.FUNDRAISER)
ODS_TYPE = "application/vnd.oasis.opendocument.spreadsheet"


def _uuid(raw: str, error: type[Exception]) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise error(f"no such id {raw!r}") from exc


def _claim_id(request: Request) -> uuid.UUID:
    """The path's claim id (404 when it is none). Read inside `staff_call`, once the caller's role is checked: a role
    that may not is told 403, whatever id it sent."""
    return _uuid(request.path_params["claim_id"], ClaimNotFound)


def _part(request: Request) -> int:
    raw = request.query_params.get("part", "1")
    part = whole_number(raw)
    if part is None or part < 1:
        raise InvalidClaimRequest("part is a whole number from 1")
    return part


def _json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; read inside the unit of work, once the caller's role is checked (a role that
    may not is told 403, whatever it sent)."""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidClaimRequest("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidClaimRequest("the body is a JSON object")
    return body


async def staff_call(request: Request, roles: tuple[StaffRole, ...], fn: Callable[[UnitOfWork, Principal], T]) -> T:
    runtime = runtime_of(request)

    def work() -> T:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *roles)
            return fn(uow, principal)

    return await in_thread(work)


async def list_claims(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claims = service.list_claims(uow.session)
        return {"items": [service.claim_json(uow.session, c) for c in claims]}

    return JSON(await staff_call(request, FINANCE, work))


async def create_claim(request: Request) -> Response:
    raw = await request.body()
    settings = runtime_of(request).settings

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        body = schemas.parse(schemas.ClaimIn, _json_object(raw))
        result = service.build_claim(uow, settings, through=body.through, actor=principal.email)
        answer = result.to_json()
        if result.claim_id is not None:
            # Every part of a claim of several (`?part=N`): a client fetching them all sends HMRC the whole claim.
            claim = service.get_claim(uow.session, result.claim_id)
            answer["files"] = service.claim_files(claim, service.schedule_parts(uow.session, claim))
            audit(uow, principal, "build", "giftaid_claim", result.claim_id, {"through": body.through.isoformat()})
        return answer

    answer = await staff_call(request, FINANCE, work)
    return JSON(answer, status_code=201 if answer["claim_id"] else 200)


async def get_claim(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        claim = service.get_claim(uow.session, claim_id)
        audit(uow, principal, "view", "giftaid_claim", claim_id)
        return service.claim_json(uow.session, claim, detail=True)

    return JSON(await staff_call(request, FINANCE, work))


async def schedule_ods(request: Request) -> Response:
    settings = runtime_of(request).settings

    def work(uow: UnitOfWork, principal: Principal) -> tuple[bytes, str]:
        claim_id, part = _claim_id(request), _part(request)
        claim = service.get_claim(uow.session, claim_id)
        data = service.schedule_part(uow.session, settings, claim, part, actor=principal.email)
        audit(uow, principal, "export", "giftaid_claim", claim_id, {"file": "schedule.ods", "part": part})
        return data, f"gift-aid-schedule-{claim.through.isoformat()}-{str(claim_id)[:8]}-{part}.ods"

    data, name = await staff_call(request, FINANCE, work)
    return Response(data, media_type=ODS_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def claim_xml(request: Request) -> Response:
    settings = runtime_of(request).settings

    def work(uow: UnitOfWork, principal: Principal) -> tuple[Path, str]:
        claim_id, part = _claim_id(request), _part(request)
        claim = service.get_claim(uow.session, claim_id)
        handle = tempfile.NamedTemporaryFile(prefix="giftaid-", suffix=".xml", delete=False)  # noqa: SIM115
        try:
            with handle:
                result = service.write_xml_part(uow.session, settings, claim, part, handle, actor=principal.email)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        audit(
            uow,
            principal,
            "export",
            "giftaid_claim",
            claim_id,
            {"file": "claim.xml", "part": part, "irmark": result.irmark},
        )
        return Path(handle.name), f"gift-aid-claim-{claim.through.isoformat()}-{str(claim_id)[:8]}-{part}.xml"

    path, name = await staff_call(request, FINANCE, work)

    def chunks() -> Iterator[bytes]:
        try:
            with path.open("rb") as source:
                while chunk := source.read(1 << 16):
                    yield chunk
        finally:
            path.unlink(missing_ok=True)

    return StreamingResponse(
        chunks(), media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


async def change_status(request: Request) -> Response:
    raw = await request.body()

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        body = schemas.parse(schemas.StatusIn, _json_object(raw))
        claim = service.change_status(
            uow,
            claim_id,
            ClaimStatus(body.status),
            actor=principal.email,
            reason=body.reason,
            paid_amount=body.paid_amount(),
            paid_on=body.paid_on,
        )
        audit(uow, principal, body.status, "giftaid_claim", claim_id, {"reason": body.reason})
        return service.claim_json(uow.session, claim, detail=True)

    return JSON(await staff_call(request, FINANCE, work))


async def submit_claim(request: Request) -> Response:
    settings = runtime_of(request).settings
    raw = await request.body()

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        # No body, or {"again": true} once finance has checked the gateway's list (`giving giftaid gateway-list`).
        body = schemas.parse(schemas.SubmitIn, _json_object(raw) if raw.strip() else {})
        claim = service.submit_claim(uow, settings, claim_id, actor=principal.email, again=body.again)
        audit(uow, principal, "submit", "giftaid_claim", claim_id, {"correlation_id": claim.correlation_id})
        return service.claim_json(uow.session, claim, detail=True)

    answer = await staff_call(request, FINANCE, work)
    if answer["status"] == ClaimStatus.BUILT.value:
        detail = "; ".join(service.error_words(e) for e in answer["errors"]) or "HMRC refused the claim"
        return JSON({"error": "SubmissionRefused", "detail": detail, "claim": answer}, status_code=502)
    return JSON(answer)


async def attach_correlation_id(request: Request) -> Response:
    """Attach a correlation id recovered from the gateway's list to a claim whose submission got no answer."""
    raw = await request.body()

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        body = schemas.parse(schemas.AttachIn, _json_object(raw))
        claim = service.attach_correlation_id(uow, claim_id, body.correlation_id, actor=principal.email)
        audit(uow, principal, "attach", "giftaid_claim", claim_id, {"correlation_id": claim.correlation_id})
        return service.claim_json(uow.session, claim, detail=True)

    return JSON(await staff_call(request, FINANCE, work))


async def poll_claim(request: Request) -> Response:
    settings = runtime_of(request).settings

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        claim = service.poll_claim(uow, settings, claim_id, actor=principal.email)
        audit(uow, principal, "poll", "giftaid_claim", claim_id, {"status": str(claim.status)})
        return service.claim_json(uow.session, claim, detail=True)

    return JSON(await staff_call(request, FINANCE, work))


async def claim_messages(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        claim_id = _claim_id(request)
        service.get_claim(uow.session, claim_id)
        messages = service.claim_messages(uow.session, claim_id)
        audit(uow, principal, "view_messages", "giftaid_claim", claim_id)
        return {"items": [schemas.message_json(m) for m in messages]}

    return JSON(await staff_call(request, FINANCE, work))


async def explain_gift(request: Request) -> Response:
    gift_id = _uuid(request.path_params["gift_id"], GiftNotFound)
    settings = runtime_of(request).settings

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        explanation = service.explain(uow.session, settings, gift_id)
        audit(uow, principal, "explain", "gift", gift_id)
        return explanation.to_json()

    return JSON(await staff_call(request, READERS, work))


routes: list[BaseRoute] = [
    Route("/api/giftaid/claims", list_claims, methods=["GET"]),
    Route("/api/giftaid/claims", create_claim, methods=["POST"]),
    Route("/api/giftaid/claims/{claim_id}", get_claim, methods=["GET"]),
    Route("/api/giftaid/claims/{claim_id}/schedule.ods", schedule_ods, methods=["GET"]),
    Route("/api/giftaid/claims/{claim_id}/claim.xml", claim_xml, methods=["GET"]),
    Route("/api/giftaid/claims/{claim_id}/status", change_status, methods=["POST"]),
    Route("/api/giftaid/claims/{claim_id}/submit", submit_claim, methods=["POST"]),
    Route("/api/giftaid/claims/{claim_id}/poll", poll_claim, methods=["POST"]),
    Route("/api/giftaid/claims/{claim_id}/attach", attach_correlation_id, methods=["POST"]),
    Route("/api/giftaid/claims/{claim_id}/messages", claim_messages, methods=["GET"]),
    Route("/api/giftaid/gifts/{gift_id}", explain_gift, methods=["GET"]),
]
