"""Engines, column types shared by every package, and the unit of work.

`UnitOfWork` is the only thing that commits. It buffers the jobs a request, job or command asks for,
records the durable ones in the `jobs` table in the same transaction, and sends them only after the commit.
On an error it rolls back and sends nothing. Services take a `uow` and may flush, never commit.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Field, Session, SQLModel

from core.clock import utc_now
from core.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from core.settings import DatabaseSettings


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on PostgreSQL and on SQLite (which keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps are UTC and must carry their zone")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def id_field() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


def created_at_field() -> Any:
    return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False)


def utc_field(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def json_field(default_factory: Callable[[], Any] = dict) -> Any:
    return Field(default_factory=default_factory, sa_type=JSONType, nullable=False)


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def prepare_threshold(config: DatabaseSettings) -> int | None:
    """psycopg's: prepare a statement on a connection after this many runs of it there (None: never)."""
    return 5 if config.prepared_statements else None


def connect_options(config: DatabaseSettings, url: sa.URL) -> dict[str, Any]:
    """libpq's options for every PostgreSQL connection: a connect timeout (libpq's default waits for ever on a
    server that takes the connection and never answers) unless the URL sets its own, and prepared statements."""
    options: dict[str, Any] = {"prepare_threshold": prepare_threshold(config)}
    if "connect_timeout" not in url.query:
        options["connect_timeout"] = config.connect_timeout
    return options


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def make_engine(config: DatabaseSettings) -> Engine:
    """`hide_parameters` on every engine: an error's message (logged with its traceback by the error middleware, a
    failed job, dramatiq) keeps its SQL but never the values bound to it (supporters' details, webhook bodies)."""
    url = sa.make_url(normalise_url(config.url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            echo=config.echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Autocommit at the driver so SQLAlchemy's BEGIN below decides the transaction.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # SQLite's own lower() folds A-Z only: "Élodie" would never match "élodie" as it does on PostgreSQL.
            dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No session state is kept between transactions, so PgBouncer in transaction mode works (prepared statements
    # with PgBouncer 1.22+ and `max_prepared_statements`; docs/operations.md).
    return sa.create_engine(
        url,
        echo=config.echo,
        hide_parameters=True,
        pool_size=config.pool_size,
        max_overflow=config.max_overflow,
        pool_timeout=config.pool_timeout,
        pool_pre_ping=True,
        connect_args=connect_options(config, url),
    )


# After a failed attempt to connect, requests that find no idle connection are answered 503 at once for this long
# rather than each waiting `pool_timeout` while the pool retries in the background.
CONNECT_FAILURE_FRESH_SECONDS = 5.0


class AsyncDatabase:
    """PostgreSQL only: a psycopg asyncio pool of autocommit connections for the single-statement write the web
    process makes on its event loop (the webhook ingest). Through the threaded engine the same INSERT costs a
    thread-pool hop plus BEGIN and COMMIT round trips; through SQLAlchemy's asyncio layer, several times the CPU of
    plain psycopg (bench/webhooks). One statement is atomic on its own."""

    def __init__(self, config: DatabaseSettings):
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        self.failed_at: float | None = None
        database = self

        class TrackedConnection(psycopg.AsyncConnection[Any]):
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    connection = await super().connect(*args, **kwargs)
                except psycopg.OperationalError:
                    database.failed_at = time.monotonic()
                    raise
                database.failed_at = None
                return connection

        url = sa.make_url(normalise_url(config.url)).set(drivername="postgresql")
        self.pool = AsyncConnectionPool(
            url.render_as_string(hide_password=False),
            connection_class=TrackedConnection,
            min_size=1,
            max_size=config.pool_size,
            timeout=config.pool_timeout,
            kwargs={"autocommit": True, **connect_options(config, url)},
            open=False,
            name="giving-async",
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection from the pool, with a lost database as `DatabaseUnavailable` (503: the caller retries)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        failed_at = self.failed_at
        recently_failed = failed_at is not None and time.monotonic() - failed_at < CONNECT_FAILURE_FRESH_SECONDS
        if recently_failed and not self.pool.get_stats().get("pool_available"):
            raise DatabaseUnavailable()
        try:
            async with self.pool.connection() as connection:
                yield connection
        except PoolTimeout as exc:
            raise DatabaseUnavailable() from exc
        except psycopg.OperationalError as exc:
            await self.pool.check()  # a restart breaks every idle connection: renew them now, not one 503 each
            raise DatabaseUnavailable() from exc


def make_async_database(config: DatabaseSettings) -> AsyncDatabase | None:
    """None for SQLite: its callers use the threaded engine."""
    if sa.make_url(normalise_url(config.url)).get_backend_name() != "postgresql":
        return None
    return AsyncDatabase(config)


def conflict_insert(dialect: str) -> Any:
    """`insert()` with `ON CONFLICT` for this database: PostgreSQL's or SQLite's (both have `on_conflict_do_nothing`
    and `RETURNING`)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, class_=Session, expire_on_commit=False, autoflush=True)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@dataclass
class PendingJob:
    actor_name: str
    kwargs: dict[str, Any]
    delay_ms: int | None = None


@dataclass
class UnitOfWork:
    """One transaction: commit, then send the buffered jobs; on error roll back and send nothing."""

    session: Session
    send: Callable[[list[PendingJob]], None]
    jobs: list[PendingJob] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def enqueue(self, actor_name: str, *, delay_ms: int | None = None, durable: bool = True, **kwargs: Any) -> None:
        """Ask for a job to run after the commit.

        A durable job is first written to the `jobs` table in this transaction, so a lost message or a crash
        between the commit and the send loses nothing: the sweep sends it again.
        """
        from core.jobs import record_job, require_known  # jobs imports db; keep the cycle local

        require_known(actor_name)
        if durable:
            kwargs = {**kwargs, "job_id": str(record_job(self.session, actor_name, kwargs, delay_ms))}
        self.jobs.append(PendingJob(actor_name, kwargs, delay_ms))

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)

    def flush(self) -> None:
        self.session.flush()


@contextmanager
def unit_of_work(factory: sessionmaker[Session], send: Callable[[list[PendingJob]], None]) -> Iterator[UnitOfWork]:
    session = factory()
    uow = UnitOfWork(session=session, send=send)
    try:
        yield uow
        session.commit()
    except BaseException:
        session.rollback()
        uow.jobs.clear()
        raise
    finally:
        session.close()
    if uow.jobs:
        send(uow.jobs)
    for callback in uow.after_commit:
        callback()
