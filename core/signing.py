"""Signed, expiring tokens for links and cookies (itsdangerous), under one secret.

The secret is `[web] secret_key` (from the environment). When it is not set, one is generated the first time it
is needed and kept in `app_secrets`, so every web and worker process signs with the same key and links outlive a
restart. Concurrent first use is safe: the row is inserted with ON CONFLICT DO NOTHING and everyone then reads
whichever value won.

Each use has its own `purpose` (the itsdangerous salt), so a token made for one use never passes as another.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import sqlalchemy as sa
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import event
from sqlmodel import Session

from core.db import conflict_insert
from core.models import AppSecret

SECRET_NAME = "signing_key"

_lock = threading.Lock()
# Generated secrets per database (a process may talk to several in tests); a secret never changes once stored.
_cache: dict[str, str] = {}


class InvalidToken(Exception):
    """A token that was tampered with, made for another purpose, or expired."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


def _database_key(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def signing_secret(session: Session, configured: str = "") -> str:
    """The configured secret, or the one kept in the database (created by the first process that needs it)."""
    if configured:
        return configured
    key = _database_key(session)
    with _lock:
        cached = _cache.get(key)
    if cached:
        return cached
    table: sa.Table = AppSecret.__table__  # type: ignore[attr-defined]
    select = sa.select(table.c.value).where(table.c.name == SECRET_NAME)
    found = session.execute(select).scalar_one_or_none()
    if found is None:
        insert = conflict_insert(session.get_bind().dialect.name)
        session.execute(
            insert(table).values(name=SECRET_NAME, value=secrets.token_urlsafe(48)).on_conflict_do_nothing()
        )
        found = session.execute(select).scalar_one()
        # Kept in memory only once the caller's transaction commits: a rolled-back secret must not outlive it.
        value = str(found)
        event.listen(session, "after_commit", lambda _session: _remember(key, value), once=True)
        return value
    _remember(key, str(found))
    return str(found)


def _remember(key: str, value: str) -> None:
    with _lock:
        _cache[key] = value


def forget_cached_secrets() -> None:
    """Tests empty `app_secrets` between tests; the cache must not outlive the row."""
    with _lock:
        _cache.clear()


def serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=f"giving:{purpose}")


def sign(secret: str, purpose: str, payload: Any) -> str:
    return serializer(secret, purpose).dumps(payload)


def unsign(secret: str, purpose: str, token: str, *, max_age_seconds: int | None) -> Any:
    """The payload of a token made by `sign` for this purpose, or InvalidToken."""
    try:
        return serializer(secret, purpose).loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        raise InvalidToken("the link has expired", expired=True) from exc
    except BadSignature as exc:
        raise InvalidToken("the link is not valid") from exc
