"""The schema comes only from alembic: upgrade gives exactly the models, and downgrade/upgrade round-trips."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core import migrate
from core.db import JSONType, UTCDateTime, make_engine
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


_JOBS_THEN = sa.table(
    "jobs",
    sa.column("id", sa.Uuid()),
    sa.column("actor_name", sa.String()),
    sa.column("arguments", JSONType),
    sa.column("status", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("created_at", UTCDateTime()),
    sa.column("available_at", UTCDateTime()),
)


def test_resets_stored_as_their_key_are_dropped_on_upgrade(own_database_url: str) -> None:
    """Before a7d3c5e9b214 `password_resets.token_hash` held the reset's key itself (usable, signed, by anyone who
    read the database): the upgrade drops those rows and marks their pending email jobs done (nothing to send)."""
    import datetime as dt

    from sqlmodel import Session, select

    from core.models import Job, JobStatus, PasswordReset, StaffRole, StaffUser

    database_url = own_database_url
    migrate.downgrade(database_url, "3e1f7c9a2b64")  # core's revision before; the tables are the same
    engine = make_engine(DatabaseSettings(url=database_url))
    try:
        with Session(engine) as session:
            user = StaffUser(email="jo@example.org", role=StaffRole.FUNDRAISER, password_hash="x")
            session.add(user)
            session.flush()
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            session.add(PasswordReset(token_hash="the-key-itself", user_id=user.id, expires_at=soon))
            # The columns `jobs` had at that revision (the model has more since).
            for actor_name, arguments in (
                ("core.send_password_reset", {"reset_key": "the-key-itself"}),
                ("core.request_password_reset", {"email": "jo@example.org"}),
            ):
                session.execute(
                    sa.insert(_JOBS_THEN).values(
                        id=uuid.uuid4(),
                        actor_name=actor_name,
                        arguments=arguments,
                        status=JobStatus.PENDING.value,
                        attempts=0,
                        created_at=dt.datetime.now(dt.UTC),
                        available_at=dt.datetime.now(dt.UTC),
                    )
                )
            session.commit()
        migrate.upgrade(database_url)
        with Session(engine) as session:
            assert session.exec(select(PasswordReset)).all() == []
            statuses = {job.actor_name: job.status for job in session.exec(select(Job)).all()}
        assert statuses == {"core.send_password_reset": JobStatus.DONE, "core.request_password_reset": "pending"}
    finally:
        engine.dispose()
    assert _differences(database_url) == []
