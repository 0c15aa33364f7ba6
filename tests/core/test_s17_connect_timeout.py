"""A PostgreSQL server that takes the connection but never answers (a host gone silent, a firewall dropping packets
after the handshake) fails a connection within `[database] connect_timeout` (the threaded engine here; the web
process's asyncio pool is given the same): `/readyz` and every request answer 503 instead of hanging (libpq waits
for ever by default). A URL's own `connect_timeout` wins."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from core.db import make_engine
from core.settings import DatabaseSettings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose listener completes TCP handshakes (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_the_engine_gives_up_on_a_silent_server_within_the_connect_timeout(silent_server: int) -> None:
    url = f"postgresql+psycopg://giving@127.0.0.1:{silent_server}/giving"
    engine = make_engine(DatabaseSettings(url=url, connect_timeout=2))
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    assert time.monotonic() - started < 8


def test_a_urls_own_connect_timeout_wins(silent_server: int) -> None:
    url = f"postgresql+psycopg://giving@127.0.0.1:{silent_server}/giving?connect_timeout=1"
    engine = make_engine(DatabaseSettings(url=url, connect_timeout=30))
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    assert time.monotonic() - started < 6
