"""Receipts tests send real email: every runtime here points `[email]` at the loopback SMTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.fixtures.app import make_settings
from tests.fixtures.smtp import Mailbox


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    return smtp_server[0]


def receipts_settings(database_url: str, tmp_path: Path, smtp_port: int, **more: Any) -> Settings:
    """The charity, its receipts folder and the loopback SMTP server every receipts test sends through."""
    return make_settings(
        database_url,
        tmp_path,
        email={"smtp_host": "127.0.0.1", "smtp_port": smtp_port},
        receipts={"storage_dir": str(tmp_path / "receipts"), "from_email": "receipts@calais-aid.example"},
        charity={"name": "Calais Refugee Aid", "registration_number": "1234567", "email": "hello@calais-aid.example"},
        **more,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    return receipts_settings(database_url, tmp_path, smtp_server[1])
