"""`giving serve`, `giving export journal` and `giving events replay` at edges found in review (contract.md;
giving/cli.py: "errors exit 1 with a message, no traceback"): a start-up check that hung the process instead of
stopping it, a journal written to a folder or a path that cannot be written, and a replay from a shell without the
provider's secrets."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from core.models import AuditEntry
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import fixture
from tests.payments.payout_fakes import money_settings, run_giving
from webhooks.models import EventStatus, InboundEvent

GIVING = str(Path(sys.executable).parent / "giving")


def _environ(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    environ.update(env)
    return environ


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- `giving serve`: its start-up checks -------------------------------------------------------------------------


def test_serve_whose_in_process_worker_cannot_start_stops_with_a_message(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL with no broker, a pool too small for `[broker] inline_threads` (docs/operations.md) was found in
    the app's lifespan: uvicorn printed the traceback, said "Application startup failed. Exiting." and then did not
    exit (the async pool opened just before kept the loop alive), so a process manager saw a running server that
    served nothing. Like `giving worker`, it is said before the server starts: one line, exit 1."""
    process = subprocess.Popen(
        [GIVING, "serve", "--port", str(_free_port())],
        cwd=tmp_path,
        env=_environ(
            GIVING_DATABASE__URL=postgres_url, GIVING_DATABASE__POOL_SIZE="2", GIVING_DATABASE__MAX_OVERFLOW="0"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"`giving serve` was still running 45 s after its start-up check failed: {stderr[-800:]}")
    assert process.returncode == 1, stderr[-800:]
    assert stdout == ""
    assert "Traceback" not in stderr, stderr[-800:]
    assert stderr.splitlines()[-1].startswith("error: [broker] inline_threads 4 needs 6 database connections")


def test_an_app_whose_start_fails_after_its_pool_opened_exits(postgres_url: str, tmp_path: Path) -> None:
    """The app served by uvicorn directly (a process manager's own command, past `giving serve`'s checks): a start
    that fails after PostgreSQL's async pool opened closes the pool, so the server exits instead of hanging."""
    script = (
        "import uvicorn\n"
        "from giving.app import create_app\n"
        f"uvicorn.run(create_app(), host='127.0.0.1', port={_free_port()}, log_level='warning')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_environ(
            GIVING_DATABASE__URL=postgres_url, GIVING_DATABASE__POOL_SIZE="2", GIVING_DATABASE__MAX_OVERFLOW="0"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"the server was still running 45 s after its start failed: {stderr[-800:]}")
    assert process.returncode != 0
    assert "inline_threads" in stderr, stderr[-800:]


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_on_a_port_that_is_no_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    """An out-of-range port was an OverflowError traceback from the socket; now the option's own range check."""
    result = subprocess.run(
        [GIVING, "serve", "--port", port],
        check=False,
        cwd=tmp_path,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr[-800:]  # a usage error: 1 (contract.md), not click's 2
    assert "Traceback" not in result.stderr and "--port" in result.stderr, result.stderr[-800:]


# --- `giving export journal --out` --------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def _journal_exports(runtime: Runtime) -> int:
    with runtime.read_session() as session:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.action == "export", AuditEntry.object_type == "journal")
        ).all()
    return len(rows)


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_journal_that_cannot_be_written_there_is_a_message_and_no_export(
    where: str, runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--out` is a file; given a folder (as `giftaid claim --out DIR` takes one) or a path under a file, the command
    ended in an IsADirectoryError / FileExistsError traceback, after it had recorded the export in the audit log."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (tmp_path / "notes.txt").write_text("kept\n")
    out = folder if where == "a folder" else tmp_path / "notes.txt" / "journal.csv"

    result = run_giving(
        ["export", "journal", "--from", "2026-01-01", "--to", "2026-01-31", "--out", str(out)],
        settings,
        monkeypatch,
        tmp_path,
    )

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: "), result.stderr
    assert list(folder.iterdir()) == []
    assert (tmp_path / "notes.txt").read_text() == "kept\n"
    assert _journal_exports(runtime) == 0


def test_a_journal_written_to_a_file_replaces_it_whole_and_is_audited(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The working case around the fix: a new folder is made, an earlier file is replaced, no temporary file is
    left beside it, and the export is audited once per run."""
    out = tmp_path / "accounts" / "journal.csv"
    for run in (1, 2):
        result = run_giving(
            ["export", "journal", "--from", "2026-01-01", "--to", "2026-01-31", "--out", str(out)],
            settings,
            monkeypatch,
            tmp_path,
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(out)
        assert out.read_text().startswith("date,entry,account,debit,credit,")
        assert [p.name for p in out.parent.iterdir()] == ["journal.csv"]
        assert _journal_exports(runtime) == run


# --- `giving events replay` where the provider is not configured ----------------------------------------------------


def test_replaying_an_event_where_its_provider_is_off_leaves_it_as_it_was(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """A replay run from a shell without the Stripe secrets (an operator's own session on the server) processed the
    event anyway: the provider call failed, and an event processed long ago became `failed` (attempts and failures
    counted, `last_error` set: the `giving_events{status="failed"}` alert fires), with a traceback on stderr. The
    command says "always safe"; it now refuses before touching the event."""
    body = fixture("stripe/event_payout_paid.constructed.json")
    processed_at = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        uow.session.add(
            InboundEvent(
                provider="stripe",
                external_id=body["id"],
                event_type=body["type"],
                body=json.dumps(body),
                status=EventStatus.PROCESSED,
                attempts=1,
                processed_at=processed_at,
            )
        )

    result = subprocess.run(
        [GIVING, "events", "replay", body["id"]],
        check=False,
        cwd=tmp_path,
        env=_environ(GIVING_DATABASE__URL=database_url, GIVING_ENV="test"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1, result.stderr[-800:]
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr[-800:]
    assert result.stderr.splitlines() == [
        f"error: Stripe is not configured here (GIVING_STRIPE__SECRET_KEY, GIVING_STRIPE__WEBHOOK_SECRET): stripe "
        f"{body['id']} {body['type']} is left as it is"
    ]
    with runtime.read_session() as session:
        event = session.exec(select(InboundEvent).where(InboundEvent.external_id == body["id"])).one()
    assert (event.status, event.attempts, event.failures, event.last_error) == (EventStatus.PROCESSED, 1, 0, None)
