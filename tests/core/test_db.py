"""The PostgreSQL connections' prepared statements follow `[database] prepared_statements` (PgBouncer needs them off
unless it is 1.21+ with `max_prepared_statements`)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from core.db import make_async_database, make_engine
from core.settings import DatabaseSettings

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
