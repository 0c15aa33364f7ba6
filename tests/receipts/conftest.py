"""Receipts tests send real email: every runtime here points `[email]` at the loopback SMTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tests.fixtures.app import make_settings
from tests.fixtures.smtp import Mailbox


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    return smtp_server[0]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        email={"smtp_host": "127.0.0.1", "smtp_port": smtp_server[1]},
        receipts={"storage_dir": str(tmp_path / "receipts"), "from_email": "receipts@calais-aid.example"},
        charity={"name": "Calais Refugee Aid", "registration_number": "1234567", "email": "hello@calais-aid.example"},
    )
