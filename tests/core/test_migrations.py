"""The schema comes only from alembic: upgrade gives exactly the models, and downgrade/upgrade round-trips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import migrate
from core.db import make_engine
from core.settings import DatabaseSettings
from giving.registry import metadata
from tests.fixtures.services import POSTGRES_ADMIN_URL, RUN_ID, need


def _differences(url: str) -> list[object]:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_gives_the_models_schema(database_url: str) -> None:
    assert _differences(database_url) == []


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, upgraded: the round trip drops every table, and the worker's shared database
    holds what other tests (the browser's staff accounts) keep for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'round-trip.sqlite3'}"
        migrate.upgrade(url)
        yield url
        return
    need("PostgreSQL", "127.0.0.1", 5432)
    name = f"giving_test_{RUN_ID}_round_trip_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = str(sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
        migrate.upgrade(url)
        yield url
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def test_downgrade_and_upgrade_round_trip(own_database_url: str) -> None:
    database_url = own_database_url
    migrate.downgrade(database_url, "base")
    engine = make_engine(DatabaseSettings(url=database_url))
    try:
        remaining = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert remaining == set()
    migrate.upgrade(database_url)
    assert _differences(database_url) == []
