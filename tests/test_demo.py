"""`giving demo`: the whole system on the embedded default, run as a user runs it (a subprocess in a fresh directory),
and the pieces of it that can be checked alone (signatures, the fresh start, the empty-database rule)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console

from giving.demo.run import (
    DATABASE_NAME,
    GOCARDLESS_WEBHOOK_SECRET,
    MARKER,
    STRIPE_WEBHOOK_SECRET,
    Options,
    fresh_directory,
    run,
    signed,
)
from giving.demo.scenario import Delivery, gocardless_fee_text
from giving.demo.world import nested
from tests.fixtures.services import POSTGRES_ADMIN_URL, RUN_ID, need
from webhooks import verify
from webhooks.errors import InvalidGoCardlessSignature, InvalidSignature

PRINTED_FILE = re.compile(r"(\S+\.(?:pdf|ods|xml))\b")


def giving_command() -> list[str]:
    script = Path(sys.executable).with_name("giving")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from giving.cli import main; main()"]


def run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing of the developer's (or the test run's) settings: the demo needs none.
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIVING_")}
    return subprocess.run(
        [*giving_command(), "demo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def printed_files(stdout: str, cwd: Path) -> list[Path]:
    return [cwd / match for match in PRINTED_FILE.findall(stdout)]


@pytest.mark.slow
def test_the_demo_runs_on_a_fresh_directory_with_no_services(tmp_path: Path) -> None:
    result = run_demo(tmp_path)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "All checks passed" in out
    assert "FAIL" not in out
    assert (tmp_path / "var" / "demo" / DATABASE_NAME).is_file()
    files = printed_files(out, tmp_path)
    pdfs = [p for p in files if p.suffix == ".pdf"]
    # Ten gift receipts, a sale receipt, a corrected receipt and eight statements, each printed with its path.
    assert len(pdfs) >= 20
    assert len({p.name for p in pdfs}) == len(pdfs)
    claim_files = {p for p in files if p.suffix in (".ods", ".xml")}
    assert sorted(p.suffix for p in claim_files) == [".ods", ".xml"]
    missing = [str(p) for p in files if not p.is_file() or p.stat().st_size == 0]
    assert not missing
    assert all(p.read_bytes().startswith(b"%PDF") for p in pdfs)
    assert len(list((tmp_path / "var" / "demo" / "outbox").glob("*.eml"))) >= len(pdfs)
    # What it shows: the gifts, the claim and the reconciliation; logs stay on stderr.
    for shown in ("Gifts recorded", "Amina Okafor", "£52.50", "Gift Aid claim", "held back", "reconciled"):
        assert shown in out
    assert "unreconciled" not in out
    assert " WARNING " not in out and "Traceback" not in out


@pytest.mark.slow
def test_the_demo_runs_on_an_empty_postgresql_database(tmp_path: Path) -> None:
    need("PostgreSQL", "127.0.0.1", 5432)
    name = f"giving_demo_{RUN_ID}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        result = run_demo(tmp_path, "--database-url", url)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert "All checks passed" in result.stdout
        assert not (tmp_path / "var" / "demo" / DATABASE_NAME).exists()
        assert all(p.is_file() for p in printed_files(result.stdout, tmp_path))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_the_demo_refuses_a_database_that_has_anything_in_it(database_url: str, tmp_path: Path) -> None:
    output = io.StringIO()

    status = run(Options(directory=tmp_path / "demo", database_url=database_url), Console(file=output, width=200))

    assert status == 1
    assert "is not empty" in output.getvalue()


def test_a_run_starts_from_nothing_and_removes_only_what_the_demo_made(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "demo"
    for name in ("receipts/gift_receipt/GR-000001.pdf", "outbox/a.eml", "claims/c.xml"):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("old")
    (directory / DATABASE_NAME).write_text("old")
    (directory / f"{DATABASE_NAME}-wal").write_text("old")
    (directory / "notes.txt").write_text("mine")
    (directory / MARKER).write_text("")  # the earlier run made the directory

    url = fresh_directory(Options(directory=directory))

    assert url == f"sqlite:///{directory.as_posix()}/{DATABASE_NAME}"
    assert sorted(p.name for p in directory.iterdir()) == [MARKER, "notes.txt"]


def test_deliveries_are_signed_the_way_the_providers_sign_them() -> None:
    stripe_event = {"id": "evt_1", "object": "event", "type": "payout.paid", "created": 1, "data": {"object": {}}}
    gocardless_event = {"id": "EV1", "resource_type": "payouts", "action": "paid", "links": {"payout": "PO1"}}
    now = int(time.time())

    path, body, headers = signed(Delivery("stripe", [stripe_event]), now=now)
    assert path == "/webhooks/stripe"
    assert verify.stripe_event(body, headers["Stripe-Signature"], (STRIPE_WEBHOOK_SECRET,)).external_id == "evt_1"
    path, body, headers = signed(Delivery("gocardless", [gocardless_event]), now=now)
    assert path == "/webhooks/gocardless"
    [event] = verify.gocardless_events(body, headers["Webhook-Signature"], (GOCARDLESS_WEBHOOK_SECRET,))
    assert event.event_type == "payouts.paid"

    _, body, headers = signed(Delivery("stripe", [stripe_event], forged=True), now=now)
    with pytest.raises(InvalidSignature):
        verify.stripe_event(body, headers["Stripe-Signature"], (STRIPE_WEBHOOK_SECRET,))
    _, body, headers = signed(Delivery("gocardless", [gocardless_event], forged=True), now=now)
    with pytest.raises(InvalidGoCardlessSignature):
        verify.gocardless_events(body, headers["Webhook-Signature"], (GOCARDLESS_WEBHOOK_SECRET,))


def test_the_fake_stripe_reads_the_sdk_form_encoding_back() -> None:
    form = {
        "mode": ["payment"],
        "metadata[checkout_id]": ["c1"],
        "line_items[0][price_data][unit_amount]": ["500"],
        "line_items[0][quantity]": ["2"],
        "line_items[1][price_data][unit_amount]": ["1000"],
        "expand[0]": ["latest_charge"],
    }

    assert nested(form) == {
        "mode": "payment",
        "metadata": {"checkout_id": "c1"},
        "line_items": [
            {"price_data": {"unit_amount": "500"}, "quantity": "2"},
            {"price_data": {"unit_amount": "1000"}},
        ],
        "expand": ["latest_charge"],
    }


@pytest.mark.parametrize(("amount", "fee"), [(1500, "35.0"), (5250, "72.5"), (50_000, "400.0")])
def test_gocardless_fees_are_exact_pence(amount: int, fee: str) -> None:
    assert gocardless_fee_text(amount) == fee
