"""Shared set-up of the checkout tests: settings pointing the real SDKs at the fake providers, provider answers that
behave like Stripe's and GoCardless's (same idempotency key → same object), and row counts."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.provider_server import FakeProvider, RecordedRequest
from tests.fixtures.app import make_settings

TABLES = (
    "supporters",
    "supporter_addresses",
    "declarations",
    "consents",
    "history",
    "checkouts",
    "orders",
    "order_lines",
    "review_items",
)

DONOR = {
    "title": "Ms",
    "first_name": "Amina",
    "last_name": "Okafor",
    "email": " Amina.Okafor@Example.ORG ",
    "address_line1": "10 Downing Street",
    "address_line2": "",
    "town": "London",
    "postcode": "sw1a2aa",
    "country": "GB",
}


def checkout_settings(
    database_url: str, tmp_path: Path, stripe_url: str, gocardless_url: str, **sections: dict[str, Any]
) -> Settings:
    stripe = {"api_base": stripe_url, **sections.pop("stripe", {})}
    gocardless = {"base_url": gocardless_url, **sections.pop("gocardless", {})}
    return make_settings(database_url, tmp_path, stripe=stripe, gocardless=gocardless, **sections)


class StripeCheckout:
    """Answers POST /v1/checkout/sessions like Stripe: one session per idempotency key."""

    def __init__(self, server: FakeProvider):
        self.server = server
        self.by_key: dict[str, dict[str, Any]] = {}
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        self.failure: tuple[int, dict[str, Any]] | None = None
        server.route("POST", r"/v1/checkout/sessions", self.answer)

    def answer(self, request: RecordedRequest) -> tuple[int, Any]:
        if self.failure is not None:
            return self.failure
        key = request.headers.get("idempotency-key", "")
        with self.lock:
            if key not in self.by_key:
                number = next(self.numbers)
                session_id = f"cs_test_{number:04d}"
                self.by_key[key] = {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": request.param("mode"),
                    "status": "open",
                    "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                }
            return 200, self.by_key[key]

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests_to("POST", r"/v1/checkout/sessions")


class GoCardlessFlow:
    """Answers billing request and flow creation like GoCardless."""

    def __init__(self, server: FakeProvider):
        self.server = server
        self.numbers = itertools.count(1)
        self.failure: tuple[int, dict[str, Any]] | None = None
        server.route("POST", r"/billing_requests", self.billing_request)
        server.route("POST", r"/billing_request_flows", self.flow)

    def billing_request(self, request: RecordedRequest) -> tuple[int, Any]:
        if self.failure is not None:
            return self.failure
        number = next(self.numbers)
        body = request.json["billing_requests"]
        return 201, {"billing_requests": {"id": f"BRQ{number:06d}", "status": "pending", **body}}

    def flow(self, request: RecordedRequest) -> tuple[int, Any]:
        number = next(self.numbers)
        body = request.json["billing_request_flows"]
        flow_id = f"BRF{number:06d}"
        return 201, {
            "billing_request_flows": {
                "id": flow_id,
                "authorisation_url": f"https://pay.gocardless.test/billing/static/flow?id={flow_id}",
                **body,
            }
        }


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.engine.connect() as conn:
        return {table: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one() for table in TABLES}


def nothing_recorded(runtime: Runtime) -> bool:
    return all(count == 0 for count in counts(runtime).values())


def form_of(request: RecordedRequest) -> dict[str, str]:
    """A Stripe form-encoded request as a flat dict (`line_items[0][quantity]` → value)."""
    return {key: values[0] for key, values in request.form.items()}


@pytest.fixture
def stripe(fake_stripe: FakeProvider) -> StripeCheckout:
    return StripeCheckout(fake_stripe)


@pytest.fixture
def gocardless(fake_gocardless: FakeProvider) -> GoCardlessFlow:
    return GoCardlessFlow(fake_gocardless)


def donate(client: TestClient, **fields: Any) -> Any:
    """POST /donate as a browser does: a one-off £12.50 card gift from DONOR, `fields` changing it (None: left out)."""
    form = {**DONOR, "amount": "12.50", "frequency": "once", "method": "card", **fields}
    form = {k: v for k, v in form.items() if v is not None}
    return client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
