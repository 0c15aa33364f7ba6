"""A fixed-window rate limiter kept in the database, so every web process shares the same counters.

    allowed = hit(session, f"donate:{client_network(client_address(request))}", limit=10, window_seconds=60)

`hit` counts one request against `key` in the current window (windows start at multiples of `window_seconds`
since the Unix epoch, UTC) and says whether it is within `limit`. The count is one atomic
`INSERT ... ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1 RETURNING count` on SQLite and on
PostgreSQL, so concurrent requests from many processes never both slip through the last slot.

Call it in its own short unit of work, before the work it guards, so a refused or failing request still counts
(card testers send invalid forms too) and the counter's row lock is held only for that short transaction.
Keys name the use and the client, e.g. `donate:203.0.113.7`, `login:2001:db8:1:2::/64`: a client counted by
`core.auth.client_network` (an IPv6 one by its /64, which one host usually owns whole). A key longer than the column is
replaced by its SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa
from sqlmodel import Session

from core.clock import utc_now
from core.db import conflict_insert
from core.models import RateLimitHit

KEY_MAX_LENGTH = 200
_table: sa.Table = RateLimitHit.__table__  # type: ignore[attr-defined]


def window_start(now: dt.datetime, window_seconds: int) -> dt.datetime:
    """The start of the fixed window `now` falls in."""
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % window_seconds, dt.UTC)


def retry_after(window_seconds: int, *, now: dt.datetime | None = None) -> int:
    """Whole seconds until the current window ends (for a `Retry-After` header)."""
    now = now or utc_now()
    end = window_start(now, window_seconds) + dt.timedelta(seconds=window_seconds)
    return max(1, int((end - now).total_seconds() + 0.999))


def _stored_key(key: str) -> str:
    if len(key) <= KEY_MAX_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def hit(session: Session, key: str, *, limit: int, window_seconds: int, now: dt.datetime | None = None) -> bool:
    """Count one request for `key`; True while the window's count is at most `limit`.

    Writes through `session` without committing: the caller's unit of work commits.
    """
    if limit < 1 or window_seconds < 1:
        raise ValueError("limit and window_seconds must be positive")
    start = window_start(now or utc_now(), window_seconds)
    stored = _stored_key(key)
    dialect = session.get_bind().dialect.name
    insert = conflict_insert(dialect)
    statement = (
        insert(_table)
        .values(key=stored, window_start=start, count=1)
        .on_conflict_do_update(index_elements=["key", "window_start"], set_={"count": _table.c.count + 1})
        .returning(_table.c.count)
    )
    count = int(session.execute(statement).scalar_one())
    if count == 1:
        # A new window for this key: its older windows are of no more use. (Keys that never come back are left
        # to `prune`, run periodically.)
        session.execute(sa.delete(_table).where(_table.c.key == stored, _table.c.window_start < start))
    return count <= limit


def count(session: Session, key: str, *, window_seconds: int, now: dt.datetime | None = None) -> int:
    """How many times `key` was hit in the current window (0 if never), without counting this look."""
    start = window_start(now or utc_now(), window_seconds)
    found = session.execute(
        sa.select(_table.c.count).where(_table.c.key == _stored_key(key), _table.c.window_start == start)
    ).scalar_one_or_none()
    return int(found or 0)


def prune(session: Session, *, before: dt.datetime) -> int:
    """Delete every window that started before `before`; returns how many rows went."""
    result = session.execute(sa.delete(_table).where(_table.c.window_start < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
