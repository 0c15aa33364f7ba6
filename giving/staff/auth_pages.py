"""Log in, log out, forgotten password. The mechanism (sessions, TOTP, rate limits, reset links) is core.auth's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from core import auth
from core.auth import Principal
from core.errors import ValidationFailed
from core.http import client_address, in_thread
from giving.staff import session as staff_session
from giving.staff.web import (
    error_page,
    form_of,
    query_text,
    redirect,
    redirect_done,
    render,
    runtime,
    safe_next,
    signing_secret,
    staff_page,
    take_notice,
)


def _csrf_refused(request: Request, given: object) -> Response | None:
    if staff_session.csrf_ok(request, str(given or "")):
        return None
    return error_page(
        request, 403, "Form expired", "This form was out of date or not sent from our pages. Reload it and try again."
    )


async def login_form(request: Request) -> Response:
    if staff_session.current(request) is not None:
        return redirect(safe_next(query_text(request, "next", 2000)))
    await take_notice(request, None)
    return render(request, "auth/login.html", {"next": safe_next(query_text(request, "next", 2000))})


async def login(request: Request) -> Response:
    form = await form_of(request)
    refused = _csrf_refused(request, form.get("csrf_token"))
    if refused is not None:
        return refused
    email = str(form.get("email", "")).strip()[:254]
    target = safe_next(str(form.get("next", "")))
    rt = runtime(request)
    result = await in_thread(
        staff_session.log_in,
        rt,
        email,
        str(form.get("password", "")),  # whole: `auth.login` refuses one over the limit, never cut to fit
        str(form.get("totp", ""))[:12],
        client_address(request),
        auth.device_token_of(request)[:1000],
    )
    if not result.ok:
        status = 429 if result.rate_limited else 400
        headers = {"Retry-After": str(result.retry_after or 60)} if result.rate_limited else None
        return render(
            request,
            "auth/login.html",
            {
                "next": target,
                "errors": {result.error_field: result.error or auth.WRONG_LOGIN},
                "values": {"email": email},
            },
            status_code=status,
            headers=headers,
        )
    # A login over a live session (no logout first) ends that session: the cookie being replaced must not stay
    # valid wherever a copy of it went (session fixation hygiene), whoever it belonged to.
    await in_thread(staff_session.log_out, rt, request)
    response = redirect(target)
    staff_session.set_cookie(response, rt, result)
    return response


@staff_page()
async def logout(request: Request, staff: Principal) -> Response:
    rt = runtime(request)
    await in_thread(staff_session.log_out, rt, request)
    response = await redirect_done(request, None, "/staff/login", "You have logged out.")
    staff_session.clear_cookie(response, rt)
    return response


async def forgot_form(request: Request) -> Response:
    return render(request, "auth/reset_request.html", {"sent": False})


async def forgot(request: Request) -> Response:
    form = await form_of(request)
    refused = _csrf_refused(request, form.get("csrf_token"))
    if refused is not None:
        return refused
    email = str(form.get("email", "")).strip().lower()[:254]
    if "@" not in email:
        return render(
            request,
            "auth/reset_request.html",
            {"sent": False, "errors": {"email": "Enter your email address"}, "values": {"email": email}},
            status_code=400,
        )
    rt = runtime(request)
    web = rt.settings.web
    client_network = auth.client_network(client_address(request))

    def ask() -> bool:
        from core import ratelimit

        with rt.unit_of_work() as uow:
            # Not an inbox bomb: the same limit as logins, per address and per client (an IPv6 one by its /64).
            if not ratelimit.hit(
                uow.session, f"reset:{client_network}", limit=web.login_rate_per_minute, window_seconds=60
            ) or not ratelimit.hit(uow.session, f"reset:{email}", limit=3, window_seconds=3600):
                return False
        with rt.unit_of_work() as uow:
            auth.ask_for_password_reset(uow, email)  # the same work for any address: looked up in a job
        return True

    await in_thread(ask)
    # The same answer whether or not the address is staff, and whether or not it was limited.
    return render(request, "auth/reset_request.html", {"sent": True})


async def reset_form(request: Request) -> Response:
    token = request.query_params.get("token", "")
    if not token:
        return error_page(request, 400, "Link not valid", "Open the whole link from the email, or ask for a new one.")
    return render(
        request,
        "auth/reset.html",
        {"token": token, "min_length": auth.MIN_PASSWORD_LENGTH, "max_length": auth.MAX_PASSWORD_LENGTH},
    )


async def reset(request: Request) -> Response:
    form = await form_of(request)
    refused = _csrf_refused(request, form.get("csrf_token"))
    if refused is not None:
        return refused
    token = str(form.get("token", ""))
    password = str(form.get("password", ""))
    errors: dict[str, str] = {}
    problem = auth.password_problem(password)
    if problem is not None:
        errors["password"] = problem
    elif password != str(form.get("password_again", "")):
        errors["password_again"] = "The two passwords are not the same"
    if errors:
        return render(
            request,
            "auth/reset.html",
            {
                "token": token,
                "errors": errors,
                "min_length": auth.MIN_PASSWORD_LENGTH,
                "max_length": auth.MAX_PASSWORD_LENGTH,
            },
            status_code=400,
        )
    rt = runtime(request)

    def change() -> None:
        with rt.unit_of_work() as uow:
            secret = signing_secret(rt, uow.session)
            auth.reset_password(uow, token, password, secret=secret)

    try:
        await in_thread(change)
    except ValidationFailed as exc:
        return render(
            request,
            "auth/reset.html",
            {
                "token": token,
                "errors": {"password": exc.detail},
                "min_length": auth.MIN_PASSWORD_LENGTH,
                "max_length": auth.MAX_PASSWORD_LENGTH,
            },
            status_code=400,
        )
    return await redirect_done(request, None, "/staff/login", "Your password is changed. Log in with it.")
