"""Subject access export and erasure of a supporter (admin only; both are recorded in the audit log)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.auth import Principal, audit
from core.http import in_thread
from core.models import StaffRole
from core.runtime import Runtime
from crm import service as crm_service
from giving import privacy
from giving.staff.supporters import parse_uuid
from giving.staff.web import form_of, reading, redirect_done, render, runtime, staff_page
from payments import service as payments_service


@staff_page(StaffRole.ADMIN)
async def export(request: Request, staff: Principal) -> Response:
    """Everything held about the supporter as one JSON file. A POST with the session's CSRF token (checked by
    `staff_page`), never a GET: a GET is sent with the cookie from a link on any site (SameSite=Lax), and would
    export the record and write an audit entry in an admin's name."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            document = privacy.export_supporter(uow.session, supporter_id)
            counts = {name: len(rows) for name, rows in document["tables"].items()}
            audit(uow, staff, "export", "supporter", document["supporter_id"], {"rows": counts})
            return document

    document = await in_thread(load)
    body = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True).encode()
    return Response(
        body,
        media_type="application/json",
        headers={
            "content-disposition": f'attachment; filename="supporter-{document["supporter_id"]}.json"',
            "cache-control": "no-store",
        },
    )


def _erase_context(rt: Runtime, supporter_id: uuid.UUID) -> dict[str, Any]:
    """What the erase page says the erasure will do."""
    with reading(rt) as session:
        supporter = crm_service.resolve_supporter(session, supporter_id)
        ids = privacy.supporter_ids(session, supporter.id)
        claimed = privacy.claimed_gifts(session, ids)
        regular = payments_service.open_regular_gifts(session, ids)
    return {
        "supporter": supporter,
        "regular_gifts": regular,
        "claimed": len(claimed),
        "last_claimed": max((c.received_on for c in claimed), default=None),
        # The date the erasure will set (the end of the last claimed gift's financial period, plus six years).
        "purge_after": privacy.hmrc_purge_after(rt.settings, claimed),
    }


@staff_page(StaffRole.ADMIN)
async def erase_form(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    return render(request, "supporters/erase.html", await in_thread(_erase_context, runtime(request), supporter_id))


@staff_page(StaffRole.ADMIN)
async def erase(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    typed = str((await form_of(request)).get("confirm", ""))
    rt = runtime(request)
    if typed.strip().upper() != "ERASE":
        # The erase page again, saying what is wrong; nothing is changed.
        context = await in_thread(_erase_context, rt, supporter_id)
        context.update(
            errors={"confirm": "Type ERASE in the box to confirm the erasure. Nothing was changed."},
            values={"confirm": typed[:100]},
        )
        return render(request, "supporters/erase.html", context, status_code=400)

    def work() -> privacy.ErasureResult:
        with rt.unit_of_work() as uow:
            result = privacy.erase_supporter(uow, rt.settings, supporter_id)
            audit(
                uow,
                staff,
                "erase",
                "supporter",
                result.supporter_id,
                {"changed": result.changed, "purge_after": str(result.purge_after or "")},
            )
            return result

    result = await in_thread(work)
    kept = f" What HMRC needs is kept until {result.purge_after:%d/%m/%Y}." if result.purge_after else ""
    return await redirect_done(request, staff, f"/staff/supporters/{result.supporter_id}", "Erased." + kept)
