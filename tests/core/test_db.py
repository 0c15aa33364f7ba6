"""The PostgreSQL connections' prepared statements follow `[database] prepared_statements` (PgBouncer needs them off
unless it is 1.22+ with `max_prepared_statements`), and read sessions keep them: read-only, ended by a commit."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

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

    # On a thread of its own: a browser test run earlier on this worker (playwright's sync API) can leave an event
    # loop running on the main thread, where asyncio.run refuses to start.
    with ThreadPoolExecutor(1) as thread:
        assert thread.submit(asyncio.run, run()).result() == (1 if prepared else 0)


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
