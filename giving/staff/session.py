"""The staff pages' side of the login mechanism in `core.auth` (sessions, CSRF, TOTP, rate limits, resets).

`core.auth.StaffSessionMiddleware` turns the session cookie into `request.state.staff` and
`request.state.csrf_token` (before login: a random token in its own cookie, so the login and password-reset forms
are protected too). `SessionsOnStaffPaths` installs it around the staff routes unless the application already did.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from core import auth
from core.auth import LoginResult, Principal
from core.http import https_site
from core.runtime import Runtime


class SessionsOnStaffPaths:
    """Runs `StaffSessionMiddleware` (with the configured cookie security) for the staff pages."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "csrf_token" in scope.get("state", {}):
            await self.app(scope, receive, send)
            return
        secure = secure_cookies(scope["app"].state.runtime)
        await auth.StaffSessionMiddleware(self.app, paths=("/",), secure_cookies=secure)(scope, receive, send)


def secure_cookies(runtime: Runtime) -> bool:
    return https_site(runtime.settings.web)


def current(request: Request) -> tuple[Principal, str] | None:
    """(the staff member, their session's CSRF token), or None without a live session."""
    staff = getattr(request.state, "staff", None)
    if staff is None:
        return None
    return staff, str(getattr(request.state, "csrf_token", ""))


def csrf_token(request: Request) -> str:
    return str(getattr(request.state, "csrf_token", ""))


def csrf_ok(request: Request, given: str) -> bool:
    return auth.csrf_ok(getattr(request.state, "csrf_token", None), given)


def log_in(runtime: Runtime, email: str, password: str, totp: str, client: str, device_token: str = "") -> LoginResult:
    """`device_token`: the browser's known-device cookie (`auth.device_token_of(request)`)."""
    with runtime.unit_of_work() as uow:
        return auth.login(
            uow, email, password, totp, client=client, device_token=device_token, settings=runtime.settings.web
        )


def log_out(runtime: Runtime, request: Request) -> None:
    token = auth.session_token_of(request)
    if token:
        with runtime.unit_of_work() as uow:
            auth.logout(uow, token)


def set_cookie(response: Response, runtime: Runtime, result: LoginResult) -> None:
    """The session cookie and the known-device cookie."""
    auth.set_session_cookie(response, result, secure=secure_cookies(runtime))


def clear_cookie(response: Response, runtime: Runtime) -> None:
    auth.clear_session_cookie(response, secure=secure_cookies(runtime))
