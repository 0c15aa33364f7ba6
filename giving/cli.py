"""The `giving` command. Results go to stdout, logs to stderr; errors exit 1 with a message, no traceback."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import sqlalchemy.exc
import typer
from typer.core import TyperGroup

from core.errors import AppError
from core.logging import configure_logging
from core.runtime import Runtime, build_runtime
from core.settings import Settings, SettingsError, get_settings


class _UsageErrorsExit1(TyperGroup):
    """contract.md gives every command 0, 1 or 3: a usage error (an option that is none, a value not offered, a
    missing argument, a command that is none) exits 1 with click's usage message, not click's 2; `--help` stays 0."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exc:
            if exc.code == click.UsageError.exit_code:
                raise SystemExit(1) from None
            raise


app = typer.Typer(
    cls=_UsageErrorsExit1, no_args_is_help=True, add_completion=False, help="Giving: donations and supporter CRM."
)
db_app = typer.Typer(no_args_is_help=True, help="The database.")
app.add_typer(db_app, name="db")

log = logging.getLogger("giving.cli")

# Each area adds its commands in giving/commands/<area>.py with `register(app)`.
COMMAND_MODULES = ("staff", "payments", "giftaid", "receipts", "shop", "demo")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def option_date(text: str, option: str) -> dt.date:
    """A command's date option (YYYY-MM-DD), or a clear error naming the option."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"{option} must be a date YYYY-MM-DD, not {text!r}")
        raise  # unreachable: fail exits


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))
        raise  # unreachable


def _where(settings: Settings) -> str:
    """The database's address without its user and password."""
    return settings.database.url.split("@")[-1]


def _first_line(exc: BaseException) -> str:
    """A failure in one line: the driver's own words for a database error (SQLAlchemy's report adds the statement,
    a hint and a link on lines of their own)."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def command_runtime(*, with_tasks: bool = True) -> Iterator[Runtime]:
    """A runtime for one command, with every job registered; AppErrors, and a database that cannot be reached or
    was never migrated, become `error: ...` and exit 1 (a message, not a traceback)."""
    settings = settings_or_exit()
    configure_logging("WARNING" if settings.env != "development" else "INFO")
    if with_tasks:
        from giving.worker import import_tasks

        import_tasks()
    runtime = build_runtime(settings)
    try:
        yield runtime
    except AppError as exc:
        fail(exc.detail)
    except sqlalchemy.exc.DBAPIError as exc:
        fail(f"the database at {_where(settings)} failed: {_first_line(exc)} (is it up, and migrated?)")
    finally:
        runtime.engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations and leave a stocked default shop catalogue."""
    settings = settings_or_exit()
    configure_logging("WARNING")
    from core import migrate

    try:
        migrate.upgrade(settings.database.url)
    except Exception as exc:  # a database that cannot be reached or migrated: a message, not a traceback
        fail(f"could not upgrade {_where(settings)}: {_first_line(exc)}")
    with command_runtime() as runtime, runtime.unit_of_work() as uow:
        from payments import service as payments_service

        payments_service.ensure_default_catalogue(uow)
    typer.echo("database is up to date")


# How long an idle HTTP/1.1 connection stays open. A client that pools connections should let them go sooner, or it
# may write a request onto one the server is closing and read a reset (a proxy in front: its upstream keep-alive).
KEEP_ALIVE_SECONDS = 5


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Web processes."),
) -> None:
    """The web application (with the jobs run in-process when no broker is configured)."""
    settings = settings_or_exit()
    if not settings.broker.url:
        # Said here, as `giving worker` does: found in the app's lifespan instead, uvicorn printed a traceback and
        # then did not exit (PostgreSQL's async pool, opened before, kept it alive), serving nothing.
        problem = _inline_pool_shortfall(settings)
        if problem is not None:
            fail(problem)
    # Said once, before the server starts: on a database not migrated to this release, every page failed and the
    # scheduler logged the same "no such table" traceback in a loop.
    problem = _not_migrated(settings)
    if problem is not None:
        fail(problem)
    import uvicorn

    from giving.ops import prepare_metrics_dir

    prepare_metrics_dir("web")
    uvicorn.run(
        "giving.app:asgi",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=uvicorn_log_config(),
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # Slow clients are cut off: h11 limits on incomplete requests.
        h11_max_incomplete_event_size=64 * 1024,
    )


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own log config with `RedactingFilter` on its handler: its loggers keep handlers of their own and do
    not propagate to the root, so "Exception in ASGI application" and its traceback were not redacted. A dict (each
    of `--workers`' processes applies it). The access handler has none: its formatter reads the record's arguments,
    which the filter folds into the message, and `serve` turns the access log off."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "core.logging.RedactingFilter"}}
    config["handlers"]["default"]["filters"] = ["redact"]
    return config


def _inline_pool_shortfall(settings: Settings) -> str | None:
    """Why `giving serve`'s in-process worker could not start on this database pool, or None (the app's lifespan
    starts it with `[broker] inline_threads` and the scheduler). Known from the settings: nothing is connected."""
    from core.db import make_engine, make_sessionmaker
    from core.jobs import make_broker
    from core.runtime import InlineWorker

    engine = make_engine(settings.database)
    try:
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine), broker=make_broker(""))
        return InlineWorker(runtime, settings.broker.inline_threads).pool_shortfall(scheduler=True)
    finally:
        engine.dispose()


def _not_migrated(settings: Settings) -> str | None:
    """Why this database cannot be served by this release (never migrated, or some migration of it not applied),
    or None. A database that cannot be reached now is left to the application (it may come up later: `/readyz`), and
    one migrated past this release (a newer one's migrations) is not ours to judge."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from core import migrate
    from core.db import make_engine

    script = ScriptDirectory.from_config(migrate.alembic_config(settings.database.url))
    engine = make_engine(settings.database)
    try:
        with engine.connect() as connection:
            applied = set(MigrationContext.configure(connection).get_current_heads())
    except sqlalchemy.exc.DBAPIError:
        return None
    finally:
        engine.dispose()
    advice = f"run `giving db upgrade` first (database at {_where(settings)})"
    if not applied:
        return f"the database was never migrated: {advice}"
    try:
        for revision in applied:
            script.get_revision(revision)
    except CommandError:
        return None  # a revision this release does not know: a newer release migrated it
    if applied != set(script.get_heads()):
        return f"the database is behind this release (migrations not applied): {advice}"
    return None


@app.command()
def worker(
    processes: int = typer.Option(1, "--processes", min=1, help="Worker processes."),
    threads: int = typer.Option(4, "--threads", min=1, help="Threads per process."),
) -> None:
    """dramatiq workers for every job, plus the periodic jobs."""
    settings = settings_or_exit()
    if not settings.broker.url:
        fail("no broker is configured ([broker] url); `giving serve` runs the jobs in-process")
    from giving.worker import pool_shortfall

    # Said here, before dramatiq starts (each worker process also refuses, `PoolFitsThreads`, logging it).
    problem = pool_shortfall(settings.database, threads) or _not_migrated(settings)
    if problem is not None:
        fail(problem)
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "giving.worker_boot",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    from giving.ops import prepare_metrics_dir

    prepare_metrics_dir("worker")
    sys.stdout.flush()
    sys.stderr.flush()
    # Become dramatiq's supervisor (same pid), so a SIGTERM or SIGKILL sent to `giving worker` reaches it.
    os.execve(sys.executable, command, os.environ.copy())  # noqa: S606 (a fixed argv, no shell)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"giving.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"giving.commands.{name}":
                raise
            continue
        module.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
