"""HTTP routes of crm, mounted by giving.app: the staff JSON API on supporters, and the public forms
("Subscribe for updates" with its confirmation and unsubscribe links, and "Volunteer").

Endpoints are thin: they check the caller, parse, call one service function in a unit of work, and write the
audit log for every read of personal data. Each staff handler checks its caller before it reads its path, query or
body (401/403 first, then 404/400).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from html import escape
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from core import ratelimit, signing
from core.auth import Principal, audit, client_network, require_staff
from core.db import UnitOfWork
from core.errors import NotFound, TooManyRequests
from core.http import JSON, client_address, in_thread, limit_param, offset_param, runtime_of
from core.models import StaffRole
from core.runtime import Runtime
from core.settings import Settings
from crm import schemas, service
from crm.errors import BadCursor, DeclarationNotFound, ReviewItemNotFound, SupporterNotFound
from crm.models import ConsentStatus, Declaration
from crm.validation import DonorDetails, normalise_email

T = TypeVar("T")

# Every staff role may read supporters and keep their records (contract: fundraiser and up).
READERS = (StaffRole.FUNDRAISER, StaffRole.FINANCE)
RECORD_KEEPERS = (StaffRole.FUNDRAISER, StaffRole.FINANCE)
REVIEW_PAGE = 100
SEARCH_PAGE = 50
# One address gets at most this many confirmation emails an hour, however many clients ask.
SUBSCRIBE_PER_ADDRESS_PER_HOUR = 3


# A path id that is no id at all is a record not found, of the kind the path names.
_NOT_FOUND: dict[str, type[NotFound]] = {
    "supporter": SupporterNotFound,
    "declaration": DeclarationNotFound,
    "review item": ReviewItemNotFound,
}


def parse_id(raw: str, what: str = "supporter") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise _NOT_FOUND[what](f"no {what} {raw!r}") from exc


async def staff_call(request: Request, roles: tuple[StaffRole, ...], fn: Callable[[UnitOfWork, Principal], T]) -> T:
    """Run `fn(uow, principal)` in one unit of work after checking the caller (401/403)."""
    runtime = runtime_of(request)

    def work() -> T:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *roles)
            return fn(uow, principal)

    return await in_thread(work)


# --- supporters ----------------------------------------------------------------------------------------------


def _search_text(value: str | None) -> str | None:
    """A search parameter without NUL (PostgreSQL text cannot hold one, neither the query nor the audit entry)."""
    return value.replace("\x00", "") if value is not None else None


async def list_supporters(request: Request) -> Response:
    """`?email=`: the one supporter with it, or none. `?q=`: the matches in their order (last name, first name, id),
    `?limit=` (50 by default) at a time after `?offset=`; `next` names the following page while more remain."""
    email = _search_text(request.query_params.get("email"))
    q = _search_text(request.query_params.get("q"))

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        limit = limit_param(request.query_params.get("limit")) or SEARCH_PAGE
        offset = offset_param(request.query_params.get("offset"))
        found = service.find_supporters(uow.session, email=email, q=q, limit=limit + 1, offset=offset)
        more, found = len(found) > limit, found[:limit]
        audit(
            uow,
            principal,
            "search",
            "supporter",
            "",
            {"email": email} if email is not None else {"q": q, "ids": [str(s.id) for s in found]},
        )
        body: dict[str, Any] = {"items": [schemas.supporter_summary(s) for s in found]}
        if more and email is None:
            body["next"] = f"{request.url.path}?{urlencode({'q': q, 'limit': limit, 'offset': offset + limit})}"
        return body

    return JSON(await staff_call(request, READERS, work))


async def get_supporter(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        view = service.get_supporter(uow.session, supporter_id)
        totals = service.supporter_totals(uow.session, view.supporter.id)
        audit(uow, principal, "view", "supporter", view.supporter.id)
        return schemas.supporter_detail(view, totals)

    return JSON(await staff_call(request, READERS, work))


async def supporter_history(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> bytes:
        supporter_id = parse_id(request.path_params["supporter_id"])
        limit = limit_param(request.query_params.get("limit"))
        cursor = request.query_params.get("cursor") or None
        supporter, items, next_cursor = service.history_json(
            uow.session, supporter_id, limit=limit, cursor=cursor, render=_item_json
        )
        audit(uow, principal, "view_history", "supporter", supporter.id)
        next_url = None
        if next_cursor is not None:
            query = urlencode({"limit": limit, "cursor": next_cursor})
            next_url = f"/api/supporters/{supporter.id}/history?{query}"
        # Items arrive as JSON text (rendered by the database on PostgreSQL): join them, do not re-parse them.
        return f'{{"items":[{",".join(items)}],"next":{json.dumps(next_url)}}}'.encode()

    return Response(await staff_call(request, READERS, work), media_type="application/json")


def _item_json(row: Any) -> str:
    return json.dumps(schemas.history_item(row), ensure_ascii=False, separators=(",", ":"))


async def add_note(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        body = schemas.parse_body(schemas.NoteIn, raw)
        entry = service.add_note(uow, supporter_id, body.text, author=principal.email)
        return schemas.history_item(entry)

    return JSON(await staff_call(request, RECORD_KEEPERS, work), status_code=201)


async def add_interest(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        body = schemas.parse_body(schemas.InterestIn, raw)
        interest = service.record_interest(uow, supporter_id, kind=body.kind, source=body.source, note=body.note)
        return schemas.interest_json(interest)

    return JSON(await staff_call(request, RECORD_KEEPERS, work), status_code=201)


async def change_consent(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        body = schemas.parse_body(schemas.ConsentIn, raw)
        consent = service.change_consent_by_staff(
            uow,
            supporter_id,
            channel=body.channel,
            status=ConsentStatus(body.status),
            by=principal.email,
            wording_version=body.wording_version,
            wording_text=body.wording_text or None,
            note=body.note,
        )
        return schemas.consent_json(consent, service.consent_words(uow.session, [consent]))

    return JSON(await staff_call(request, RECORD_KEEPERS, work), status_code=201)


# --- declarations --------------------------------------------------------------------------------------------


async def list_declarations(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        found = service.declarations(uow.session, supporter_id)
        audit(uow, principal, "view_declarations", "supporter", service.resolve_supporter(uow.session, supporter_id).id)
        words = service.declaration_words(uow.session, found)
        return {"items": [schemas.declaration_json(d, words) for d in found]}

    return JSON(await staff_call(request, READERS, work))


async def create_declaration(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        supporter_id = parse_id(request.path_params["supporter_id"])
        body = schemas.parse_body(schemas.DeclarationIn, raw)
        supporter = service.recordable_supporter(uow.session, supporter_id)
        donor = _declaration_donor(uow, supporter.id, body)
        declaration, report = service.reporting_changes(
            uow,
            supporter.id,
            lambda: service.record_declaration(
                uow,
                supporter.id,
                method=body.method,
                made_on=body.made_on,
                scope=body.scope,
                donor=donor,
                source="staff",
                **_wording(runtime_of(request).settings, body),
                start=body.start,
                end=body.end,
                gift_id=body.gift_id,
                confirmation_sent_on=body.confirmation_sent_on,
                evidence={**body.evidence, "recorded_by": principal.email},
                recorded_by=principal.email,
            ),
        )
        return {**_declaration_out(uow, declaration), **report}

    return JSON(await staff_call(request, RECORD_KEEPERS, work), status_code=201)


def _declaration_out(uow: UnitOfWork, declaration: Declaration) -> dict[str, Any]:
    return schemas.declaration_json(declaration, service.declaration_words(uow.session, [declaration]))


def _wording(settings: Settings, body: schemas.DeclarationIn) -> dict[str, Any]:
    """The wording a declaration recorded through the API was given with: the words sent with it; for the charity's
    own wording version, its words; else the words Giving kept for that version the last time it was given."""
    version = body.wording_version or settings.giftaid.donation_wording_version
    text = body.wording_text or None
    if text is None and version == settings.giftaid.donation_wording_version:
        text = service.enduring_declaration_wording(settings.charity.name)
    return {"wording_version": version, "wording_text": text}


def _declaration_donor(uow: UnitOfWork, supporter_id: uuid.UUID, body: schemas.DeclarationIn) -> DonorDetails:
    """The name and address given with the declaration, or else the supporter's own; checked for HMRC now."""
    if body.address is not None:
        given = DonorDetails(**body.address.model_dump())
    else:
        view = service.get_supporter(uow.session, supporter_id)
        address = view.address
        given = DonorDetails(
            title=view.supporter.title,
            first_name=view.supporter.first_name,
            last_name=view.supporter.last_name,
            address_line1=address.line1 if address else "",
            address_line2=address.line2 if address else "",
            town=address.town if address else "",
            postcode=address.postcode if address else "",
            country=address.country if address else "GB",
        )
    return given.normalised(require_address=True)


async def cancel_declaration(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        declaration_id = parse_id(request.path_params["declaration_id"], "declaration")
        body = schemas.parse_body(schemas.CancelIn, raw)
        supporter_id = service.get_declaration(uow.session, declaration_id).supporter_id
        declaration, report = service.reporting_changes(
            uow,
            supporter_id,
            lambda: service.cancel_declaration(
                uow, declaration_id, effective_on=body.effective_on, reason=body.reason, by=principal.email
            ),
        )
        return {**_declaration_out(uow, declaration), **report}

    return JSON(await staff_call(request, RECORD_KEEPERS, work))


async def confirm_declaration(request: Request) -> Response:
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        declaration_id = parse_id(request.path_params["declaration_id"], "declaration")
        body = schemas.parse_body(schemas.ConfirmIn, raw)
        supporter_id = service.get_declaration(uow.session, declaration_id).supporter_id
        declaration, report = service.reporting_changes(
            uow,
            supporter_id,
            lambda: service.confirm_oral_declaration(
                uow, declaration_id, confirmation_sent_on=body.confirmation_sent_on, by=principal.email
            ),
        )
        return {**_declaration_out(uow, declaration), **report}

    return JSON(await staff_call(request, RECORD_KEEPERS, work))


# --- review items --------------------------------------------------------------------------------------------


async def list_review_items(request: Request) -> Response:
    """Newest first, `?limit=` (100 by default) at a time after `?cursor=`; `next` names the following page (with
    its cursor). Paged by cursor, not offset: items raised or resolved meanwhile neither repeat nor are skipped."""
    status = request.query_params.get("status", "open")
    open_only = status != "all"

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        limit = limit_param(request.query_params.get("limit")) or REVIEW_PAGE
        cursor = request.query_params.get("cursor") or None
        if "offset" in request.query_params:
            # A client still counting offsets would get the first page over and over: told instead.
            raise BadCursor("review items are paged by cursor: follow `next`, not an offset")
        items, next_cursor = service.review_items(uow.session, open_only=open_only, limit=limit, cursor=cursor)
        audit(uow, principal, "list", "review_item", "", {"count": len(items)})
        body: dict[str, Any] = {"items": [schemas.review_item_json(i) for i in items]}
        if next_cursor is not None:
            query = urlencode({"status": "all" if not open_only else "open", "limit": limit, "cursor": next_cursor})
            body["next"] = f"{request.url.path}?{query}"
        return body

    return JSON(await staff_call(request, READERS, work))


async def resolve_review_item(request: Request) -> Response:
    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        item_id = parse_id(request.path_params["item_id"], "review item")
        return schemas.review_item_json(service.resolve_review_item(uow, item_id, by=principal.email))

    return JSON(await staff_call(request, RECORD_KEEPERS, work))


# --- public forms: subscribe, confirm, unsubscribe, volunteer ------------------------------------------------


def page(
    title: str,
    message: str,
    *,
    status_code: int = 200,
    post_button: tuple[str, str] | None = None,
    quote: str | None = None,
) -> HTMLResponse:
    """A plain public page; `post_button` (action, label) adds a form of one button that POSTs to the action;
    `quote` adds words quoted under the message (what the person agrees to)."""
    form = ""
    if post_button is not None:
        action, label = post_button
        form = f'<form method="post" action="{escape(action)}"><button type="submit">{escape(label)}</button></form>'
    quoted = f'<blockquote class="wording"><p>{escape(quote)}</p></blockquote>' if quote is not None else ""
    body = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><main><h1>{escape(title)}</h1><p>{escape(message)}</p>{quoted}{form}</main>"
        "</html>"
    )
    return HTMLResponse(body, status_code=status_code, headers={"cache-control": "no-store"})


def _count(runtime: Runtime, key: str, *, limit: int, window_seconds: int) -> None:
    """Count a request in its own short transaction (so a refused request still counts); 429 when over."""
    with runtime.unit_of_work() as uow:
        allowed = ratelimit.hit(uow.session, key, limit=limit, window_seconds=window_seconds)
    if not allowed:
        raise TooManyRequests(
            "too many requests; try again later",
            headers={"Retry-After": str(ratelimit.retry_after(window_seconds))},
        )


def _secret(runtime: Runtime, uow: UnitOfWork) -> str:
    return signing.signing_secret(uow.session, runtime.settings.web.secret_key.get_secret_value())


async def subscribe(request: Request) -> Response:
    runtime = runtime_of(request)
    form = await request.form(max_files=0, max_fields=20)
    client = client_address(request)
    per_minute = runtime.settings.web.form_rate_per_minute
    # What the page below quotes is what the pending consent keeps (and its email quotes the kept words).
    words = service.email_updates_wording(runtime.settings.charity.name)

    def work() -> None:
        # Counted per network (an IPv6 client by its /64); the consent's evidence keeps the full address.
        _count(runtime, f"subscribe:client:{client_network(client)}", limit=per_minute, window_seconds=60)
        email = normalise_email(str(form.get("email", "")))
        _count(runtime, f"subscribe:email:{email}", limit=SUBSCRIBE_PER_ADDRESS_PER_HOUR, window_seconds=3600)
        with runtime.unit_of_work() as uow:
            service.start_subscription(
                uow,
                email,
                first_name=str(form.get("first_name", "")),
                last_name=str(form.get("last_name", "")),
                client=client,
                wording_text=words,
            )

    await in_thread(work)
    return page(
        "Check your inbox",
        "We have sent you an email. Follow the link in it to confirm that you would like our updates:",
        quote=words,
    )


async def confirm_subscription(request: Request) -> Response:
    runtime = runtime_of(request)
    token = request.query_params.get("token", "")
    client = client_address(request)
    words = service.email_updates_wording(runtime.settings.charity.name)

    def work() -> bool:
        with runtime.unit_of_work() as uow:
            pending_id = service.pending_id_from_token(_secret(runtime, uow), token)
            return service.confirm_subscription(uow, pending_id, client=client, wording_text=words)

    changed = await in_thread(work)
    if changed:
        return page("You are subscribed", "Thank you: we will email you our updates. Every email has a link to stop.")
    return page("You are subscribed", "You had already confirmed: nothing has changed.")


async def unsubscribe(request: Request) -> Response:
    """POST withdraws the email consent: the button of the page the email's link opens, or a mail client's one-click
    unsubscribe (RFC 8058). GET, the link itself, only shows that button: mail scanners open links in emails they
    deliver, and a GET that withdrew consent would unsubscribe people who never asked."""
    runtime = runtime_of(request)
    token = request.query_params.get("token", "")
    client = client_address(request)

    def work() -> bool:
        with runtime.unit_of_work() as uow:
            supporter_id = service.supporter_id_from_unsubscribe_token(_secret(runtime, uow), token)
            if request.method != "POST":
                return False
            return service.unsubscribe(uow, supporter_id, client=client)

    await in_thread(work)  # a link that is not ours is a 400 either way
    if request.method != "POST":
        return page(
            "Stop our emails",
            "Press the button and we will not email you updates any more.",
            post_button=(f"/unsubscribe?{urlencode({'token': token})}", "Unsubscribe"),
        )
    return page("You are unsubscribed", "We will not email you updates any more.")


async def volunteer(request: Request) -> Response:
    """The site's Volunteer button: records an interest in volunteering on the supporter, with its source."""
    runtime = runtime_of(request)
    form = await request.form(max_files=0, max_fields=20)
    client = client_address(request)

    def work() -> None:
        _count(
            runtime,
            f"volunteer:client:{client_network(client)}",
            limit=runtime.settings.web.form_rate_per_minute,
            window_seconds=60,
        )
        email = normalise_email(str(form.get("email", "")))
        with runtime.unit_of_work() as uow:
            supporter = service.supporter_for_email(
                uow,
                email,
                first_name=str(form.get("first_name", "")),
                last_name=str(form.get("last_name", "")),
                source="volunteer_form",
            )
            service.record_interest(
                uow, supporter.id, kind="volunteering", source="volunteer_form", note=str(form.get("note", ""))
            )

    await in_thread(work)
    return page("Thank you", "We have your details and will be in touch about volunteering.")


routes: list[BaseRoute] = [
    Route("/api/supporters", list_supporters, methods=["GET"]),
    Route("/api/supporters/{supporter_id}", get_supporter, methods=["GET"]),
    Route("/api/supporters/{supporter_id}/history", supporter_history, methods=["GET"]),
    Route("/api/supporters/{supporter_id}/notes", add_note, methods=["POST"]),
    Route("/api/supporters/{supporter_id}/interests", add_interest, methods=["POST"]),
    Route("/api/supporters/{supporter_id}/consents", change_consent, methods=["POST"]),
    Route("/api/supporters/{supporter_id}/declarations", list_declarations, methods=["GET"]),
    Route("/api/supporters/{supporter_id}/declarations", create_declaration, methods=["POST"]),
    Route("/api/declarations/{declaration_id}/cancel", cancel_declaration, methods=["POST"]),
    Route("/api/declarations/{declaration_id}/confirm", confirm_declaration, methods=["POST"]),
    Route("/api/review-items", list_review_items, methods=["GET"]),
    Route("/api/review-items/{item_id}/resolve", resolve_review_item, methods=["POST"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/subscribe/confirm", confirm_subscription, methods=["GET"]),
    Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
    Route("/volunteer", volunteer, methods=["POST"]),
]
