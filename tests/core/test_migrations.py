"""The schema comes only from alembic: upgrade gives exactly the models, and downgrade/upgrade round-trips."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import migrate
from core.db import make_engine
from core.settings import DatabaseSettings
from giving.registry import metadata


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
