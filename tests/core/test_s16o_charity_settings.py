"""`[charity]` settings that HMRC's claim schema constrains are checked at start-up, with a clear message, rather
than failing every Gift Aid claim message later: `hmrc_reference` (`[A-Z]{1,2}[0-9]{1,5}`), `registration_number`
(1-20 characters, starting with a letter or digit), `name` (1-160 characters, starting with a letter or digit).
Empty values still start (the demo, a charity not yet registered). And a Stripe key whose mode is not `[stripe]
livemode`'s stops the start: every event of its account would be stored and ignored as misdirected."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, get_settings, load_settings


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text("")
    monkeypatch.setenv("GIVING_SETTINGS", str(path))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hmrc_reference", "ab12345", r"charity\.hmrc_reference: .*one or two capital letters"),
        ("hmrc_reference", "AB123456", r"charity\.hmrc_reference: .*'AB123456'"),
        ("hmrc_reference", "ABC1", r"charity\.hmrc_reference"),
        ("hmrc_reference", "AB 12345", r"charity\.hmrc_reference"),
        ("hmrc_reference", "12345", r"charity\.hmrc_reference"),
        ("registration_number", "123456789012345678901", r"charity\.registration_number: .*at most 20"),
        ("registration_number", "-1234", r"charity\.registration_number: .*letter or digit"),
        ("name", "'Calais' Aid", r"charity\.name: .*start with a letter or digit"),
        ("name", " Calais Aid", r"charity\.name: .*start with a letter or digit"),
        ("name", "\u00c9lan Aid", r"charity\.name: .*start with a letter or digit"),
        ("name", "C" * 161, r"charity\.name: .*at most 160"),
        ("name", "Calais\nAid", r"charity\.name: .*line break"),
    ],
)
def test_a_value_hmrc_would_refuse_stops_the_start(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"GIVING_CHARITY__{key.upper()}", value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hmrc_reference", "AB12345"),
        ("hmrc_reference", "X1"),
        ("hmrc_reference", "CH12345"),
        ("hmrc_reference", ""),
        ("registration_number", "SC012345"),
        ("registration_number", "12345678901234567890"),
        ("registration_number", ""),
        ("name", "Calais Refugee Aid"),
        ("name", "1st Dover Aid (CIO) \u2013 Caf\u00e9"),
        ("name", ""),
    ],
)
def test_values_hmrc_takes_and_empty_ones_start(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(f"GIVING_CHARITY__{key.upper()}", value)
    assert getattr(load_settings().charity, key) == value


def test_the_file_is_checked_too(settings_file: Path) -> None:
    settings_file.write_text('[charity]\nhmrc_reference = "AB-12345"\n')
    with pytest.raises(SettingsError, match=r"charity\.hmrc_reference"):
        load_settings()


def test_the_defaults_and_the_shipped_file_start(settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().charity.hmrc_reference == "AB12345"  # the defaults
    shipped = Path(__file__).resolve().parents[2] / "settings.toml"
    monkeypatch.setenv("GIVING_SETTINGS", str(shipped))
    assert load_settings().charity.name == "Calais Refugee Aid"


@pytest.mark.parametrize(
    ("key", "livemode", "message"),
    [
        ("sk_live_abc", "false", r"stripe: .*live-mode key but livemode = false.*GIVING_STRIPE__LIVEMODE=true"),
        ("rk_live_abc", "false", r"stripe: .*live-mode key"),
        ("sk_test_abc", "true", r"stripe: .*test-mode key but livemode = true.*GIVING_STRIPE__LIVEMODE=false"),
    ],
)
def test_a_stripe_key_in_the_other_mode_stops_the_start(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, livemode: str, message: str
) -> None:
    monkeypatch.setenv("GIVING_STRIPE__SECRET_KEY", key)
    monkeypatch.setenv("GIVING_STRIPE__LIVEMODE", livemode)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize(
    ("key", "livemode"),
    [("sk_live_abc", "true"), ("rk_live_abc", "true"), ("sk_test_abc", "false"), ("", "true"), ("stand-in", "false")],
)
def test_a_stripe_key_in_the_same_mode_or_of_no_known_mode_starts(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, key: str, livemode: str
) -> None:
    monkeypatch.setenv("GIVING_STRIPE__SECRET_KEY", key)
    monkeypatch.setenv("GIVING_STRIPE__LIVEMODE", livemode)
    assert load_settings().stripe.livemode is (livemode == "true")
