"""Staff access: API tokens and roles (the mechanism every package's routes use).

`require_staff(request, *roles)` answers 401 without a valid token or session and 403 for a role that may not.
Admin may do everything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select
from starlette.requests import Request

from core.clock import utc_now
from core.db import UnitOfWork
from core.errors import Forbidden, NotFound, Unauthorized
from core.models import ApiToken, AuditEntry, StaffRole, StaffUser

TOKEN_PREFIX = "gvg_"


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    email: str
    role: StaffRole

    def may(self, *roles: StaffRole) -> bool:
        return self.role == StaffRole.ADMIN or self.role in roles


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
    return token


def principal_from_token(session: Session, token: str) -> Principal | None:
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
    return Principal(user.id, user.email, user.role)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_staff(session: Session, request: Request, *roles: StaffRole) -> Principal:
    """The caller, from its bearer token or its staff login session; 401 if none, 403 if its role may not.
    With no `roles`, any staff member may."""
    principal: Principal | None = None
    token = bearer_token(request)
    if token is not None:
        principal = principal_from_token(session, token)
    else:
        principal = getattr(request.state, "staff", None) if hasattr(request, "state") else None
    if principal is None:
        raise Unauthorized("a valid API token or staff login is needed", headers={"WWW-Authenticate": "Bearer"})
    if roles and not principal.may(*roles):
        raise Forbidden(f"the {principal.role.value} role may not do this")
    return principal


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
