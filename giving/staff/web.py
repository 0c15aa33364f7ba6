"""What every staff page shares: the templates and their filters, the login/role/CSRF gate, error pages.

A page endpoint is `async def view(request, staff) -> Response`, wrapped by `@staff_page(*roles)`:
the wrapper finds the staff member from the session cookie (or sends them to the login page), refuses a
role that may not (403 page), checks the CSRF token of every POST, and turns domain errors into pages.
"""

from __future__ import annotations

import datetime as dt
import functools
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jinja2
from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from core import signing
from core.auth import Principal
from core.clock import UK
from core.errors import AppError, Forbidden, NotFound, ValidationFailed
from core.http import in_thread, runtime_of
from core.models import StaffRole
from core.money import Money, format_pence
from core.runtime import Runtime
from giving.staff import queries
from giving.staff import session as staff_session

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
PAGE_SIZE = 50
# The one-line notice after a form rides on the redirect as `?done=`, signed for the staff member who sent the form
# (or for nobody logged in: logging out, a new password), so an address written by anyone else shows no notice.
NOTICE_PURPOSE = "staff-notice"
NOTICE_MAX_AGE_SECONDS = 600

Endpoint = Callable[[Request], Awaitable[Response]]
StaffView = Callable[[Request, Principal], Awaitable[Response]]


# --- formatting (money as £1,234.50, dates as DD/MM/YYYY in UK time) ---------------------------------------


def money(amount: int | Money | None, currency: str | None = "GBP") -> str:
    if amount is None:
        return ""
    if isinstance(amount, Money):
        return amount.format()
    return format_pence(int(amount), currency or "GBP")


def money_json(value: Mapping[str, Any] | None) -> str:
    """A contract money object `{"amount", "currency"}`."""
    if not value:
        return ""
    return money(value.get("amount"), value.get("currency"))


def uk_date(value: dt.date | dt.datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value[:10])
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(UK).date()
    return value.strftime("%d/%m/%Y")


def uk_datetime(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(UK).strftime("%d/%m/%Y %H:%M")


def words(value: object) -> str:
    """`past_4_years_and_future` → `past 4 years and future` (enum values shown to people)."""
    text = getattr(value, "value", value)
    return str(text or "").replace("_", " ")


# A record known by its email only (a newsletter sign-up gives no name) still needs words for its link and heading.
NO_NAME = "No name given"


def supporter_name(supporter: Any, *, title: bool = True) -> str:
    """`Ms Ann Smith`, or "No name given" for a record with no name (never an empty link or heading)."""
    names = [str(p).strip() for p in (supporter.first_name, supporter.last_name) if p and str(p).strip()]
    if not names:
        return NO_NAME
    prefix = str(getattr(supporter, "title", None) or "").strip() if title else ""
    return " ".join([prefix, *names] if prefix else names)


PROVIDER_NAMES = {"stripe": "Stripe", "gocardless": "GoCardless"}


def provider_name(value: object) -> str:
    text = str(getattr(value, "value", value) or "")
    return PROVIDER_NAMES.get(text, text)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        money=money,
        money_json=money_json,
        uk_date=uk_date,
        uk_datetime=uk_datetime,
        words=words,
        provider_name=provider_name,
        supporter_name=supporter_name,
    )
    return env


templates = Jinja2Templates(env=_environment())


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    staff: Principal | None = getattr(request.state, "staff", None)
    base: dict[str, Any] = {
        "staff": staff,
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "roles": StaffRole,
        "page_path": request.url.path,
        "errors": {},
        "values": {},
        "flash": getattr(request.state, "notice", ""),
    }
    base.update(context or {})
    response = templates.TemplateResponse(request, name, base, status_code=status_code, headers=headers)
    # Pages show personal data: never kept in a shared cache or the browser's back/forward cache on disk.
    response.headers["cache-control"] = "no-store"
    return response  # type: ignore[return-value]


def error_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", {"title": title, "detail": detail}, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    """303 after a successful POST."""
    return RedirectResponse(url, status_code=303)


def signing_secret(rt: Runtime, session: Session | None = None) -> str:
    """The secret the pages sign their links, reports and notices with: `[web] secret_key`, or the database's (read
    through `session` when the caller has one open)."""
    configured = rt.settings.web.secret_key.get_secret_value()
    if session is not None:
        return signing.signing_secret(session, configured)
    if configured:
        return configured
    with rt.unit_of_work() as uow:
        return signing.signing_secret(uow.session)


def _notice_owner(staff: Principal | None) -> str:
    return str(staff.user_id) if staff is not None else ""


def sign_notice(rt: Runtime, staff: Principal | None, text: str) -> str:
    return signing.sign(signing_secret(rt), NOTICE_PURPOSE, {"u": _notice_owner(staff), "m": text})


def read_notice(rt: Runtime, staff: Principal | None, token: str) -> str:
    """The notice of a `sign_notice` token made for this staff member (or, logged out, for nobody) in the last
    few minutes; "" for any other."""
    if not token:
        return ""
    try:
        payload = signing.unsign(signing_secret(rt), NOTICE_PURPOSE, token, max_age_seconds=NOTICE_MAX_AGE_SECONDS)
        if payload["u"] != _notice_owner(staff):
            return ""
        return str(payload["m"])
    except (signing.InvalidToken, KeyError, TypeError):
        return ""


async def redirect_done(request: Request, staff: Principal | None, url: str, text: str) -> RedirectResponse:
    """303 after a successful POST, with a short message (ours, signed) the next page shows."""
    token = await in_thread(sign_notice, runtime(request), staff, text)
    return redirect(url + ("&" if "?" in url else "?") + urllib.parse.urlencode({"done": token}))


async def take_notice(request: Request, staff: Principal | None) -> None:
    """Read the `?done=` notice for `render` (every page that shows one calls this before rendering)."""
    token = request.query_params.get("done", "")[:2000]
    request.state.notice = await in_thread(read_notice, runtime(request), staff, token) if token else ""


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/staff/login?" + urllib.parse.urlencode({"next": target}), status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path under /staff (never another site) after login."""
    if not target or not target.startswith("/staff/") or target.startswith("//") or "\\" in target:
        return "/staff/"
    return target


# --- the gate ---------------------------------------------------------------------------------------------


async def form_of(request: Request) -> FormData:
    """The parsed form, read once and kept on the request (the gate reads it for the CSRF token). NUL characters
    are dropped: nobody types one, and PostgreSQL's text cannot hold it (a query with one fails)."""
    cached: FormData | None = getattr(request.state, "form", None)
    if cached is None:
        parsed = await request.form(max_files=0, max_fields=200)
        cached = FormData([(k, v.replace("\x00", "") if isinstance(v, str) else v) for k, v in parsed.multi_items()])
        request.state.form = cached
    return cached


def query_text(request: Request, name: str, max_length: int) -> str:
    """A query parameter as text, trimmed, at most `max_length` characters, without NUL (see `form_of`)."""
    return request.query_params.get(name, "").replace("\x00", "").strip()[:max_length]


def staff_page(*roles: StaffRole) -> Callable[[StaffView], Endpoint]:
    """Login required; with `roles`, only those roles (and admin) may open the page or do the action."""

    def wrap(view: StaffView) -> Endpoint:
        @functools.wraps(view)
        async def endpoint(request: Request) -> Response:
            found = staff_session.current(request)
            if found is None:
                if request.method != "GET":
                    return error_page(request, 401, "Please log in", "Your session has ended. Log in again.")
                return login_redirect(request)
            staff = found[0]
            if roles and not staff.may(*roles):
                return error_page(
                    request,
                    403,
                    "Not allowed",
                    f"Your role ({words(staff.role)}) may not open this page or do this. Ask an admin if you need to.",
                )
            if request.method == "POST":
                form = await form_of(request)
                if not staff_session.csrf_ok(request, str(form.get("csrf_token", ""))):
                    return error_page(
                        request,
                        403,
                        "Form expired",
                        "This form was out of date or not sent from our pages. Go back, reload the page and try again.",
                    )
            if request.method == "GET":
                await take_notice(request, staff)
            try:
                return await view(request, staff)
            except Forbidden as exc:
                return error_page(request, 403, "Not allowed", exc.detail)
            except NotFound as exc:
                return error_page(request, 404, "Not found", exc.detail)
            except ValidationFailed as exc:
                return error_page(request, 400, "Please check what you entered", exc.detail)
            except AppError as exc:
                if exc.status_code >= 500:
                    raise
                return error_page(request, exc.status_code, "That did not work", exc.detail)

        return endpoint

    return wrap


def runtime(request: Request) -> Runtime:
    return runtime_of(request)


@contextmanager
def reading(rt: Runtime) -> Iterator[Session]:
    """A session for reads whose loaded objects stay readable after it closes (a rollback would expire them)."""
    session = rt.sessions()
    try:
        yield session
    finally:
        session.expunge_all()
        session.rollback()
        session.close()


def page_cursors(request: Request) -> tuple[queries.Cursor | None, queries.Cursor | None]:
    """`?before=` and `?after=` of a keyset-paged page (`queries.keyset_page`); a cursor not of ours is ignored."""
    limit = queries.CURSOR_MAX_LENGTH + 1
    before = queries.decode_cursor(query_text(request, "before", limit))
    after = None if before else queries.decode_cursor(query_text(request, "after", limit))
    return before, after
