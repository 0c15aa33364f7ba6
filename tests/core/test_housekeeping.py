"""The composition root's periodic housekeeping removes only what has expired."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from core.clock import utc_now
from core.models import PasswordReset, RateLimitHit, StaffRole, StaffSession, StaffUser
from core.runtime import Runtime
from giving.tasks import prune_rate_limits, prune_staff_sessions


def test_prunes_expired_sessions_resets_and_rate_limit_windows(runtime: Runtime) -> None:
    now = utc_now()
    old, fresh = now - dt.timedelta(days=30), now + dt.timedelta(hours=1)
    with runtime.unit_of_work() as uow:
        user = StaffUser(email="a@example.org", role=StaffRole.ADMIN, password_hash="x")
        uow.session.add(user)
        uow.session.flush()
        uow.session.add(StaffSession(id_hash="old", user_id=user.id, csrf_token="c", expires_at=old))
        uow.session.add(StaffSession(id_hash="live", user_id=user.id, csrf_token="c", expires_at=fresh))
        uow.session.add(PasswordReset(token_hash="old", user_id=user.id, expires_at=old))
        uow.session.add(PasswordReset(token_hash="live", user_id=user.id, expires_at=fresh))
        uow.session.add(RateLimitHit(key="k", window_start=old, count=3))
        uow.session.add(RateLimitHit(key="k", window_start=now.replace(microsecond=0), count=1))
    with runtime.unit_of_work() as uow:
        assert prune_staff_sessions(uow) == 2
        assert prune_rate_limits(uow) == 1
    with runtime.read_session() as session:
        assert [s.id_hash for s in session.exec(select(StaffSession)).all()] == ["live"]
        assert [r.token_hash for r in session.exec(select(PasswordReset)).all()] == ["live"]
        assert [r.count for r in session.exec(select(RateLimitHit)).all()] == [1]
