"""Staff access: users, API tokens, login sessions, CSRF, password reset, the audit log.

- `require_staff(session, request, *roles)` answers 401 without a valid bearer token (or staff login session) and
  403 for a role that may not. Admin may do everything.
- API tokens (`/api/*`): random, shown once, stored as a SHA-256 hash, with an expiry; revocable.
- Staff pages (`/staff/*`): `login()` starts a server-side session whose random id travels in an HttpOnly,
  SameSite=Lax cookie (Secure with `[web] secure_cookies`); only its hash is stored. `StaffSessionMiddleware`
  turns the cookie into `request.state.staff` (a Principal) and `request.state.csrf_token`. Sessions expire after
  `[web] session_hours` and are revoked at logout and when the password changes.
- CSRF: every staff form carries `csrf_token(request)`; `verify_csrf(request, form)` checks it. A logged-in
  session has its own token; before login (the login and password-reset forms) a random token is kept in a
  separate cookie (double submit), so those forms are protected too; login and logout each renew it.
- Passwords (10 to 1,000 characters, the same limit at login) are hashed with argon2id; finance and admin must also
  give a TOTP code (pyotp).
- Login attempts are rate-limited per client, per account and client, and per account (a ceiling), from
  `[web] login_rate_per_minute`; a browser that logged in to the account before counts on its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import argon2
import pyotp
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import ratelimit, signing
from core.clock import utc_now
from core.db import UnitOfWork
from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from core.jobs import actor
from core.models import ApiToken, AuditEntry, PasswordReset, RateLimitHit, StaffRole, StaffSession, StaffUser
from core.settings import WebSettings

log = logging.getLogger("giving.auth")

TOKEN_PREFIX = "gvg_"
SESSION_COOKIE = "giving_session"
CSRF_COOKIE = "giving_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MIN_PASSWORD_LENGTH = 10
# The longest password, for setting one and for logging in alike (a login never cuts what it is given to fit).
MAX_PASSWORD_LENGTH = 1000
ROLES_WITH_TOTP = frozenset({StaffRole.ADMIN, StaffRole.FINANCE})
PASSWORD_RESET_LIFETIME = dt.timedelta(hours=1)
PASSWORD_RESET_PURPOSE = "password-reset"
LOGIN_WINDOW_SECONDS = 60
LOGIN_HOUR_SECONDS = 3600
# Besides the per-minute limit per client, one email gets this many times `login_rate_per_minute` attempts a clock
# hour from one client (an IPv4 address, an IPv6 /64): a stranger's wrong guesses lock out only the stranger.
LOGIN_ATTEMPTS_PER_HOUR_FACTOR = 3
# ... and this many times `login_rate_per_minute` a clock hour from every client together (those without a
# known-device cookie): the ceiling that bounds guessing one password from many addresses.
LOGIN_ACCOUNT_CEILING_FACTOR = 10
# IPv6 clients are counted by network: one host usually has a whole /64 to itself.
LOGIN_IPV6_PREFIX = 64
# A browser that logged in to an account keeps a signed cookie naming it for the account: its attempts are counted
# on their own, so nobody else's guessing (not even up to the ceiling) keeps it out. docs/staff-access.md.
DEVICE_COOKIE = "giving_device"
DEVICE_PURPOSE = "login-device"
KNOWN_DEVICE_SECONDS = 90 * 24 * 3600
# Wrong TOTP codes given with the right password: after this many in a clock hour, codes are refused until it ends.
TOTP_FAILURES_PER_HOUR = 5
TOTP_FAILURE_WINDOW_SECONDS = 3600
# An API token's `last_used_at` (the admin's "Last used") is written at most once in this many seconds per token.
TOKEN_USE_RECORD_SECONDS = 60
_SIX_DIGITS = re.compile(r"[0-9]{6}")

_hasher = argon2.PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    role: StaffRole

    def may(self, *roles: StaffRole) -> bool:
        return self.role == StaffRole.ADMIN or self.role in roles


def principal_of(user: StaffUser) -> Principal:
    # The role column comes back from the database as a plain string.
    return Principal(user.id, user.email, StaffRole(user.role))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- users and passwords -------------------------------------------------------------------------------------


def normalise_staff_email(raw: str) -> str:
    try:
        return validate_email((raw or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(f"{raw!r} is not an email address: {exc}", {"email": "Enter a valid email"}) from exc


def parse_role(raw: str) -> StaffRole:
    try:
        return StaffRole((raw or "").strip().lower())
    except ValueError as exc:
        roles = ", ".join(r.value for r in StaffRole)
        raise ValidationFailed(f"{raw!r} is not a role; use one of {roles}", {"role": "Choose a role"}) from exc


PASSWORD_TOO_LONG = f"A password has at most {MAX_PASSWORD_LENGTH:,} characters."


def password_problem(password: str) -> str | None:
    """What is wrong with `password` as a new password, in words for its form field; None if nothing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Use at most {MAX_PASSWORD_LENGTH:,} characters"
    return None


def hash_password(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise ValidationFailed(f"a password needs {problem.removeprefix('Use ')}", {"password": problem})
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


@dataclass(frozen=True)
class NewStaffUser:
    user_id: uuid.UUID
    email: str
    role: StaffRole
    # For roles that log in with a code: scan into an authenticator app (shown once).
    otpauth_uri: str | None


def add_staff_user(uow: UnitOfWork, email: str, role: str | StaffRole, password: str, *, issuer: str) -> NewStaffUser:
    """A new staff user. Finance and admin get a TOTP secret, returned once as an `otpauth://` URI."""
    address = normalise_staff_email(email)
    staff_role = parse_role(str(role))
    password_hash = hash_password(password)
    if uow.session.exec(select(StaffUser).where(StaffUser.email == address)).first() is not None:
        raise Conflict(f"a staff user {address} already exists")
    totp_secret = pyotp.random_base32() if staff_role in ROLES_WITH_TOTP else None
    user = StaffUser(email=address, role=staff_role, password_hash=password_hash, totp_secret=totp_secret)
    uow.session.add(user)
    uow.session.flush()
    audit(uow, None, "staff_user_created", "staff_user", user.id, {"email": address, "role": staff_role.value})
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=address, issuer_name=issuer) if totp_secret else None
    return NewStaffUser(user.id, address, staff_role, uri)


def reset_totp(uow: UnitOfWork, user: StaffUser, *, issuer: str, by: Principal | None = None) -> str | None:
    """For a user who lost their authenticator: the old TOTP secret is cleared (its codes stop working) and every
    session of the user ends. Finance and admin get a new secret at once, returned as an `otpauth://` URI to scan
    (shown once, as at `add_staff_user`: that is how enrolment works); another role needs none, so gets None and
    logs in with the password alone. Audited as `reset_2fa`."""
    had_secret = user.totp_secret is not None
    user.totp_secret = pyotp.random_base32() if StaffRole(user.role) in ROLES_WITH_TOTP else None
    # The last step used was of the old secret: the new secret's codes start afresh.
    user.totp_last_step = None
    uow.session.add(user)
    revoke_sessions(uow, user.id)
    # Wrong codes given for the old secret (tried from memory once the app was lost) do not lock out the new one.
    uow.session.execute(delete(RateLimitHit).where(col(RateLimitHit.key) == f"login:totp:{user.id}"))
    detail = {"email": user.email, "had_secret": had_secret, "new_secret": user.totp_secret is not None}
    audit(uow, by, "reset_2fa", "staff_user", user.id, detail)
    if user.totp_secret is None:
        return None
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=issuer)


def user_by_email(session: Session, email: str) -> StaffUser | None:
    return session.exec(select(StaffUser).where(StaffUser.email == (email or "").strip().lower())).first()


def set_password(uow: UnitOfWork, user_id: uuid.UUID, password: str) -> None:
    """A new password; every login session and every outstanding reset link of the user ends."""
    user = uow.session.get(StaffUser, user_id)
    if user is None:
        raise NotFound(f"no staff user {user_id}")
    user.password_hash = hash_password(password)
    uow.session.add(user)
    revoke_sessions(uow, user_id)
    end_reset_links(uow, user_id)


def end_reset_links(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """Every outstanding reset link of the user stops working (marked used), emailed or not yet."""
    uow.session.execute(
        update(PasswordReset)
        .where(col(PasswordReset.user_id) == user_id, col(PasswordReset.used_at).is_(None))
        .values(used_at=utc_now())
    )


# --- API tokens ---------------------------------------------------------------------------------------------


def create_api_token(
    uow: UnitOfWork, email: str, *, name: str = "", lifetime: dt.timedelta | None = dt.timedelta(days=365)
) -> str:
    """A new token for a user, returned once; only its hash is stored."""
    user = uow.session.exec(select(StaffUser).where(StaffUser.email == email.strip().lower())).first()
    if user is None or not user.active:
        raise NotFound(f"no active staff user {email}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    uow.session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            name=name,
            expires_at=utc_now() + lifetime if lifetime else None,
        )
    )
    audit(uow, None, "api_token_created", "staff_user", user.id, {"email": user.email, "name": name})
    return token


def revoke_api_token(uow: UnitOfWork, token: str) -> bool:
    """Revoke one token (given in full); False if it is unknown or already revoked."""
    row = uow.session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip()))).first()
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utc_now()
    uow.session.add(row)
    audit(uow, None, "api_token_revoked", "staff_user", row.user_id, {"token_id": str(row.id)})
    return True


def revoke_user_tokens(uow: UnitOfWork, email: str) -> int:
    """Revoke every live token of a user; returns how many."""
    user = user_by_email(uow.session, email)
    if user is None:
        raise NotFound(f"no staff user {email}")
    result = uow.session.execute(
        update(ApiToken)
        .where(col(ApiToken.user_id) == user.id, col(ApiToken.revoked_at).is_(None))
        .values(revoked_at=utc_now())
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    audit(uow, None, "api_tokens_revoked", "staff_user", user.id, {"count": count})
    return count


def deactivate_staff_user(uow: UnitOfWork, user: StaffUser) -> int:
    """Stop `user` logging in or using the API: every session, every API token and every reset link ends (a
    reactivation brings none of them back: a link refused only while inactive set a password again once the
    account was reactivated within its hour). The row stays, for the audit log. Returns how many tokens were
    revoked."""
    user.active = False
    uow.session.add(user)
    revoke_sessions(uow, user.id)
    end_reset_links(uow, user.id)
    return revoke_user_tokens(uow, user.email)


def principal_from_token(session: Session, token: str) -> Principal | None:
    found = _live_token(session, token)
    return principal_of(found[1]) if found is not None else None


def _live_token(session: Session, token: str) -> tuple[ApiToken, StaffUser] | None:
    """The token's row and its user, for a token that is known, unexpired, unrevoked and of an active user."""
    row = session.exec(
        select(ApiToken, StaffUser)
        .join(StaffUser, StaffUser.id == ApiToken.user_id)  # type: ignore[arg-type]
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None:
        return None
    token_row, user = row
    now = utc_now()
    if token_row.revoked_at is not None or (token_row.expires_at is not None and token_row.expires_at <= now):
        return None
    if not user.active:
        return None
    return token_row, user


def token_use_due(last_used_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a use of a token last recorded at `last_used_at` is worth recording (`TOKEN_USE_RECORD_SECONDS`)."""
    return last_used_at is None or last_used_at <= now - dt.timedelta(seconds=TOKEN_USE_RECORD_SECONDS)


def record_token_use(uow: UnitOfWork, token_id: uuid.UUID, now: dt.datetime) -> bool:
    """Set the token's `last_used_at` to `now` unless a use was recorded within `TOKEN_USE_RECORD_SECONDS`: one
    conditional UPDATE, so a busy client writes the row about once a minute, not on every call. True if written."""
    written = uow.session.execute(
        update(ApiToken)
        .where(
            col(ApiToken.id) == token_id,
            or_(
                col(ApiToken.last_used_at).is_(None),
                col(ApiToken.last_used_at) <= now - dt.timedelta(seconds=TOKEN_USE_RECORD_SECONDS),
            ),
        )
        .values(last_used_at=now)
    )
    return bool(written.rowcount)  # type: ignore[attr-defined]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def not_signed_in() -> Unauthorized:
    return Unauthorized("a valid API token or staff login is needed", headers={"WWW-Authenticate": "Bearer"})


def require_staff(session: Session, request: Request, *roles: StaffRole) -> Principal:
    """The caller, from its bearer token or its staff login session; 401 if none, 403 if its role may not.
    With no `roles`, any staff member may."""
    principal: Principal | None = None
    token = bearer_token(request)
    if token is not None:
        # `ApiCredentialsMiddleware` found this token valid a moment ago: its answer, not a second query.
        checked = getattr(request.state, "api_principal", None) if hasattr(request, "state") else None
        principal = checked if checked is not None else principal_from_token(session, token)
    else:
        principal = getattr(request.state, "staff", None) if hasattr(request, "state") else None
    if principal is None:
        raise not_signed_in()
    if roles and not principal.may(*roles):
        raise Forbidden(f"the {principal.role.value} role may not do this")
    return principal


# --- login sessions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    """What `login` found. On success the caller sets the cookies (`set_session_cookie`) and redirects."""

    principal: Principal | None = None
    session_token: str | None = None
    csrf_token: str | None = None
    expires_at: dt.datetime | None = None
    # On success: the known-device cookie's value for this browser and account (`set_session_cookie` sets it).
    device_token: str | None = None
    # Words for the form when it failed, for its field `error_field`; `rate_limited` means answer 429.
    error: str | None = None
    error_field: str = "email"
    rate_limited: bool = False
    # Seconds until a rate-limited attempt may be tried again (for `Retry-After`).
    retry_after: int = 0

    @property
    def ok(self) -> bool:
        return self.principal is not None


WRONG_LOGIN = "The email, password or code is wrong."


@dataclass(frozen=True)
class _LoginLimit:
    name: str  # in the `login_rate_limited` audit entry
    key: str
    limit: int
    window_seconds: int


def client_network(client: str) -> str:
    """What requests from `client` are counted under (logins, and every public form's per-client limit): an IPv4
    address itself, an IPv6 address by its /64 (an IPv4-mapped one as the IPv4 address), anything else (no address
    known) as it is."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, LOGIN_IPV6_PREFIX), strict=False))
    return str(address)


def _login_limits(address: str, client: str, device: str | None, per_minute: int) -> list[_LoginLimit]:
    """The counters an attempt goes through, in order. A known device has its own; anyone else counts per client,
    per account and client, and then against the account's ceiling."""
    per_hour = per_minute * LOGIN_ATTEMPTS_PER_HOUR_FACTOR
    if device is not None:
        return [
            _LoginLimit("device", f"login:device:{device}", per_minute, LOGIN_WINDOW_SECONDS),
            _LoginLimit("device-hour", f"login:device-hour:{device}", per_hour, LOGIN_HOUR_SECONDS),
        ]
    network = client_network(client)
    return [
        _LoginLimit("client", f"login:client:{network}", per_minute, LOGIN_WINDOW_SECONDS),
        _LoginLimit("email-client-hour", f"login:email-client-hour:{address}|{network}", per_hour, LOGIN_HOUR_SECONDS),
        _LoginLimit(
            "email-hour",
            f"login:email-hour:{address}",
            per_minute * LOGIN_ACCOUNT_CEILING_FACTOR,
            LOGIN_HOUR_SECONDS,
        ),
    ]


def _refused_by(session: Session, limits: list[_LoginLimit]) -> _LoginLimit | None:
    """Count the attempt against each limit in turn; the first it is over, if any. An attempt refused by one limit
    is not counted by the later ones: one client hammering an account never uses up the account's ceiling."""
    for limit in limits:
        if not ratelimit.hit(session, limit.key, limit=limit.limit, window_seconds=limit.window_seconds):
            return limit
    return None


def _password_mark(user: StaffUser) -> str:
    """Changes with the password: a known-device cookie stops counting as known once the password changes."""
    return hash_token(user.password_hash)[:16]


def _known_device(token: str, user: StaffUser | None, secret: str) -> str | None:
    """The device id in a valid known-device cookie for this user and password, or None."""
    if not token or user is None or not user.active:
        return None
    try:
        payload = signing.unsign(secret, DEVICE_PURPOSE, token, max_age_seconds=KNOWN_DEVICE_SECONDS)
    except signing.InvalidToken:
        return None
    if not isinstance(payload, dict) or payload.get("u") != str(user.id):
        return None
    if not hmac.compare_digest(str(payload.get("p", "")), _password_mark(user)):
        return None
    device = payload.get("d")
    return device if isinstance(device, str) and device else None


def login(
    uow: UnitOfWork,
    email: str,
    password: str,
    totp: str = "",
    *,
    client: str = "unknown",
    device_token: str = "",
    session_hours: int = 8,
    rate_per_minute: int = 10,
    settings: WebSettings | None = None,
) -> LoginResult:
    """Check a login and start a session. A failed or refused attempt does not raise: it returns the reason, so
    the caller's unit of work still commits the rate-limit count and the audit entry.
    `device_token` is the browser's known-device cookie (`device_token_of`), if any.
    `settings` (the `[web]` section), when given, supplies `session_hours`, `login_rate_per_minute` and the
    signing secret (otherwise the one kept in the database)."""
    configured_secret = ""
    if settings is not None:
        session_hours, rate_per_minute = settings.session_hours, settings.login_rate_per_minute
        configured_secret = settings.secret_key.get_secret_value()
    address = (email or "").strip().lower()
    session = uow.session
    user = user_by_email(session, address)
    device = (
        _known_device(device_token, user, signing.signing_secret(session, configured_secret)) if device_token else None
    )
    refused = _refused_by(session, _login_limits(address, client, device, rate_per_minute))
    if refused is not None:
        detail = {"email": address, "client": client, "limit": refused.name}
        audit(uow, None, "login_rate_limited", "staff_user", "", detail)
        wait = ratelimit.retry_after(refused.window_seconds)
        if refused.window_seconds == LOGIN_WINDOW_SECONDS:
            error = "Too many login attempts. Wait a minute and try again."
        else:
            error = f"Too many login attempts for this account. Try again in {(wait + 59) // 60} minutes."
            if refused.name == "email-hour":
                error += " A browser that has logged in to it before can still log in."
        return LoginResult(error=error, rate_limited=True, retry_after=wait)
    if len(password) > MAX_PASSWORD_LENGTH:
        # No password this long can be set, so it is refused as it is (cutting it to fit would let in a password
        # with anything after its end); saying why tells nothing about the account.
        audit(uow, None, "login_failed", "staff_user", "", {"email": address, "client": client})
        return LoginResult(error=PASSWORD_TOO_LONG, error_field="password")
    if user is None or not user.active:
        password_matches(_DUMMY_HASH, password)
        audit(uow, None, "login_failed", "staff_user", "", {"email": address, "client": client})
        return LoginResult(error=WRONG_LOGIN)
    if not password_matches(user.password_hash, password):
        audit(uow, None, "login_failed", "staff_user", user.id, {"email": address, "client": client})
        return LoginResult(error=WRONG_LOGIN)
    if totp_required(user):
        # Only the right password gets this far, so only someone who knows it can use up the hour's wrong codes.
        # Refused codes are answered like any wrong login: the form never confirms that the password was right.
        totp_key = f"login:totp:{user.id}"
        if ratelimit.count(session, totp_key, window_seconds=TOTP_FAILURE_WINDOW_SECONDS) >= TOTP_FAILURES_PER_HOUR:
            audit(uow, None, "login_totp_locked", "staff_user", user.id, {"email": address, "client": client})
            return LoginResult(error=WRONG_LOGIN)
        if not _totp_ok(session, user, totp):
            ratelimit.hit(session, totp_key, limit=TOTP_FAILURES_PER_HOUR, window_seconds=TOTP_FAILURE_WINDOW_SECONDS)
            audit(uow, None, "login_failed", "staff_user", user.id, {"email": address, "client": client})
            return LoginResult(error=WRONG_LOGIN)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.add(user)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utc_now()
    expires = now + dt.timedelta(hours=session_hours)
    session.add(
        StaffSession(id_hash=hash_token(token), user_id=user.id, csrf_token=csrf, created_at=now, expires_at=expires)
    )
    # This browser is known to the account from now on (the same device id if it already was).
    known = {"u": str(user.id), "p": _password_mark(user), "d": device or secrets.token_urlsafe(16)}
    device_cookie = signing.sign(signing.signing_secret(session, configured_secret), DEVICE_PURPOSE, known)
    principal = principal_of(user)
    audit(uow, principal, "login", "staff_user", user.id, {"client": client})
    return LoginResult(
        principal=principal, session_token=token, csrf_token=csrf, expires_at=expires, device_token=device_cookie
    )


def totp_required(user: StaffUser) -> bool:
    return user.role in ROLES_WITH_TOTP or user.totp_secret is not None


def _totp_ok(session: Session, user: StaffUser, code: str) -> bool:
    if not totp_required(user):
        return True
    if not user.totp_secret:
        return False  # finance/admin without a secret cannot log in until one is set
    code = "".join((code or "").split())
    # ASCII digits only: `str.isdigit` also takes other scripts' digits, on which `hmac.compare_digest` raises.
    if not _SIX_DIGITS.fullmatch(code):
        return False
    totp = pyotp.TOTP(user.totp_secret)
    now = utc_now()
    # One step either side for clock drift.
    steps = [totp.timecode(now) + drift for drift in (-1, 0, 1)]
    matched = [step for step in steps if hmac.compare_digest(totp.generate_otp(step), code)]
    return bool(matched) and _use_totp_step(session, user.id, matched[0])


def _use_totp_step(session: Session, user_id: uuid.UUID, step: int) -> bool:
    """Record `step` as used unless it (or a later one) already was: one conditional UPDATE, so two logins racing
    with the same code cannot both pass."""
    used = session.execute(
        update(StaffUser)
        .where(
            col(StaffUser.id) == user_id,
            or_(col(StaffUser.totp_last_step).is_(None), col(StaffUser.totp_last_step) < step),
        )
        .values(totp_last_step=step)
        .returning(col(StaffUser.id))
    ).first()
    return used is not None


def session_principal(session: Session, session_token: str) -> tuple[Principal, str] | None:
    """(principal, its CSRF token) for a live session cookie, or None."""
    row = session.exec(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.user_id)  # type: ignore[arg-type]
        .where(StaffSession.id_hash == hash_token(session_token))
    ).first()
    if row is None:
        return None
    staff_session, user = row
    if staff_session.revoked_at is not None or staff_session.expires_at <= utc_now() or not user.active:
        return None
    return principal_of(user), staff_session.csrf_token


def logout(uow: UnitOfWork, session_token: str) -> bool:
    """End a session (the cookie stops working at once, even if kept)."""
    row = uow.session.get(StaffSession, hash_token(session_token))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utc_now()
    uow.session.add(row)
    return True


def revoke_sessions(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    uow.session.execute(
        update(StaffSession)
        .where(col(StaffSession.user_id) == user_id, col(StaffSession.revoked_at).is_(None))
        .values(revoked_at=utc_now())
    )


def set_session_cookie(response: Response, result: LoginResult, *, secure: bool) -> None:
    """The session cookie, the known-device cookie (sent only to the staff pages, where the login form is) and a new
    pre-login CSRF token (`renew_pre_login_csrf`)."""
    if result.session_token is None or result.expires_at is None:
        raise ValueError("only a successful login sets the session cookie")
    max_age = int((result.expires_at - utc_now()).total_seconds())
    response.set_cookie(
        SESSION_COOKIE, result.session_token, max_age=max_age, path="/", httponly=True, samesite="lax", secure=secure
    )
    if result.device_token:
        response.set_cookie(
            DEVICE_COOKIE,
            result.device_token,
            max_age=KNOWN_DEVICE_SECONDS,
            path="/staff",
            httponly=True,
            samesite="lax",
            secure=secure,
        )
    renew_pre_login_csrf(response, secure=secure)


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    """Ends the session cookie (at logout), with a new pre-login CSRF token (`renew_pre_login_csrf`)."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
    renew_pre_login_csrf(response, secure=secure)


def renew_pre_login_csrf(response: Response, *, secure: bool) -> None:
    """A new random `giving_csrf` token, at login and at logout: the token from before a login never comes back
    after the logout, so whoever learnt it once (a shared computer, one planted by a login CSRF) cannot reuse it."""
    response.headers.append(
        "set-cookie", _cookie_header(CSRF_COOKIE, secrets.token_urlsafe(32), max_age=None, secure=secure)
    )


def session_token_of(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def device_token_of(request: Request) -> str:
    """The browser's known-device cookie (for `login`), or ""."""
    return request.cookies.get(DEVICE_COOKIE) or ""


# --- CSRF ---------------------------------------------------------------------------------------------------


class CsrfRejected(Forbidden):
    pass


def csrf_token(request: Request) -> str:
    """The token to put in a hidden `csrf_token` field of every staff form."""
    token = getattr(request.state, "csrf_token", None)
    if not token:
        raise RuntimeError("no CSRF token: StaffSessionMiddleware must wrap this path")
    return str(token)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    # Compared as bytes: `hmac.compare_digest` raises on str with non-ASCII text, which anyone may send.
    return (
        bool(expected)
        and bool(given)
        and hmac.compare_digest(
            str(expected).encode("utf-8", "surrogatepass"), str(given).encode("utf-8", "surrogatepass")
        )
    )


def verify_csrf(request: Request, form: Mapping[str, Any]) -> None:
    """403 unless the form (or the X-CSRF-Token header) carries this session's token."""
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not csrf_ok(getattr(request.state, "csrf_token", None), str(given) if given else None):
        raise CsrfRejected("the form's CSRF token is missing or out of date; reload the page and try again")


class ApiCredentialsMiddleware:
    """Pure ASGI: a request to the JSON API without a valid bearer token (none, unknown, revoked, expired, of an
    inactive user) is answered 401 before routing, so a caller who is not staff learns nothing from how its path,
    query or body would have been read (a malformed id or body gave 404 or 400). The role is checked by
    `require_staff`, with the caller found here (`request.state.api_principal`)."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/api/", open_paths: tuple[str, ...] = ()):
        self.app = app
        self.prefix = prefix
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.open_paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        token = bearer_token(request)
        principal = await run_in_threadpool(_token_principal, scope, token) if token is not None else None
        if principal is not None:
            scope.setdefault("state", {})["api_principal"] = principal
            await self.app(scope, receive, send)
            return
        from core.http import app_error_handler

        response = await app_error_handler(request, not_signed_in())
        await response(scope, receive, send)


def _token_principal(scope: Scope, token: str) -> Principal | None:
    """The caller of a valid token; its use is recorded (`record_token_use`) when the last one recorded is more
    than `TOKEN_USE_RECORD_SECONDS` old, so most calls only read."""
    runtime = scope["app"].state.runtime
    with runtime.read_session() as session:
        found = _live_token(session, token)
        if found is None:
            return None
        token_row, user = found
        principal, token_id, last_used_at = principal_of(user), token_row.id, token_row.last_used_at
    now = utc_now()
    if token_use_due(last_used_at, now):
        with runtime.unit_of_work() as uow:
            record_token_use(uow, token_id, now)
    return principal


class StaffSessionMiddleware:
    """Pure ASGI: on the staff paths, reads the session cookie and sets `request.state.staff` (or leaves it
    unset) and `request.state.csrf_token`. Before login the CSRF token lives in its own cookie, set here."""

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...] = ("/staff",), secure_cookies: bool = False):
        self.app = app
        self.paths = paths
        self.secure = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.paths):
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        state = scope.setdefault("state", {})
        set_cookies: list[str] = []
        found = None
        token = cookies.get(SESSION_COOKIE)
        if token:
            runtime = scope["app"].state.runtime
            found = await run_in_threadpool(_lookup_session, runtime, token)
            if found is None:
                set_cookies.append(_cookie_header(SESSION_COOKIE, "", max_age=0, secure=self.secure))
        if found is not None:
            state["staff"], state["csrf_token"] = found
        else:
            anonymous = cookies.get(CSRF_COOKIE, "")
            if len(anonymous) < 32:
                anonymous = secrets.token_urlsafe(32)
                set_cookies.append(_cookie_header(CSRF_COOKIE, anonymous, max_age=None, secure=self.secure))
            state["csrf_token"] = anonymous

        if not set_cookies:
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *((b"set-cookie", c.encode()) for c in set_cookies)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def _lookup_session(runtime: Any, token: str) -> tuple[Principal, str] | None:
    with runtime.read_session() as session:
        return session_principal(session, token)


def _cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies, read as `request.cookies` reads them (Starlette's lenient parser). Not
    `SimpleCookie`: it drops every cookie from the first one not to its grammar (a JSON value, a space), so one
    cookie of another application on the site kept every member of staff logged out."""
    raw = b"; ".join(value for name, value in scope.get("headers", []) if name == b"cookie").decode("latin-1")
    return cookie_parser(raw)


def _cookie_header(name: str, value: str, *, max_age: int | None, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


# --- password reset -----------------------------------------------------------------------------------------


def request_password_reset(uow: UnitOfWork, email: str) -> bool:
    """Email a single-use reset link (valid for an hour) if the user exists. The caller answers the same either
    way, so the form does not reveal who is staff."""
    user = user_by_email(uow.session, email)
    if user is None or not user.active:
        return False
    # The row's first id is the hash of a random value nobody keeps: no key opens it until the sending job gives it
    # one (`issue_password_reset_link`), so neither the row nor the job's arguments hold anything usable.
    reset_id = hash_token(secrets.token_urlsafe(32))
    now = utc_now()
    uow.session.add(
        PasswordReset(token_hash=reset_id, user_id=user.id, created_at=now, expires_at=now + PASSWORD_RESET_LIFETIME)
    )
    uow.enqueue("core.send_password_reset", reset_id=reset_id)
    audit(uow, None, "password_reset_requested", "staff_user", user.id)
    return True


def ask_for_password_reset(uow: UnitOfWork, email: str) -> None:
    """What the forgotten-password form does: queue the address. The job (`core.request_password_reset`) looks it
    up and, for a staff user, records the reset and sends the link; so the request writes and sends the same
    whether or not the address is staff, and its time does not tell."""
    uow.enqueue("core.request_password_reset", email=email)


@actor("core.request_password_reset", queue="default", time_limit_ms=60_000, max_retries=5)
def request_password_reset_job(uow: UnitOfWork, email: str) -> None:
    request_password_reset(uow, email)


def password_reset_link(base_url: str, secret: str, reset_key: str) -> str:
    token = signing.sign(secret, PASSWORD_RESET_PURPOSE, reset_key)
    return f"{base_url.rstrip('/')}/staff/reset-password?token={token}"


def issue_password_reset_link(uow: UnitOfWork, reset_id: str, *, base_url: str, secret: str) -> tuple[str, str] | None:
    """(the user's email, the link) for an outstanding reset, or None if it was used, expired or already issued.

    The reset's key is made here and exists only in the returned link (that is, in the email): the row keeps its
    SHA-256 in place of `reset_id`, so reading the database (even with the signing secret kept in `app_secrets`)
    gives nothing that resets a password. One conditional UPDATE: a second run for the same reset finds no row.
    """
    reset_key = secrets.token_urlsafe(32)
    issued = uow.session.execute(
        update(PasswordReset)
        .where(
            col(PasswordReset.token_hash) == reset_id,
            col(PasswordReset.used_at).is_(None),
            col(PasswordReset.expires_at) > utc_now(),
        )
        .values(token_hash=hash_token(reset_key))
        .returning(col(PasswordReset.user_id))
    ).first()
    if issued is None:
        return None
    user = uow.session.get(StaffUser, issued[0])
    if user is None or not user.active:
        return None
    return user.email, password_reset_link(base_url, secret, reset_key)


def reset_password(uow: UnitOfWork, token: str, new_password: str, *, secret: str) -> Principal:
    """Set a new password from a reset link; the link then stops working and every session ends."""
    try:
        reset_key = signing.unsign(
            secret, PASSWORD_RESET_PURPOSE, token, max_age_seconds=int(PASSWORD_RESET_LIFETIME.total_seconds())
        )
    except signing.InvalidToken as exc:
        raise ValidationFailed(f"this reset link cannot be used: {exc}") from exc
    # Only the key's hash is stored: the key itself travels only in the emailed link. Marked used by one conditional
    # UPDATE: of two uses at the same moment, the second waits for the first and then finds no unused row.
    now = utc_now()
    used = uow.session.execute(
        update(PasswordReset)
        .where(
            col(PasswordReset.token_hash) == hash_token(str(reset_key)),
            col(PasswordReset.used_at).is_(None),
            col(PasswordReset.expires_at) > now,
        )
        .values(used_at=now)
        .returning(col(PasswordReset.user_id))
    ).first()
    if used is None:
        raise ValidationFailed("this reset link has been used or has expired; ask for a new one")
    user = uow.session.get(StaffUser, used[0])
    if user is None or not user.active:
        # Deactivation ends every way in, a link already emailed too (its password would outlive a reactivation).
        # (Raising rolls the unit of work back, so the link is not marked used.)
        raise ValidationFailed("this reset link has been used or has expired; ask for a new one")
    set_password(uow, user.id, new_password)
    principal = principal_of(user)
    audit(uow, principal, "password_reset", "staff_user", user.id)
    return principal


@actor("core.send_password_reset", queue="default", time_limit_ms=60_000, max_retries=5)
def send_password_reset(uow: UnitOfWork, reset_id: str) -> None:
    """Give the reset its key and email the link. If the email fails, the unit of work rolls back (the row keeps
    `reset_id`) and the retry makes another key; a link emailed by a run whose commit then failed does not work."""
    from core.mailer import Email, send_email
    from core.runtime import get_runtime

    settings = get_runtime().settings
    secret = signing.signing_secret(uow.session, settings.web.secret_key.get_secret_value())
    issued = issue_password_reset_link(uow, reset_id, base_url=settings.web.base_url, secret=secret)
    if issued is None:
        return
    email, link = issued
    send_email(
        Email(
            to=email,
            subject=f"Reset your {settings.charity.name} staff password",
            text=(
                f"{link}\n\nSomeone asked to reset the password of your staff login. Open the link above within an "
                "hour to choose a new one. If it was not you, ignore this email: your password stays as it is.\n"
            ),
            kind="password_reset",
        ),
        settings.email,
    )


# --- audit --------------------------------------------------------------------------------------------------


def audit(
    uow: UnitOfWork,
    principal: Principal | None,
    action: str,
    object_type: str,
    object_id: object = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Record who read or exported what (every view of personal data and every export)."""
    uow.session.add(
        AuditEntry(
            user_id=principal.user_id if principal else None,
            actor=principal.email if principal else "system",
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            detail=detail or {},
        )
    )
