"""The PostgreSQL connections' prepared statements follow `[database] prepared_statements` (PgBouncer needs them off
unless it is 1.22+ with `max_prepared_statements`), and read sessions keep them: read-only, ended by a commit.
A pooled connection is checked for liveness only after it was idle for a while."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

from core.db import make_async_database, make_engine, make_sessionmaker
from core.runtime import Runtime
from core.settings import DatabaseSettings, load_settings

PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%giving_prepared_probe%'"


@pytest.mark.parametrize("prepared", [True, False])
def test_engine_prepares_repeated_statements_only_when_set(postgres_url: str, prepared: bool) -> None:
    engine = make_engine(DatabaseSettings(url=postgres_url, prepared_statements=prepared))
    try:
        with engine.connect() as conn:
            for n in range(6):
                assert conn.execute(sa.text("SELECT :n + 1 AS giving_prepared_probe"), {"n": n}).scalar_one() == n + 1
            assert conn.execute(sa.text(PREPARED)).scalar_one() == (1 if prepared else 0)
    finally:
        engine.dispose()


@pytest.mark.parametrize("prepared", [True, False])
def test_async_pool_prepares_repeated_statements_only_when_set(postgres_url: str, prepared: bool) -> None:
    async def run() -> int:
        database = make_async_database(DatabaseSettings(url=postgres_url, prepared_statements=prepared))
        assert database is not None
        await database.open()
        try:
            async with database.connection() as conn:
                for n in range(6):
                    cursor = await conn.execute("SELECT %s::int + 1 AS giving_prepared_probe", (n,))
                    assert await cursor.fetchone() == (n + 1,)
                cursor = await conn.execute(PREPARED)
                row = await cursor.fetchone()
                assert row is not None
                return int(row[0])
        finally:
            await database.close()

    assert asyncio.run(run()) == (1 if prepared else 0)


def _runtime(url: str) -> Runtime:
    engine = make_engine(DatabaseSettings(url=url, pool_size=1, max_overflow=0))
    return Runtime(
        settings=load_settings(env="test", database={"url": url}),
        engine=engine,
        sessions=make_sessionmaker(engine),
        broker=StubBroker(),
    )


def test_a_read_session_keeps_the_connections_prepared_statements(postgres_url: str) -> None:
    """It ends with a commit: a rollback makes psycopg drop every prepared statement of the connection."""
    runtime = _runtime(postgres_url)
    try:
        for _ in range(2):  # the same pooled connection both times (pool of one)
            with runtime.read_session() as session:
                for n in range(6):
                    session.execute(sa.text("SELECT :n + 1 AS giving_prepared_probe"), {"n": n})
        with runtime.read_session() as session:
            assert session.execute(sa.text(PREPARED)).scalar_one() == 1
    finally:
        runtime.engine.dispose()


def test_a_read_session_cannot_write_and_the_next_unit_of_work_can(postgres_url: str) -> None:
    runtime = _runtime(postgres_url)
    try:
        refused = pytest.raises(sa.exc.InternalError, match="read-only transaction")
        with refused, runtime.read_session() as session:
            session.execute(sa.text("CREATE TEMPORARY TABLE giving_read_only_probe (n int)"))
        with runtime.unit_of_work() as uow:  # the same connection, back to read-write
            uow.session.execute(sa.text("CREATE TEMPORARY TABLE giving_read_only_probe (n int)"))
            assert uow.session.execute(sa.text("SELECT count(*) FROM giving_read_only_probe")).scalar_one() == 0
    finally:
        runtime.engine.dispose()


def test_a_read_session_reads_on_sqlite(sqlite_url: str) -> None:
    runtime = _runtime(sqlite_url)
    try:
        with runtime.read_session() as session:
            assert session.execute(sa.text("SELECT 1 + 1")).scalar_one() == 2
    finally:
        runtime.engine.dispose()


def _kill_idle_connections(url: str) -> int:
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with admin.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                ).scalar_one()
            )
    finally:
        admin.dispose()


def test_a_connection_lost_while_idle_is_replaced_unseen(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.db.PING_AFTER_IDLE_SECONDS", 0.05)
    engine = make_engine(DatabaseSettings(url=postgres_url, pool_size=1, max_overflow=0))
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        assert _kill_idle_connections(postgres_url) >= 1
        time.sleep(0.1)
        with engine.connect() as conn:  # checked, found dead, replaced before anything runs on it
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != first
    finally:
        engine.dispose()


def test_a_connection_just_used_is_not_pinged_and_one_failure_renews_the_pool(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost of skipping the check: right after a restart, one transaction on a connection used just before it
    fails (as it would if the restart came during it); the pool is renewed, so the next one works."""
    monkeypatch.setattr("core.db.PING_AFTER_IDLE_SECONDS", 60.0)
    engine = make_engine(DatabaseSettings(url=postgres_url, pool_size=2, max_overflow=0))
    try:
        with engine.connect() as one, engine.connect() as two:
            pids = {one.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()}
            pids.add(two.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        assert _kill_idle_connections(postgres_url) >= 2
        with pytest.raises(sa.exc.OperationalError) as failed, engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert failed.value.connection_invalidated
        for _ in range(2):  # both pooled connections were renewed, not only the one that failed
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() not in pids
    finally:
        engine.dispose()
