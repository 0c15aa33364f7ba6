"""The composition root's periodic housekeeping removes only what has expired."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from core.clock import utc_now
from core.models import Job, JobStatus, PasswordReset, RateLimitHit, ScheduledRun, StaffRole, StaffSession, StaffUser
from core.runtime import Runtime
from giving.tasks import prune_finished_jobs, prune_rate_limits, prune_staff_sessions


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


def test_prunes_jobs_done_and_periodic_runs_after_a_week_keeping_failed_and_pending_jobs(runtime: Runtime) -> None:
    """Every periodic run writes a `scheduled_runs` row and a `jobs` row (the 1-minute sweeps alone ~2,900 of each
    a day), every receipt and email a job: without pruning both tables grow for ever."""
    now = utc_now()
    old, recent = now - dt.timedelta(days=30), now - dt.timedelta(hours=1)
    with runtime.unit_of_work() as uow:
        for name, status, done_at in [
            ("old-done", JobStatus.DONE, old),
            ("recent-done", JobStatus.DONE, recent),
            ("old-failed", JobStatus.FAILED, None),
            ("old-pending", JobStatus.PENDING, None),
        ]:
            uow.session.add(Job(actor_name=name, status=status, created_at=old, available_at=old, done_at=done_at))
        uow.session.add(ScheduledRun(name="core.resend_pending_jobs", period_start=old.replace(microsecond=0)))
        uow.session.add(ScheduledRun(name="webhooks.catch_up", period_start=recent.replace(microsecond=0)))
    with runtime.unit_of_work() as uow:
        assert prune_finished_jobs(uow) == 2
    with runtime.read_session() as session:
        assert sorted(j.actor_name for j in session.exec(select(Job)).all()) == [
            "old-failed",
            "old-pending",
            "recent-done",
        ]
        assert [r.name for r in session.exec(select(ScheduledRun)).all()] == ["webhooks.catch_up"]


def test_the_prune_job_runs_on_a_schedule() -> None:
    from core import jobs

    assert jobs.PERIODIC["core.prune_finished_jobs"].actor_name == "core.prune_finished_jobs"
