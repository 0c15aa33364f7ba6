"""The database-backed rate limiter, on SQLite and PostgreSQL, including concurrent hits from many connections."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from core.models import RateLimitHit
from core.ratelimit import hit, prune, retry_after, window_start
from core.runtime import Runtime

T0 = dt.datetime(2026, 3, 1, 12, 0, 5, tzinfo=dt.UTC)


def _hit(runtime: Runtime, key: str, *, limit: int = 3, window: int = 60, now: dt.datetime = T0) -> bool:
    with runtime.unit_of_work() as uow:
        return hit(uow.session, key, limit=limit, window_seconds=window, now=now)


def _rows(runtime: Runtime) -> list[tuple[str, dt.datetime, int]]:
    with runtime.read_session() as session:
        rows = session.execute(sa.select(RateLimitHit).order_by(RateLimitHit.key, RateLimitHit.window_start))
        return [(r.key, r.window_start, r.count) for r in rows.scalars()]


def test_allows_up_to_the_limit_then_refuses_within_the_window(runtime: Runtime) -> None:
    results = [_hit(runtime, "donate:1.2.3.4", now=T0 + dt.timedelta(seconds=i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert _rows(runtime) == [("donate:1.2.3.4", dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), 5)]


def test_a_new_window_starts_afresh_and_drops_the_old_one(runtime: Runtime) -> None:
    for _ in range(4):
        _hit(runtime, "donate:1.2.3.4")
    assert not _hit(runtime, "donate:1.2.3.4", now=T0 + dt.timedelta(seconds=54))
    assert _hit(runtime, "donate:1.2.3.4", now=T0 + dt.timedelta(seconds=55))  # 12:01:00, the next window
    assert _rows(runtime) == [("donate:1.2.3.4", dt.datetime(2026, 3, 1, 12, 1, tzinfo=dt.UTC), 1)]


def test_keys_are_counted_separately(runtime: Runtime) -> None:
    assert [_hit(runtime, "donate:a", limit=1) for _ in range(2)] == [True, False]
    assert _hit(runtime, "donate:b", limit=1)
    assert _hit(runtime, "login:a", limit=1)


def test_a_long_key_is_stored_as_its_hash(runtime: Runtime) -> None:
    key = "donate:" + "x" * 300
    assert [_hit(runtime, key, limit=1) for _ in range(2)] == [True, False]
    [(stored, _, count)] = _rows(runtime)
    assert stored.startswith("sha256:") and len(stored) <= 200 and count == 2


def test_concurrent_hits_from_many_connections_let_exactly_the_limit_through(runtime: Runtime) -> None:
    limit, callers = 5, 16
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers)

    def call() -> None:
        barrier.wait()
        allowed = _hit(runtime, "shop:9.9.9.9", limit=limit)
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * (callers - limit) + [True] * limit
    assert _rows(runtime)[0][2] == callers


def test_prune_deletes_windows_that_started_before_a_moment(runtime: Runtime) -> None:
    _hit(runtime, "a", now=T0)
    _hit(runtime, "b", now=T0 + dt.timedelta(hours=2))
    with runtime.unit_of_work() as uow:
        assert prune(uow.session, before=T0 + dt.timedelta(hours=1)) == 1
    assert [key for key, _, _ in _rows(runtime)] == ["b"]


def test_window_start_and_retry_after() -> None:
    assert window_start(T0, 60) == dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert window_start(T0, 3600) == dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    assert retry_after(60, now=T0) == 55
    assert retry_after(60, now=T0 + dt.timedelta(seconds=54, milliseconds=500)) == 1
