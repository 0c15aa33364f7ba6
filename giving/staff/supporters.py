"""Supporter pages: search, a supporter's record and history, and what staff do there (notes, declarations,
consent changes, merges, resending a receipt). Every view of personal data is written to the audit log."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from core import signing
from core.auth import Principal, audit
from core.clock import uk_today
from core.db import UnitOfWork
from core.errors import BadRequest, Conflict, NotFound, ValidationFailed
from core.http import in_thread
from core.models import StaffRole
from core.money import format_pence
from core.runtime import Runtime
from crm import service as crm_service
from crm.errors import InvalidDonorDetails
from crm.models import ConsentChannel, ConsentStatus, Declaration, DeclarationMethod, DeclarationScope, Supporter
from crm.validation import MAX_STAFF_NOTE, DonorDetails, too_long
from giving import merge
from giving.staff import queries
from giving.staff.web import (
    PAGE_SIZE,
    form_of,
    page_cursors,
    provider_name,
    query_text,
    reading,
    redirect,
    redirect_done,
    render,
    runtime,
    signing_secret,
    staff_page,
    supporter_name,
    uk_date,
)
from payments import service as payments_service
from payments.models import Gift, GiftStatus, RegularGift
from receipts import service as receipts_service

HISTORY_ON_PAGE = 20
DOCUMENTS_ON_PAGE = 20
# What a declaration form changed for Gift Aid rides on the redirect, signed for the staff member and supporter.
CHANGE_PURPOSE = "declaration-change"
CHANGE_MAX_AGE_SECONDS = 3600
CHANGES_LISTED = 50
# The years a date typed on these pages may be in (`parse_uk_date`).
FIRST_YEAR, LAST_YEAR = 1900, 2999


def parse_uuid(raw: str, what: str = "record") -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError as exc:
        raise NotFound(f"there is no {what} {raw}") from exc


def not_erased(supporter: Supporter) -> Supporter:
    """Nothing more is recorded on an erased record: a note would be stored without its words (crm strips them),
    and a declaration or consent would put a name, an address or staff's words back on a record that must hold
    none (and an oral declaration would post a letter to nobody)."""
    if supporter.erased_at is not None:
        raise Conflict(
            f"This supporter was erased on {uk_date(supporter.erased_at)}: nothing more is recorded about them."
        )
    return supporter


def parse_uk_date(raw: str, field: str, errors: dict[str, str], *, required: bool = False) -> dt.date | None:
    """DD/MM/YYYY (what people type here) or YYYY-MM-DD, in years FIRST_YEAR to LAST_YEAR."""
    text = (raw or "").strip()
    if not text:
        if required:
            errors[field] = "Enter a date, for example 27/03/2025"
        return None
    try:
        if "/" in text:
            day, month, year_text = (p.strip() for p in text.split("/"))
            # 25 is 2025; a year of any other length than 2 or 4 digits (202, 0000, 20255) is a slip of the finger.
            year = int(year_text)
            if len(year_text) == 2:
                year += 2000
            elif len(year_text) != 4:
                raise ValueError(f"not a year: {year_text}")
            date = dt.date(year, int(month), int(day))
        else:
            date = dt.date.fromisoformat(text)
        # Typed either way: no gift, declaration or claim is dated outside these years, and at the ends of the
        # calendar the services' date arithmetic (four years back, the next day) has no date to give (a 500).
        if not FIRST_YEAR <= date.year <= LAST_YEAR:
            raise ValueError(f"a mistyped year: {date.year}")
        return date
    except (ValueError, OverflowError):
        errors[field] = "Enter a real date as DD/MM/YYYY, for example 27/03/2025"
        return None


# --- search -------------------------------------------------------------------------------------------------


@staff_page()
async def search(request: Request, staff: Principal) -> Response:
    q = query_text(request, "q", 100)

    def load() -> list[Supporter]:
        if not q:
            return []
        with runtime(request).unit_of_work() as uow:
            # One more than is shown: only then is "more than 50" true (exactly 50 matches said "50+").
            rows = queries.search_supporters(uow.session, q, limit=queries.SEARCH_LIMIT + 1)
            shown = rows[: queries.SEARCH_LIMIT]
            audit(uow, staff, "search", "supporter", "", {"q": q, "results": len(shown)})
            return rows

    found = await in_thread(load)
    results = found[: queries.SEARCH_LIMIT]
    return render(
        request,
        "supporters/search.html",
        {"q": q, "results": results, "more": len(found) > len(results), "limit": queries.SEARCH_LIMIT},
    )


# --- a supporter's page -------------------------------------------------------------------------------------


def _gift_choice(gift: Gift, state: tuple[str, str]) -> tuple[str, str]:
    """A gift offered for a one-gift declaration: its UK date and amount, and what happened to it unless paid."""
    label = f"{uk_date(gift.received_at)} {format_pence(gift.amount, gift.currency)}"
    return str(gift.id), label if state[0] == "paid" else f"{label} ({state[1]})"


def gift_state(gift: Gift, disputed: bool) -> tuple[str, str]:
    """(CSS name, words) of a gift's state as a fundraiser needs it: a paid gift refunded, lost in a dispute or
    disputed now is not simply "paid" (payments keeps it `paid` and counts what was returned)."""
    if gift.status != GiftStatus.PAID:
        return str(gift.status), str(gift.status).replace("_", " ")
    if disputed:
        return "disputed", "paid, disputed"
    if gift.returned_amount >= gift.amount:
        return "returned", "all returned"
    if gift.returned_amount > 0:
        return "part-returned", "paid, part returned"
    return "paid", "paid"


def supporter_context(
    rt: Runtime,
    staff: Principal,
    supporter_id: uuid.UUID,
    change_token: str = "",
    gifts_on: dt.date | None = None,
    all_documents: bool = False,
) -> dict[str, Any]:
    """What the supporter's page shows; with `gifts_on`, the gifts received that day are offered first for a
    one-gift declaration (besides the newest); with `all_documents`, every receipt and letter (else the newest)."""
    with rt.unit_of_work() as uow:
        profile = queries.supporter_profile(uow.session, supporter_id)
        supporter = profile.supporter
        history = queries.history_page(uow.session, supporter.id, type=None, page_size=HISTORY_ON_PAGE)
        gifts = queries.gifts_of(uow.session, supporter.id)
        that_day = queries.gifts_received_on(uow.session, supporter.id, gifts_on) if gifts_on else []
        documents = list(receipts_service.documents_of(uow.session, supporter.id))
        shown_documents = documents if all_documents else documents[:DOCUMENTS_ON_PAGE]
        deliveries = queries.latest_deliveries(uow.session, [d.id for d in shown_documents])
        disputed = queries.disputed_gift_ids(uow.session, [g.id for g in [*that_day, *gifts]])
        change = (
            declaration_change(uow.session, rt, staff, [supporter.id, *profile.merged_ids], change_token)
            if change_token
            else None
        )
        audit(uow, staff, "view", "supporter", supporter.id)
    states = {g.id: gift_state(g, g.id in disputed) for g in [*that_day, *gifts]}
    return {
        "profile": profile,
        "history": history.items,
        "gifts": gifts,
        "gift_states": states,
        "gift_choices": list(
            dict(_gift_choice(g, states[g.id]) for g in [*that_day, *gifts] if g.received_at is not None).items()
        ),
        # The newest unless all were asked for: an older receipt must stay reachable to be sent again.
        "documents": shown_documents,
        "deliveries": deliveries,
        "documents_count": len(documents),
        "open_form": "",
        "declaration_change": change,
        "today": uk_today(),
    }


# --- what a declaration changed for Gift Aid ----------------------------------------------------------------


def change_token(
    session: Session, rt: Runtime, staff: Principal, supporter_id: uuid.UUID, report: dict[str, Any]
) -> str:
    """crm's report of a declaration change (giftaid's `changed` and `adjusted_gift_ids`, as the JSON API gives
    them), signed for this staff member and supporter, to show on the page the form redirects to."""
    changed = list(report.get("changed", []))
    adjusted = [str(g) for g in report.get("adjusted_gift_ids", [])]
    payload = {
        "s": str(supporter_id),
        "u": str(staff.user_id),
        "c": [[c["gift_id"], c["before"], c["after"]] for c in changed[:CHANGES_LISTED]],
        "n": len(changed),
        "a": adjusted[:CHANGES_LISTED],
        "na": len(adjusted),
    }
    return signing.sign(signing_secret(rt, session), CHANGE_PURPOSE, payload)


def declaration_change(
    session: Session, rt: Runtime, staff: Principal, supporter_ids: list[uuid.UUID], token: str
) -> dict[str, Any] | None:
    """The gifts a declaration form changed (received, amount, claimable now or not and why) and the adjustments
    it made needed, from a `change_token`; None for a token not valid, expired, or not this staff member's."""
    try:
        payload = signing.unsign(
            signing_secret(rt, session), CHANGE_PURPOSE, token, max_age_seconds=CHANGE_MAX_AGE_SECONDS
        )
        if payload["u"] != str(staff.user_id) or uuid.UUID(payload["s"]) not in supporter_ids:
            return None
        changed = [(uuid.UUID(g), str(before), str(after)) for g, before, after in payload["c"]]
        adjusted_ids = [uuid.UUID(g) for g in payload["a"]]
        more, more_adjusted = int(payload["n"]) - len(changed), int(payload["na"]) - len(adjusted_ids)
    except (signing.InvalidToken, KeyError, TypeError, ValueError):
        return None
    gifts = queries.gifts_by_id(session, [g for g, _, _ in changed] + adjusted_ids, supporter_ids)
    deductions = queries.open_adjustments(session, adjusted_ids)

    def newest_first(row: dict[str, Any]) -> tuple[str, str]:
        gift = row["gift"]
        return (str(gift.received_on or gift.received_at or ""), str(gift.id))

    rows = [
        {"gift": gifts[g], "claimable": after == "claimable", "was_claimable": before == "claimable", "reason": after}
        for g, before, after in changed
        if g in gifts
    ]
    adjusted = [{"gift": gifts[g], "gift_aid": deductions.get(g, 0)} for g in adjusted_ids if g in gifts]
    return {
        "gifts": sorted(rows, key=newest_first, reverse=True),
        "more": more,
        "adjusted": sorted(adjusted, key=newest_first, reverse=True),
        "more_adjusted": more_adjusted,
    }


@staff_page()
async def show(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    token = query_text(request, "change", 20_000)
    all_documents = query_text(request, "documents", 8) == "all"
    context = await in_thread(supporter_context, runtime(request), staff, supporter_id, token, None, all_documents)
    if context["profile"].supporter.id != supporter_id:
        # An old id of a merged record: show the survivor at its own address, with the notice (and the report of a
        # declaration change) a form sent to the old address left in it.
        query = f"?{request.url.query}" if request.url.query else ""
        return redirect(f"/staff/supporters/{context['profile'].supporter.id}{query}")
    return render(request, "supporters/show.html", context)


def _form_shown(profile: queries.SupporterProfile, form: str) -> bool:
    """Whether the page shows this form: a declaration's cancel form while it is in force or waits for its letter,
    its confirm form only while it waits (as `show.html` does)."""
    for declaration, state in profile.declarations:
        if form == f"cancel-{declaration.id}":
            return state in ("active", "awaiting_confirmation")
        if form == f"confirm-{declaration.id}":
            return state == "awaiting_confirmation"
    return form in ("consent", "declaration", "note", "merge")


async def _show_with_errors(
    request: Request,
    staff: Principal,
    supporter_id: uuid.UUID,
    form: str,
    errors: dict[str, str],
    *,
    gifts_on: dt.date | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    """`values`: what was typed, when not a posted form (the merge preview's box is a GET)."""
    context = await in_thread(supporter_context, runtime(request), staff, supporter_id, "", gifts_on)
    # An erased record shows none of these forms: say why, whatever was wrong with the form.
    not_erased(context["profile"].supporter)
    if not _form_shown(context["profile"], form):
        # The form is not on the page (the declaration was cancelled meanwhile, or is not spoken): the error
        # summary says what happened, with no link to a field that is not there.
        errors = {"": "; ".join(dict.fromkeys(errors.values()))}
    if values is None:
        values = {k: str(v) for k, v in (await form_of(request)).items() if k != "csrf_token"}
    context.update(errors=errors, values=values, open_form=form)
    return render(request, "supporters/show.html", context, status_code=400)


@staff_page()
async def history(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    kind = query_text(request, "type", 32) or None
    before, after = page_cursors(request)

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            supporter = crm_service.resolve_supporter(uow.session, supporter_id)
            page = queries.history_page(
                uow.session, supporter.id, type=kind, page_size=PAGE_SIZE, before=before, after=after
            )
            types = queries.history_types(uow.session, supporter.id)
            shown = {"type": kind or ""}
            if page.items and (before or after):
                # Which page it was: the time of its newest and oldest items.
                shown["from"] = page.items[0].at.isoformat()
                shown["to"] = page.items[-1].at.isoformat()
            audit(uow, staff, "view", "supporter_history", supporter.id, shown)
        return {
            "supporter": supporter,
            "items": page.items,
            "newer": page.newer,
            "older": page.older,
            "type": kind or "",
            "types": types,
        }

    return render(request, "supporters/history.html", await in_thread(load))


# --- actions ------------------------------------------------------------------------------------------------


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def add_note(request: Request, staff: Principal) -> Response:
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    text = str((await form_of(request)).get("note_text", "")).strip()
    if not text:
        return await _show_with_errors(request, staff, supporter_id, "note", {"note_text": "Write the note first"})
    # The browser stops at the limit; a longer note is refused, not cut.
    if errors := too_long({"note_text": (text, MAX_STAFF_NOTE, "A note")}):
        return await _show_with_errors(request, staff, supporter_id, "note", errors)

    def write() -> uuid.UUID:
        with runtime(request).unit_of_work() as uow:
            supporter = not_erased(crm_service.resolve_supporter(uow.session, supporter_id))
            crm_service.add_note(uow, supporter.id, text, author=staff.email)
            audit(uow, staff, "add_note", "supporter", supporter.id)
            return supporter.id

    sid = await in_thread(write)
    return await redirect_done(request, staff, f"/staff/supporters/{sid}", "Note added.")


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
    words = str(form.get("wording_text", "")).strip()[:4000] or None
    note = str(form.get("note", "")).strip()[:200]

    def write() -> uuid.UUID:
        with runtime(request).unit_of_work() as uow:
            supporter = not_erased(crm_service.resolve_supporter(uow.session, supporter_id))
            crm_service.change_consent_by_staff(
                uow,
                supporter.id,
                channel=channel,
                status=status,
                by=staff.email,
                wording_version=wording,
                wording_text=words,
                note=note,
            )
            audit(uow, staff, "change_consent", "supporter", supporter.id, {"channel": channel.value})
            return supporter.id

    sid = await in_thread(write)
    return await redirect_done(
        request, staff, f"/staff/supporters/{sid}", f"Recorded: {channel.value} consent {status.value}."
    )


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
    # An older gift than the list offers: named by the day it was received.
    gifts_on = parse_uk_date(form.get("gift_received_on", ""), "gift_received_on", errors)
    if "scope" not in errors:
        _only_for_its_scope(form, scope, errors)
    if gift_id is None and gifts_on is not None and scope == DeclarationScope.THIS_GIFT and "gift_id" not in errors:
        gift_id = await in_thread(_gift_received_on, runtime(request), supporter_id, gifts_on, errors)
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
        return await _show_with_errors(request, staff, supporter_id, "declaration", errors, gifts_on=gifts_on)
    method = DeclarationMethod(method_text)
    checked_donor: DonorDetails = donor
    checked_made_on: dt.date = made_on

    rt = runtime(request)

    def write() -> tuple[uuid.UUID, str]:
        with rt.unit_of_work() as uow:
            supporter = not_erased(crm_service.resolve_supporter(uow.session, supporter_id))
            declaration, report = crm_service.reporting_changes(
                uow,
                supporter.id,
                lambda: crm_service.record_declaration(
                    uow,
                    supporter.id,
                    method=method,
                    made_on=checked_made_on,
                    scope=scope,
                    donor=checked_donor,
                    source="staff",
                    wording_version=rt.settings.giftaid.donation_wording_version,
                    wording_text=crm_service.enduring_declaration_wording(rt.settings.charity.name),
                    start=start,
                    end=end,
                    gift_id=gift_id,
                    evidence={"recorded_by": staff.email},
                    recorded_by=staff.email,
                ),
            )
            # crm queues an oral declaration's confirmation letter (receipts.issue_oral_confirmation).
            audit(uow, staff, "record_declaration", "supporter", supporter.id, _audited(declaration, report))
            return supporter.id, change_token(uow.session, rt, staff, supporter.id, report)

    try:
        sid, token = await in_thread(write)
    except ValidationFailed as exc:
        return await _show_with_errors(
            request, staff, supporter_id, "declaration", exc.errors or {"made_on": exc.detail}, gifts_on=gifts_on
        )
    done = "Declaration recorded." + (" Its confirmation letter is on its way." if method.value == "oral" else "")
    return await redirect_done(request, staff, f"/staff/supporters/{sid}?change={token}", done)


def _only_for_its_scope(form: dict[str, str], scope: DeclarationScope, errors: dict[str, str]) -> None:
    """Period dates or a gift with a scope that does not use them are refused, not recorded: crm kept them, and the
    page showed "future to 31/03/2025" while Gift Aid, which reads no end for that scope, claimed every later gift.
    Either the box was filled by mistake or the scope chosen is the mistake: the fundraiser must say which."""
    fields_of = {
        DeclarationScope.PERIOD: (("start", "end"), "a period", "Gifts in a period"),
        DeclarationScope.THIS_GIFT: (("gift_id", "gift_received_on"), "one gift", "One gift"),
    }
    for owner, (names, what, choice) in fields_of.items():
        for name in names:
            if scope != owner and form.get(name, "").strip() and name not in errors:
                errors[name] = f"Only for a declaration for {what}: choose “{choice}” above, or leave this empty"


def _gift_received_on(rt: Runtime, supporter_id: uuid.UUID, day: dt.date, errors: dict[str, str]) -> uuid.UUID | None:
    """The supporter's one gift received on `day`; none or several is a form error (several are then offered in
    the list to choose from)."""
    with reading(rt) as session:
        supporter = crm_service.resolve_supporter(session, supporter_id)
        found = queries.gifts_received_on(session, supporter.id, day)
    if len(found) == 1:
        return found[0].id
    if not found:
        errors["gift_received_on"] = f"No gift of theirs was received on {day:%d/%m/%Y}"
    else:
        errors["gift_id"] = f"{len(found)} gifts were received on {day:%d/%m/%Y}: choose one in the list"
    return None


def _audited(declaration: Declaration, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "declaration_id": str(declaration.id),
        "gifts_changed": len(report.get("changed", [])),
        "adjusted_gift_ids": [str(g) for g in report.get("adjusted_gift_ids", [])],
    }


def _belongs_to(session: Session, supporter_id: uuid.UUID, owner_id: uuid.UUID | None, what: str) -> None:
    """A record named under a supporter's address must be theirs (or a record merged into theirs): else 404."""
    supporter = crm_service.resolve_supporter(session, supporter_id)
    if owner_id is None or crm_service.resolve_supporter(session, owner_id).id != supporter.id:
        raise NotFound(f"{supporter_name(supporter, title=False)} has no {what}")


def _declaration_of(session: Session, supporter_id: uuid.UUID, declaration_id: uuid.UUID) -> Declaration:
    """The declaration, if it is this supporter's (or a record merged into them)."""
    declaration = crm_service.get_declaration(session, declaration_id)
    _belongs_to(session, supporter_id, declaration.supporter_id, f"declaration {declaration_id}")
    return declaration


async def _change_declaration(
    request: Request,
    staff: Principal,
    field: str,
    form_name: str,
    change: Callable[[UnitOfWork, uuid.UUID, dt.date], Declaration],
    done: Callable[[Declaration], str],
) -> Response:
    """Cancel or confirm a declaration of the supporter (the date in `field`), then show what that changed."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    declaration_id = parse_uuid(request.path_params["declaration_id"], "declaration")
    open_form = f"{form_name}-{declaration_id}"
    errors: dict[str, str] = {}
    on = parse_uk_date(str((await form_of(request)).get(field, "")), field, errors, required=True)
    if errors or on is None:
        return await _show_with_errors(request, staff, supporter_id, open_form, errors)
    checked_on: dt.date = on
    rt = runtime(request)

    def write() -> tuple[uuid.UUID, str, str]:
        with rt.unit_of_work() as uow:
            supporter = not_erased(crm_service.resolve_supporter(uow.session, supporter_id))
            found = _declaration_of(uow.session, supporter.id, declaration_id)
            declaration, report = crm_service.reporting_changes(
                uow, supporter.id, lambda: change(uow, found.id, checked_on)
            )
            audit(uow, staff, f"{form_name}_declaration", "supporter", supporter.id, _audited(declaration, report))
            token = change_token(uow.session, rt, staff, supporter.id, report)
            return supporter.id, token, done(declaration)

    try:
        sid, token, message = await in_thread(write)
    except (ValidationFailed, Conflict) as exc:
        errors = {field: (getattr(exc, "errors", None) or {}).get(field) or exc.detail}
        return await _show_with_errors(request, staff, supporter_id, open_form, errors)
    return await redirect_done(request, staff, f"/staff/supporters/{sid}?change={token}", message)


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def cancel_declaration(request: Request, staff: Principal) -> Response:
    """The donor cancelled: from the date given (an oral one cancelled within its 30 days is void)."""
    reason = str((await form_of(request)).get("reason", "")).strip()[:200]

    def cancel(uow: UnitOfWork, declaration_id: uuid.UUID, on: dt.date) -> Declaration:
        return crm_service.cancel_declaration(uow, declaration_id, effective_on=on, reason=reason, by=staff.email)

    def done(declaration: Declaration) -> str:
        if declaration.voided:
            return "Declaration cancelled. It is void: treated as never made."
        return f"Declaration cancelled from {uk_date(declaration.cancellation_effective_on)}."

    return await _change_declaration(request, staff, "effective_on", "cancel", cancel, done)


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def confirm_declaration(request: Request, staff: Principal) -> Response:
    """The written confirmation of an oral declaration was sent (on the date given)."""

    def confirm(uow: UnitOfWork, declaration_id: uuid.UUID, on: dt.date) -> Declaration:
        return crm_service.confirm_oral_declaration(uow, declaration_id, confirmation_sent_on=on, by=staff.email)

    def done(declaration: Declaration) -> str:
        return f"Recorded: its confirmation was sent on {uk_date(declaration.confirmation_sent_on)}."

    return await _change_declaration(request, staff, "confirmation_sent_on", "confirm", confirm, done)


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
    other = query_text(request, "other", 254)

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

    try:
        context = await in_thread(load)
    except (BadRequest, NotFound, Conflict) as exc:
        # No such duplicate, the record itself, or one erased: the supporter's page again, the error by the box.
        detail = exc.detail[:1].upper() + exc.detail[1:]
        return await _show_with_errors(request, staff, survivor_id, "merge", {"other": detail}, values={"other": other})
    return render(request, "supporters/merge.html", context)


@staff_page(*merge.MERGERS)
async def merge_now(request: Request, staff: Principal) -> Response:
    survivor_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    other = str((await form_of(request)).get("other", ""))

    def work() -> merge.MergeResult:
        loser_id = parse_uuid(other, "supporter")
        with runtime(request).unit_of_work() as uow:
            result = merge.merge_supporters(uow, loser_id, survivor_id, by=staff.email)
            audit(uow, staff, "merge", "supporter", result.merged_id, result.to_json())
            return result

    try:
        result = await in_thread(work)
    except (BadRequest, NotFound, Conflict) as exc:
        # Refused when sent (the duplicate erased or merged since the preview, an id that is none): the supporter's
        # page again with the error by the merge box, as the preview's refusals are; nothing was changed.
        detail = exc.detail[:1].upper() + exc.detail[1:]
        return await _show_with_errors(request, staff, survivor_id, "merge", {"other": detail}, values={"other": other})
    moved = sum(result.moved.values())
    return await redirect_done(
        request, staff, f"/staff/supporters/{result.into_id}", f"Merged: {moved} records moved to this supporter."
    )


# --- regular gifts ----------------------------------------------------------------------------------------------


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def cancel_regular_gift(request: Request, staff: Principal) -> Response:
    """A donor asked (by phone, letter or email) to stop their monthly gift: Giving tells Stripe or GoCardless."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    regular_gift_id = parse_uuid(request.path_params["regular_gift_id"], "regular gift")

    def work() -> str:
        with runtime(request).unit_of_work() as uow:
            regular = uow.session.get(RegularGift, regular_gift_id)
            owner = regular.supporter_id if regular is not None else None
            _belongs_to(uow.session, supporter_id, owner, f"regular gift {regular_gift_id}")
            regular = payments_service.request_cancellation(uow, regular_gift_id, requested_by=staff.email)
            audit(uow, staff, "cancel_regular_gift", "regular_gift", regular.id, {"provider": str(regular.provider)})
            amount = format_pence(regular.amount, regular.currency)
            provider = provider_name(regular.provider)
            return f"Cancelling the monthly gift of {amount}: {provider} is being told to take no more payments."

    done = await in_thread(work)
    return await redirect_done(request, staff, f"/staff/supporters/{supporter_id}", done)


# --- receipts -----------------------------------------------------------------------------------------------


@staff_page(StaffRole.FUNDRAISER, StaffRole.FINANCE)
async def resend_document(request: Request, staff: Principal) -> Response:
    """Send a copy of an issued receipt, statement or letter again (printed DUPLICATE)."""
    supporter_id = parse_uuid(request.path_params["supporter_id"], "supporter")
    document_id = parse_uuid(request.path_params["document_id"], "document")

    def work() -> str:
        with runtime(request).unit_of_work() as uow:
            document = receipts_service.get_document(uow.session, document_id)
            _belongs_to(uow.session, supporter_id, document.supporter_id, f"document {document_id}")
            delivery = receipts_service.resend(uow, document.id, requested_by=staff.email)
            audit(uow, staff, "resend_document", "document", document.id, {"channel": str(delivery.channel)})
            return f"A copy of {document.reference} is on its way ({delivery.channel})."

    done = await in_thread(work)
    return await redirect_done(request, staff, f"/staff/supporters/{supporter_id}", done)
