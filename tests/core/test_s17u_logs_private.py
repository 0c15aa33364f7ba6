"""Logs keep supporters' details and secrets out (core/logging.py's promise): SQL parameters are never in a logged
error, the stderr log redacts tokens, passwords, card numbers and emails, an outage seen by a scrape is one line,
and a settings file holding a database or broker password is refused."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from core.http import ErrorMiddleware
from core.runtime import Runtime
from core.settings import SettingsError, get_settings, load_settings
from crm.models import Supporter
from tests.fixtures.app import make_settings
from tests.fixtures.services import port_open

CLOSED_PORT = 5999  # nothing listens here
LOOPBACK = ("127.0.0.1", 50000)
ROOT = Path(__file__).resolve().parents[2]


def test_a_failed_statement_logged_by_the_error_middleware_shows_no_parameters(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug that makes an INSERT fail (here a supporter merged into one that does not exist) is answered 500 and
    logged with its traceback; SQLAlchemy's message used to end `[parameters: (..., 'amira.haddad@example.org',
    'Amira', 'Haddad', ...)]`."""

    def store(_request: Request) -> Response:
        with runtime.unit_of_work() as uow:
            uow.session.add(
                Supporter(
                    email="amira.haddad@example.org",
                    first_name="Amira",
                    last_name="Haddad",
                    postcode="CT16 1AA",
                    merged_into_id=uuid.uuid4(),
                )
            )
            uow.flush()
        return Response("stored")

    app = Starlette(routes=[Route("/store", store, methods=["POST"])], middleware=[Middleware(ErrorMiddleware)])
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/store")
    assert response.status_code == 500
    failed = [r for r in caplog.records if r.name == "giving.http"]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert "INSERT INTO supporters" in caplog.text  # the statement is still there to debug with
    for private in ("amira.haddad@example.org", "Amira", "Haddad", "CT16"):
        assert private not in caplog.text


def _stderr_of(code: str) -> str:
    """What a process that set up logging as `giving serve`, `giving worker` and the commands do writes to stderr."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stderr


def test_the_stderr_log_redacts_secrets_card_numbers_and_emails() -> None:
    stderr = _stderr_of(
        """
        import logging
        from core.logging import configure_logging

        configure_logging("INFO")
        log = logging.getLogger("giving.payments")
        log.warning("checkout for %s failed", "amira.haddad@example.org")
        log.warning("card %s declined (cvc %s)", "4242 4242 4242 4242", "123")
        log.info("connecting to %s", "postgresql://giving:hunter2@db:5432/giving")
        log.info("stripe answered with key sk_live_51Habc123DEF456 and whsec_9f8e7d6c5b4a")
        log.info("API call: Authorization: Bearer gvg_Q2hhcml0eVRva2VuMTIzNDU2Nzg5MA and token=abc123def456")
        log.info("webhook password=correct-horse-battery")
        try:
            raise ValueError("no supporter for bob.smith@example.com")
        except ValueError:
            log.exception("lookup failed")
        supporter = "8d0c8f4e-7d1b-4c7e-9a55-1f0d3e2b6a10"
        log.info("gift %s of %d pence recorded for supporter %s", "gft_0001", 2500, supporter)
        """
    )
    for private in (
        "amira.haddad@example.org",
        "4242 4242 4242 4242",
        "hunter2",
        "sk_live_51Habc123DEF456",
        "whsec_9f8e7d6c5b4a",
        "gvg_Q2hhcml0eVRva2VuMTIzNDU2Nzg5MA",
        "abc123def456",
        "correct-horse-battery",
        "bob.smith@example.com",
    ):
        assert private not in stderr, stderr
    # What is not secret still reads as it was: the lines, the traceback, ids and amounts.
    assert "checkout for [redacted] failed" in stderr
    assert "postgresql://giving:[redacted]@db:5432/giving" in stderr
    assert "Traceback (most recent call last)" in stderr and "ValueError: no supporter for [redacted]" in stderr
    assert "gift gft_0001 of 2500 pence recorded for supporter 8d0c8f4e-7d1b-4c7e-9a55-1f0d3e2b6a10" in stderr


def test_a_scrape_with_the_database_and_broker_down_logs_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Prometheus scrapes every 15 s: a traceback on each, for an outage the gauges already report, buried the log."""
    from giving.app import create_app

    assert not port_open("127.0.0.1", CLOSED_PORT)
    settings = make_settings(
        f"postgresql://giving:s3cret@127.0.0.1:{CLOSED_PORT}/giving",
        tmp_path,
        broker={"url": f"amqp://guest:guest@127.0.0.1:{CLOSED_PORT}/%2F"},
    )
    app = create_app(settings, start_inline_worker=False)
    with TestClient(app, client=LOOPBACK) as client:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            metrics = client.get("/metrics")
    assert metrics.status_code == 200
    lines = metrics.text.splitlines()
    assert "giving_database_up 0.0" in lines and "giving_broker_up 0.0" in lines
    ops = [r for r in caplog.records if r.name == "giving.ops"]
    assert sorted(r.getMessage().split(":")[1].strip() for r in ops) == [
        "the broker did not answer",
        "the database did not answer",
    ], [r.getMessage() for r in ops]
    for record in ops:
        assert record.exc_info is None and record.exc_text is None
        assert "\n" not in record.getMessage()
        assert "s3cret" not in record.getMessage()


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "settings.toml"
    monkeypatch.setenv("GIVING_SETTINGS", str(path))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("section", "url"),
    [
        ("database", "postgresql://giving:hunter2@db/giving"),
        ("broker", "amqp://giving:hunter2@mq:5672/%2F"),
        ("broker", "redis://:hunter2@cache:6379/0"),
    ],
)
def test_a_url_with_a_password_in_the_settings_file_is_refused(settings_file: Path, section: str, url: str) -> None:
    settings_file.write_text(f'[{section}]\nurl = "{url}"\n')
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert f"[{section}] url holds a password" in message
    assert f"GIVING_{section.upper()}__URL" in message and "never in a file" in message
    assert "hunter2" not in message


def test_a_url_without_a_password_in_the_settings_file_is_accepted_and_the_environment_may_hold_one(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file.write_text(
        '[database]\nurl = "postgresql://giving@db/giving"\n[broker]\nurl = "redis://cache:6379/0"\n'
    )
    assert load_settings().database.url == "postgresql://giving@db/giving"
    monkeypatch.setenv("GIVING_DATABASE__URL", "postgresql://giving:hunter2@db/giving")
    assert load_settings().database.url == "postgresql://giving:hunter2@db/giving"
