"""The fake provider server for tests: `FakeProvider` (giving/demo/provider.py, shared with `giving demo`) and the
pytest fixtures `fake_stripe` and `fake_gocardless`, each a started server stopped after the test.

Point the SDK at `server.url` (`[stripe] api_base`, `[gocardless] base_url`), then register answers:

    server.route("POST", r"/v1/checkout/sessions", lambda req: (200, {...}))
    server.route("GET", r"/v1/balance_transactions", {"object": "list", "data": [...], "has_more": False})

Each request is recorded (`server.requests`) with its method, path, query, form or JSON body and headers, so tests can
check what we sent (idempotency keys included). Unmatched requests answer 404 in the provider's error shape.
`fake_gocardless` also applies GoCardless's own validation (`giving.demo.world.gocardless_rules`) before any route.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from giving.demo.provider import Answer, FakeProvider, RecordedRequest
from giving.demo.world import gocardless_rules

__all__ = ["Answer", "FakeProvider", "RecordedRequest", "fake_gocardless", "fake_stripe"]


@pytest.fixture
def fake_stripe() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture
def fake_gocardless() -> Iterator[FakeProvider]:
    """GoCardless's own validation applies whatever a test registers: a subscription (or instalment schedule)
    request on a Bacs billing request is refused with 422 `validation_failed`, as the live API does."""
    server = FakeProvider().start()
    server.rule(gocardless_rules)
    yield server
    server.stop()
