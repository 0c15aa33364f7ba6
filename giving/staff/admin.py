"""Admin pages: staff users and roles, API tokens (shown once, revocable), the audit log. Admin only."""

from __future__ import annotations

import datetime as dt
import secrets
import urllib.parse
from typing import Any

import pyotp
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import Response

from core import auth
from core.auth import Principal, audit
from core.clock import utc_now
from core.errors import Conflict, NotFound, ValidationFailed
from core.http import in_thread
from core.models import ApiToken, AuditEntry, StaffRole, StaffUser
from giving.staff import queries
from giving.staff.supporters import parse_uuid
from giving.staff.web import (
    PAGE_SIZE,
    form_of,
    page_cursors,
    query_text,
    reading,
    redirect_done,
    render,
    runtime,
    staff_page,
)

TOKEN_LIFETIMES = {"30": 30, "90": 90, "365": 365}


def _users(session: Session) -> list[StaffUser]:
    return list(session.exec(select(StaffUser).order_by(col(StaffUser.email))).all())


# --- users --------------------------------------------------------------------------------------------------


@staff_page(StaffRole.ADMIN)
async def users(request: Request, staff: Principal) -> Response:
    def load() -> list[StaffUser]:
        with reading(runtime(request)) as session:
            return _users(session)

    return render(request, "admin/users.html", {"users": await in_thread(load), "otpauth_uri": None})


@staff_page(StaffRole.ADMIN)
async def add_user(request: Request, staff: Principal) -> Response:
    """A new user with a random password nobody knows: they choose theirs from the reset link we email them."""
    form = await form_of(request)
    email, role = str(form.get("email", "")).strip(), str(form.get("role", ""))
    rt = runtime(request)

    def create() -> auth.NewStaffUser:
        with rt.unit_of_work() as uow:
            new = auth.add_staff_user(uow, email, role, secrets.token_urlsafe(24), issuer=rt.settings.charity.name)
            audit(uow, staff, "add_staff_user", "staff_user", new.user_id, {"email": new.email, "role": role})
        with rt.unit_of_work() as uow:
            auth.request_password_reset(uow, new.email)
        return new

    try:
        new = await in_thread(create)
    except ValidationFailed as exc:
        return await _users_with_errors(request, exc.errors or {"email": exc.detail}, {"email": email, "role": role})
    except Conflict as exc:
        return await _users_with_errors(request, {"email": exc.detail}, {"email": email, "role": role})
    if new.otpauth_uri:

        def load() -> list[StaffUser]:
            with reading(rt) as session:
                return _users(session)

        return render(
            request,
            "admin/users.html",
            {"users": await in_thread(load), "otpauth_uri": new.otpauth_uri, "created_email": new.email},
        )
    return await redirect_done(
        request, staff, "/staff/admin/users", f"Added {new.email}. They have been emailed a link to set a password."
    )


async def _users_with_errors(request: Request, errors: dict[str, str], values: dict[str, str]) -> Response:
    def load() -> list[StaffUser]:
        with reading(runtime(request)) as session:
            return _users(session)

    return render(
        request,
        "admin/users.html",
        {"users": await in_thread(load), "otpauth_uri": None, "errors": errors, "values": values},
        status_code=400,
    )


@staff_page(StaffRole.ADMIN)
async def change_user(request: Request, staff: Principal) -> Response:
    """Change a role, deactivate, reactivate or reset two-factor login (a lost authenticator: `auth.reset_totp`).
    Every session of the user ends (their rights changed)."""
    user_id = parse_uuid(request.path_params["user_id"], "staff user")
    form = await form_of(request)
    action = str(form.get("action", ""))
    if user_id == staff.user_id:
        # Refused on the page itself, with nothing changed (a bare error page would lose the list).
        return await _users_with_errors(
            request,
            {"": "You cannot change your own account here (ask another admin), so nobody locks everyone out."},
            {},
        )
    rt = runtime(request)

    def work() -> tuple[str, str | None]:
        with rt.unit_of_work() as uow:
            user = uow.session.get(StaffUser, user_id)
            if user is None:
                raise NotFound(f"no staff user {user_id}")
            uri = None
            if action == "role":
                try:
                    role = auth.parse_role(str(form.get("role", "")))
                except ValidationFailed as exc:
                    choices = ", ".join(r.value for r in StaffRole)
                    raise ValidationFailed(f"Choose a role for {user.email}: {choices}. Nothing was changed.") from exc
                before = str(user.role)
                user.role = role
                if role in auth.ROLES_WITH_TOTP and not user.totp_secret:
                    user.totp_secret = pyotp.random_base32()
                    uri = pyotp.TOTP(user.totp_secret).provisioning_uri(
                        name=user.email, issuer_name=rt.settings.charity.name
                    )
                done = f"{user.email} is now {role.value}."
                audit(uow, staff, "change_role", "staff_user", user.id, {"from": before, "to": role.value})
            elif action == "reset-2fa":
                # For a lost authenticator: the old secret's codes stop; finance and admin enrol anew from the URI.
                uri = auth.reset_totp(uow, user, issuer=rt.settings.charity.name, by=staff)
                done = (
                    f"{user.email} has a new two-factor set-up: their old codes no longer work."
                    if uri
                    else f"{user.email} logs in without a code now: their role needs none."
                )
            elif action in ("deactivate", "activate"):
                if action == "activate":
                    user.active = True
                else:
                    auth.deactivate_staff_user(uow, user)  # as `giving users deactivate`: sessions and tokens end
                done = f"{user.email} is {'reactivated' if user.active else 'deactivated'}."
                audit(uow, staff, action, "staff_user", user.id)
            else:
                raise ValidationFailed(
                    f"Choose a change for {user.email}: a new role, deactivate, reactivate or reset two-factor. "
                    "Nothing was changed."
                )
            uow.session.add(user)
            auth.revoke_sessions(uow, user.id)
            return done, uri

    try:
        done, uri = await in_thread(work)
    except ValidationFailed as exc:
        return await _users_with_errors(request, {"": exc.detail}, {})
    if uri:

        def load() -> list[StaffUser]:
            with reading(rt) as session:
                return _users(session)

        return render(
            request,
            "admin/users.html",
            {"users": await in_thread(load), "otpauth_uri": uri, "created_email": done.split(" ")[0], "flash": done},
        )
    return await redirect_done(request, staff, "/staff/admin/users", done)


# --- API tokens ---------------------------------------------------------------------------------------------


def _tokens_context(session: Session) -> dict[str, Any]:
    rows = session.exec(
        select(ApiToken, StaffUser.email)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)  # type: ignore[arg-type]
        .order_by(col(ApiToken.created_at).desc(), col(ApiToken.id))
        .limit(500)
    ).all()
    active = [u for u in _users(session) if u.active]
    return {
        "tokens": [(t, e) for t, e in rows],
        "user_choices": [(u.email, f"{u.email} ({u.role})") for u in active],
        "now": utc_now(),
        "new_token": None,
    }


@staff_page(StaffRole.ADMIN)
async def tokens(request: Request, staff: Principal) -> Response:
    def load() -> dict[str, Any]:
        with reading(runtime(request)) as session:
            return _tokens_context(session)

    return render(request, "admin/tokens.html", await in_thread(load))


@staff_page(StaffRole.ADMIN)
async def create_token(request: Request, staff: Principal) -> Response:
    form = await form_of(request)
    email, name = str(form.get("email", "")), str(form.get("name", "")).strip()[:100]
    days = TOKEN_LIFETIMES.get(str(form.get("days", "")))
    rt = runtime(request)
    values = {"email": email, "name": name, "days": str(form.get("days", ""))}

    async def with_errors(errors: dict[str, str]) -> Response:
        def load_errors() -> dict[str, Any]:
            with reading(rt) as session:
                return _tokens_context(session)

        context = await in_thread(load_errors)
        context.update(errors=errors, values=values)
        return render(request, "admin/tokens.html", context, status_code=400)

    errors = {}
    if not name:
        errors["name"] = "Say what the token is for"
    if days is None:
        errors["days"] = "Choose how long the token lasts: 30 days, 90 days or a year"
    if errors or days is None:
        return await with_errors(errors)

    def work() -> dict[str, Any]:
        with rt.unit_of_work() as uow:
            token = auth.create_api_token(uow, email, name=name, lifetime=dt.timedelta(days=days))
            audit(uow, staff, "create_api_token", "staff_user", email, {"name": name, "days": days})
        with reading(rt) as session:
            context = _tokens_context(session)
        context["new_token"] = token
        return context

    try:
        context = await in_thread(work)
    except NotFound:
        # Deactivated (or gone) since the form was loaded: the list offered now no longer has them.
        return await with_errors({"email": f"{email or 'That user'} is not an active user now: choose another"})
    # Shown once, on this response only (never in a redirect URL or a log).
    return render(request, "admin/tokens.html", context, headers={"referrer-policy": "no-referrer"})


@staff_page(StaffRole.ADMIN)
async def revoke_token(request: Request, staff: Principal) -> Response:
    token_id = parse_uuid(request.path_params["token_id"], "token")

    def work() -> str:
        with runtime(request).unit_of_work() as uow:
            row = uow.session.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no API token {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utc_now()
                uow.session.add(row)
                audit(uow, staff, "revoke_api_token", "api_token", row.id, {"name": row.name})
            return row.name or str(row.id)

    name = await in_thread(work)
    return await redirect_done(request, staff, "/staff/admin/tokens", f"Revoked the token “{name}”.")


# --- audit log ----------------------------------------------------------------------------------------------


@staff_page(StaffRole.ADMIN)
async def audit_log(request: Request, staff: Principal) -> Response:
    actor = query_text(request, "actor", 254)
    object_id = query_text(request, "object_id", 64)
    before, after = page_cursors(request)

    def load() -> queries.KeysetPage[AuditEntry]:
        query = select(AuditEntry)
        if actor:
            query = query.where(AuditEntry.actor == actor.lower())
        if object_id:
            query = query.where(AuditEntry.object_id == object_id)
        with reading(runtime(request)) as session:
            return queries.keyset_page(session, query, AuditEntry, before=before, after=after, size=PAGE_SIZE)

    page = await in_thread(load)
    query = urllib.parse.urlencode({k: v for k, v in (("actor", actor), ("object_id", object_id)) if v})
    return render(
        request,
        "admin/audit.html",
        {
            "entries": page.items,
            "actor": actor,
            "object_id": object_id,
            "newer": page.newer,
            "older": page.older,
            "base_url": "/staff/admin/audit" + (f"?{query}" if query else ""),
        },
    )
