"""contract.md, Settings and /readyz, line by line: the keys it names exist with the defaults it gives; an environment
variable overrides one key of a section the file also sets; `GIVING_SETTINGS` names the file from any directory; the
database URL forms it lists are accepted; a missing provider secret turns off only that provider, with a warning that
says so; `GET /readyz` answers exactly the four fields it names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.db import normalise_url
from core.settings import Settings, SettingsError, feature_warnings, get_settings, load_settings


@pytest.fixture
def no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("GIVING_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_keys_the_contract_names_have_defaults_that_need_no_file(no_file: Path) -> None:
    settings = load_settings()
    assert settings.database.url == "sqlite:///./var/giving.sqlite3"  # an SQLite file under ./var/
    assert settings.broker.url == ""
    for key in ("secret_key", "webhook_secret", "api_base"):
        assert hasattr(settings.stripe, key)
    for key in ("access_token", "webhook_secret", "environment", "base_url"):
        assert hasattr(settings.gocardless, key)
    assert settings.stripe.api_base == "" and settings.gocardless.base_url == ""  # the providers' own
    for key in ("name", "hmrc_reference", "regulator", "registration_number", "address", "postcode"):
        assert getattr(settings.charity, key)
    assert settings.charity.financial_year_end == "04-05"
    assert settings.giftaid.aggregate_limit == 2000
    assert settings.receipts.storage_dir and settings.receipts.from_email
    assert settings.email.smtp_host and settings.email.smtp_port
    # SMTP: no TLS and no login unless configured.
    assert settings.email.use_tls is False and settings.email.username == ""


def test_an_environment_variable_overrides_one_key_of_a_section_the_file_sets(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_file / "settings.toml").write_text('[charity]\nname = "From the file"\nhmrc_reference = "XR12345"\n')
    monkeypatch.setenv("GIVING_CHARITY__NAME", "From the environment")
    settings = load_settings()
    assert settings.charity.name == "From the environment"
    assert settings.charity.hmrc_reference == "XR12345"


def test_giving_settings_names_the_file_from_any_directory(no_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_file / "elsewhere.toml").write_text('[charity]\nname = "Named"\n')
    (no_file / "settings.toml").write_text('[charity]\nname = "Local"\n')
    sub = no_file / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_settings().charity.name == Settings().charity.name  # no settings.toml here: the defaults
    monkeypatch.setenv("GIVING_SETTINGS", str(no_file / "elsewhere.toml"))
    assert load_settings().charity.name == "Named"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///./var/x.sqlite3", "pysqlite"),
        ("postgresql://giving@db/giving", "psycopg"),
        ("postgresql+psycopg://giving@db/giving", "psycopg"),
    ],
)
def test_the_database_url_forms_of_the_contract_work_with_psycopg_3(url: str, driver: str, no_file: Path) -> None:
    import sqlalchemy as sa

    settings = load_settings(database={"url": url})
    assert sa.make_url(normalise_url(settings.database.url)).get_driver_name() == driver


@pytest.mark.parametrize("url", ["", "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672/%2F"])
def test_the_broker_url_forms_of_the_contract(url: str, no_file: Path) -> None:
    assert load_settings(broker={"url": url}).broker.url == url


@pytest.mark.parametrize("section, key", [("stripe", "secret_key"), ("gocardless", "access_token")])
def test_a_secret_in_the_file_is_refused(section: str, key: str, no_file: Path) -> None:
    (no_file / "settings.toml").write_text(f'[{section}]\n{key} = "oops"\n')
    with pytest.raises(SettingsError, match="environment"):
        load_settings()


def test_a_missing_provider_secret_is_a_warning_naming_what_is_off(no_file: Path) -> None:
    stripe_only = load_settings(stripe={"secret_key": "sk_test_x", "webhook_secret": "whsec_x"})
    (warning,) = feature_warnings(stripe_only)
    assert warning.startswith("GoCardless is off") and "404" in warning and "503" in warning
    assert len(feature_warnings(Settings())) == 2


def test_readyz_answers_exactly_the_contract_fields(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["database", "broker", "pending_events", "pending_jobs"]
    assert body["database"] == "ok" and body["broker"] == "ok"
    assert isinstance(body["pending_events"], int) and isinstance(body["pending_jobs"], int)
    assert client.get("/healthz").status_code == 200
