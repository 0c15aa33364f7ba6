"""The web edge shared by every package: one error handler, JSON helpers, pure ASGI middleware."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy.exc
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.clock import isoformat_z
from core.errors import AppError, BadRequest, DatabaseUnavailable, InternalServerError
from core.runtime import Runtime
from core.settings import WebSettings

if TYPE_CHECKING:
    from core.db import AsyncDatabase

T = TypeVar("T")

log = logging.getLogger("giving.http")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat_z(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot serialise {type(value).__name__}")


class JSON(JSONResponse):
    """JSON with the contract's timestamp, date, id and money formats."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_default, ensure_ascii=False, separators=(",", ":")).encode()


def json_text(body: Any) -> str:
    """A body as one line of JSON in the contract's formats (what the commands print with `--json`)."""
    return json.dumps(body, default=_default, ensure_ascii=False, separators=(",", ":"))


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/webhooks/")):
        return False
    return "text/html" in request.headers.get("accept", "")


async def app_error_handler(request: Request, exc: Exception) -> Response:
    """Renders every AppError (and a lost database, and Starlette's own 404 and 405 for a path or method no route
    serves) as `{"error", "detail"}` with its status."""
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        exc = DatabaseUnavailable()
    if isinstance(exc, StarletteHTTPException):
        phrase = HTTPStatus(exc.status_code).phrase
        code, detail, status = phrase.title().replace(" ", ""), str(exc.detail), exc.status_code
        headers = dict(exc.headers or {})
    elif isinstance(exc, AppError):
        code, detail, status, headers = exc.code, exc.detail, exc.status_code, exc.headers or {}
    else:  # pragma: no cover - Starlette routes only registered types here
        raise exc
    if _wants_html(request):
        from html import escape

        page = f"<!doctype html><title>{status} {escape(code)}</title><h1>{escape(code)}</h1><p>{escape(detail)}</p>"
        return HTMLResponse(page, status_code=status, headers=headers)
    return JSON(error_body(code, detail), status_code=status, headers=headers)


_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


def whole_number(raw: str | None) -> int | None:
    """A query parameter (or header) of ASCII digits as an int; None for anything else. `str.isdigit` is not the
    test: it takes "²", which `int` refuses, and any length, which the database's OFFSET refuses."""
    return int(raw) if raw is not None and _WHOLE_NUMBER.fullmatch(raw) else None


# The most items one page of a list endpoint holds.
PAGE_MAX = 1000


def limit_param(raw: str | None) -> int | None:
    """`?limit=`: None when not given; else a whole number of at least 1 (400 otherwise). One above a page
    (`PAGE_MAX`), of any length, asks for no fewer than a page: it is served a full page and `next` (contract.md:
    "every item unless `?limit=` asks for fewer")."""
    if raw is None or raw == "":
        return None
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else None
    limit = PAGE_MAX if digits is not None and len(digits) > 9 else whole_number(digits or raw)
    if limit is None or limit < 1:
        raise BadRequest("limit must be a whole number of at least 1")
    return min(limit, PAGE_MAX)


def offset_param(raw: str | None) -> int:
    """`?offset=` of a paged list (from a previous page's `next`): 0 when not given; ASCII digits (400 otherwise)."""
    if raw is None or raw == "":
        return 0
    offset = whole_number(raw)
    if offset is None:
        raise BadRequest("offset must be a whole number (from a previous page's `next`)")
    return offset


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def async_database_of(request: Request) -> AsyncDatabase | None:
    """The web process's asyncio connection pool (PostgreSQL, opened by the app's lifespan), or None."""
    return getattr(request.app.state, "async_database", None)


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run sync domain code (sessions, SDKs) off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class BodyLimitMiddleware:
    """Refuses a request body over `max_bytes` with 413 `{"error", "detail"}` (Starlette sets no limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (len(declared) > 9 or (whole_number(declared) or 0) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        response = _ResponseWatch(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, response.send)
        except _TooLarge:
            if not response.started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes"
        await JSON(error_body("PayloadTooLarge", detail), status_code=413)(scope, receive, send)


class _ResponseWatch:
    """Passes messages on and remembers whether the response has started (then it is too late to refuse)."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _TooLarge(Exception):
    pass


# What `app_error_handler` answers as itself; anything else is a bug, answered as `InternalServerError`.
RENDERED_ERRORS = (AppError, StarletteHTTPException, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


def rendered(exc: Exception) -> Exception:
    """The error to answer with: `exc` itself when `app_error_handler` knows it, else a 500 that tells nothing."""
    return exc if isinstance(exc, RENDERED_ERRORS) else InternalServerError("an unexpected error; it has been logged")


class ErrorMiddleware:
    """Renders, through `app_error_handler`, what the middleware inside it raises before a response has started: an
    `AppError` or a lost database as in an endpoint (the API's credentials and the staff session are looked up
    before routing, so a database lost there is a 503 like anywhere else), and anything else, a bug, as 500
    `InternalServerError`, its details in the log only. Inside the security headers and the metrics, so these
    answers carry the headers and are counted by their status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = _ResponseWatch(send)
        try:
            await self.app(scope, receive, response.send)
        except Exception as exc:
            if response.started:
                raise  # too late for an error answer: the server closes the connection
            if not isinstance(exc, RENDERED_ERRORS):
                log.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
            answer = await app_error_handler(Request(scope), rendered(exc))
            await answer(scope, receive, send)


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; frame-ancestors 'none'; form-action 'self' https:; base-uri 'self'",
    ),
]


# Sent by a site served over HTTPS (a year: browsers then refuse plain HTTP to it). No includeSubDomains: other
# hosts of the charity's domain are not ours to force.
HSTS_HEADER = (b"strict-transport-security", b"max-age=31536000")


def https_site(web: WebSettings) -> bool:
    """Whether the site is served over HTTPS: `[web] secure_cookies`, or a `base_url` that starts with https://."""
    return web.secure_cookies or web.base_url.lower().startswith("https://")


# The JSON API answers with personal data (supporters, their gifts, a claim's donors): kept by no cache, like the
# staff pages (which `render` sends no-store). An endpoint that sets its own Cache-Control keeps it.
NO_STORE_HEADER = (b"cache-control", b"no-store")
NO_STORE_PREFIXES = ("/api/",)


class SecurityHeadersMiddleware:
    """The headers above on every response, HSTS when the site is served over HTTPS (`hsts`, from `https_site`)
    or the request came in over HTTPS, and `Cache-Control: no-store` under `NO_STORE_PREFIXES`."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False):
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = [*SECURITY_HEADERS, HSTS_HEADER] if self.hsts or scope.get("scheme") == "https" else SECURITY_HEADERS
        if str(scope.get("path", "")).startswith(NO_STORE_PREFIXES):
            wanted = [*wanted, NO_STORE_HEADER]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in wanted if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTimeoutMiddleware:
    """Cuts off a client that sends its body too slowly (408): uvicorn times out idle connections, not a request
    whose body trickles in byte by byte, which would hold a connection and a worker thread for as long as it likes."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False
        response = _ResponseWatch(send)

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # unlike wait_for, no task per message
                    message = await receive()
            except TimeoutError:
                raise _TooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        try:
            await self.app(scope, timed_receive, response.send)
        except _TooSlow:
            if not response.started:
                detail = f"the request body did not arrive within {self.seconds:g} seconds"
                await JSON(error_body("RequestTimeout", detail), status_code=408, headers={"Connection": "close"})(
                    scope, receive, send
                )


class _TooSlow(Exception):
    pass
