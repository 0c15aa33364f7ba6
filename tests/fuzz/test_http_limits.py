"""Oversized and slow requests are cut off, over a real socket to uvicorn configured as `giving serve` runs it:
a body over 1 MB answers 413 (declared or chunked), a body that trickles in answers 408, and nothing is stored."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

import giving.app
from core.runtime import Runtime
from tests.fakes.signing import stripe_headers
from tests.fixtures.smtp import free_port

MEGABYTE = 1_048_576


@pytest.fixture
def server(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # The real limit is 10 s; a second keeps the test quick and cuts off the same way.
    monkeypatch.setattr(giving.app, "BODY_TIMEOUT_SECONDS", 1.0)
    app = giving.app.create_app(runtime=runtime, start_inline_worker=False)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)


def nothing_stored(runtime: Runtime) -> bool:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM inbound_events")).scalar_one() == 0


def test_a_body_over_a_megabyte_is_refused_with_413(server: str, runtime: Runtime) -> None:
    body = b'{"id": "evt_big", "object": "event", "pad": "' + b"x" * MEGABYTE + b'"}'
    response = httpx.post(server + "/webhooks/stripe", content=body, headers=stripe_headers(body), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    assert nothing_stored(runtime)


def test_a_chunked_body_over_a_megabyte_is_refused_with_413(server: str, runtime: Runtime) -> None:
    chunk = b"x" * 65536

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must be counted as the body arrives.
        for _ in range(MEGABYTE // len(chunk) + 2):
            yield chunk

    response = httpx.post(
        server + "/webhooks/gocardless", content=chunks(), headers={"Webhook-Signature": "0" * 64}, timeout=30
    )
    assert response.status_code == 413
    assert nothing_stored(runtime)


def test_a_body_that_trickles_in_is_cut_off_with_408(server: str, runtime: Runtime) -> None:
    port = int(server.rsplit(":", 1)[1])
    body = b'{"id": "evt_slow", "object": "event", "type": "charge.succeeded", "data": {"object": {}}}'
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: {stripe_headers(body)['Stripe-Signature']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the server closed the connection
            sock.settimeout(0.2)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RequestTimeout" in answer or b"connection: close" in answer.lower()
    assert elapsed < 5, elapsed  # cut off, not served after the whole trickle (~18 s)
    assert nothing_stored(runtime)
    # The server is still there for everyone else.
    assert httpx.get(server + "/healthz", timeout=5).status_code == 200


def test_headers_too_large_are_refused(server: str) -> None:
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (128 * 1024) + b"\r\n\r\n")
        answer = sock.recv(4096)
    # h11 refuses a request head over the limit before the app sees it.
    assert answer.startswith(b"HTTP/1.1 4") or answer == b"", answer[:100]
