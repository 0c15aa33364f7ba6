"""Settings that make no sense are refused at start-up by key and reason, not accepted to fail later."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, get_settings, load_settings


@pytest.fixture(autouse=True)
def _no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        # Every donation would be refused: no amount is both at least 500 and at most 200.
        ({"donations": {"min_amount": 50_000, "max_amount": 20_000}}, r"donations: .*min_amount"),
        # smtplib takes 0 as "non-blocking" and a negative timeout as an error, on every email.
        ({"email": {"timeout": 0}}, r"email\.timeout"),
        ({"email": {"timeout": -5}}, r"email\.timeout"),
        # Links in emails (subscription confirmations, password resets) are built on it: without a scheme they are
        # not links.
        ({"web": {"base_url": "giving.example.org"}}, r"web\.base_url"),
        ({"web": {"base_url": ""}}, r"web\.base_url"),
        ({"hmrc": {"gateway_url": "transaction-engine.tax.service.gov.uk/submission"}}, r"hmrc\.gateway_url"),
        ({"stripe": {"api_base": "127.0.0.1:12111"}}, r"stripe\.api_base"),
        ({"gocardless": {"base_url": "ftp://127.0.0.1"}}, r"gocardless\.base_url"),
        # Only psycopg 3 is installed and used (the engine and the web process's asyncio pool).
        ({"database": {"url": "postgresql+psycopg2://giving@db/giving"}}, r"database\.url"),
        ({"database": {"url": "postgresql+asyncpg://giving@db/giving"}}, r"database\.url"),
        # Refused here, not met as a traceback when the engine is made.
        ({"database": {"url": "postgresql://giving@db:5432x/giving"}}, r"database\.url"),
    ],
)
def test_nonsense_is_refused_by_key(overrides: dict[str, dict[str, object]], where: str) -> None:
    with pytest.raises(SettingsError, match=where):
        load_settings(**overrides)


def test_sensible_values_are_kept() -> None:
    settings = load_settings(
        donations={"min_amount": 100, "max_amount": 100},
        email={"timeout": 2.5},
        web={"base_url": "https://giving.example.org/"},
        stripe={"api_base": ""},
        gocardless={"base_url": "http://127.0.0.1:9"},
        database={"url": "postgresql+psycopg://giving@db/giving"},
    )
    assert settings.donations.min_amount == settings.donations.max_amount == 100
    assert settings.web.base_url == "https://giving.example.org/"
    for url in ("sqlite:///./var/x.sqlite3", "sqlite+pysqlite:///x.sqlite3", "postgresql://giving@db/giving"):
        assert load_settings(database={"url": url}).database.url == url
