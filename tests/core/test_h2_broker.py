"""A broker that accepts connections and then never answers (hung, overloaded, a half-open firewall) must not hold a
send, or a readiness probe, for long: sends give up within seconds, the cooldown starts, and the durable row waits for
the sweep."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from core import jobs
from core.db import PendingJob
from core.runtime import Runtime
from giving.worker import broker_reachable

# A send waits at most this long on a broker that says nothing (redis-py's 5 s, RabbitMQ's handshake twice as dramatiq
# declares the queue): well under a request's patience, far over a real answer.
PATIENCE_SECONDS = 15.0


@jobs.actor("tests.h2_never_runs", max_retries=0)
def h2_never_runs(uow) -> None:  # type: ignore[no-untyped-def]
    raise AssertionError("nothing consumes these messages")


class SilentServer:
    """Accepts TCP connections on loopback and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


def _url(scheme: str, port: int) -> str:
    return f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://guest:guest@127.0.0.1:{port}/%2F"


def _within(fn, seconds: float) -> float | None:  # type: ignore[no-untyped-def]
    """Seconds `fn` took in a thread of its own, or None if it was still running after `seconds`."""
    started = time.monotonic()
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(seconds)
    return None if thread.is_alive() else time.monotonic() - started


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_send_to_a_broker_that_never_answers_gives_up(runtime: Runtime, silent: SilentServer, scheme: str) -> None:
    """Sends run after the commit in the request's thread (or the web process's one sender thread): with pika's
    defaults RabbitMQ's handshake held each for 30 s (15 s, twice), so requests piled up on the thread pool before the
    cooldown began. (Redis: redis-py's own 5 s timeout; kept here so it stays so.)"""
    broker = jobs.make_broker(_url(scheme, silent.port))
    try:
        jobs.install_broker(broker)
        took = _within(lambda: jobs.send_jobs([PendingJob("tests.h2_never_runs", {})]), PATIENCE_SECONDS)
        assert took is not None, f"a send to a silent {scheme} broker was still waiting after {PATIENCE_SECONDS} s"
        # It failed, so the cooldown holds the sends after it: they return at once.
        assert (_within(lambda: jobs.send_jobs([PendingJob("tests.h2_never_runs", {})]), 1.0) or 9) < 1.0
    finally:
        silent.close()
        jobs.install_broker(runtime.broker)
        with contextlib.suppress(Exception):
            broker.close()


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_the_readiness_probe_of_a_broker_that_never_answers_says_unavailable(
    runtime: Runtime, silent: SilentServer, scheme: str
) -> None:
    """`/readyz` runs on the web's thread pool, asked every few seconds by a load balancer: a probe that waits for
    ever takes a thread each time until none is left for requests."""
    settings = runtime.settings.model_copy(
        update={"broker": runtime.settings.broker.model_copy(update={"url": _url(scheme, silent.port)})}
    )
    probing = dataclasses.replace(runtime, settings=settings)
    answers: list[bool] = []
    took = _within(lambda: answers.append(broker_reachable(probing)), 5.0)
    assert took is not None, "the readiness probe was still waiting after 5 s"
    assert answers == [False]
