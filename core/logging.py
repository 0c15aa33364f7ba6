"""Structured logs to stderr. Secrets, card data and webhook bodies are never logged."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRETISH = re.compile(r"(secret|password|token|signature|authorization|card|cvc|body|payload)", re.I)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event" and _SECRETISH.search(key):
            event[key] = "[redacted]"
    return event


_REDACTED = "[redacted]"

# Each pattern starts only where a run of its characters starts (a lookbehind), and runs only when a cheap substring
# test says it may match, so an ordinary line costs a few microseconds and a long one linear time.
# A URL's password: scheme://user:PASSWORD@host (the user and host stay).
_URL_PASSWORD = re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.I)
# A value named by a secret-ish word: token=..., "password": "...", Authorization: Bearer ..., Bearer ...
_SECRET_WORDS = ("secret", "password", "passwd", "token", "signature", "authorization", "cvc", "bearer", "basic")
_SECRET_WORD = re.compile(r"secret|password|passwd|token|signature|authorization|cvc", re.I)
_NAMED_VALUE = re.compile(
    r"(?<!\w)(\w+)([\"']?\s*[=:]\s*[\"']?(?:(?:bearer|basic)\s+)?)([^\s\"',;&]+)"
    r"|(?<!\w)((?:bearer|basic)\s+)[^\s\"',;&]+",
    re.I,
)
# Credentials that name themselves: Stripe keys, webhook secrets, our API tokens.
_KEY_PREFIXES = ("sk_", "rk_", "whsec_", "gvg_")
_PREFIXED_KEY = re.compile(r"\b(?:sk_live_|sk_test_|rk_live_|rk_test_|whsec_|gvg_)[\w-]+", re.I)
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.I)
# PostgreSQL's DETAIL repeats a row's values: "Failing row contains (...)", "Key (email)=(...) already exists".
_FAILING_ROW = re.compile(r"(Failing row contains \()[^\n]*?(\)\.?)$", re.M)
_KEY_VALUES = re.compile(
    r"(Key \([^\n]*?\)=\()(?:[^\n]*?(\) (?:already exists|is not present|is still referenced|conflicts with))|[^\n]*)"
)
# A card number: 13 to 19 digits, maybe in groups (redacted when it passes the Luhn check: ids and amounts stay).
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        number = int(char)
        if position % 2:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    card = match[0]
    return _REDACTED if _luhn(card.replace(" ", "").replace("-", "")) else card


def _named_value(match: re.Match[str]) -> str:
    if match[4] is not None:
        return match[4] + _REDACTED
    if _SECRET_WORD.search(match[1]):
        return match[1] + match[2] + _REDACTED
    return match[0]


def _key_values(match: re.Match[str]) -> str:
    return match[1] + _REDACTED + (match[2] or ")")


def redact_text(text: str) -> str:
    """`text` with passwords, tokens, secrets, card numbers and email addresses replaced by `[redacted]`."""
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<1>{_REDACTED}@", text)
    lowered = text.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        text = _NAMED_VALUE.sub(_named_value, text)
    if any(prefix in lowered for prefix in _KEY_PREFIXES):
        text = _PREFIXED_KEY.sub(_REDACTED, text)
    if "Failing row contains (" in text:
        text = _FAILING_ROW.sub(rf"\g<1>{_REDACTED}\g<2>", text)
    if "Key (" in text:
        text = _KEY_VALUES.sub(_key_values, text)
    if "@" in text:
        text = _EMAIL.sub(_REDACTED, text)
    return _CARD.sub(_card, text)


def stored_error(exc: BaseException, limit: int = 2000) -> str:
    """An exception as a line to store (a job's or an event's `last_error`). A database error is only its type and
    SQLSTATE, e.g. "IntegrityError (23505 unique_violation)": PostgreSQL's DETAIL repeats the row's values ("Key
    (email)=(...) already exists", "Failing row contains (...)"), which `hide_parameters` does not hide."""
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return f"{type(exc).__name__} ({_driver_code(exc.orig)})"
    if type(exc).__module__.startswith(("psycopg", "sqlite3")):
        return f"{type(exc).__name__} ({_driver_code(exc)})"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:limit]


def _driver_code(orig: BaseException | None) -> str:
    """The driver error's SQLSTATE and condition ("23505 unique_violation"), or SQLite's name for it."""
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        condition = re.sub(r"(?<!^)(?=[A-Z])", "_", type(orig).__name__).lower()
        return f"{sqlstate} {condition}"
    return str(getattr(orig, "sqlite_errorname", None) or type(orig).__name__)


class RedactingFilter(logging.Filter):
    """On a handler: redacts each record's message, arguments, traceback and stack once (the record is shared by
    every handler after it), so what the code logs through stdlib logging keeps the module docstring's promise."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "giving_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: the handler reports it as it would have
            return True
        record.msg = redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record.giving_redacted = True
        return True


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Also on handlers set up before us (dramatiq's, in a worker process).
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # Third-party chatter that would otherwise dominate.
    for noisy in ("pika", "fontTools", "weasyprint", "httpx", "stripe", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
