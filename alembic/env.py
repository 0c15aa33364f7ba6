"""Alembic environment: one migration branch per package (alembic/versions/<package>/), all applied by `heads`."""

from __future__ import annotations

import os

from alembic import context
from core.db import make_engine
from core.settings import DatabaseSettings, get_settings
from giving import registry

config = context.config
target_metadata = registry.metadata


def _database_settings() -> DatabaseSettings:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return DatabaseSettings(url=url)
    return get_settings().database


def run_migrations_offline() -> None:
    context.configure(
        url=_database_settings().url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_settings())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _table_package(table_name: str) -> str | None:
    for mapper in registry.SQLModel._sa_registry.mappers:
        if getattr(mapper.class_, "__tablename__", None) == table_name:
            return str(mapper.class_.__module__).split(".")[0]
    return None


def _include_object(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    """With GIVING_MIGRATION_PACKAGE set, autogenerate sees only that package's tables (one branch each)."""
    only = os.environ.get("GIVING_MIGRATION_PACKAGE")
    if not only:
        return True
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = getattr(table, "name", name)
    return _table_package(table_name) == only


def _render_item(type_: str, obj, autogen_context):  # type: ignore[no-untyped-def]
    """Render our shared column types by name, so migrations read like the models."""
    from core.db import JSONType, UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import core.db")
        return "core.db.UTCDateTime()"
    if type_ == "type" and obj is JSONType:
        autogen_context.imports.add("import core.db")
        return "core.db.JSONType"
    return False


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
