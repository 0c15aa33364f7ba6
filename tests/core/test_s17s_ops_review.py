"""Operations under fresh eyes: `/metrics` and the settings an operator sets, in the situations that bit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.core.test_h2_broker import SilentServer
from tests.fixtures.app import make_settings

LOOPBACK = ("127.0.0.1", 50000)  # /metrics answers this machine only when no metrics token is set
# Prometheus's default scrape_timeout: a scrape that takes longer is dropped whole (`up` 0, every gauge gone).
SCRAPE_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def test_a_scrape_with_a_rabbitmq_that_never_answers_still_answers_in_time(
    sqlite_url: str, tmp_path: Path, silent: SilentServer
) -> None:
    """A RabbitMQ that takes connections and says nothing (hung, a half-open firewall): the queue gauges' own
    connection waited out pika's 15 s AMQP handshake on every scrape, so Prometheus dropped the scrape whole, and
    `giving_broker_up 0` (the alert for this very outage) and the database gauges never reached it."""
    from giving.app import create_app

    settings = make_settings(sqlite_url, tmp_path, broker={"url": f"amqp://guest:guest@127.0.0.1:{silent.port}/%2F"})
    app = create_app(settings, start_inline_worker=False)
    with TestClient(app, client=LOOPBACK) as client:
        started = time.monotonic()
        response = client.get("/metrics")
        took = time.monotonic() - started
    assert response.status_code == 200
    assert took < SCRAPE_TIMEOUT_SECONDS / 2, f"a scrape took {took:.1f} s"
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["giving_broker_up"] == 0
    assert samples["giving_database_up"] == 1


def test_a_misspelt_section_in_an_environment_override_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GIVING_DATABSE__URL` (a typo in the section) was ignored without a word: `giving db upgrade` then made and
    migrated an empty SQLite file under ./var and said "database is up to date", and `giving serve` served it: gifts
    recorded in a file nobody backs up, beside the PostgreSQL the operator meant. A misspelt key was refused already
    (`GIVING_DATABASE__URLL`); a misspelt section is refused the same way, naming the variable, never its value."""
    from typer.testing import CliRunner

    from core.settings import get_settings
    from giving.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GIVING_SETTINGS", raising=False)
    monkeypatch.setenv("GIVING_DATABSE__URL", "postgresql://giving:s3cret@db.internal/giving")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["db", "upgrade"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert "GIVING_DATABSE__URL" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "var").exists()  # no stray database made


@pytest.mark.slow
def test_readyz_and_metrics_answer_while_a_lock_holds_the_tables(postgres_url: str, tmp_path: Path) -> None:
    """A migration's ALTER TABLE waiting behind a long transaction (or a VACUUM FULL, a LOCK TABLE by hand) queues
    every read of its table: `/readyz` and the scrape waited with them for as long as the lock lasted, each holding
    one of the web process's threads, a load balancer asking every few seconds until none was left, and Prometheus
    dropping the scrape whole, so `giving_database_up 0` never reached it. They now give up after a few seconds:
    503 `database: unavailable`, and the scrape says `giving_database_up 0`."""
    import threading

    import sqlalchemy as sa

    from giving.app import create_app

    settings = make_settings(postgres_url, tmp_path)
    app = create_app(settings, start_inline_worker=False)
    locker = sa.create_engine(postgres_url)
    answers: dict[str, object] = {}
    with TestClient(app, client=LOOPBACK) as client, locker.connect() as conn:
        assert client.get("/readyz").status_code == 200
        transaction = conn.begin()
        conn.exec_driver_sql("LOCK TABLE inbound_events, jobs IN ACCESS EXCLUSIVE MODE")
        try:

            def probe() -> None:
                ready = client.get("/readyz")
                answers["readyz"] = (ready.status_code, ready.json()["database"])
                answers["metrics"] = "giving_database_up 0.0" in client.get("/metrics").text.splitlines()

            thread = threading.Thread(target=probe, daemon=True)
            started = time.monotonic()
            thread.start()
            thread.join(SCRAPE_TIMEOUT_SECONDS)
            took = time.monotonic() - started
        finally:
            transaction.rollback()  # lets a probe still waiting finish
        thread.join(30)
        assert client.get("/readyz").status_code == 200  # the lock gone, ready again
    locker.dispose()
    assert took < SCRAPE_TIMEOUT_SECONDS, "/readyz and /metrics were still waiting on the lock"
    assert answers == {"readyz": (503, "unavailable"), "metrics": True}
