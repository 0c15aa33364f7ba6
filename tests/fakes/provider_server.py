"""The fake provider server for tests: `FakeProvider` (giving/demo/provider.py, shared with `giving demo`) and the
pytest fixtures `fake_stripe` and `fake_gocardless`, each a started server stopped after the test.

Point the SDK at `server.url` (`[stripe] api_base`, `[gocardless] base_url`), then register answers:

    server.route("POST", r"/v1/checkout/sessions", lambda req: (200, {...}))
    server.route("GET", r"/v1/balance_transactions", {"object": "list", "data": [...], "has_more": False})

Each request is recorded (`server.requests`) with its method, path, query, form or JSON body and headers, so tests can
check what we sent (idempotency keys included). Unmatched requests answer 404 in the provider's error shape.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from giving.demo.provider import Answer, FakeProvider, RecordedRequest

__all__ = ["Answer", "FakeProvider", "RecordedRequest", "fake_gocardless", "fake_stripe"]


@pytest.fixture
def fake_stripe() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture
def fake_gocardless() -> Iterator[FakeProvider]:
    server = FakeProvider().start()
    yield server
    server.stop()
