"""`giving serve` gives uvicorn a log config whose handlers redact: uvicorn's loggers keep handlers of their own and do
not propagate to the root, so "Exception in ASGI application" and its traceback skipped `RedactingFilter`."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator

import pytest

from giving.cli import uvicorn_log_config

SECRET = "sk_live_51HyperSecretKey"
EMAIL = "amina.private@example.org"
NAMES = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def uvicorn_loggers() -> Iterator[None]:
    """Puts uvicorn's loggers back as they were (dictConfig sets their handlers, levels and propagation)."""
    saved = {name: logging.getLogger(name) for name in NAMES}
    state = {name: (lg.handlers[:], lg.level, lg.propagate, lg.filters[:]) for name, lg in saved.items()}
    try:
        yield
    finally:
        for name, lg in saved.items():
            lg.handlers, lg.level, lg.propagate, lg.filters = (
                state[name][0],
                state[name][1],
                state[name][2],
                state[name][3],
            )


def test_uvicorn_error_log_and_traceback_are_redacted(
    uvicorn_loggers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config `giving serve` hands uvicorn (each of its --workers processes applies the same dict)."""
    logging.config.dictConfig(uvicorn_log_config())
    try:
        raise RuntimeError(f"Stripe refused key {SECRET} for {EMAIL}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application (payer %s)", EMAIL)
    logging.getLogger("uvicorn").warning("token=%s", SECRET)
    err = capsys.readouterr().err
    assert "Exception in ASGI application" in err and "RuntimeError" in err
    assert SECRET not in err and EMAIL not in err, err
    assert "[redacted]" in err
