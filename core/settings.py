"""Typed settings: `settings.toml` (or `GIVING_SETTINGS`) overridden by `GIVING_<SECTION>__<KEY>` variables.

Secrets are read only from the environment: a secret key found in the TOML file is refused at start-up.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_KEYS: dict[str, set[str]] = {
    "stripe": {"secret_key", "webhook_secret", "previous_webhook_secret"},
    "gocardless": {"access_token", "webhook_secret", "previous_webhook_secret"},
    "email": {"password"},
    "web": {"secret_key", "metrics_token"},
    "hmrc": {"password"},
}

# Sections whose `url` may carry a password (scheme://user:password@host): refused in the file like SECRET_KEYS.
URL_SECTIONS = ("database", "broker")
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@?#:]*:[^/@?#]+@|[?&]password=", re.I)

METRICS_TOKEN_MIN_LENGTH = 32


class SettingsError(Exception):
    """A bad settings file or value; the message says which key and why."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


_HTTP_URL = re.compile(r"^https?://[^\s/?#]+(/\S*)?$", re.IGNORECASE)


def _http_url(value: str, *, optional: bool) -> str:
    """An http(s) URL with a host (or "" where that means the default): a URL without its scheme would otherwise be
    taken as a relative path by the SDKs, and as no link at all in an email."""
    if optional and value == "":
        return value
    if not _HTTP_URL.match(value):
        either = '"" or ' if optional else ""
        # The value is not repeated: a URL may carry a password.
        raise ValueError(f"must be {either}an http(s) URL such as https://host[:port][/path]")
    return value


class DatabaseSettings(Section):
    url: str = "sqlite:///./var/giving.sqlite3"
    pool_size: int = Field(default=5, ge=1, le=100)
    max_overflow: int = Field(default=5, ge=0, le=100)
    pool_timeout: float = Field(default=10.0, gt=0)
    # Seconds libpq waits to connect (TCP and start-up) before giving up; libpq's own default is for ever, so a
    # server gone silent (packets dropped) hung /readyz and every request. A URL's `connect_timeout` wins.
    connect_timeout: int = Field(default=10, ge=1, le=300)
    # psycopg prepares a statement on a connection after its 5th run there. Behind PgBouncer in transaction mode
    # this needs PgBouncer 1.22+ with `max_prepared_statements` set; with an older PgBouncer, turn it off.
    prepared_statements: bool = True
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        # psycopg 3 is the one PostgreSQL driver installed and used (the engine and the web process's asyncio pool).
        if not re.match(r"^(sqlite(\+pysqlite)?|postgresql(\+psycopg)?)://", value):
            raise ValueError("must be sqlite:///PATH, postgresql://... or postgresql+psycopg://...")
        import sqlalchemy as sa

        try:
            sa.make_url(value)
        except (sa.exc.ArgumentError, ValueError):
            # Not repeated: the URL may carry a password.
            raise ValueError("is not a database URL (a port that is not a number, or a stray character?)") from None
        return value


class BrokerSettings(Section):
    url: str = ""
    # In-process worker threads when no broker is configured.
    inline_threads: int = Field(default=4, ge=1, le=64)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not re.match(r"^(redis|rediss|amqp|amqps)://", value):
            raise ValueError('must be "" (in-process), redis://... or amqp://...')
        return value


class WebhookSecrets(Section):
    webhook_secret: SecretStr = SecretStr("")
    # While a secret is being changed: deliveries signed with this one are accepted too (docs/operations.md §4).
    previous_webhook_secret: SecretStr = SecretStr("")

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        """The secrets a delivery may be signed with, the current one first."""
        secrets = (self.webhook_secret.get_secret_value(), self.previous_webhook_secret.get_secret_value())
        return tuple(secret for secret in secrets if secret)


class StripeSettings(WebhookSecrets):
    secret_key: SecretStr = SecretStr("")
    api_base: str = ""
    # A live installation refuses test-mode events and the other way round.
    livemode: bool = False

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        return _http_url(value, optional=True)

    @model_validator(mode="after")
    def _key_in_the_same_mode(self) -> StripeSettings:
        """A key whose mode (its prefix) is not `livemode`'s would have every event of its account stored and
        ignored as misdirected: live gifts lost without a word, and Stripe, answered 2xx, never sends them again."""
        key = self.secret_key.get_secret_value()
        live_key = key.startswith(("sk_live_", "rk_live_"))
        if (live_key or key.startswith(("sk_test_", "rk_test_"))) and live_key != self.livemode:
            mode = "live" if live_key else "test"
            raise ValueError(
                f"secret_key is a {mode}-mode key but livemode = {str(self.livemode).lower()}: every {mode}-mode "
                f"event would be ignored; set livemode = {str(live_key).lower()} "
                f"(GIVING_STRIPE__LIVEMODE={str(live_key).lower()}) or use the other key"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key.get_secret_value() and self.webhook_secret.get_secret_value())


class GoCardlessSettings(WebhookSecrets):
    access_token: SecretStr = SecretStr("")
    environment: Literal["sandbox", "live"] = "sandbox"
    base_url: str = ""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value, optional=True)

    @property
    def enabled(self) -> bool:
        return bool(self.access_token.get_secret_value() and self.webhook_secret.get_secret_value())


class CharitySettings(Section):
    name: str = "Calais Refugee Aid"
    hmrc_reference: str = "AB12345"
    regulator: Literal["CCEW", "CCNI", "OSCR", "none", "other"] = "CCEW"
    # With regulator "other": the regulator's name, as the claim gives it to HMRC (OtherReg).
    other_regulator: str = Field(default="", max_length=160)
    registration_number: str = "1234567"
    address: str = "1 Example Street, Dover"
    postcode: str = "CT16 1AA"
    email: str = "hello@example.org"
    phone: str = "01304 000000"
    logo_path: str = ""
    # "04-05" is the tax year; otherwise the month-day of the accounting year end.
    financial_year_end: str = "04-05"
    # The date HMRC recognised the charity; gifts before it are not claimable.
    recognised_on: dt.date = dt.date(2015, 1, 1)
    authorised_official_first_name: str = "Jane"
    authorised_official_last_name: str = "Treasurer"
    authorised_official_phone: str = "01304 000000"

    @model_validator(mode="after")
    def _other_regulator_named(self) -> CharitySettings:
        if self.regulator == "other" and not self.other_regulator.strip():
            raise ValueError('regulator "other" needs other_regulator: the regulator\'s name, for HMRC')
        return self

    # What HMRC's claim schema (r68) takes, checked here so a bad value stops the start with its reason instead of
    # failing every claim message later. Only when set: "" starts (the demo, a charity not yet registered).
    @field_validator("hmrc_reference")
    @classmethod
    def _hmrc_reference(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Z]{1,2}[0-9]{1,5}", value):
            raise ValueError(
                f"{value!r} is not an HMRC charity reference: one or two capital letters, then 1-5 digits "
                '(e.g. "AB12345"; HMRC\'s schema `[A-Z]{1,2}[0-9]{1,5}`)'
            )
        return value

    @field_validator("name", "registration_number")
    @classmethod
    def _starts_with_a_letter_or_digit(cls, value: str, info: ValidationInfo) -> str:
        longest = 160 if info.field_name == "name" else 20
        if not value:
            return value
        if len(value) > longest:
            raise ValueError(f"must be at most {longest} characters (HMRC's schema), not {len(value)}")
        if not re.match(r"[A-Za-z0-9]", value):
            raise ValueError(f"{value[:40]!r}: must start with a letter or digit (A-Z, a-z, 0-9: HMRC's schema)")
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line: HMRC's schema takes no line break")
        return value

    @field_validator("financial_year_end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{2})-(\d{2})", value)
        if not match:
            raise ValueError('must be "MM-DD", e.g. "04-05" or "12-31"')
        try:
            dt.date(2001, int(match[1]), int(match[2]))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a month-day") from exc
        return value


class GiftAidSettings(Section):
    aggregate_limit: int = Field(default=2000, ge=0, le=3000)
    # Oral declarations wait for the 30-day cancellation window after the written confirmation.
    wait_for_oral_cancellation_window: bool = True
    donation_wording_version: str = "hmrc-enduring-2025"


class HmrcSettings(Section):
    gateway_url: str = "https://transaction-engine.tax.service.gov.uk/submission"
    sender_id: str = ""
    password: SecretStr = SecretStr("")
    vendor_id: str = "0000"
    # true: every message says <GatewayTest>1</GatewayTest> (HMRC's "test in live": checked, then thrown away, so a
    # claim "accepted" then was never claimed). Off by default: a claim sent or a file written is a real one.
    test_mode: bool = False

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        return _http_url(value, optional=False)


class ReceiptsSettings(Section):
    storage_dir: str = "./var/receipts"
    from_email: str = "receipts@example.org"
    # "per_gift" (a receipt for each gift) or "annual" (a yearly statement instead), for new supporters.
    default_preference: Literal["per_gift", "annual"] = "per_gift"


class EmailSettings(Section):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    use_tls: bool = False
    from_email: str = "hello@example.org"
    # Seconds; smtplib takes 0 as "never wait" and refuses a negative one, on every email.
    timeout: float = Field(default=10.0, gt=0, le=300)
    # When set, messages are written there as .eml files instead of being sent (the demo, a laptop).
    outbox_dir: str = ""


class WebSettings(Section):
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr = SecretStr("")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    session_hours: int = Field(default=8, ge=1)
    # Public forms: requests per client address per minute.
    form_rate_per_minute: int = Field(default=10, ge=1)
    login_rate_per_minute: int = Field(default=10, ge=1)
    secure_cookies: bool = False
    keep_webhook_bodies_days: int = Field(default=90, ge=1)
    # `GET /metrics`: the bearer token Prometheus sends (a secret: GIVING_WEB__METRICS_TOKEN). Unset, /metrics
    # answers only requests made on this machine (loopback, not through a proxy). docs/operations.md §5.
    metrics_token: SecretStr = SecretStr("")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value, optional=False)

    @field_validator("metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < METRICS_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"must be at least {METRICS_TOKEN_MIN_LENGTH} characters (e.g. `openssl rand -hex 32`), or unset"
            )
        return value


class DonationSettings(Section):
    min_amount: int = Field(default=100, ge=1)
    max_amount: int = Field(default=1_000_000, ge=100)
    regular_grace_days: int = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _a_range(self) -> DonationSettings:
        if self.min_amount > self.max_amount:
            raise ValueError(
                f"min_amount ({self.min_amount}) is above max_amount ({self.max_amount}): every gift would be refused"
            )
        return self


class ShopSettings(Section):
    # VAT in basis points (2000 = 20%); 0 while the charity is below the VAT threshold.
    vat_rate_bp: int = Field(default=0, ge=0, le=10_000)
    low_stock_threshold: int = Field(default=5, ge=0)
    # Where the shirts' prices include the postage, as ISO codes separated by commas: the UK, and the Channel Islands
    # and the Isle of Man, which Royal Mail serves at its inland prices (docs/checkout.md, "Postage").
    uk_postage_countries: str = "GB,GG,JE,IM"
    # Pence charged once per order posted anywhere else, as its own line; 0: the shop does not post abroad, and the
    # checkout refuses an address outside `uk_postage_countries`.
    international_postage: int = Field(default=0, ge=0, le=100_000)

    @field_validator("uk_postage_countries")
    @classmethod
    def _country_codes(cls, value: str) -> str:
        codes = [code.strip().upper() for code in value.split(",") if code.strip()]
        if not codes:
            raise ValueError("name at least one country (e.g. GB)")
        for code in codes:
            if len(code) != 2 or not code.isalpha():
                raise ValueError(f"{code!r} is not a two-letter country code")
        return ",".join(codes)

    @property
    def uk_postage(self) -> frozenset[str]:
        """The countries of `uk_postage_countries`."""
        return frozenset(self.uk_postage_countries.split(","))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GIVING_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    env: Literal["production", "development", "test", "demo"] = "development"
    database: DatabaseSettings = DatabaseSettings()
    broker: BrokerSettings = BrokerSettings()
    stripe: StripeSettings = StripeSettings()
    gocardless: GoCardlessSettings = GoCardlessSettings()
    charity: CharitySettings = CharitySettings()
    giftaid: GiftAidSettings = GiftAidSettings()
    hmrc: HmrcSettings = HmrcSettings()
    receipts: ReceiptsSettings = ReceiptsSettings()
    email: EmailSettings = EmailSettings()
    web: WebSettings = WebSettings()
    donations: DonationSettings = DonationSettings()
    shop: ShopSettings = ShopSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        _refuse_unknown_sections(settings_cls)
        return (init_settings, env_settings, _TomlSource(settings_cls))


def _refuse_unknown_sections(settings_cls: type[BaseSettings]) -> None:
    """`GIVING_<SECTION>__<KEY>` naming no section: pydantic-settings reads only the variables of known sections, so
    a misspelt one (`GIVING_DATABSE__URL`) was ignored and the default used (an SQLite file under ./var). A misspelt key
    of a known section is refused by the section itself (`extra="forbid"`). The value is not repeated: a secret."""
    sections = {name for name, field in settings_cls.model_fields.items() if isinstance(field.default, BaseModel)}
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith("GIVING_")
        and "__" in name
        and name[len("GIVING_") :].partition("__")[0].lower() not in sections
    )
    if unknown:
        raise SettingsError(
            f"bad settings: {', '.join(unknown)}: no such section (sections: {', '.join(sorted(sections))})"
        )


class _TomlSource(PydanticBaseSettingsSource):
    """`settings.toml` from the current directory, or the file named by GIVING_SETTINGS."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        self._data = _read_toml()

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def settings_path() -> Path | None:
    named = os.environ.get("GIVING_SETTINGS")
    if named:
        path = Path(named)
        if not path.is_file():
            raise SettingsError(f"GIVING_SETTINGS names {named}, which is not a file")
        return path
    local = Path("settings.toml")
    return local if local.is_file() else None


def _read_toml() -> dict[str, Any]:
    path = settings_path()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    for section, keys in SECRET_KEYS.items():
        found = keys & set(data.get(section, {}) or {})
        if found:
            names = ", ".join(f"[{section}] {k}" for k in sorted(found))
            raise SettingsError(
                f"{path}: {names} is a secret; set it in the environment "
                f"(GIVING_{section.upper()}__{sorted(found)[0].upper()}), never in a file"
            )
    for section in URL_SECTIONS:
        url = (data.get(section) or {}).get("url")
        if isinstance(url, str) and _URL_PASSWORD.search(url):
            raise SettingsError(
                f"{path}: [{section}] url holds a password, a secret; set the whole URL in the environment "
                f"(GIVING_{section.upper()}__URL), never in a file"
            )
    return data


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, turning pydantic's report into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"{where}: {error['msg']}")
        raise SettingsError("bad settings: " + "; ".join(problems)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def feature_warnings(settings: Settings) -> list[str]:
    """What is turned off because a secret is missing (logged at start-up)."""
    warnings = []
    if not settings.stripe.enabled:
        warnings.append(
            "Stripe is off: set GIVING_STRIPE__SECRET_KEY and GIVING_STRIPE__WEBHOOK_SECRET "
            "(its webhook answers 404, card checkout 503)"
        )
    if not settings.gocardless.enabled:
        warnings.append(
            "GoCardless is off: set GIVING_GOCARDLESS__ACCESS_TOKEN and GIVING_GOCARDLESS__WEBHOOK_SECRET "
            "(its webhook answers 404, Direct Debit checkout 503)"
        )
    return warnings
