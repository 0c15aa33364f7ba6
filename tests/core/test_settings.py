"""Settings: settings.toml (or GIVING_SETTINGS) under GIVING_<SECTION>__<KEY> variables, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import SettingsError, get_settings, load_settings


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "settings.toml"
    monkeypatch.setenv("GIVING_SETTINGS", str(path))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_reads_the_file_and_environment_overrides_it(settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_file.write_text(
        '[database]\nurl = "sqlite:///./var/from-file.sqlite3"\n[giftaid]\naggregate_limit = 1500\n'
    )
    assert load_settings().database.url == "sqlite:///./var/from-file.sqlite3"
    monkeypatch.setenv("GIVING_DATABASE__URL", "postgresql://giving@db/giving")
    monkeypatch.setenv("GIVING_WEB__SESSION_HOURS", "2")
    settings = load_settings()
    assert settings.database.url == "postgresql://giving@db/giving"
    assert settings.web.session_hours == 2
    # The override changes one key; the rest of the section still comes from the file.
    assert settings.giftaid.aggregate_limit == 1500


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.database.url.startswith("sqlite:///")
    assert settings.web.secret_key.get_secret_value() == ""


def test_an_unknown_setting_is_refused_by_name(settings_file: Path) -> None:
    settings_file.write_text("[database]\nurll = 'sqlite:///x'\n")
    with pytest.raises(SettingsError, match=r"database\.urll"):
        load_settings()
    settings_file.write_text("[databse]\nurl = 'sqlite:///x'\n")
    with pytest.raises(SettingsError, match="databse"):
        load_settings()


def test_a_bad_value_is_refused_with_the_key_and_the_reason(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file.write_text("[database]\npool_size = 'lots'\n")
    with pytest.raises(SettingsError, match=r"database\.pool_size: .*integer"):
        load_settings()
    settings_file.write_text("")
    monkeypatch.setenv("GIVING_DATABASE__URL", "mysql://nope")
    with pytest.raises(SettingsError, match=r"database\.url: .*sqlite"):
        load_settings()


def test_a_secret_in_the_file_is_refused(settings_file: Path) -> None:
    settings_file.write_text("[stripe]\nsecret_key = 'sk_live_oops'\n")
    with pytest.raises(SettingsError, match=r"\[stripe\] secret_key is a secret.*GIVING_STRIPE__SECRET_KEY"):
        load_settings()
    settings_file.write_text("[web]\nsecret_key = 'oops'\n")
    with pytest.raises(SettingsError, match=r"\[web\] secret_key"):
        load_settings()


def test_a_secret_from_the_environment_is_accepted_and_masked(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_file.write_text("")
    monkeypatch.setenv("GIVING_WEB__SECRET_KEY", "s3cret-from-env")
    settings = load_settings()
    assert settings.web.secret_key.get_secret_value() == "s3cret-from-env"
    assert "s3cret-from-env" not in repr(settings)


def test_a_command_with_bad_settings_exits_1_with_a_message(settings_file: Path) -> None:
    from giving.cli import app

    settings_file.write_text("[database]\nurl = 42\n")
    result = CliRunner().invoke(app, ["tokens", "create", "someone@example.org"])
    assert result.exit_code == 1
    assert "database.url" in result.output
    assert "Traceback" not in result.output
