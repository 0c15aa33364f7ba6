"""The health endpoints as an on-call engineer reads them: status codes with the database or broker down, and logs
that say what is wrong once, not on every probe."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.fixtures.app import make_settings
from tests.fixtures.services import port_open

CLOSED_PORT = 5999  # nothing listens here
LOOPBACK = ("127.0.0.1", 50000)  # /metrics answers this machine only when no metrics token is set


def test_readyz_with_rabbitmq_down_says_so_without_logging_errors_on_every_probe(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from giving.app import create_app

    assert not port_open("127.0.0.1", CLOSED_PORT)
    settings = make_settings(sqlite_url, tmp_path, broker={"url": f"amqp://guest:guest@127.0.0.1:{CLOSED_PORT}/%2F"})
    app = create_app(settings, start_inline_worker=False)
    with TestClient(app, client=LOOPBACK) as client:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                response = client.get("/readyz")
                assert response.status_code == 200  # webhooks are still stored: the process can take traffic
                assert response.json()["broker"] == "unavailable"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200  # a scrape reports the outage as a gauge, it does not fail
            assert "giving_broker_up 0.0" in metrics.text.splitlines()
            assert "guest" not in metrics.text and "guest" not in response.text  # no credentials in the answers
        noisy = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.WARNING]
        assert noisy == [], [f"{r.name}: {r.getMessage()}" for r in noisy]


def test_readyz_and_metrics_with_the_database_down(tmp_path: Path) -> None:
    """/readyz answers 503 (take the process out of the pool); /metrics still answers, with `giving_database_up 0`;
    /healthz stays 200 (the process itself is fine: do not restart it)."""
    from giving.app import create_app

    assert not port_open("127.0.0.1", CLOSED_PORT)
    settings = make_settings(f"postgresql://giving:s3cret@127.0.0.1:{CLOSED_PORT}/giving", tmp_path)
    app = create_app(settings, start_inline_worker=False)
    with TestClient(app, client=LOOPBACK) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] == "unavailable"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "giving_database_up 0.0" in metrics.text.splitlines()
        assert client.get("/healthz").status_code == 200
        assert "s3cret" not in ready.text + metrics.text
