"""Supporter pages: search, a supporter's record and history, and what staff do there (notes, declarations,
consent changes, merges, resending a receipt). Every view of personal data is written to the audit log."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from core.auth import Principal, audit
from core.errors import NotFound, ValidationFailed
from core.http import in_thread
from core.models import StaffRole
from core.money import format_pence
from core.runtime import Runtime
from crm import service as crm_service
from crm.errors import InvalidDonorDetails
from crm.models import ConsentChannel, ConsentStatus, DeclarationMethod, DeclarationScope, Supporter
from crm.validation import DonorDetails
from giving import merge
from giving.staff import queries
from giving.staff.web import PAGE_SIZE, form_of, page_number, redirect, render, runtime, staff_page
from receipts import service as receipts_service

HISTORY_ON_PAGE = 20
DOCUMENTS_ON_PAGE = 20


def parse_uuid(raw: str, what: str = "record") -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise NotFound(f"there is no {what} {raw}") from exc


def parse_uk_date(raw: str, field: str, errors: dict[str, str], *, required: bool = False) -> dt.date | None:
    """DD/MM/YYYY (what people type here) or YYYY-MM-DD."""
    text = (raw or "").strip()
    if not text:
        if required:
            errors[field] = "Enter a date, for example 27/03/2025"
        return None
    try:
        if "/" in text:
            day, month, year = (int(p) for p in text.split("/"))
            return dt.date(year if year > 99 else 2000 + year, month, day)
        return dt.date.fromisoformat(text)
    except ValueError:
        errors[field] = "Enter a real date as DD/MM/YYYY, for example 27/03/2025"
        return None


# --- search -------------------------------------------------------------------------------------------------


@staff_page()
async def search(request: Request, staff: Principal) -> Response:
    q = request.query_params.get("q", "").strip()[:100]

    def load() -> list[Supporter]:
        if not q:
            return []
        with runtime(request).unit_of_work() as uow:
            rows = queries.search_supporters(uow.session, q)
            audit(uow, staff, "search", "supporter", "", {"q": q, "results": len(rows)})
            return rows

    results = await in_thread(load)
    return render(request, "supporters/search.html", {"q": q, "results": results, "limit": queries.SEARCH_LIMIT})


# --- a supporter's page -------------------------------------------------------------------------------------


def supporter_context(rt: Runtime, staff: Principal, supporter_id: uuid.UUID) -> dict[str, Any]:
    with rt.unit_of_work() as uow:
        profile = queries.supporter_profile(uow.session, supporter_id)
        supporter = profile.supporter
        history = queries.history_page(uow.session, supporter.id, type=None, page=1, page_size=HISTORY_ON_PAGE)
        gifts = queries.gifts_of(uow.session, supporter.id)
        documents = list(receipts_service.documents_of(uow.session, supporter.id))[:DOCUMENTS_ON_PAGE]
        audit(uow, staff, "view", "supporter", supporter.id)
    return {
        "profile": profile,
        "history": history.items,
        "gifts": gifts,
        "gift_choices": [
            (str(g.id), f"{g.received_at:%d/%m/%Y} {format_pence(g.amount, g.currency)}")
            for g in gifts
            if g.received_at is not None
        ],
        "documents": documents,
        "open_form": "",
    }


@staff_page()
async def show(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    context = await in_thread(supporter_context, runtime(request), staff, supporter_id)
    if context["profile"].supporter.id != supporter_id:
        # An old id of a merged record: show the survivor at its own address.
        return redirect(f"/staff/supporters/{context['profile'].supporter.id}")
    return render(request, "supporters/show.html", context)


async def _show_with_errors(
    request: Request, staff: Principal, supporter_id: uuid.UUID, form: str, errors: dict[str, str]
) -> Response:
    context = await in_thread(supporter_context, runtime(request), staff, supporter_id)
    values = {k: str(v) for k, v in (await form_of(request)).items() if k != "csrf_token"}
    context.update(errors=errors, values=values, open_form=form)
    return render(request, "supporters/show.html", context, status_code=400)


@staff_page()
async def history(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    kind = request.query_params.get("type", "").strip()[:32] or None
    page = page_number(request)

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            items = queries.history_page(uow.session, supporter.id, type=kind, page=page, page_size=PAGE_SIZE)
            types = queries.history_types(uow.session, supporter.id)
            audit(uow, staff, "view", "supporter_history", supporter.id, {"type": kind or "", "page": page})
        return {
            "supporter": supporter,
            "items": items.items,
            "page": page,
            "has_next": items.has_next,
            "type": kind or "",
            "types": types,
        }

    return render(request, "supporters/history.html", await in_thread(load))


# --- actions ------------------------------------------------------------------------------------------------


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def add_note(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    text = str((await form_of(request)).get("note_text", "")).strip()[:4000]
    if not text:
        return await _show_with_errors(request, staff, supporter_id, "note", {"note_text": "Write the note first"})

    def write() -> uuid.UUID:
        with runtime(request).unit_of_work() as uow:
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            crm_service.add_note(uow, supporter.id, text, author=staff.email)
            audit(uow, staff, "add_note", "supporter", supporter.id)
            return supporter.id

    sid = await in_thread(write)
    return redirect(f"/staff/supporters/{sid}", "Note added.")


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def change_consent(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    form = await form_of(request)
    errors: dict[str, str] = {}
    try:
        channel = ConsentChannel(str(form.get("channel", "")))
    except ValueError:
        errors["channel"] = "Choose email, post or phone"
    try:
        status = ConsentStatus(str(form.get("status", "")))
        if status == ConsentStatus.PENDING:
            raise ValueError
    except ValueError:
        errors["status"] = "Choose granted or withdrawn"
    if errors:
        return await _show_with_errors(request, staff, supporter_id, "consent", errors)
    wording = str(form.get("wording_version", "")).strip()[:64]
    note = str(form.get("note", "")).strip()[:200]

    def write() -> uuid.UUID:
        with runtime(request).unit_of_work() as uow:
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            crm_service.change_consent_by_staff(
                uow, supporter.id, channel=channel, status=status, by=staff.email, wording_version=wording, note=note
            )
            audit(uow, staff, "change_consent", "supporter", supporter.id, {"channel": channel.value})
            return supporter.id

    sid = await in_thread(write)
    return redirect(f"/staff/supporters/{sid}", f"Recorded: {channel.value} consent {status.value}.")


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def record_declaration(request: Request, staff: Principal) -> Response:
    """An oral or paper declaration taken by staff; an oral one queues its confirmation letter."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    form = {k: str(v) for k, v in (await form_of(request)).items()}
    errors: dict[str, str] = {}
    method_text = form.get("method", "")
    if method_text not in (DeclarationMethod.ORAL.value, DeclarationMethod.WRITTEN.value):
        errors["method"] = "Choose spoken or on paper"
    try:
        scope = DeclarationScope(form.get("scope", ""))
    except ValueError:
        errors["scope"] = "Choose which gifts it covers"
        scope = DeclarationScope.FUTURE
    made_on = parse_uk_date(form.get("made_on", ""), "made_on", errors, required=True)
    start = parse_uk_date(form.get("start", ""), "start", errors)
    end = parse_uk_date(form.get("end", ""), "end", errors)
    gift_id: uuid.UUID | None = None
    if form.get("gift_id"):
        try:
            gift_id = uuid.UUID(form["gift_id"])
        except ValueError:
            errors["gift_id"] = "Choose one of the gifts"
    donor: DonorDetails | None = None
    try:
        donor = DonorDetails(
            title=form.get("title") or None,
            first_name=form.get("first_name", ""),
            last_name=form.get("last_name", ""),
            address_line1=form.get("address_line1", ""),
            postcode=form.get("postcode", ""),
            country=form.get("country", "GB") or "GB",
        ).normalised(require_address=(form.get("country", "GB") or "GB").upper() == "GB")
    except InvalidDonorDetails as exc:
        errors.update(exc.errors)
    if errors or donor is None or made_on is None:
        return await _show_with_errors(request, staff, supporter_id, "declaration", errors)
    method = DeclarationMethod(method_text)
    checked_donor: DonorDetails = donor
    checked_made_on: dt.date = made_on

    def write() -> uuid.UUID:
        with runtime(request).unit_of_work() as uow:
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            declaration = crm_service.record_declaration(
                uow,
                supporter.id,
                method=method,
                made_on=checked_made_on,
                scope=scope,
                donor=checked_donor,
                source="staff",
                wording_version=runtime(request).settings.giftaid.donation_wording_version,
                start=start,
                end=end,
                gift_id=gift_id,
                evidence={"recorded_by": staff.email},
                recorded_by=staff.email,
            )
            # crm queues an oral declaration's confirmation letter (receipts.issue_oral_confirmation).
            audit(uow, staff, "record_declaration", "supporter", supporter.id, {"declaration_id": str(declaration.id)})
            return supporter.id

    try:
        sid = await in_thread(write)
    except ValidationFailed as exc:
        return await _show_with_errors(
            request, staff, supporter_id, "declaration", exc.errors or {"made_on": exc.detail}
        )
    done = "Declaration recorded." + (" Its confirmation letter is on its way." if method.value == "oral" else "")
    return redirect(f"/staff/supporters/{sid}", done)


# --- merge --------------------------------------------------------------------------------------------------


def _other_supporter(session: Session, raw: str) -> uuid.UUID:
    """The duplicate, named by its record id or its email address."""
    text = raw.strip()
    if "@" in text:
        found = crm_service.find_supporters(session, email=text)
        if not found:
            raise NotFound(f"no supporter has the email {text}")
        return found[0].id
    return parse_uuid(text, "supporter")


@staff_page(*merge.MERGERS)
async def merge_preview(request: Request, staff: Principal) -> Response:
    survivor_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    other = request.query_params.get("other", "")

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            loser_id = _other_supporter(uow.session, other)
            result = merge.preview_merge(uow, loser_id, survivor_id)
            loser = crm_service.resolve_supporter(uow.session, result.merged_id)
            # resolve_supporter follows merges: read the duplicate itself.
            loser = uow.session.get(Supporter, result.merged_id) or loser
            survivor = crm_service.resolve_supporter(uow.session, result.into_id)
            audit(uow, staff, "merge_preview", "supporter", result.merged_id, {"into": str(result.into_id)})
            return {
                "loser": loser,
                "survivor": survivor,
                "moved": sorted((k, v) for k, v in result.moved.items() if v),
            }

    return render(request, "supporters/merge.html", await in_thread(load))


@staff_page(*merge.MERGERS)
async def merge_now(request: Request, staff: Principal) -> Response:
    survivor_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    loser_id = parse_uuid(str((await form_of(request)).get("other", "")), "supporter")

    def work() -> merge.MergeResult:
        with runtime(request).unit_of_work() as uow:
            result = merge.merge_supporters(uow, loser_id, survivor_id, by=staff.email)
            audit(uow, staff, "merge", "supporter", result.merged_id, result.to_json())
            return result

    result = await in_thread(work)
    moved = sum(result.moved.values())
    return redirect(f"/staff/supporters/{result.into_id}", f"Merged: {moved} records moved to this supporter.")


# --- receipts -----------------------------------------------------------------------------------------------


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def resend_document(request: Request, staff: Principal) -> Response:
    """Send a copy of an issued receipt, statement or letter again (printed DUPLICATE)."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    document_id = parse_uuid(request.path_params["document_id"], "document")

    def work() -> str:
        with runtime(request).unit_of_work() as uow:
            document = receipts_service.get_document(uow.session, document_id)
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            if crm_service.resolve_supporter(uow.session, document.supporter_id).id != supporter.id:
                raise NotFound(f"{supporter.first_name} {supporter.last_name} has no document {document_id}")
            delivery = receipts_service.resend(uow, document.id, requested_by=staff.email)
            audit(uow, staff, "resend_document", "document", document.id, {"channel": str(delivery.channel)})
            return f"A copy of {document.reference} is on its way ({delivery.channel})."

    done = await in_thread(work)
    return redirect(f"/staff/supporters/{supporter_id}", done)
