"""Gift Aid pages (finance and admin): what can be claimed now and what is held back and why, the claims and their
states, building a claim, downloading its schedule (.ods) and Charities Online message (.xml), marking it
submitted, accepted, rejected or paid. The work is giftaid.service's; these pages only show and ask."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from core.auth import Principal, audit
from core.clock import uk_today
from core.http import in_thread, whole_number
from core.models import StaffRole
from core.money import Money, MoneyError, gift_aid_on
from core.settings import Settings
from giftaid import service as giftaid_service
from giftaid.eligibility import describe, eligibility_select, rules_from
from giftaid.errors import InvalidClaimRequest, InvalidTransition
from giftaid.models import ClaimStatus
from giving.staff.supporters import parse_uk_date, parse_uuid
from giving.staff.web import form_of, redirect_done, render, runtime, staff_page

HELD_BACK_SHOWN = 100
ODS_TYPE = "application/vnd.oasis.opendocument.spreadsheet"
# What finance may mark by hand, from each state (giftaid.service checks the transition again).
MARKS = {
    "built": [("submitted", "Mark as submitted to HMRC")],
    "submitted": [("accepted", "Mark as accepted by HMRC"), ("rejected", "Mark as rejected by HMRC")],
    "accepted": [("paid", "Record HMRC's payment")],
}


def dashboard_context(session: Session, settings: Settings, today: dt.date) -> dict[str, Any]:
    """Counts and sums per reason in SQL (one pass over the unclaimed gifts), then the newest held-back gifts."""
    rules = rules_from(settings, today)
    dialect = session.get_bind().dialect.name
    scope = eligibility_select(rules, dialect).subquery("eligibility")
    groups = session.execute(
        sa.select(
            scope.c.code,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(scope.c.claim_amount), 0),
            sa.func.coalesce(sa.func.sum(scope.c.amount), 0),
        )
        .group_by(scope.c.code)
        .order_by(sa.func.count().desc(), scope.c.code)
    ).all()
    claimable_gifts, claimable_total = 0, 0
    held_back_groups: list[dict[str, Any]] = []
    for code, count, claimable, given in groups:
        if code is None:
            claimable_gifts, claimable_total = int(count), int(claimable)
        else:
            # What the held-back gifts were (refunded ones have nothing left to claim, not nothing given).
            held_back_groups.append({"code": str(code), "gifts": int(count), "total": int(given)})
    # A donor the schedule shows as nothing (giftaid.service.final_code): SQL says claimable, a build holds back.
    unshown = giftaid_service.unshown_claimable(session, rules)
    for row, code in unshown:
        claimable_gifts, claimable_total = claimable_gifts - 1, claimable_total - int(row.claim_amount)
        group = next((g for g in held_back_groups if g["code"] == code), None)
        if group is None:
            held_back_groups.append(group := {"code": code, "gifts": 0, "total": 0})
        group["gifts"] += 1
        group["total"] += int(row.amount)
    held_back_groups.sort(key=lambda g: (-g["gifts"], g["code"]))
    held = eligibility_select(rules, dialect).subquery("held")
    held_rows = session.execute(
        sa.select(held)
        .where(held.c.code.is_not(None))
        .order_by(held.c.received_on.desc(), held.c.gift_id)
        .limit(HELD_BACK_SHOWN)
    ).all()
    newest = sorted(
        [(row, row.code) for row in held_rows] + unshown,
        key=lambda pair: (-pair[0].received_on.toordinal(), pair[0].gift_id),
    )[:HELD_BACK_SHOWN]
    held_back = [
        {
            "gift_id": row.gift_id,
            "supporter_id": row.supporter_id,
            "received_on": row.received_on,
            # The gift's own amount: a refunded gift has nothing left to claim, which says nothing of what it was.
            "amount": int(row.amount),
            "returned": int(row.returned),
            "reason": describe(code, row, rules),
        }
        for row, code in newest
    ]
    claims = [giftaid_service.claim_json(session, c) for c in giftaid_service.list_claims(session)]
    return {
        "claimable_gifts": claimable_gifts,
        "claimable_total": claimable_total,
        "claimable_gift_aid": gift_aid_on(claimable_total),
        "held_back_groups": held_back_groups,
        "held_back": held_back,
        "claims": claims,
        "today": today,
    }


async def _dashboard_page(
    request: Request,
    staff: Principal,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    """The dashboard; with `errors`, again after a form on it was refused (400), keeping what was typed."""
    rt = runtime(request)

    def load() -> dict[str, Any]:
        with rt.unit_of_work() as uow:
            context = dashboard_context(uow.session, rt.settings, uk_today())
            # The held-back list names gifts of people: a view of personal data.
            audit(uow, staff, "view", "giftaid_dashboard", "", {"held_back": len(context["held_back"])})
            return context

    context = await in_thread(load)
    context.update(errors=errors or {}, values=values or {})
    return render(request, "finance/giftaid.html", context, status_code=400 if errors else 200)


@staff_page(StaffRole.FINANCE)
async def dashboard(request: Request, staff: Principal) -> Response:
    return await _dashboard_page(request, staff)


@staff_page(StaffRole.FINANCE)
async def build(request: Request, staff: Principal) -> Response:
    errors: dict[str, str] = {}
    typed = str((await form_of(request)).get("through", ""))[:40]
    through = parse_uk_date(typed, "through", errors, required=True)
    if through is None or errors:
        # The dashboard again, the date as typed and what is wrong with it (not a page without the form).
        return await _dashboard_page(request, staff, errors=errors, values={"through": typed})
    checked_through: dt.date = through
    rt = runtime(request)

    def work() -> giftaid_service.ClaimResult:
        with rt.unit_of_work() as uow:
            result = giftaid_service.build_claim(uow, rt.settings, through=checked_through, actor=staff.email)
            if result.claim_id is not None:
                audit(uow, staff, "build", "giftaid_claim", result.claim_id, {"through": checked_through.isoformat()})
            return result

    result = await in_thread(work)
    if result.claim_id is None:
        return await redirect_done(
            request,
            staff,
            "/staff/finance/giftaid",
            f"Nothing to claim through {checked_through:%d/%m/%Y}: no claimable gift is in no claim yet.",
        )
    done = (
        f"Claim built: {result.lines} line{'s' if result.lines != 1 else ''}, "
        f"Gift Aid {Money(result.gift_aid).format()}"
        + (f" less {Money(result.adjustment).format()} adjustment" if result.adjustment else "")
        + f"; {len(result.held_back)} gift{'s' if len(result.held_back) != 1 else ''} held back."
    )
    return await redirect_done(request, staff, f"/staff/finance/giftaid/claims/{result.claim_id}", done)


@staff_page(StaffRole.FINANCE)
async def claim(request: Request, staff: Principal) -> Response:
    return await _claim_page(request, staff, parse_uuid(request.path_params["claim_id"], "claim"))


async def _claim_page(
    request: Request,
    staff: Principal,
    claim_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    failed: str = "",
    status_code: int = 200,
) -> Response:
    """The claim's page; with `errors`, again after its form (`failed`: the step asked for) was refused, keeping what
    was typed, the errors in words and that form open (nothing was changed)."""

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            found = giftaid_service.get_claim(uow.session, claim_id)
            body = giftaid_service.claim_json(uow.session, found, detail=True)
            # The held-back gifts' own amounts (a refunded gift's claimable amount is nothing), and what came back.
            amounts = giftaid_service.held_back_amounts(uow.session, claim_id)
            for held in body["held_back"]:
                held.update(amounts.get(held["gift_id"], {}))
            audit(uow, staff, "view", "giftaid_claim", claim_id)
        expected = Money(found.gift_aid - found.adjustment).plain()
        return {
            "claim": body,
            "marks": MARKS.get(body["status"], []),
            "today": uk_today(),
            "expected_paid": expected,
            # Polls of it have had nothing but errors for a day: no longer polled by itself, finance must act.
            "polling_stopped": giftaid_service.polling_stopped(found),
        }

    context = await in_thread(load)
    context.update(errors=errors or {}, values=values or {}, failed=failed)
    return render(request, "finance/claim.html", context, status_code=status_code)


def _part(request: Request) -> int:
    return max(1, whole_number(request.query_params.get("part")) or 1)


@staff_page(StaffRole.FINANCE)
async def schedule(request: Request, staff: Principal) -> Response:
    """HMRC's Gift Aid schedule (.ods) of the claim (one file per 1,000 lines: `?part=`). A POST with the session's
    CSRF token (checked by `staff_page`), never a GET: it writes an export in the audit log and, the first time, the
    part's writing in the claim's history (which a take-off then keeps), and a GET is sent with the cookie from a link
    on any site (SameSite=Lax)."""
    claim_id = parse_uuid(request.path_params["claim_id"], "claim")
    part = _part(request)
    rt = runtime(request)

    def work() -> tuple[bytes, str]:
        with rt.unit_of_work() as uow:
            found = giftaid_service.get_claim(uow.session, claim_id)
            data = giftaid_service.schedule_part(uow.session, rt.settings, found, part, actor=staff.email)
            audit(uow, staff, "export", "giftaid_claim", claim_id, {"file": "schedule.ods", "part": part})
            return data, f"gift-aid-schedule-{found.through.isoformat()}-{str(claim_id)[:8]}-{part}.ods"

    data, name = await in_thread(work)
    return _download(data, ODS_TYPE, name)


@staff_page(StaffRole.FINANCE)
async def message(request: Request, staff: Principal) -> Response:
    """The claim's Charities Online XML message (checked against HMRC's business rules). A POST with the CSRF token,
    as `schedule` (it writes as that does)."""
    claim_id = parse_uuid(request.path_params["claim_id"], "claim")
    part = _part(request)
    rt = runtime(request)

    def work() -> tuple[bytes, str]:
        with rt.unit_of_work() as uow:
            found = giftaid_service.get_claim(uow.session, claim_id)
            out = io.BytesIO()
            result = giftaid_service.write_xml_part(uow.session, rt.settings, found, part, out, actor=staff.email)
            audit(
                uow,
                staff,
                "export",
                "giftaid_claim",
                claim_id,
                {"file": "claim.xml", "part": part, "irmark": result.irmark},
            )
            return out.getvalue(), f"gift-aid-claim-{found.through.isoformat()}-{str(claim_id)[:8]}-{part}.xml"

    data, name = await in_thread(work)
    return _download(data, "application/xml", name)


def _download(data: bytes, media_type: str, name: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"},
    )


@staff_page(StaffRole.FINANCE)
async def mark(request: Request, staff: Principal) -> Response:
    """Record the claim's next step. Bad input (or a step the claim cannot take) shows the claim's page again with
    the errors in words, the form as typed and nothing changed."""
    claim_id = parse_uuid(request.path_params["claim_id"], "claim")
    form = {k: str(v)[:500] for k, v in (await form_of(request)).items() if k != "csrf_token"}
    try:
        status = ClaimStatus(form.get("status", ""))
    except ValueError:
        unknown = {"": "Choose what happened to the claim"}
        return await _claim_page(request, staff, claim_id, errors=unknown, status_code=400)
    reason = form.get("reason", "").strip()
    errors: dict[str, str] = {}
    paid_amount: int | None = None
    paid_on: dt.date | None = None
    if status == ClaimStatus.PAID:
        try:
            paid_amount = Money.parse(form.get("paid_amount", "")).amount
        except MoneyError:
            errors["paid_amount"] = "Enter the amount HMRC paid, for example 1,234.50"
        paid_on = parse_uk_date(form.get("paid_on", ""), "paid_on", errors, required=True)
    if status == ClaimStatus.REJECTED and not reason:
        errors["reason"] = "Say why HMRC rejected it"
    if errors:
        return await _claim_page(
            request, staff, claim_id, errors=errors, values=form, failed=status.value, status_code=400
        )

    def work() -> None:
        with runtime(request).unit_of_work() as uow:
            giftaid_service.change_status(
                uow, claim_id, status, actor=staff.email, reason=reason, paid_amount=paid_amount, paid_on=paid_on
            )
            audit(uow, staff, status.value, "giftaid_claim", claim_id, {"reason": reason})

    try:
        await in_thread(work)
    except (InvalidClaimRequest, InvalidTransition) as exc:
        # Refused by the claim itself (a negative payment, a step it cannot take from where it is): rolled back.
        return await _claim_page(
            request,
            staff,
            claim_id,
            errors={"": exc.detail},
            values=form,
            failed=status.value,
            status_code=exc.status_code,
        )
    return await redirect_done(
        request, staff, f"/staff/finance/giftaid/claims/{claim_id}", f"The claim is now {status.value}."
    )
