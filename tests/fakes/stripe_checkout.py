"""Stripe Checkout Sessions as Stripe's API answers them, for the real SDK over HTTP (`tests/fakes/provider_server.py`).

Stripe's idempotency layer (docs.stripe.com/api/idempotent_requests, docs.stripe.com/error-codes):

- the first request with an idempotency key runs; its status and body are saved under the key and every later
  request with the same key gets them back (the same session, no second one);
- a request that arrives while the first request with its key is **still running** is refused with `409` and the
  error code `idempotency_key_in_use` ("There is currently another in-progress request using this Idempotent Key
  ...  Please try again later."); no result is saved for it (no endpoint began), so it is safe to send again with
  the same key, and once the first has finished that request gets the first's answer.

`hold()` keeps every first request with a new key running until `release()` (a slow Stripe, or a double click that
reaches Stripe while the first click's request is still being processed); `conflicts` lists the keys refused with a
409. The session's own life: `POST /v1/checkout/sessions/{id}/expire` expires an open session (a session that is
not open is refused with 400, as Stripe does), `GET /v1/checkout/sessions/{id}` reads it, and `complete(id)` is the
donor paying on Stripe's page.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from tests.fakes.provider_server import FakeProvider, RecordedRequest

BASE_TIME = 1_767_607_200  # 2026-01-05 10:00 UTC, as tests/fakes/scenarios.py


def key_in_use(key: str) -> dict[str, Any]:
    """Stripe's answer body to a request whose idempotency key is still being processed (HTTP 409)."""
    return {
        "error": {
            "code": "idempotency_key_in_use",
            "doc_url": "https://stripe.com/docs/error-codes/idempotency-key-in-use",
            "message": (
                "There is currently another in-progress request using this Idempotent Key (that probably means you "
                f"submitted twice, and the other request is still going through): {key}. Please try again later."
            ),
            "type": "invalid_request_error",
        }
    }


class StripeCheckoutSessions:
    def __init__(self, server: FakeProvider, *, hold_timeout: float = 30.0):
        self.server = server
        self.hold_timeout = hold_timeout
        self.sessions: dict[str, dict[str, Any]] = {}  # by session id
        self.saved: dict[str, tuple[int, Any]] = {}  # by idempotency key
        self.running: set[str] = set()
        self.conflicts: list[str] = []
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        self._gate: threading.Event | None = None
        self.started = threading.Event()  # set when a first request with a key began running
        server.route("POST", r"/v1/checkout/sessions", self.create)
        server.route("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", self.retrieve)
        server.route("POST", r"/v1/checkout/sessions/(?P<id>[^/]+)/expire", self.expire)

    # --- the test's controls --------------------------------------------------------------------------------------

    def hold(self) -> None:
        """First requests with a new key keep running (Stripe is slow) until `release()`."""
        with self.lock:
            self._gate = threading.Event()

    def release(self) -> None:
        with self.lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def complete(self, session_id: str) -> dict[str, Any]:
        """The donor paid on Stripe's page."""
        with self.lock:
            session = self.sessions[session_id]
            session.update(status="complete", payment_status="paid")
            return dict(session)

    @property
    def create_requests(self) -> list[RecordedRequest]:
        return self.server.requests_to("POST", r"/v1/checkout/sessions")

    def expire_requests(self, session_id: str) -> list[RecordedRequest]:
        return self.server.requests_to("POST", rf"/v1/checkout/sessions/{session_id}/expire")

    # --- the API --------------------------------------------------------------------------------------------------

    def create(self, request: RecordedRequest) -> tuple[int, Any]:
        key = request.headers.get("idempotency-key", "")
        with self.lock:
            if key in self.saved:
                return self.saved[key]
            if key in self.running:
                self.conflicts.append(key)
                return 409, key_in_use(key)
            self.running.add(key)
            gate = self._gate
        self.started.set()
        try:
            if gate is not None:
                gate.wait(self.hold_timeout)
            with self.lock:
                number = next(self.numbers)
                session_id = f"cs_test_{number:04d}"
                session = {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": request.param("mode"),
                    "client_reference_id": request.param("client_reference_id"),
                    "status": "open",
                    "payment_status": "unpaid",
                    "created": BASE_TIME,
                    "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                }
                self.sessions[session_id] = session
                self.saved[key] = (200, dict(session))
                return self.saved[key]
        finally:
            with self.lock:
                self.running.discard(key)

    def retrieve(self, request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        with self.lock:
            session = self.sessions.get(request.match["id"])
            if session is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
            return 200, dict(session)

    def expire(self, request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        with self.lock:
            session = self.sessions.get(request.match["id"])
            if session is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
            if session["status"] != "open":
                message = "Only Checkout Sessions with a status of `open` can be expired."
                return 400, {"error": {"type": "invalid_request_error", "message": message}}
            session["status"] = "expired"
            return 200, dict(session)
