"""The `giving` command line against contract.md, at edges found in review: a database that cannot be reached or was
never migrated is a message and exit 1, not a traceback; payouts' JSON has the contract's timestamps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.runtime import Runtime
from core.settings import Settings
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments.payout_fakes import money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import expanded_fixture_transactions, stripe_money, stripe_payout_event

GIVING = str(Path(sys.executable).parent / "giving")
UNREACHABLE = "postgresql://giving@127.0.0.1:1/giving"
PASSWORD = "a-long-enough-password-1234"


def giving(args: list[str], cwd: Path, *, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    environ.update(env)
    return subprocess.run(
        [GIVING, *args], check=False, cwd=cwd, env=environ, input=stdin, capture_output=True, text=True, timeout=120
    )


# --- a database error: "1 with a message" --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, stdin",
    [
        (["users", "add", "boss@example.org", "--role", "admin"], PASSWORD + "\n"),
        (["tokens", "create", "boss@example.org"], ""),
        (["giftaid", "claim", "--through", "2025-01-01", "--out", "out"], ""),
        (["giftaid", "explain", "0b5e4b34-5c5c-4a3e-8f84-000000000000"], ""),
        (["events", "replay", "evt_123"], ""),
    ],
    ids=["users-add", "tokens-create", "giftaid-claim", "giftaid-explain", "events-replay"],
)
def test_unreachable_database_gives_a_message_not_a_traceback(args: list[str], stdin: str, tmp_path: Path) -> None:
    """contract: `users add` '0, or 1 with a message'; `tokens create` '0, or 1'; giftaid claim '1 error';
    cli.py: 'errors exit 1 with a message, no traceback' (as `db upgrade` already does)."""
    result = giving(args, tmp_path, stdin=stdin, GIVING_DATABASE__URL=UNREACHABLE)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr[:600]
    assert result.stderr.startswith("error: "), result.stderr[:600]


def test_users_add_before_db_upgrade_gives_a_message_not_a_traceback(tmp_path: Path) -> None:
    """A database that exists but was never migrated (the default SQLite file): `users add` exits 1 with a message,
    not a traceback of `no such table: staff_users`."""
    result = giving(["users", "add", "boss@example.org", "--role", "admin"], tmp_path, stdin=PASSWORD + "\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[:600]
    assert result.stderr.startswith("error: "), result.stderr[:600]


# --- `giving reconcile --json` timestamps -----------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


ISO_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.mark.parametrize("args", [["reconcile", "--json"], ["payouts", "list", "--json"]])
def test_reconcile_json_timestamps_are_utc_z(
    args: list[str],
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """contract: 'Timestamps in JSON are `YYYY-MM-DDTHH:MM:SSZ` (UTC)'. giving/commands/shop.py `_emit_json` uses
    `default=str`, so a payout's `reconciled_at` comes out as `2026-...  HH:MM:SS.ffffff+00:00`."""
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    stripe_money(runtime)
    run_giving(["reconcile"], settings, monkeypatch, tmp_path)

    result = run_giving(args, settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "reconciled"
    assert item["reconciled_at"] is not None
    assert ISO_Z.fullmatch(item["reconciled_at"]), item["reconciled_at"]


def test_payouts_show_timestamps_are_utc_z(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    stripe_money(runtime)
    run_giving(["reconcile"], settings, monkeypatch, tmp_path)

    result = run_giving(["payouts", "show", "po_test_Daily01"], settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert ISO_Z.fullmatch(body["reconciled_at"]), body["reconciled_at"]


# --- the commands on a fresh directory: defaults only, no settings.toml (contract: Installation and commands) -----


def test_a_fresh_directory_upgrade_users_tokens_and_claim_with_the_defaults_only(tmp_path: Path) -> None:
    """'`giving db upgrade` applies alembic migrations ... (creates an SQLite file if needed) and leaves a stocked
    default shop catalogue'; 'Every other key has a default that lets `db upgrade`, ..., `users`, `tokens`, `giftaid
    claim` ... run'; '`tokens create` prints exactly the token on one line'; a second upgrade changes nothing."""
    import sqlite3

    first = giving(["db", "upgrade"], tmp_path)
    assert first.returncode == 0, first.stderr[-600:]
    database = tmp_path / "var" / "giving.sqlite3"
    assert database.is_file()
    again = giving(["db", "upgrade"], tmp_path)
    assert again.returncode == 0, again.stderr[-600:]
    with sqlite3.connect(database) as conn:
        skus, least = conn.execute("SELECT COUNT(*), MIN(stock) FROM skus").fetchone()
    assert skus > 0 and least > 0

    fundraiser = giving(["users", "add", "Helper@Example.org", "--role", "fundraiser"], tmp_path, stdin=PASSWORD + "\n")
    assert (fundraiser.returncode, fundraiser.stdout) == (0, "")
    finance = giving(["users", "add", "money@example.org", "--role", "finance"], tmp_path, stdin=PASSWORD + "\n")
    assert finance.returncode == 0
    assert re.fullmatch(r"otpauth://totp/\S+\n", finance.stdout), finance.stdout

    token = giving(["tokens", "create", "helper@example.org"], tmp_path)
    assert token.returncode == 0
    assert re.fullmatch(r"gvg_[A-Za-z0-9_-]{40,}\n", token.stdout), token.stdout

    nothing = giving(["giftaid", "claim", "--through", "2025-01-01", "--out", "out", "--json"], tmp_path)
    assert nothing.returncode == 3, nothing.stderr[-600:]
    assert json.loads(nothing.stdout)["claim_id"] is None
    assert not (tmp_path / "out").exists()
