"""The periodic scheduler runs in every worker process (and in `giving serve`'s in-process worker) and tries each
periodic job's period every second. With the database down, each try failed on its own and logged its own traceback:
ten a second in every process for as long as the outage lasted, burying the one line that said what was wrong. It says
so once, and starts the periods as soon as the database is back."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from core import jobs
from core.db import make_engine, make_sessionmaker, unit_of_work
from core.runtime import Runtime
from tests.scale.harness import TcpProxy


def test_the_scheduler_says_once_that_the_database_is_down_and_starts_the_periods_once_it_is_back(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("a database server that goes away: PostgreSQL")
    url = sa.make_url(runtime.settings.database.url)
    proxy = TcpProxy(url.port or 5432).start()
    proxy.stop()  # the database is down as the worker starts
    through_proxy = runtime.settings.model_copy(
        update={
            "database": runtime.settings.database.model_copy(
                update={"url": url.set(port=proxy.port).render_as_string(hide_password=False)}
            )
        }
    )
    engine = make_engine(through_proxy.database)
    sessions = make_sessionmaker(engine)
    scheduler = jobs.Scheduler(lambda: unit_of_work(sessions, jobs.send_jobs), tick_seconds=0.1)
    try:
        with caplog.at_level(logging.INFO, logger="giving.jobs"):
            scheduler.start()
            time.sleep(2)  # some twenty ticks
            said = [r for r in caplog.records if r.name == "giving.jobs" and r.levelno >= logging.WARNING]
            assert len(said) == 1, f"{len(said)} records for one outage"
            assert "database" in said[0].getMessage()

            proxy.start()
            deadline = time.monotonic() + 10
            periods = 0
            while time.monotonic() < deadline and periods < len(jobs.PERIODIC):
                time.sleep(0.2)
                with runtime.engine.connect() as connection:
                    periods = connection.execute(sa.text("SELECT count(*) FROM scheduled_runs")).scalar_one()
            assert periods == len(jobs.PERIODIC), "the periods were not started once the database was back"
    finally:
        scheduler.stop()
        scheduler.join(10)
        proxy.stop()
        engine.dispose()
